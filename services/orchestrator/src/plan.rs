//! Planning: turns a release's frozen process into the ordered jobs of one deployment.

use crate::variables::{self, JobScope};
use cuttle_contracts::{FileSubstitution, JobPackage, JobTarget, JobVariable, JobWork};
use cuttle_domain::script::ScriptSyntax;
use cuttle_wire::resources::{
    Action, Deployment, DeploymentProcess, Machine, PackageReference, Step, Variable,
};
use std::collections::BTreeMap;

/// The package versions a release pinned, located in the feed: keyed by (action name, package
/// reference name), `Err` holding the sentence to fail with when a version is gone.
pub type ResolvedPackages = BTreeMap<(String, String), Result<JobPackage, String>>;

/// What planning needs besides the process.
pub struct PlanInputs<'a> {
    /// The deployment being planned.
    pub deployment: &'a Deployment,
    /// Its environment's name (installation folders are named after it).
    pub environment_name: &'a str,
    /// The release's packages.
    pub packages: &'a ResolvedPackages,
    /// The enabled deployment targets of the deployment's environment.
    pub targets: &'a [Machine],
    /// The project's `ProjectConnectivityPolicy.AllowDeploymentsToNoTargets`: a step whose roles
    /// no target carries is skipped instead of failing the deployment.
    pub allow_no_targets: bool,
    /// The release's frozen project variables.
    pub variables: &'a [Variable],
    /// Octopus's system variables of this deployment (`Octopus.Environment.Name`, ...).
    pub system: &'a BTreeMap<String, String>,
    /// Agents registered as workers (enabled, not known to be down), for steps that run on a
    /// worker; with none in a step's pool, Cuttle's own workers run it.
    pub worker_agents: &'a [Machine],
    /// The space's default worker pool, for steps that name none.
    pub default_worker_pool: Option<&'a str>,
    /// The tags of the deployment's tenant; `None` for an untenanted deployment. The targets
    /// are already those that take part in this deployment's tenancy.
    pub tenant_tags: Option<&'a [String]>,
}

/// The worker agent a step that runs on a worker goes to: one of the agents in the action's
/// pool, the same one for every attempt of one deployment and spread over the pool across
/// deployments. `None` (Cuttle's own workers run it) when the pool has no agents.
fn worker_for<'m>(
    step: &Step,
    action: &Action,
    work: &JobWork,
    inputs: &PlanInputs<'m>,
) -> Result<Option<&'m Machine>, PlanError> {
    if matches!(work, JobWork::HealthCheck) {
        return Ok(None);
    }
    let Some(pool) = worker_pool(step, action, inputs)? else {
        return Ok(None);
    };
    let mut candidates: Vec<&Machine> = inputs
        .worker_agents
        .iter()
        .filter(|worker| worker.worker_pool_ids.contains(&pool))
        .collect();
    if candidates.is_empty() {
        return Ok(None);
    }
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    // FNV-1a of the deployment and action: stable within a deployment, varied across them.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in inputs.deployment.id.bytes().chain(action.id.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let index = usize::try_from(hash % candidates.len() as u64).unwrap_or(0);
    Ok(candidates.get(index).copied())
}

/// The worker pool of an action: the value of the variable `Octopus.Action.WorkerPoolVariable`
/// names (a worker pool variable, which may differ per environment), else
/// `Octopus.Action.WorkerPoolId` (which may hold `#{...}` too), else the space's default pool.
fn worker_pool(
    step: &Step,
    action: &Action,
    inputs: &PlanInputs<'_>,
) -> Result<Option<String>, PlanError> {
    let property = |name: &str| {
        action
            .properties
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    };
    if let Some(variable) = property("Octopus.Action.WorkerPoolVariable") {
        let reference = format!("#{{{variable}}}");
        let pool = evaluate_for_action(&reference, action, inputs);
        let pool = pool.trim();
        if pool.is_empty() || pool == reference {
            return Err(PlanError(format!(
                "Step '{}' takes its worker pool from the variable '{variable}', which has no value for this deployment; give it a worker pool id (WorkerPools-N) scoped to this environment.",
                step.name
            )));
        }
        return Ok(Some(pool.to_owned()));
    }
    if let Some(written) = property("Octopus.Action.WorkerPoolId") {
        if !written.contains("#{") {
            return Ok(Some(written.to_owned()));
        }
        let pool = evaluate_for_action(written, action, inputs);
        let pool = pool.trim();
        if pool.is_empty() || pool.contains("#{") {
            return Err(PlanError(format!(
                "Step '{}' has the worker pool '{written}', which has no value for this deployment.",
                step.name
            )));
        }
        return Ok(Some(pool.to_owned()));
    }
    Ok(inputs.default_worker_pool.map(str::to_owned))
}

/// A planned deployment: its jobs, and what the task log should say about steps left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The jobs, in the order they run.
    pub jobs: Vec<PlannedJob>,
    /// Sentences for the task log (a step skipped because no target has its roles).
    pub notes: Vec<String>,
}

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
    /// Where: a deployment target's agent, or the worker itself.
    pub target: Option<JobTarget>,
    /// Its variables, unevaluated (sensitive ones sealed).
    pub variables: Vec<JobVariable>,
    /// `None` for a job that runs alone; for the jobs of one action fanned out over targets,
    /// how many may run at once (0: all of them, Octopus's default).
    pub parallel_window: Option<u32>,
}

/// Why a deployment cannot be planned; the task fails with this sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

fn is_true(value: Option<&String>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// True when the action applies to this deployment's environment, channel and tenant and is not
/// skipped. An action with `TenantTags` runs only for tenants matching them, so never in an
/// untenanted deployment.
fn applies(action: &Action, deployment: &Deployment, tenant_tags: Option<&[String]>) -> bool {
    let tenant_ok = action.tenant_tags.is_empty()
        || tenant_tags
            .is_some_and(|tags| cuttle_domain::tenant_tags::matches(tags, &action.tenant_tags));
    tenant_ok
        && !action.is_disabled
        && !deployment.skip_actions.contains(&action.id)
        && (action.environments.is_empty()
            || action.environments.contains(&deployment.environment_id))
        && !action
            .excluded_environments
            .contains(&deployment.environment_id)
        && (action.channels.is_empty() || action.channels.contains(&deployment.channel_id))
}

/// The target roles a step runs on, unless it runs on the server (a worker).
fn target_roles(step: &Step, action: &Action) -> Option<Vec<String>> {
    let roles = step
        .properties
        .get("Octopus.Action.TargetRoles")
        .or_else(|| action.properties.get("Octopus.Action.TargetRoles"))?;
    let roles: Vec<String> = roles
        .split(',')
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    let on_server = is_true(action.properties.get("Octopus.Action.RunOnServer"));
    (!roles.is_empty() && !on_server).then_some(roles)
}

/// The targets of the environment that carry one of `roles`, in name order.
fn targets_for<'m>(roles: &[String], targets: &'m [Machine]) -> Vec<&'m Machine> {
    let mut matching: Vec<&Machine> = targets
        .iter()
        .filter(|machine| {
            machine
                .roles
                .iter()
                .any(|role| roles.iter().any(|r| r.eq_ignore_ascii_case(role)))
        })
        .collect();
    matching.sort_by_key(|machine| machine.name.to_lowercase());
    matching
}

/// `Octopus.Action.MaxParallelism` of the step (or action): how many targets run the action at
/// once; unset or empty means all of them (0). As in Octopus the window may be bound to a
/// variable (`#{Window}`), evaluated as the action sees it before any target is chosen.
fn max_parallelism(
    step: &Step,
    action: &Action,
    inputs: &PlanInputs<'_>,
) -> Result<u32, PlanError> {
    let Some(written) = step
        .properties
        .get("Octopus.Action.MaxParallelism")
        .or_else(|| action.properties.get("Octopus.Action.MaxParallelism"))
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    else {
        return Ok(0);
    };
    let evaluated = if written.contains("#{") {
        evaluate_for_action(written, action, inputs)
    } else {
        written.to_owned()
    };
    let value = evaluated.trim();
    match value.parse::<u32>() {
        Ok(window) if window > 0 => Ok(window),
        _ => Err(PlanError(format!(
            "Step '{}' has Octopus.Action.MaxParallelism '{written}'{}; it must be a whole number of at least 1.",
            step.name,
            if value == written {
                String::new()
            } else {
                format!(", which evaluates to '{value}'")
            }
        ))),
    }
}

/// `text` evaluated with the system variables and the project variables that apply to
/// `action` in this deployment, with no target chosen yet. Sensitive values are sealed until a
/// worker opens them, so they take no part: a reference to one stays as written.
fn evaluate_for_action(text: &str, action: &Action, inputs: &PlanInputs<'_>) -> String {
    let scope = cuttle_variables::Scope {
        environment_id: &inputs.deployment.environment_id,
        channel_id: &inputs.deployment.channel_id,
        action_id: &action.id,
        machine: None,
        tenant_id: inputs.deployment.tenant_id.as_deref(),
        tenant_tags: inputs.tenant_tags,
    };
    let mut dictionary = cuttle_template::VariableDictionary::new();
    for (name, value) in inputs.system {
        dictionary.set(name.as_str(), value.as_str());
    }
    for variable in cuttle_variables::resolve(inputs.variables, &scope) {
        if let (false, Some(value)) = (variable.is_sensitive, &variable.value) {
            dictionary.set(variable.name.as_str(), value.as_str());
        }
    }
    dictionary.evaluate_lenient(text)
}

/// What a job needs to reach `machine`'s agent.
pub fn job_target(machine: &Machine) -> JobTarget {
    JobTarget {
        machine_id: machine.id.clone(),
        name: machine.name.clone(),
        communication_style: machine.endpoint.communication_style.clone(),
        uri: machine.endpoint.uri.clone(),
        thumbprint: machine.endpoint.thumbprint.clone(),
    }
}

/// The located package of one reference of `action`.
fn located(
    step: &Step,
    action: &Action,
    reference: &PackageReference,
    packages: &ResolvedPackages,
) -> Result<JobPackage, PlanError> {
    let name = reference.reference_name().to_owned();
    match packages.get(&(action.name.clone(), name.clone())) {
        Some(Ok(package)) => {
            let mut package = package.clone();
            // `Extract` defaults to true; only an explicit "False" keeps the file as it is.
            package.extract = !reference
                .properties
                .get("Extract")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
            Ok(package)
        }
        Some(Err(reason)) => Err(PlanError(format!("Step '{}': {reason}", step.name))),
        None => Err(PlanError(format!(
            "Step '{}': the release has no version of package '{}'{}; create a new release.",
            step.name,
            reference.package_id,
            if name.is_empty() {
                String::new()
            } else {
                format!(" (reference '{name}')")
            }
        ))),
    }
}

/// The action's primary package: the reference without a name, else its only reference.
fn primary<'a>(step: &Step, action: &'a Action) -> Result<&'a PackageReference, PlanError> {
    action
        .packages
        .iter()
        .find(|p| p.reference_name().is_empty())
        .or(match action.packages.as_slice() {
            [only] => Some(only),
            _ => None,
        })
        .ok_or_else(|| {
            PlanError(format!(
                "Step '{}' needs a package, and none is selected on the action.",
                step.name
            ))
        })
}

/// The file features an action enables, with their target patterns. Octopus's step editor
/// lists an enabled feature in `Octopus.Action.EnabledFeatures` (which is what Calamari reads)
/// and also sets the feature's own `...Enabled` property to `True`; either turns it on here.
fn file_substitution(action: &Action) -> FileSubstitution {
    let features: Vec<&str> = action
        .properties
        .get("Octopus.Action.EnabledFeatures")
        .map(|list| list.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let targets = |feature: &str, enabled: &str, targets: &str| -> Vec<String> {
        let on = features.iter().any(|f| f.eq_ignore_ascii_case(feature))
            || is_true(action.properties.get(enabled));
        if !on {
            return Vec::new();
        }
        action
            .properties
            .get(targets)
            .map(|text| {
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    FileSubstitution {
        substitute_in_files: targets(
            "Octopus.Features.SubstituteInFiles",
            "Octopus.Action.SubstituteInFiles.Enabled",
            "Octopus.Action.SubstituteInFiles.TargetFiles",
        ),
        structured_variables: targets(
            "Octopus.Features.JsonConfigurationVariables",
            "Octopus.Action.Package.JsonConfigurationVariablesEnabled",
            "Octopus.Action.Package.JsonConfigurationVariablesTargets",
        ),
    }
}

fn plan_action(
    step: &Step,
    action: &Action,
    inputs: &PlanInputs<'_>,
) -> Result<JobWork, PlanError> {
    let all_packages = |skip: Option<&PackageReference>| {
        action
            .packages
            .iter()
            .filter(|p| skip.is_none_or(|s| !std::ptr::eq(*p, s)))
            .map(|p| located(step, action, p, inputs.packages))
            .collect::<Result<Vec<_>, _>>()
    };
    match action.action_type.as_str() {
        "Octopus.Script" => {
            let source = action
                .properties
                .get("Octopus.Action.Script.ScriptSource")
                .map(String::as_str)
                .unwrap_or("Inline");
            if source.eq_ignore_ascii_case("Package") {
                let file_name = action
                    .properties
                    .get("Octopus.Action.Script.ScriptFileName")
                    .map(|f| f.trim().replace('\\', "/"))
                    .filter(|f| !f.is_empty())
                    .ok_or_else(|| {
                        PlanError(format!(
                            "Step '{}' runs a script from a package, but names no script file (Octopus.Action.Script.ScriptFileName).",
                            step.name
                        ))
                    })?;
                let syntax = ScriptSyntax::from_file_name(&file_name).ok_or_else(|| {
                    PlanError(format!(
                        "Step '{}': the script file '{file_name}' is not a .sh, .py or .ps1 file.",
                        step.name
                    ))
                })?;
                let parameters_text = action
                    .properties
                    .get("Octopus.Action.Script.ScriptParameters")
                    .map(String::as_str)
                    .unwrap_or("");
                let parameters = shlex::split(parameters_text).ok_or_else(|| {
                    PlanError(format!(
                        "Step '{}': the script parameters have an unclosed quote.",
                        step.name
                    ))
                })?;
                let primary_reference = primary(step, action)?;
                let mut package = located(step, action, primary_reference, inputs.packages)?;
                package.extract = true;
                return Ok(JobWork::PackageScript {
                    syntax,
                    package,
                    file_name,
                    parameters,
                    packages: all_packages(Some(primary_reference))?,
                    file_substitution: file_substitution(action),
                });
            }
            if !source.eq_ignore_ascii_case("Inline") {
                return Err(PlanError(format!(
                    "Step '{}' has the script source '{source}'; use Inline or Package.",
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
            Ok(JobWork::Script {
                syntax,
                body,
                packages: all_packages(None)?,
                file_substitution: file_substitution(action),
            })
        }
        "Octopus.TentaclePackage" => {
            // Octopus runs this on deployment targets; a step without target roles (or marked
            // to run on the server) deploys on a worker.
            let mut package = located(step, action, primary(step, action)?, inputs.packages)?;
            package.extract = true;
            Ok(JobWork::DeployPackage {
                package,
                environment_name: inputs.environment_name.to_owned(),
                file_substitution: file_substitution(action),
            })
        }
        other => Err(PlanError(format!(
            "Step '{}' uses the action type '{other}', which is not available in this version of Cuttle yet.",
            step.name
        ))),
    }
}

/// Plans every applicable action in process order.
pub fn plan(process: &DeploymentProcess, inputs: &PlanInputs<'_>) -> Result<Plan, PlanError> {
    let mut jobs = Vec::new();
    let mut notes = Vec::new();
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
        for action in step
            .actions
            .iter()
            .filter(|a| applies(a, inputs.deployment, inputs.tenant_tags))
        {
            let work = plan_action(step, action, inputs)?;
            // (the machine variables are scoped to, where the job runs)
            let (targets, parallel_window): (Vec<(Option<&Machine>, Option<JobTarget>)>, _) =
                match target_roles(step, action) {
                    None => (
                        vec![(
                            None,
                            worker_for(step, action, &work, inputs)?.map(job_target),
                        )],
                        None,
                    ),
                    Some(roles) => {
                        let on_targets = targets_for(&roles, inputs.targets);
                        if on_targets.is_empty() {
                            let why = format!(
                                "Step '{}' runs on deployment targets with the role(s) '{}', but there are no enabled deployment targets with those roles in this environment",
                                step.name,
                                roles.join(", ")
                            );
                            if inputs.allow_no_targets {
                                notes.push(format!(
                                "{why}; the project allows deployments to no targets, so the step is skipped."
                            ));
                                continue;
                            }
                            return Err(PlanError(format!("{why}.")));
                        }
                        let window = max_parallelism(step, action, inputs)?;
                        (
                            on_targets
                                .into_iter()
                                .map(|machine| (Some(machine), Some(job_target(machine))))
                                .collect(),
                            Some(window),
                        )
                    }
                };
            // One job per target; the orchestrator runs them side by side within the window.
            for (machine, target) in targets {
                let variables = variables::job_variables(
                    inputs.variables,
                    inputs.system,
                    &step.name,
                    &action.name,
                    &JobScope {
                        environment_id: &inputs.deployment.environment_id,
                        channel_id: &inputs.deployment.channel_id,
                        action_id: &action.id,
                        machine,
                        tenant_id: inputs.deployment.tenant_id.as_deref(),
                        tenant_tags: inputs.tenant_tags,
                    },
                );
                jobs.push(PlannedJob {
                    step_number: index as i32 + 1,
                    step_name: step.name.clone(),
                    action_name: action.name.clone(),
                    condition: condition.to_owned(),
                    work: work.clone(),
                    target,
                    variables,
                    parallel_window,
                });
            }
        }
    }
    Ok(Plan { jobs, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn worker_steps_go_to_an_agent_of_their_pool_with_or_without_packages() {
        let agent = |name: &str, pool: &str| Machine {
            id: format!("Workers-{name}"),
            name: name.into(),
            worker_pool_ids: vec![pool.into()],
            ..Machine::default()
        };
        let agents = [agent("a", "WorkerPools-1"), agent("b", "WorkerPools-2")];
        let deployment = Deployment {
            id: "Deployments-1".into(),
            ..Deployment::default()
        };
        let inputs = PlanInputs {
            deployment: &deployment,
            environment_name: "Test",
            packages: &ResolvedPackages::new(),
            targets: &[],
            allow_no_targets: false,
            variables: &[],
            system: &BTreeMap::new(),
            worker_agents: &agents,
            default_worker_pool: Some("WorkerPools-1"),
            tenant_tags: None,
        };
        let script = JobWork::Script {
            syntax: ScriptSyntax::Bash,
            body: "echo".into(),
            packages: Vec::new(),
            file_substitution: FileSubstitution::default(),
        };
        let action = |pool: Option<&str>| Action {
            id: "a1".into(),
            properties: pool
                .map(|p| BTreeMap::from([("Octopus.Action.WorkerPoolId".to_owned(), p.to_owned())]))
                .unwrap_or_default(),
            ..Action::default()
        };
        let step = Step {
            name: "Run".into(),
            ..Step::default()
        };
        let chosen = |action: &Action, work: &JobWork| {
            worker_for(&step, action, work, &inputs)
                .unwrap()
                .map(|m| m.name.clone())
        };
        assert_eq!(chosen(&action(None), &script).as_deref(), Some("a"));
        assert_eq!(
            chosen(&action(Some("WorkerPools-2")), &script).as_deref(),
            Some("b")
        );
        assert_eq!(chosen(&action(Some("WorkerPools-9")), &script), None);
        let with_packages = JobWork::Script {
            packages: vec![JobPackage {
                reference_name: "Tools".into(),
                package_id: "Tools".into(),
                version: "1.0.0".into(),
                extension: ".zip".into(),
                sha256: String::new(),
                size_bytes: 0,
                blob_key: String::new(),
                extract: true,
            }],
            syntax: ScriptSyntax::Bash,
            body: "echo".into(),
            file_substitution: FileSubstitution::default(),
        };
        // Agents stage packages too; only a health check never goes to a pool.
        assert_eq!(chosen(&action(None), &with_packages).as_deref(), Some("a"));
        assert_eq!(chosen(&action(None), &JobWork::HealthCheck), None);

        // A worker pool variable, scoped per environment, picks the pool.
        let pool_variable = |value: &str, environment: &str| Variable {
            name: "Pool".into(),
            value: Some(value.into()),
            scope: BTreeMap::from([("Environment".to_owned(), vec![environment.to_owned()])]),
            ..Variable::default()
        };
        let variables = [
            pool_variable("WorkerPools-2", "Environments-1"),
            pool_variable("WorkerPools-1", "Environments-9"),
        ];
        let deployment = Deployment {
            environment_id: "Environments-1".into(),
            ..deployment.clone()
        };
        let scoped = PlanInputs {
            deployment: &deployment,
            variables: &variables,
            ..inputs
        };
        let by_variable = |name: &str| {
            let action = Action {
                id: "a1".into(),
                properties: BTreeMap::from([(
                    "Octopus.Action.WorkerPoolVariable".to_owned(),
                    name.to_owned(),
                )]),
                ..Action::default()
            };
            worker_for(&step, &action, &script, &scoped).map(|m| m.map(|m| m.name.clone()))
        };
        assert_eq!(by_variable("Pool"), Ok(Some("b".to_owned())));
        let err = by_variable("Missing").unwrap_err();
        assert!(
            err.0.contains("'Missing'") && err.0.contains("no value"),
            "{err}"
        );
    }

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

    fn run_plan(
        process: &DeploymentProcess,
        deployment: &Deployment,
    ) -> Result<Vec<PlannedJob>, PlanError> {
        plan(
            process,
            &PlanInputs {
                deployment,
                environment_name: "Test",
                packages: &ResolvedPackages::new(),
                targets: &[],
                allow_no_targets: false,
                variables: &[],
                system: &BTreeMap::new(),
                worker_agents: &[],
                default_worker_pool: None,
                tenant_tags: None,
            },
        )
        .map(|plan| plan.jobs)
    }

    fn plan_in(
        process: &DeploymentProcess,
        environment_name: &str,
        packages: &ResolvedPackages,
    ) -> Result<Vec<PlannedJob>, PlanError> {
        plan(
            process,
            &PlanInputs {
                deployment: &deployment(),
                environment_name,
                packages,
                targets: &[],
                allow_no_targets: false,
                variables: &[],
                system: &BTreeMap::new(),
                worker_agents: &[],
                default_worker_pool: None,
                tenant_tags: None,
            },
        )
        .map(|plan| plan.jobs)
    }

    fn job_package(reference: &str) -> JobPackage {
        JobPackage {
            reference_name: reference.into(),
            package_id: "Acme.Web".into(),
            version: "1.2.3".into(),
            extension: ".zip".into(),
            sha256: "ab".repeat(32),
            size_bytes: 10,
            blob_key: "packages/Spaces-1/x".into(),
            extract: true,
        }
    }

    fn package_action(action_type: &str, properties: &[(&str, &str)], refs: &[&str]) -> Step {
        let mut step = script_step("Deploy", properties);
        step.actions[0].action_type = action_type.into();
        step.actions[0].packages = refs
            .iter()
            .map(|name| PackageReference {
                name: Some(name.to_string()),
                package_id: "Acme.Web".into(),
                feed_id: "feeds-builtin".into(),
                ..PackageReference::default()
            })
            .collect();
        step
    }

    #[test]
    fn a_deploy_a_package_step_carries_the_located_package_and_environment() {
        let process = DeploymentProcess {
            steps: vec![package_action("Octopus.TentaclePackage", &[], &[""])],
            ..DeploymentProcess::default()
        };
        let mut packages = ResolvedPackages::new();
        packages.insert(("Deploy".into(), String::new()), Ok(job_package("")));
        let jobs = plan_in(&process, "Production", &packages).unwrap();
        assert_eq!(
            jobs[0].work,
            JobWork::DeployPackage {
                package: job_package(""),
                environment_name: "Production".into(),
                file_substitution: FileSubstitution::default(),
            }
        );
    }

    #[test]
    fn enabled_file_features_carry_their_target_patterns_one_per_line() {
        let process = DeploymentProcess {
            steps: vec![package_action(
                "Octopus.TentaclePackage",
                &[
                    (
                        "Octopus.Action.EnabledFeatures",
                        "Octopus.Features.ConfigurationTransforms, Octopus.Features.SubstituteInFiles",
                    ),
                    (
                        "Octopus.Action.SubstituteInFiles.TargetFiles",
                        "config/*.conf\r\n\n  **/*.template  \n",
                    ),
                    // Only the Enabled property: still on.
                    (
                        "Octopus.Action.Package.JsonConfigurationVariablesEnabled",
                        "True",
                    ),
                    (
                        "Octopus.Action.Package.JsonConfigurationVariablesTargets",
                        "appsettings.json",
                    ),
                ],
                &[""],
            )],
            ..DeploymentProcess::default()
        };
        let mut packages = ResolvedPackages::new();
        packages.insert(("Deploy".into(), String::new()), Ok(job_package("")));
        let jobs = plan_in(&process, "Test", &packages).unwrap();
        let JobWork::DeployPackage {
            file_substitution, ..
        } = &jobs[0].work
        else {
            panic!("{:?}", jobs[0].work);
        };
        assert_eq!(
            file_substitution,
            &FileSubstitution {
                substitute_in_files: vec!["config/*.conf".into(), "**/*.template".into()],
                structured_variables: vec!["appsettings.json".into()],
            }
        );
    }

    #[test]
    fn file_features_that_are_not_enabled_leave_their_targets_unused() {
        let process = DeploymentProcess {
            steps: vec![package_action(
                "Octopus.Script",
                &[
                    ("Octopus.Action.Script.ScriptSource", "Package"),
                    ("Octopus.Action.Script.ScriptFileName", "run.sh"),
                    (
                        "Octopus.Action.EnabledFeatures",
                        "Octopus.Features.SubstituteInFiles",
                    ),
                    ("Octopus.Action.SubstituteInFiles.TargetFiles", "app.conf"),
                    // Targets kept from when the feature was on, and a flag that is not True.
                    (
                        "Octopus.Action.Package.JsonConfigurationVariablesEnabled",
                        "False",
                    ),
                    (
                        "Octopus.Action.Package.JsonConfigurationVariablesTargets",
                        "appsettings.json",
                    ),
                ],
                &[""],
            )],
            ..DeploymentProcess::default()
        };
        let mut packages = ResolvedPackages::new();
        packages.insert(("Deploy".into(), String::new()), Ok(job_package("")));
        let jobs = plan_in(&process, "Test", &packages).unwrap();
        let JobWork::PackageScript {
            file_substitution, ..
        } = &jobs[0].work
        else {
            panic!("{:?}", jobs[0].work);
        };
        assert_eq!(
            file_substitution,
            &FileSubstitution {
                substitute_in_files: vec!["app.conf".into()],
                structured_variables: vec![],
            }
        );
    }

    #[test]
    fn a_package_that_left_the_feed_fails_the_plan_with_its_reason() {
        let process = DeploymentProcess {
            steps: vec![package_action("Octopus.TentaclePackage", &[], &[""])],
            ..DeploymentProcess::default()
        };
        let mut packages = ResolvedPackages::new();
        packages.insert(
            ("Deploy".into(), String::new()),
            Err("package 'Acme.Web' version 1.2.3 is no longer in the built-in feed".into()),
        );
        let err = plan_in(&process, "Test", &packages).unwrap_err();
        assert!(err.0.contains("no longer in the built-in feed"), "{err}");
        assert!(err.0.starts_with("Step 'Deploy'"), "{err}");
    }

    #[test]
    fn a_script_from_a_package_takes_its_syntax_from_the_file_and_splits_parameters() {
        let process = DeploymentProcess {
            steps: vec![package_action(
                "Octopus.Script",
                &[
                    ("Octopus.Action.Script.ScriptSource", "Package"),
                    ("Octopus.Action.Script.ScriptFileName", "scripts\\run.py"),
                    (
                        "Octopus.Action.Script.ScriptParameters",
                        "--name 'two words' -v",
                    ),
                ],
                &["", "Tools"],
            )],
            ..DeploymentProcess::default()
        };
        let mut packages = ResolvedPackages::new();
        packages.insert(("Deploy".into(), String::new()), Ok(job_package("")));
        packages.insert(("Deploy".into(), "Tools".into()), Ok(job_package("Tools")));
        let jobs = plan_in(&process, "Test", &packages).unwrap();
        assert_eq!(
            jobs[0].work,
            JobWork::PackageScript {
                syntax: ScriptSyntax::Python,
                package: job_package(""),
                file_name: "scripts/run.py".into(),
                parameters: vec!["--name".into(), "two words".into(), "-v".into()],
                packages: vec![job_package("Tools")],
                file_substitution: FileSubstitution::default(),
            }
        );
    }

    #[test]
    fn a_package_reference_marked_not_to_extract_stays_a_file() {
        let mut step = package_action(
            "Octopus.Script",
            &[
                ("Octopus.Action.Script.Syntax", "Bash"),
                ("Octopus.Action.Script.ScriptBody", "ls"),
            ],
            &["Tools"],
        );
        step.actions[0].packages[0]
            .properties
            .insert("Extract".into(), "False".into());
        let process = DeploymentProcess {
            steps: vec![step],
            ..DeploymentProcess::default()
        };
        let mut packages = ResolvedPackages::new();
        packages.insert(("Deploy".into(), "Tools".into()), Ok(job_package("Tools")));
        let jobs = plan_in(&process, "Test", &packages).unwrap();
        let JobWork::Script { packages, .. } = &jobs[0].work else {
            panic!("expected a script job, got {:?}", jobs[0].work);
        };
        assert!(!packages[0].extract);
    }

    #[test]
    fn a_step_for_a_role_runs_once_per_matching_target_in_name_order() {
        let mut step = script_step(
            "Web",
            &[
                ("Octopus.Action.Script.Syntax", "Bash"),
                ("Octopus.Action.Script.ScriptBody", "hostname"),
            ],
        );
        step.properties
            .insert("Octopus.Action.TargetRoles".into(), "web, api".into());
        let machine = |name: &str, roles: &[&str]| Machine {
            id: format!("Machines-{name}"),
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            endpoint: cuttle_wire::resources::Endpoint {
                communication_style: "TentaclePassive".into(),
                uri: format!("https://{name}:10933/"),
                thumbprint: "AB".repeat(20),
                ..Default::default()
            },
            ..Machine::default()
        };
        let targets = [
            machine("web-02", &["WEB"]),
            machine("db-01", &["db"]),
            machine("api-01", &["api"]),
        ];
        let process = DeploymentProcess {
            steps: vec![step],
            ..DeploymentProcess::default()
        };
        let jobs = plan(
            &process,
            &PlanInputs {
                deployment: &deployment(),
                environment_name: "Test",
                packages: &ResolvedPackages::new(),
                targets: &targets,
                allow_no_targets: false,
                variables: &[],
                system: &BTreeMap::new(),
                worker_agents: &[],
                default_worker_pool: None,
                tenant_tags: None,
            },
        )
        .unwrap()
        .jobs;
        let names: Vec<_> = jobs
            .iter()
            .map(|j| j.target.as_ref().unwrap().name.as_str())
            .collect();
        assert_eq!(names, ["api-01", "web-02"]);
        assert!(jobs.iter().all(|j| j.parallel_window == Some(0)));
        assert_eq!(
            jobs[1].target.as_ref().unwrap().uri,
            "https://web-02:10933/"
        );
    }

    fn role_step(extra: &[(&str, &str)]) -> Step {
        let mut properties = vec![
            ("Octopus.Action.Script.Syntax", "Bash"),
            ("Octopus.Action.Script.ScriptBody", "hostname"),
        ];
        properties.extend_from_slice(extra);
        let mut step = script_step("Web", &properties);
        step.properties
            .insert("Octopus.Action.TargetRoles".into(), "web".into());
        step
    }

    fn web_target() -> Machine {
        Machine {
            id: "Machines-1".into(),
            name: "web-01".into(),
            roles: vec!["web".into()],
            ..Machine::default()
        }
    }

    fn plan_with(
        step: Step,
        targets: &[Machine],
        allow_no_targets: bool,
    ) -> Result<Plan, PlanError> {
        let process = DeploymentProcess {
            steps: vec![step],
            ..DeploymentProcess::default()
        };
        plan(
            &process,
            &PlanInputs {
                deployment: &deployment(),
                environment_name: "Test",
                packages: &ResolvedPackages::new(),
                targets,
                allow_no_targets,
                variables: &[],
                system: &BTreeMap::new(),
                worker_agents: &[],
                default_worker_pool: None,
                tenant_tags: None,
            },
        )
    }

    #[test]
    fn max_parallelism_sets_the_rolling_window_and_rejects_what_is_not_a_count() {
        let step = role_step(&[]);
        let mut rolling = step.clone();
        rolling
            .properties
            .insert("Octopus.Action.MaxParallelism".into(), " 3 ".into());
        let jobs = plan_with(rolling, &[web_target()], false).unwrap().jobs;
        assert_eq!(jobs[0].parallel_window, Some(3));
        for bad in ["0", "-1", "two", "#{Unset}"] {
            let mut step = step.clone();
            step.properties
                .insert("Octopus.Action.MaxParallelism".into(), bad.into());
            let err = plan_with(step, &[web_target()], false).unwrap_err();
            assert!(
                err.0.contains("MaxParallelism") && err.0.contains(bad),
                "{err}"
            );
        }
    }

    #[test]
    fn max_parallelism_can_be_bound_to_a_variable_of_the_environment() {
        let variable = |name: &str, value: &str, environment: &str, sensitive: bool| Variable {
            name: name.into(),
            value: Some(value.into()),
            is_sensitive: sensitive,
            scope: BTreeMap::from([("Environment".to_owned(), vec![environment.to_owned()])]),
            ..Variable::default()
        };
        let variables = [
            variable("Window", "2", "Environments-1", false),
            variable("Window", "7", "Environments-9", false),
            variable("Half", "#{Window}", "Environments-1", false),
            variable("Secret", "5", "Environments-1", true),
        ];
        let window_of = |written: &str| {
            let mut step = role_step(&[]);
            step.properties
                .insert("Octopus.Action.MaxParallelism".into(), written.into());
            let process = DeploymentProcess {
                steps: vec![step],
                ..DeploymentProcess::default()
            };
            let inputs = PlanInputs {
                deployment: &deployment(),
                environment_name: "Test",
                packages: &ResolvedPackages::new(),
                targets: &[web_target()],
                allow_no_targets: false,
                variables: &variables,
                system: &BTreeMap::new(),
                worker_agents: &[],
                default_worker_pool: None,
                tenant_tags: None,
            };
            plan(&process, &inputs).map(|plan| plan.jobs[0].parallel_window)
        };
        assert_eq!(window_of("#{Window}"), Ok(Some(2)));
        assert_eq!(window_of(" #{Half} "), Ok(Some(2)));
        // A sealed sensitive value is not read at planning: the reference stays as written.
        let err = window_of("#{Secret}").unwrap_err();
        assert!(err.0.contains("'#{Secret}'"), "{err}");
        let err = window_of("#{Window | Prepend x}").unwrap_err();
        assert!(err.0.contains("evaluates to 'x2'"), "{err}");
    }

    #[test]
    fn a_project_that_allows_no_targets_skips_the_step_with_a_note() {
        let plan = plan_with(role_step(&[]), &[], true).unwrap();
        assert!(plan.jobs.is_empty());
        assert_eq!(plan.notes.len(), 1);
        assert!(plan.notes[0].contains("'web'") && plan.notes[0].contains("skipped"));
        let err = plan_with(role_step(&[]), &[], false).unwrap_err();
        assert!(err.0.contains("no enabled deployment targets"), "{err}");
    }

    #[test]
    fn server_steps_run_alone() {
        let jobs = plan_with(
            role_step(&[("Octopus.Action.RunOnServer", "true")]),
            &[],
            false,
        )
        .unwrap()
        .jobs;
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].parallel_window, None);
        assert_eq!(jobs[0].target, None);
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
        let jobs = run_plan(&process, &deployment()).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[1].step_number, 2);
        assert_eq!(
            jobs[0].work,
            JobWork::Script {
                syntax: ScriptSyntax::Bash,
                body: "echo a".into(),
                packages: Vec::new(),
                file_substitution: FileSubstitution::default(),
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
        let err = run_plan(&process, &deployment()).unwrap_err();
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
        assert!(run_plan(&process, &deployment).unwrap().is_empty());
    }
}
