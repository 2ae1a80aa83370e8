//! Variables of one job: the release's frozen project variables, each name resolved to the value
//! whose scope best matches the job (as Octopus ranks them: action, then machine, then role, then
//! environment, then channel, then unscoped), Octopus's system variables, and the substitution
//! of `#{...}` into what the job runs (`libs/template`). Unknown variables stay as written.

use cuttle_contracts::JobWork;
use cuttle_store::tasks::Job;
use cuttle_template::VariableDictionary;
use cuttle_wire::resources::{Machine, Variable};
use std::collections::BTreeMap;

/// What a variable's scope is compared with.
pub struct JobScope<'a> {
    /// The deployment's environment.
    pub environment_id: &'a str,
    /// The release's channel.
    pub channel_id: &'a str,
    /// The action being planned.
    pub action_id: &'a str,
    /// The deployment target, for steps that run on one.
    pub machine: Option<&'a Machine>,
}

/// How specific a matching scope is; higher wins. `None`: the scope excludes this job.
fn rank(variable: &Variable, job: &JobScope<'_>) -> Option<[bool; 5]> {
    let mut specific = [false; 5];
    for (dimension, values) in &variable.scope {
        if values.is_empty() {
            continue;
        }
        let any = |wanted: &str| values.iter().any(|v| v.eq_ignore_ascii_case(wanted));
        let (slot, matched) = match dimension.as_str() {
            "Action" => (0, any(job.action_id)),
            "Machine" => (1, job.machine.is_some_and(|m| any(&m.id))),
            "Role" | "TargetTag" => (
                2,
                job.machine
                    .is_some_and(|m| m.roles.iter().any(|role| any(role))),
            ),
            "Environment" => (3, any(job.environment_id)),
            "Channel" => (4, any(job.channel_id)),
            // A dimension Cuttle does not know yet (tenant tags, process owners) cannot match.
            _ => return None,
        };
        if !matched {
            return None;
        }
        specific[slot] = true;
    }
    Some(specific)
}

/// The job's dictionary: `system` variables, the job's own (`Octopus.Action.Name`,
/// `Octopus.Machine.*`), then each project variable's best-matching value.
pub fn dictionary(
    variables: &[Variable],
    system: &BTreeMap<String, String>,
    step_name: &str,
    action_name: &str,
    job: &JobScope<'_>,
) -> VariableDictionary {
    let mut dictionary = VariableDictionary::new();
    for (name, value) in system {
        dictionary.set(name.clone(), value.clone());
    }
    dictionary.set("Octopus.Step.Name", step_name);
    dictionary.set("Octopus.Action.Name", action_name);
    if let Some(machine) = job.machine {
        dictionary.set("Octopus.Machine.Id", machine.id.clone());
        dictionary.set("Octopus.Machine.Name", machine.name.clone());
        dictionary.set("Octopus.Machine.Roles", machine.roles.join(","));
    }
    let mut chosen: BTreeMap<String, ([bool; 5], &str)> = BTreeMap::new();
    for variable in variables {
        let Some(rank) = rank(variable, job) else {
            continue;
        };
        let value = variable.value.as_deref().unwrap_or("");
        let key = variable.name.to_lowercase();
        match chosen.get(&key) {
            // Equal ranks keep the first defined, so the order in the set decides ties.
            Some((best, _)) if *best >= rank => {}
            _ => {
                chosen.insert(key, (rank, value));
            }
        }
    }
    // Names keep the case of their first definition.
    for variable in variables {
        if let Some((_, value)) = chosen.remove(&variable.name.to_lowercase()) {
            dictionary.set(variable.name.clone(), value);
        }
    }
    dictionary
}

/// Output variables of earlier jobs, as Octopus names them: `Octopus.Action[<action>].Output.<name>`
/// (the value from this job's own machine when there is one, else from the last job that set it)
/// and `Octopus.Action[<action>].Output[<machine>].<name>` for each machine's own.
pub fn output_dictionary(earlier: &[Job], machine: Option<&str>) -> VariableDictionary {
    let mut dictionary = VariableDictionary::new();
    let mut own_machine = Vec::new();
    for job in earlier {
        let outputs: BTreeMap<String, String> = job
            .output_variables
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        let job_machine =
            cuttle_contracts::StepJob::target_of(&job.payload).map(|target| target.name);
        for (name, value) in outputs {
            let action = &job.action_name;
            if let Some(on) = &job_machine {
                dictionary.set(
                    format!("Octopus.Action[{action}].Output[{on}].{name}"),
                    value.clone(),
                );
            }
            let plain = format!("Octopus.Action[{action}].Output.{name}");
            if job_machine.is_some() && job_machine.as_deref() == machine {
                own_machine.push((plain, value));
            } else {
                dictionary.set(plain, value);
            }
        }
    }
    // This machine's own values win over other machines'.
    for (name, value) in own_machine {
        dictionary.set(name, value);
    }
    dictionary
}

/// Substitutes `#{...}` in what the job runs: inline script bodies and script parameters.
pub fn substitute(work: &mut JobWork, dictionary: &VariableDictionary) {
    match work {
        JobWork::Script { body, .. } => *body = dictionary.evaluate_lenient(body),
        JobWork::PackageScript { parameters, .. } => {
            for parameter in parameters {
                *parameter = dictionary.evaluate_lenient(parameter);
            }
        }
        JobWork::DeployPackage { .. } | JobWork::HealthCheck => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variable(name: &str, value: &str, scope: &[(&str, &[&str])]) -> Variable {
        Variable {
            name: name.into(),
            value: Some(value.into()),
            scope: scope
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            ..Variable::default()
        }
    }

    fn web() -> Machine {
        Machine {
            id: "Machines-1".into(),
            name: "web-01".into(),
            roles: vec!["web".into()],
            ..Machine::default()
        }
    }

    fn scope(machine: Option<&Machine>) -> JobScope<'_> {
        JobScope {
            environment_id: "Environments-1",
            channel_id: "Channels-1",
            action_id: "Action-1",
            machine,
        }
    }

    #[test]
    fn the_most_specific_matching_scope_wins() {
        let variables = vec![
            variable("Greeting", "plain", &[]),
            variable("Greeting", "test", &[("Environment", &["Environments-1"])]),
            variable("Greeting", "prod", &[("Environment", &["Environments-2"])]),
            variable("Greeting", "web", &[("Role", &["WEB"])]),
            variable("Greeting", "this machine", &[("Machine", &["Machines-1"])]),
        ];
        let system = BTreeMap::new();
        let machine = web();
        let on_target = dictionary(&variables, &system, "S", "A", &scope(Some(&machine)));
        assert_eq!(on_target.evaluate_lenient("#{Greeting}"), "this machine");
        let on_server = dictionary(&variables, &system, "S", "A", &scope(None));
        assert_eq!(on_server.evaluate_lenient("#{Greeting}"), "test");
        let other = Machine {
            id: "Machines-2".into(),
            ..web()
        };
        let on_other = dictionary(&variables, &system, "S", "A", &scope(Some(&other)));
        assert_eq!(on_other.evaluate_lenient("#{Greeting}"), "web");
    }

    fn finished(action: &str, machine: Option<&str>, outputs: &[(&str, &str)]) -> Job {
        let target = machine.map(|name| cuttle_contracts::JobTarget {
            machine_id: format!("Machines-{name}"),
            name: name.into(),
            communication_style: "TentaclePassive".into(),
            uri: String::new(),
            thumbprint: String::new(),
        });
        let message = cuttle_contracts::StepJob {
            task_id: "ServerTasks-1".into(),
            job_id: format!("{action}-{machine:?}"),
            space_id: "Spaces-1".into(),
            step_name: action.into(),
            action_name: action.into(),
            work: JobWork::HealthCheck,
            target,
        };
        let outputs: BTreeMap<&str, &str> = outputs.iter().copied().collect();
        Job {
            job_id: message.job_id.clone(),
            task_id: "ServerTasks-1".into(),
            position: 0,
            step_number: 1,
            step_name: action.into(),
            action_name: action.into(),
            condition: "Success".into(),
            status: "Success".into(),
            payload: serde_json::to_string(&message).unwrap(),
            worker: None,
            dispatched_at: None,
            started_at: None,
            heartbeat_at: None,
            ended_at: None,
            exit_code: Some(0),
            error: None,
            output_variables: Some(serde_json::to_string(&outputs).unwrap()),
            parallel_window: None,
        }
    }

    #[test]
    fn output_variables_prefer_this_machine_and_name_each_machine() {
        let earlier = [
            finished("Deploy", Some("web-01"), &[("Dir", "/a")]),
            finished("Deploy", Some("web-02"), &[("Dir", "/b")]),
        ];
        let on_first = output_dictionary(&earlier, Some("web-01"));
        assert_eq!(
            on_first.evaluate_lenient("#{Octopus.Action[Deploy].Output.Dir}"),
            "/a"
        );
        assert_eq!(
            on_first.evaluate_lenient("#{Octopus.Action[Deploy].Output[web-02].Dir}"),
            "/b"
        );
        let on_server = output_dictionary(&earlier, None);
        assert_eq!(
            on_server.evaluate_lenient("#{Octopus.Action[Deploy].Output.Dir}"),
            "/b"
        );
    }

    #[test]
    fn unknown_dimensions_and_names_are_left_alone() {
        let variables = vec![variable("Secret", "x", &[("TenantTag", &["gold"])])];
        let dict = dictionary(&variables, &BTreeMap::new(), "S", "A", &scope(None));
        assert_eq!(
            dict.evaluate_lenient("#{Secret} #{Missing}"),
            "#{Secret} #{Missing}"
        );
    }

    #[test]
    fn system_and_job_variables_are_set_and_scripts_are_substituted() {
        let system = BTreeMap::from([("Octopus.Environment.Name".to_owned(), "Test".to_owned())]);
        let machine = web();
        let dict = dictionary(&[], &system, "Deploy", "Run", &scope(Some(&machine)));
        let mut work = JobWork::Script {
            syntax: cuttle_domain::script::ScriptSyntax::Bash,
            body: "echo #{Octopus.Environment.Name} #{Octopus.Machine.Name} #{Octopus.Action.Name}"
                .into(),
            packages: Vec::new(),
        };
        substitute(&mut work, &dict);
        let JobWork::Script { body, .. } = work else {
            unreachable!()
        };
        assert_eq!(body, "echo Test web-01 Run");
    }
}
