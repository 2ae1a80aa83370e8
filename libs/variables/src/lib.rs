//! Octopus's variable scoping, pure: of the values a variable set holds under one name, which
//! applies to a job (or a preview) in a given environment, channel, action and machine.
//!
//! Values within one scope dimension are OR'ed, dimensions are AND'ed, and of the values that
//! match, the most specific wins, ranked as Octopus ranks them: action, then machine, then role,
//! then tenant, then tenant tag, then environment, then channel, then unscoped. Equal ranks keep the first
//! defined, so the order of the set (project variables before library sets') breaks ties.
//!
//! A `Tenant` scope is what a tenant's values for variable templates get ([`tenant_variables`]).
//! A `TenantTag` scope is a tenant tag filter (`cuttle_domain::tenant_tags`: tags of one tag set
//! OR'ed, tag sets AND'ed) and never matches an untenanted deployment. A dimension Cuttle does
//! not know yet (process owners) never matches.

use cuttle_wire::resources::{Machine, StoredTenantVariables, Variable, VariableTemplate};
use std::collections::BTreeMap;

/// What a variable's scope is compared with.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The deployment's environment.
    pub environment_id: &'a str,
    /// The release's channel.
    pub channel_id: &'a str,
    /// The action being planned.
    pub action_id: &'a str,
    /// The deployment target, for steps that run on one.
    pub machine: Option<&'a Machine>,
    /// The deployment's tenant; `None` for an untenanted deployment.
    pub tenant_id: Option<&'a str>,
    /// The tags of the deployment's tenant; `None` for an untenanted deployment.
    pub tenant_tags: Option<&'a [String]>,
}

/// How specific a variable's matching scope is; higher wins. `None`: its scope excludes `scope`.
fn rank(variable: &Variable, scope: &Scope<'_>) -> Option<[bool; 7]> {
    let mut specific = [false; 7];
    for (dimension, values) in &variable.scope {
        if values.is_empty() {
            continue;
        }
        let any = |wanted: &str| values.iter().any(|v| v.eq_ignore_ascii_case(wanted));
        let (slot, matched) = match dimension.as_str() {
            "Action" => (0, any(scope.action_id)),
            "Machine" => (1, scope.machine.is_some_and(|m| any(&m.id))),
            "Role" | "TargetTag" => (
                2,
                scope
                    .machine
                    .is_some_and(|m| m.roles.iter().any(|role| any(role))),
            ),
            "Tenant" => (3, scope.tenant_id.is_some_and(any)),
            "TenantTag" => (
                4,
                scope
                    .tenant_tags
                    .is_some_and(|tags| cuttle_domain::tenant_tags::matches(tags, values)),
            ),
            "Environment" => (5, any(scope.environment_id)),
            "Channel" => (6, any(scope.channel_id)),
            // A dimension Cuttle does not know yet (process owners) cannot match.
            _ => return None,
        };
        if !matched {
            return None;
        }
        specific[slot] = true;
    }
    Some(specific)
}

/// The variables that apply under `scope`: one per name (case-insensitive), the best-ranked
/// value, in the order their names were first defined.
pub fn resolve<'v>(variables: &'v [Variable], scope: &Scope<'_>) -> Vec<&'v Variable> {
    let mut chosen: BTreeMap<String, ([bool; 7], &Variable)> = BTreeMap::new();
    for variable in variables {
        let Some(rank) = rank(variable, scope) else {
            continue;
        };
        let key = variable.name.to_lowercase();
        match chosen.get(&key) {
            Some((best, _)) if *best >= rank => {}
            _ => {
                chosen.insert(key, (rank, variable));
            }
        }
    }
    let mut out = Vec::with_capacity(chosen.len());
    for variable in variables {
        if let Some((_, best)) = chosen.remove(&variable.name.to_lowercase()) {
            out.push(best);
        }
    }
    out
}

/// A tenant's values for the variable templates of a deployment, as variables scoped to the
/// tenant: each project template's value for `environment_id` (else its default), then each
/// library template's (one scoped to `environment_id`, else the unscoped one, else its default). A template with neither gives no variable. Values of
/// sensitive templates stay as stored (sealed) and are marked sensitive.
pub fn tenant_variables(
    tenant_id: &str,
    project: (&str, &[VariableTemplate]),
    environment_id: &str,
    libraries: &[(&str, &[VariableTemplate])],
    stored: &StoredTenantVariables,
) -> Vec<Variable> {
    let (project_id, project_templates) = project;
    let project_values = stored
        .project_variables
        .get(project_id)
        .and_then(|by_env| by_env.get(environment_id));
    let mut out = Vec::new();
    let mut give = |template: &VariableTemplate, value: Option<&String>| {
        let value = value.cloned().or_else(|| {
            (!template.is_sensitive())
                .then(|| template.default_text())
                .flatten()
        });
        if let Some(value) = value {
            out.push(Variable {
                id: format!("{tenant_id}-{}", template.id),
                name: template.name.clone(),
                value: Some(value),
                kind: if template.is_sensitive() {
                    "Sensitive".into()
                } else {
                    "String".into()
                },
                is_sensitive: template.is_sensitive(),
                scope: BTreeMap::from([("Tenant".to_owned(), vec![tenant_id.to_owned()])]),
                ..Variable::default()
            });
        }
    };
    for template in project_templates {
        give(template, project_values.and_then(|v| v.get(&template.id)));
    }
    for (library_id, templates) in libraries {
        for template in *templates {
            give(
                template,
                stored.library_value(library_id, &template.id, environment_id),
            );
        }
    }
    out
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

    fn scope(machine: Option<&Machine>) -> Scope<'_> {
        Scope {
            environment_id: "Environments-1",
            channel_id: "Channels-1",
            action_id: "Action-1",
            machine,
            tenant_id: None,
            tenant_tags: None,
        }
    }

    fn for_tenant<'a>(tags: &'a [String], machine: Option<&'a Machine>) -> Scope<'a> {
        Scope {
            tenant_id: Some("Tenants-1"),
            tenant_tags: Some(tags),
            ..scope(machine)
        }
    }

    fn value(variables: &[Variable], scope: &Scope<'_>, name: &str) -> Option<String> {
        resolve(variables, scope)
            .into_iter()
            .find(|v| v.name.eq_ignore_ascii_case(name))
            .and_then(|v| v.value.clone())
    }

    /// Each row: the values defined (in order), the scope asked about, the value that wins.
    #[test]
    fn precedence_table() {
        let machine = web();
        let other = Machine {
            id: "Machines-2".into(),
            roles: vec!["db".into()],
            ..web()
        };
        let gold_eu = vec!["Tier/Gold".to_owned(), "Region/EU".to_owned()];
        let cases: Vec<(&str, Vec<Variable>, Scope<'_>, Option<&str>)> = vec![
            (
                "unscoped applies everywhere",
                vec![variable("V", "plain", &[])],
                scope(None),
                Some("plain"),
            ),
            (
                "environment beats unscoped",
                vec![
                    variable("V", "plain", &[]),
                    variable("V", "env", &[("Environment", &["Environments-1"])]),
                ],
                scope(None),
                Some("env"),
            ),
            (
                "another environment does not match",
                vec![variable(
                    "V",
                    "prod",
                    &[("Environment", &["Environments-2"])],
                )],
                scope(None),
                None,
            ),
            (
                "values in one dimension are OR'ed",
                vec![variable(
                    "V",
                    "either",
                    &[("Environment", &["Environments-2", "environments-1"])],
                )],
                scope(None),
                Some("either"),
            ),
            (
                "dimensions are AND'ed",
                vec![variable(
                    "V",
                    "both",
                    &[
                        ("Environment", &["Environments-1"]),
                        ("Channel", &["Channels-9"]),
                    ],
                )],
                scope(None),
                None,
            ),
            (
                "role beats environment",
                vec![
                    variable("V", "env", &[("Environment", &["Environments-1"])]),
                    variable("V", "role", &[("Role", &["WEB"])]),
                ],
                scope(Some(&machine)),
                Some("role"),
            ),
            (
                "machine beats role",
                vec![
                    variable("V", "role", &[("Role", &["web"])]),
                    variable("V", "machine", &[("Machine", &["Machines-1"])]),
                ],
                scope(Some(&machine)),
                Some("machine"),
            ),
            (
                "action beats machine",
                vec![
                    variable("V", "machine", &[("Machine", &["Machines-1"])]),
                    variable("V", "action", &[("Action", &["Action-1"])]),
                ],
                scope(Some(&machine)),
                Some("action"),
            ),
            (
                "environment beats channel",
                vec![
                    variable("V", "channel", &[("Channel", &["Channels-1"])]),
                    variable("V", "env", &[("Environment", &["Environments-1"])]),
                ],
                scope(None),
                Some("env"),
            ),
            (
                "two dimensions beat the higher of one",
                vec![
                    variable("V", "env", &[("Environment", &["Environments-1"])]),
                    variable(
                        "V",
                        "env+channel",
                        &[
                            ("Environment", &["Environments-1"]),
                            ("Channel", &["Channels-1"]),
                        ],
                    ),
                ],
                scope(None),
                Some("env+channel"),
            ),
            (
                "a role scope needs a machine with the role",
                vec![variable("V", "role", &[("Role", &["web"])])],
                scope(Some(&other)),
                None,
            ),
            (
                "equal ranks keep the first defined",
                vec![
                    variable("V", "first", &[("Environment", &["Environments-1"])]),
                    variable("v", "second", &[("Environment", &["Environments-1"])]),
                ],
                scope(None),
                Some("first"),
            ),
            (
                "a tenant tag scope never matches an untenanted deployment",
                vec![variable("V", "gold", &[("TenantTag", &["Tier/Gold"])])],
                scope(None),
                None,
            ),
            (
                "a tenant tag scope matches a tenant with the tag (case-insensitively)",
                vec![variable("V", "gold", &[("TenantTag", &["tier/gold"])])],
                for_tenant(&gold_eu, None),
                Some("gold"),
            ),
            (
                "tags of one tag set are OR'ed",
                vec![variable(
                    "V",
                    "gold or silver",
                    &[("TenantTag", &["Tier/Silver", "Tier/Gold"])],
                )],
                for_tenant(&gold_eu, None),
                Some("gold or silver"),
            ),
            (
                "tag sets are AND'ed",
                vec![variable(
                    "V",
                    "gold in US",
                    &[("TenantTag", &["Tier/Gold", "Region/US"])],
                )],
                for_tenant(&gold_eu, None),
                None,
            ),
            (
                "tenant tag beats environment",
                vec![
                    variable("V", "tag", &[("TenantTag", &["Tier/Gold"])]),
                    variable("V", "env", &[("Environment", &["Environments-1"])]),
                ],
                for_tenant(&gold_eu, None),
                Some("tag"),
            ),
            (
                "a tenant's own value beats its tags and the environment",
                vec![
                    variable("V", "env", &[("Environment", &["Environments-1"])]),
                    variable("V", "tag", &[("TenantTag", &["Tier/Gold"])]),
                    variable("V", "tenant", &[("Tenant", &["Tenants-1"])]),
                ],
                for_tenant(&gold_eu, None),
                Some("tenant"),
            ),
            (
                "another tenant's value does not apply",
                vec![variable("V", "other", &[("Tenant", &["Tenants-2"])])],
                for_tenant(&gold_eu, None),
                None,
            ),
            (
                "role beats tenant",
                vec![
                    variable("V", "tenant", &[("Tenant", &["Tenants-1"])]),
                    variable("V", "role", &[("Role", &["web"])]),
                ],
                for_tenant(&gold_eu, Some(&machine)),
                Some("role"),
            ),
            (
                "role beats tenant tag",
                vec![
                    variable("V", "tag", &[("TenantTag", &["Tier/Gold"])]),
                    variable("V", "role", &[("Role", &["web"])]),
                ],
                for_tenant(&gold_eu, Some(&machine)),
                Some("role"),
            ),
            (
                "tenant tag and environment together beat tenant tag alone",
                vec![
                    variable("V", "tag", &[("TenantTag", &["Tier/Gold"])]),
                    variable(
                        "V",
                        "tag+env",
                        &[
                            ("TenantTag", &["Tier/Gold"]),
                            ("Environment", &["Environments-1"]),
                        ],
                    ),
                ],
                for_tenant(&gold_eu, None),
                Some("tag+env"),
            ),
            (
                "an unknown dimension never matches",
                vec![variable("V", "owner", &[("ProcessOwner", &["Projects-1"])])],
                scope(None),
                None,
            ),
            (
                "an empty value list does not restrict",
                vec![variable("V", "open", &[("Environment", &[])])],
                scope(None),
                Some("open"),
            ),
        ];
        for (rule, variables, scope, expected) in cases {
            assert_eq!(
                value(&variables, &scope, "V").as_deref(),
                expected,
                "{rule}"
            );
        }
    }

    #[test]
    fn names_keep_the_order_of_their_first_definition() {
        let variables = vec![
            variable("B", "1", &[]),
            variable("A", "2", &[]),
            variable("b", "3", &[("Environment", &["Environments-1"])]),
        ];
        let names: Vec<&str> = resolve(&variables, &scope(None))
            .into_iter()
            .map(|v| v.value.as_deref().unwrap_or(""))
            .collect();
        assert_eq!(names, ["3", "2"]);
    }

    #[test]
    fn tenant_values_fall_back_to_defaults_and_keep_secrets_sealed() {
        let template =
            |id: &str, name: &str, default: Option<&str>, sensitive: bool| VariableTemplate {
                id: id.into(),
                name: name.into(),
                default_value: default.map(|d| serde_json::Value::String(d.into())),
                display_settings: if sensitive {
                    BTreeMap::from([("Octopus.ControlType".to_owned(), "Sensitive".to_owned())])
                } else {
                    BTreeMap::new()
                },
                ..VariableTemplate::default()
            };
        let project = vec![
            template("t1", "Database", Some("shop"), false),
            template("t2", "ApiKey", None, true),
            template("t3", "Unset", None, false),
        ];
        let library = vec![template("l1", "Support", Some("help@example.com"), false)];
        let mut stored = StoredTenantVariables::default();
        stored.project_variables.insert(
            "Projects-1".into(),
            BTreeMap::from([(
                "Environments-1".into(),
                BTreeMap::from([
                    ("t1".to_owned(), "acme_db".to_owned()),
                    ("t2".to_owned(), "cuttle-sealed:v1:k:abc".to_owned()),
                ]),
            )]),
        );
        let given_by = |environment: &str, stored: &StoredTenantVariables| {
            tenant_variables(
                "Tenants-1",
                ("Projects-1", &project),
                environment,
                &[("LibraryVariableSets-1", &library)],
                stored,
            )
            .into_iter()
            .map(|v| (v.name, v.value.unwrap_or_default(), v.is_sensitive))
            .collect::<Vec<_>>()
        };
        let given = |environment: &str| given_by(environment, &stored);
        assert_eq!(
            given("Environments-1"),
            [
                ("Database".to_owned(), "acme_db".to_owned(), false),
                (
                    "ApiKey".to_owned(),
                    "cuttle-sealed:v1:k:abc".to_owned(),
                    true
                ),
                ("Support".to_owned(), "help@example.com".to_owned(), false),
            ]
        );
        assert_eq!(
            given("Environments-2"),
            [
                ("Database".to_owned(), "shop".to_owned(), false),
                ("Support".to_owned(), "help@example.com".to_owned(), false),
            ]
        );
        // A library value for some environments wins there over the unscoped one.
        use cuttle_wire::resources::ScopedTenantValue;
        stored.library_variables.insert(
            "LibraryVariableSets-1".into(),
            BTreeMap::from([("l1".to_owned(), "ops@acme.example".to_owned())]),
        );
        stored.scoped_library_variables.push(ScopedTenantValue {
            library_variable_set_id: "LibraryVariableSets-1".into(),
            template_id: "l1".into(),
            environment_ids: vec!["Environments-2".into(), "Environments-3".into()],
            value: "prod-ops@acme.example".into(),
        });
        let support = |environment: &str| {
            given_by(environment, &stored)
                .into_iter()
                .find(|(name, _, _)| name == "Support")
                .map(|(_, value, _)| value)
        };
        assert_eq!(
            support("Environments-1").as_deref(),
            Some("ops@acme.example")
        );
        assert_eq!(
            support("Environments-3").as_deref(),
            Some("prod-ops@acme.example")
        );
    }
}
