//! Planning: turns a release's frozen process into the ordered jobs of one deployment.

use cuttle_contracts::JobWork;
use cuttle_domain::script::ScriptSyntax;
use cuttle_wire::resources::{Action, Deployment, DeploymentProcess, Step};

/// One job of the plan, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    /// 1-based step number, for the log tree.
    pub step_number: i32,
    /// Step name.
    pub step_name: String,
    /// Action name.
    pub action_name: String,
    /// `Success`, `Failure` or `Always`: when the step runs given what happened before.
    pub condition: String,
    /// What the worker runs.
    pub work: JobWork,
}

/// Why a deployment cannot be planned; the task fails with this sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

fn is_true(value: Option<&String>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// True when the action applies to this deployment's environment and channel and is not skipped.
fn applies(action: &Action, deployment: &Deployment) -> bool {
    !action.is_disabled
        && !deployment.skip_actions.contains(&action.id)
        && (action.environments.is_empty()
            || action.environments.contains(&deployment.environment_id))
        && !action
            .excluded_environments
            .contains(&deployment.environment_id)
        && (action.channels.is_empty() || action.channels.contains(&deployment.channel_id))
}

fn plan_action(step: &Step, action: &Action) -> Result<JobWork, PlanError> {
    match action.action_type.as_str() {
        "Octopus.Script" => {
            let roles = step
                .properties
                .get("Octopus.Action.TargetRoles")
                .or_else(|| action.properties.get("Octopus.Action.TargetRoles"))
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty());
            let on_server = is_true(action.properties.get("Octopus.Action.RunOnServer"));
            if let (Some(roles), false) = (roles, on_server) {
                // Octopus fails a deployment whose step targets roles no machine has; Cuttle has
                // no deployment targets yet, so every role is empty.
                return Err(PlanError(format!(
                    "Step '{}' runs on deployment targets with the role(s) '{roles}', but there are no deployment targets in this environment.",
                    step.name
                )));
            }
            let source = action
                .properties
                .get("Octopus.Action.Script.ScriptSource")
                .map(String::as_str)
                .unwrap_or("Inline");
            if !source.eq_ignore_ascii_case("Inline") {
                return Err(PlanError(format!(
                    "Step '{}' runs a script from a package, which is not available in this version of Cuttle yet.",
                    step.name
                )));
            }
            let syntax = ScriptSyntax::parse(
                action
                    .properties
                    .get("Octopus.Action.Script.Syntax")
                    .map(String::as_str),
            )
            .map_err(|err| PlanError(format!("Step '{}': {err}", step.name)))?;
            let body = action
                .properties
                .get("Octopus.Action.Script.ScriptBody")
                .cloned()
                .unwrap_or_default();
            Ok(JobWork::Script { syntax, body })
        }
        other => Err(PlanError(format!(
            "Step '{}' uses the action type '{other}', which is not available in this version of Cuttle yet.",
            step.name
        ))),
    }
}

/// Plans every applicable action in process order.
pub fn plan(
    process: &DeploymentProcess,
    deployment: &Deployment,
) -> Result<Vec<PlannedJob>, PlanError> {
    let mut jobs = Vec::new();
    for (index, step) in process.steps.iter().enumerate() {
        let condition = match step.condition.as_str() {
            "" | "Success" => "Success",
            "Failure" => "Failure",
            "Always" => "Always",
            other => {
                return Err(PlanError(format!(
                    "Step '{}' has the run condition '{other}', which is not available in this version of Cuttle yet.",
                    step.name
                )));
            }
        };
        for action in step.actions.iter().filter(|a| applies(a, deployment)) {
            jobs.push(PlannedJob {
                step_number: index as i32 + 1,
                step_name: step.name.clone(),
                action_name: action.name.clone(),
                condition: condition.to_owned(),
                work: plan_action(step, action)?,
            });
        }
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn script_step(name: &str, props: &[(&str, &str)]) -> Step {
        let properties: BTreeMap<String, String> = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Step {
            name: name.into(),
            condition: "Success".into(),
            actions: vec![Action {
                id: format!("{name}-action"),
                name: name.into(),
                action_type: "Octopus.Script".into(),
                properties,
                ..Action::default()
            }],
            ..Step::default()
        }
    }

    fn deployment() -> Deployment {
        Deployment {
            environment_id: "Environments-1".into(),
            channel_id: "Channels-1".into(),
            ..Deployment::default()
        }
    }

    #[test]
    fn inline_server_scripts_become_jobs_in_order() {
        let process = DeploymentProcess {
            steps: vec![
                script_step(
                    "A",
                    &[
                        ("Octopus.Action.Script.Syntax", "Bash"),
                        ("Octopus.Action.Script.ScriptBody", "echo a"),
                        ("Octopus.Action.RunOnServer", "true"),
                    ],
                ),
                script_step(
                    "B",
                    &[
                        ("Octopus.Action.Script.Syntax", "Python"),
                        ("Octopus.Action.Script.ScriptBody", "print(1)"),
                    ],
                ),
            ],
            ..DeploymentProcess::default()
        };
        let jobs = plan(&process, &deployment()).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[1].step_number, 2);
        assert_eq!(
            jobs[0].work,
            JobWork::Script {
                syntax: ScriptSyntax::Bash,
                body: "echo a".into()
            }
        );
    }

    #[test]
    fn a_step_for_target_roles_fails_the_plan_with_the_role_named() {
        let mut step = script_step(
            "Web",
            &[
                ("Octopus.Action.Script.Syntax", "Bash"),
                ("Octopus.Action.Script.ScriptBody", "x"),
            ],
        );
        step.properties
            .insert("Octopus.Action.TargetRoles".into(), "web-server".into());
        let process = DeploymentProcess {
            steps: vec![step],
            ..DeploymentProcess::default()
        };
        let err = plan(&process, &deployment()).unwrap_err();
        assert!(err.0.contains("web-server"), "{err}");
    }

    #[test]
    fn environment_filters_and_skipped_actions_leave_actions_out() {
        let mut only_prod = script_step(
            "Prod only",
            &[
                ("Octopus.Action.Script.Syntax", "Bash"),
                ("Octopus.Action.Script.ScriptBody", "x"),
            ],
        );
        only_prod.actions[0].environments = vec!["Environments-9".into()];
        let skipped = script_step(
            "Skipped",
            &[
                ("Octopus.Action.Script.Syntax", "Bash"),
                ("Octopus.Action.Script.ScriptBody", "x"),
            ],
        );
        let process = DeploymentProcess {
            steps: vec![only_prod, skipped],
            ..DeploymentProcess::default()
        };
        let mut deployment = deployment();
        deployment.skip_actions = vec!["Skipped-action".into()];
        assert!(plan(&process, &deployment).unwrap().is_empty());
    }
}
