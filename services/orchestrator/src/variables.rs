//! Variables of one job: the release's frozen project variables, each name resolved to the value
//! whose scope best matches the job (`cuttle_variables`), Octopus's system variables, and earlier
//! steps' output variables. The job carries them unevaluated; the worker that runs it evaluates
//! `#{...}` (it alone can open sensitive values) and hands them to scripts.

use cuttle_contracts::JobVariable;
use cuttle_secrets::Keyring;
use cuttle_store::tasks::Job;
use cuttle_wire::resources::Variable;
use std::collections::BTreeMap;

/// What a variable's scope is compared with (`cuttle_variables`).
pub use cuttle_variables::Scope as JobScope;

/// The job's variables: `system` variables, the job's own (`Octopus.Action.Name`,
/// `Octopus.Machine.*`), then each project variable's best-matching value. Later entries of the
/// same name win when the worker builds its dictionary.
pub fn job_variables(
    variables: &[Variable],
    system: &BTreeMap<String, String>,
    step_name: &str,
    action_name: &str,
    job: &JobScope<'_>,
) -> Vec<JobVariable> {
    let plain = |name: &str, value: &str| JobVariable {
        name: name.to_owned(),
        value: value.to_owned(),
        sensitive: false,
    };
    let mut out: Vec<JobVariable> = system
        .iter()
        .map(|(name, value)| plain(name, value))
        .collect();
    out.push(plain("Octopus.Step.Name", step_name));
    out.push(plain("Octopus.Action.Name", action_name));
    if let Some(machine) = job.machine {
        out.push(plain("Octopus.Machine.Id", &machine.id));
        out.push(plain("Octopus.Machine.Name", &machine.name));
        out.push(plain("Octopus.Machine.Roles", &machine.roles.join(",")));
    }
    out.extend(
        cuttle_variables::resolve(variables, job)
            .into_iter()
            .map(|best| JobVariable {
                name: best.name.clone(),
                value: best.value.clone().unwrap_or_default(),
                sensitive: best.is_sensitive,
            }),
    );
    out
}

/// Output variables of earlier jobs, as Octopus names them: `Octopus.Action[<action>].Output.<name>`
/// (the value from this job's own machine when there is one, else from the last job that set it)
/// and `Octopus.Action[<action>].Output[<machine>].<name>` for each machine's own.
pub fn output_variables(earlier: &[Job], machine: Option<&str>) -> Vec<JobVariable> {
    let variable = |name: String, value: String| JobVariable {
        // The worker sealed the sensitive ones.
        sensitive: Keyring::is_sealed(&value),
        name,
        value,
    };
    let mut out = Vec::new();
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
                out.push(variable(
                    format!("Octopus.Action[{action}].Output[{on}].{name}"),
                    value.clone(),
                ));
            }
            let plain = format!("Octopus.Action[{action}].Output.{name}");
            if job_machine.is_some() && job_machine.as_deref() == machine {
                own_machine.push(variable(plain, value));
            } else {
                out.push(variable(plain, value));
            }
        }
    }
    // This machine's own values come last, so they win over other machines'.
    out.extend(own_machine);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cuttle_template::VariableDictionary;
    use cuttle_wire::resources::Machine;

    /// The dictionary a worker builds: later entries of a name win.
    fn to_dictionary(variables: Vec<JobVariable>) -> VariableDictionary {
        variables.into_iter().map(|v| (v.name, v.value)).collect()
    }

    fn output_dictionary(earlier: &[Job], machine: Option<&str>) -> VariableDictionary {
        to_dictionary(output_variables(earlier, machine))
    }

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
            tenant_id: None,
            tenant_tags: None,
        }
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
            work: cuttle_contracts::JobWork::HealthCheck,
            target,
            variables: Vec::new(),
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
    fn system_and_job_variables_are_set_and_sensitive_values_stay_sealed() {
        let system = BTreeMap::from([("Octopus.Environment.Name".to_owned(), "Test".to_owned())]);
        let machine = web();
        let secret = Variable {
            is_sensitive: true,
            ..variable("Password", "cuttle-sealed:v1:abc:xyz", &[])
        };
        let vars = job_variables(&[secret], &system, "Deploy", "Run", &scope(Some(&machine)));
        let password = vars
            .iter()
            .find(|v| v.name == "Password")
            .expect("password");
        assert!(password.sensitive);
        assert_eq!(password.value, "cuttle-sealed:v1:abc:xyz");
        let dict = to_dictionary(vars);
        assert_eq!(
            dict.evaluate_lenient(
                "#{Octopus.Environment.Name} #{Octopus.Machine.Name} #{Octopus.Action.Name} #{Octopus.Step.Name}"
            ),
            "Test web-01 Run Deploy"
        );
    }

    #[test]
    fn sealed_output_values_are_sensitive() {
        let earlier = [finished(
            "Make",
            None,
            &[("Token", "cuttle-sealed:v1:abc:xyz"), ("Plain", "p")],
        )];
        let outputs = output_variables(&earlier, None);
        let token = outputs
            .iter()
            .find(|v| v.name == "Octopus.Action[Make].Output.Token")
            .expect("token");
        assert!(token.sensitive);
        let plain = outputs
            .iter()
            .find(|v| v.name == "Octopus.Action[Make].Output.Plain")
            .expect("plain");
        assert!(!plain.sensitive);
    }
}
