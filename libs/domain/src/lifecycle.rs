//! Lifecycle progression: may a release be deployed to an environment yet?
//!
//! Matches Octopus's documented rules: phases are deployed in order; a phase is complete when
//! `MinimumEnvironmentsBeforePromotion` of its environments (0 = all) have a successful deployment
//! of the release; optional phases never block; a phase with no environments takes every
//! environment not named in another phase; a lifecycle with no phases has one implicit phase per
//! environment, in environment sort order.

/// One phase as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// Display name, for messages.
    pub name: String,
    /// Environments of the phase (automatic and optional targets together).
    pub environment_ids: Vec<String>,
    /// 0 means every environment of the phase.
    pub minimum_environments_before_promotion: usize,
    /// Optional phases can be skipped.
    pub is_optional: bool,
}

/// Why a deployment is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgressionError {
    /// The environment is in no phase of the lifecycle.
    #[error("environment '{environment}' is not part of lifecycle '{lifecycle}'")]
    NotInLifecycle {
        /// Environment name.
        environment: String,
        /// Lifecycle name.
        lifecycle: String,
    },
    /// An earlier phase is not complete yet.
    #[error(
        "the release cannot be deployed to '{environment}' yet: phase '{phase}' of lifecycle '{lifecycle}' must be completed first"
    )]
    EarlierPhaseIncomplete {
        /// Environment name.
        environment: String,
        /// The incomplete phase.
        phase: String,
        /// Lifecycle name.
        lifecycle: String,
    },
}

/// Expands a lifecycle's phases into concrete environment lists (implicit and catch-all phases).
/// `all_environments` is every environment of the space as (id, name), in sort order.
pub fn effective_phases(phases: &[Phase], all_environments: &[(String, String)]) -> Vec<Phase> {
    if phases.is_empty() {
        return all_environments
            .iter()
            .map(|(id, name)| Phase {
                name: name.clone(),
                environment_ids: vec![id.clone()],
                minimum_environments_before_promotion: 0,
                is_optional: false,
            })
            .collect();
    }
    let named: Vec<&String> = phases
        .iter()
        .flat_map(|p| p.environment_ids.iter())
        .collect();
    phases
        .iter()
        .map(|phase| {
            if phase.environment_ids.is_empty() {
                let rest = all_environments
                    .iter()
                    .filter(|(id, _)| !named.contains(&id))
                    .map(|(id, _)| id.clone())
                    .collect();
                Phase {
                    environment_ids: rest,
                    ..phase.clone()
                }
            } else {
                phase.clone()
            }
        })
        .collect()
}

/// Checks that `environment_id` may receive the release, given the environments to which it was
/// already deployed successfully.
pub fn check_progression(
    lifecycle_name: &str,
    phases: &[Phase],
    all_environments: &[(String, String)],
    environment_id: &str,
    deployed_successfully: &[String],
) -> Result<(), ProgressionError> {
    let environment_name = all_environments
        .iter()
        .find(|(id, _)| id == environment_id)
        .map(|(_, name)| name.clone())
        .unwrap_or_else(|| environment_id.to_owned());
    let phases = effective_phases(phases, all_environments);
    let Some(target_index) = phases
        .iter()
        .position(|p| p.environment_ids.iter().any(|id| id == environment_id))
    else {
        return Err(ProgressionError::NotInLifecycle {
            environment: environment_name,
            lifecycle: lifecycle_name.to_owned(),
        });
    };
    for phase in &phases[..target_index] {
        if phase.is_optional || phase.environment_ids.is_empty() {
            continue;
        }
        let done = phase
            .environment_ids
            .iter()
            .filter(|id| deployed_successfully.contains(id))
            .count();
        let needed = match phase.minimum_environments_before_promotion {
            0 => phase.environment_ids.len(),
            n => n.min(phase.environment_ids.len()),
        };
        if done < needed {
            return Err(ProgressionError::EarlierPhaseIncomplete {
                environment: environment_name,
                phase: phase.name.clone(),
                lifecycle: lifecycle_name.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envs() -> Vec<(String, String)> {
        ["Dev", "Test", "Prod"]
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("Environments-{}", i + 1), n.to_string()))
            .collect()
    }

    fn phase(name: &str, ids: &[&str], min: usize, optional: bool) -> Phase {
        Phase {
            name: name.into(),
            environment_ids: ids.iter().map(|s| s.to_string()).collect(),
            minimum_environments_before_promotion: min,
            is_optional: optional,
        }
    }

    #[test]
    fn without_phases_environments_are_deployed_in_sort_order() {
        let envs = envs();
        assert!(check_progression("L", &[], &envs, "Environments-1", &[]).is_ok());
        let err = check_progression("L", &[], &envs, "Environments-2", &[]).unwrap_err();
        assert!(err.to_string().contains("phase 'Dev'"), "{err}");
        let done = vec!["Environments-1".to_string()];
        assert!(check_progression("L", &[], &envs, "Environments-2", &done).is_ok());
    }

    #[test]
    fn an_environment_outside_the_lifecycle_is_refused() {
        let phases = [phase("Dev", &["Environments-1"], 0, false)];
        let err = check_progression("L", &phases, &envs(), "Environments-3", &[]).unwrap_err();
        assert!(matches!(err, ProgressionError::NotInLifecycle { .. }));
    }

    #[test]
    fn optional_phases_do_not_block_and_minimums_count() {
        let phases = [
            phase("Dev", &["Environments-1"], 0, true),
            phase("Test", &["Environments-2", "Environments-1"], 1, false),
            phase("Prod", &[], 0, false),
        ];
        let envs = envs();
        assert!(check_progression("L", &phases, &envs, "Environments-2", &[]).is_ok());
        assert!(check_progression("L", &phases, &envs, "Environments-3", &[]).is_err());
        let done = vec!["Environments-1".to_string()];
        assert!(check_progression("L", &phases, &envs, "Environments-3", &done).is_ok());
    }
}
