//! `GET /api/{space}/variables/preview?project=...&environment=...&channel=...&machine=...&action=...&tenant=...`:
//! the variables a deployment of the project would see with those choices, evaluated, with
//! sensitive values masked. It reads the project's current variables and the library variable
//! sets it includes (what the next release would snapshot), picks each name's value with the
//! same scoping rules as deployments (`cuttle_variables`), and evaluates `#{...}` with
//! `libs/template`. Values a release or deployment fixes (`Octopus.Release.*`,
//! `Octopus.Deployment.*`, `Octopus.Task.*`) are not known yet, so they stay as written.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Params, Principal, SpaceScope};
use crate::machines::Target;
use crate::projects::{VARIABLES_KIND, load_process, require_project};
use crate::resources::{self, Resource};
use crate::variable_access::VariableAccess;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use cuttle_store::documents;
use cuttle_store::documents::ListQuery;
use cuttle_wire::resources::{
    Channel, Environment, LibraryVariableSet, Machine, Tenant, Variable, VariableSet,
};
use serde::Serialize;

/// What the API shows for a sensitive value.
const MASK: &str = "********";

/// The preview.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VariablesPreview {
    project_id: String,
    environment_id: Option<String>,
    channel_id: String,
    machine_id: Option<String>,
    action_id: Option<String>,
    tenant_id: Option<String>,
    variables: Vec<PreviewVariable>,
}

/// One evaluated variable.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PreviewVariable {
    name: String,
    value: String,
    is_sensitive: bool,
    /// `System`, `Project` or `Library variable set '<name>'`.
    source: String,
}

/// Routes of this module.
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new().route(&format!("{prefix}/variables/preview"), get(preview))
}

async fn preview(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<VariablesPreview>> {
    let conn = state.store.conn();
    let space = &scope.id;
    let project_key = params
        .get("project")
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| ApiError::invalid_field("project", "the project to preview is required"))?;
    let (_, project) = require_project(conn, space, project_key).await?;
    let environment = match params.get("environment").filter(|e| !e.trim().is_empty()) {
        Some(key) => Some(
            resources::load_by_id_or_name::<Environment>(conn, space, key)
                .await?
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "environment",
                        format!("environment '{key}' does not exist in this space"),
                    )
                })?
                .1,
        ),
        None => None,
    };
    // The preview shows values: VariableView on the project, in the environment previewed (or
    // in every environment, when none is named). A project the caller cannot read is a 404.
    VariableAccess::for_project(&principal, &scope, &project, false, || {
        ApiError::not_found(format!("project '{project_key}'"))
    })?
    .require_view_in(environment.as_ref().map(|e| e.id.as_str()))?;
    let channel = match params.get("channel").filter(|c| !c.trim().is_empty()) {
        Some(key) => resources::load_by_id_or_name::<Channel>(conn, space, key)
            .await?
            .map(|(_, channel)| channel)
            .filter(|channel| channel.project_id == project.id)
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "channel",
                    format!(
                        "channel '{key}' does not exist in project '{}'",
                        project.name
                    ),
                )
            })?,
        None => {
            let query = ListQuery {
                parent_id: Some(project.id.clone()),
                ..ListQuery::everything()
            };
            let (channels, _) = documents::list(conn, space, Channel::KIND, &query).await?;
            let channels: Vec<Channel> = channels
                .iter()
                .map(documents::decode)
                .collect::<Result<_, _>>()?;
            channels
                .iter()
                .find(|c| c.is_default)
                .or(channels.first())
                .cloned()
                .unwrap_or_default()
        }
    };
    let machine: Option<Machine> = match params.get("machine").filter(|m| !m.trim().is_empty()) {
        Some(key) => Some(
            resources::load_by_id_or_name::<Target>(conn, space, key)
                .await?
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "machine",
                        format!("deployment target '{key}' does not exist in this space"),
                    )
                })?
                .1
                .0,
        ),
        None => None,
    };
    let tenant: Option<Tenant> = match params.get("tenant").filter(|t| !t.trim().is_empty()) {
        Some(key) => {
            let found = resources::load_by_id_or_name::<Tenant>(conn, space, key)
                .await?
                .filter(|(doc, _)| {
                    principal.grants.allows(
                        cuttle_authz::Permission::TenantView,
                        &cuttle_authz::Target {
                            space: Some(space.as_str()),
                            tenant: Some(&doc.id),
                            ..Default::default()
                        },
                    )
                });
            Some(
                found
                    .ok_or_else(|| {
                        ApiError::invalid_field(
                            "tenant",
                            format!("tenant '{key}' does not exist in this space"),
                        )
                    })?
                    .1,
            )
        }
        None => None,
    };
    let (_, process) = load_process(conn, space, &project).await?;
    let action = match params.get("action").filter(|a| !a.trim().is_empty()) {
        Some(key) => Some(
            process
                .steps
                .iter()
                .flat_map(|step| step.actions.iter().map(move |action| (step, action)))
                .find(|(_, action)| action.id == key || action.name.eq_ignore_ascii_case(key))
                .map(|(step, action)| (step.name.clone(), action.id.clone(), action.name.clone()))
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "action",
                        format!("the project's process has no step or action '{key}'"),
                    )
                })?,
        ),
        None => None,
    };

    // The project's variables first, then each included library's: the project wins ties.
    let mut variables: Vec<Variable> = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    let mut sets = vec![(project.variable_set_id.clone(), "Project".to_owned())];
    for id in &project.included_library_variable_set_ids {
        if let Some((_, library)) =
            resources::load_by_id_or_name::<LibraryVariableSet>(conn, space, id).await?
        {
            sets.push((
                library.variable_set_id,
                format!("Library variable set '{}'", library.name),
            ));
        }
    }
    for (id, source) in sets {
        let Some(doc) = documents::get(conn, space, VARIABLES_KIND, &id).await? else {
            continue;
        };
        let set: VariableSet = documents::decode(&doc)?;
        sources.extend(std::iter::repeat_n(source, set.variables.len()));
        variables.extend(set.variables);
    }
    // A tenant's values for the templates of the project and its library sets, in the chosen
    // environment.
    if let (Some(tenant), Some(environment)) = (&tenant, &environment) {
        let stored = crate::tenants::stored_variables(conn, space, &tenant.id).await?;
        let mut libraries = Vec::new();
        for id in &project.included_library_variable_set_ids {
            if let Some((_, library)) =
                resources::load_by_id_or_name::<LibraryVariableSet>(conn, space, id).await?
            {
                libraries.push(library);
            }
        }
        let library_templates: Vec<(&str, &[cuttle_wire::resources::VariableTemplate])> = libraries
            .iter()
            .map(|l| (l.id.as_str(), l.templates.as_slice()))
            .collect();
        let given = cuttle_variables::tenant_variables(
            &tenant.id,
            (&project.id, &project.templates),
            &environment.id,
            &library_templates,
            &stored,
        );
        let source = format!("Tenant '{}'", tenant.name);
        sources.extend(std::iter::repeat_n(source, given.len()));
        variables.extend(given);
    }
    let scope_of = cuttle_variables::Scope {
        environment_id: environment.as_ref().map(|e| e.id.as_str()).unwrap_or(""),
        channel_id: &channel.id,
        action_id: action.as_ref().map(|(_, id, _)| id.as_str()).unwrap_or(""),
        machine: machine.as_ref(),
        tenant_id: tenant.as_ref().map(|t| t.id.as_str()),
        tenant_tags: tenant.as_ref().map(|t| t.tenant_tags.as_slice()),
    };
    let chosen = cuttle_variables::resolve(&variables, &scope_of);

    let space_name = documents::get(conn, space, documents::SPACE_KIND, space.as_str())
        .await?
        .map(|doc| doc.name)
        .unwrap_or_default();
    let mut system: Vec<(&str, String)> = vec![
        ("Octopus.Space.Id", space.to_string()),
        ("Octopus.Space.Name", space_name),
        ("Octopus.Project.Id", project.id.clone()),
        ("Octopus.Project.Name", project.name.clone()),
        ("Octopus.Release.Channel.Id", channel.id.clone()),
        ("Octopus.Release.Channel.Name", channel.name.clone()),
    ];
    if let Some(environment) = &environment {
        system.push(("Octopus.Environment.Id", environment.id.clone()));
        system.push(("Octopus.Environment.Name", environment.name.clone()));
    }
    if let Some(machine) = &machine {
        system.push(("Octopus.Machine.Id", machine.id.clone()));
        system.push(("Octopus.Machine.Name", machine.name.clone()));
        system.push(("Octopus.Machine.Roles", machine.roles.join(",")));
    }
    if let Some(tenant) = &tenant {
        system.push(("Octopus.Tenant.Id", tenant.id.clone()));
        system.push(("Octopus.Tenant.Name", tenant.name.clone()));
        system.push(("Octopus.Tenant.Tags", tenant.tenant_tags.join(",")));
    }
    if let Some((step, _, action)) = &action {
        system.push(("Octopus.Step.Name", step.clone()));
        system.push(("Octopus.Action.Name", action.clone()));
    }

    let mut dictionary = cuttle_template::VariableDictionary::new();
    for (name, value) in &system {
        dictionary.set(*name, value.clone());
    }
    let mut secrets = Vec::new();
    for variable in &chosen {
        let raw = variable.value.clone().unwrap_or_default();
        let value = if variable.is_sensitive && !raw.is_empty() {
            match state.keyring.as_deref().map(|k| k.open(&raw)) {
                Some(Ok(plain)) => {
                    secrets.push(plain.clone());
                    plain
                }
                // Unopenable: shown masked like any secret, and nothing else can contain it.
                _ => String::new(),
            }
        } else {
            raw
        };
        dictionary.set(variable.name.clone(), value);
    }
    secrets.retain(|s| !s.is_empty());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mask = |text: String| {
        secrets
            .iter()
            .fold(text, |text, secret| text.replace(secret.as_str(), MASK))
    };

    let mut out: Vec<PreviewVariable> = system
        .iter()
        .map(|(name, value)| PreviewVariable {
            name: (*name).to_owned(),
            value: value.clone(),
            is_sensitive: false,
            source: "System".into(),
        })
        .collect();
    for variable in chosen {
        let source = variables
            .iter()
            .position(|v| std::ptr::eq(v, variable))
            .and_then(|index| sources.get(index))
            .cloned()
            .unwrap_or_default();
        let value = if variable.is_sensitive {
            MASK.to_owned()
        } else {
            mask(dictionary.evaluate_lenient(variable.value.as_deref().unwrap_or("")))
        };
        out.push(PreviewVariable {
            name: variable.name.clone(),
            value,
            is_sensitive: variable.is_sensitive,
            source,
        });
    }
    Ok(Json(VariablesPreview {
        project_id: project.id,
        environment_id: environment.map(|e| e.id),
        channel_id: channel.id,
        machine_id: machine.map(|m| m.id),
        action_id: action.map(|(_, id, _)| id),
        tenant_id: tenant.map(|t| t.id),
        variables: out,
    }))
}
