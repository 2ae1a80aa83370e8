//! A tenant's values for variable templates, one value at a time: Octopus's
//! `/tenants/{id}/commonvariables` and `/tenants/{id}/projectvariables` (the routes its newer CLI
//! and Terraform provider use). `/tenants/{id}/variables` (`tenants.rs`) shows the same values
//! grouped by owner.
//!
//! Each value is `{Id, TemplateId, Template, Value, Scope: {EnvironmentIds}}` with its owner
//! (`LibraryVariableSetId` or `ProjectId`). A project's values are per environment, as ever; a
//! library set's ("common") value may apply in every environment (`EnvironmentIds: []`) or in
//! some, where it wins over the one for every environment. A `PUT` replaces the tenant's values
//! of its kind with the ones sent; a sensitive one sent back as `{"HasValue": true}` keeps its
//! stored secret (matched by `Id`, or by owner, template and environments). Values are shown and
//! changed as [`crate::variable_access::TenantValueAccess`] allows; those the caller cannot see are kept.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathParams, Principal, SpaceScope};
use crate::links::space_prefix;
use crate::tenants::{self, Given, TenantValues, ValuesEdit};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use cuttle_wire::resources::{
    LibraryVariableSet, Project, ScopedTenantValue, StoredTenantVariables, Tenant, VariableTemplate,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Routes below `tenants` (`{prefix}/tenants`).
pub fn routes(tenants: &str) -> Router<AppState> {
    Router::new()
        .route(
            &format!("{tenants}/{{id}}/commonvariables"),
            get(get_common).put(put_common),
        )
        .route(
            &format!("{tenants}/{{id}}/projectvariables"),
            get(get_project).put(put_project),
        )
}

/// A stable id for one value: the same owner, template and environments give the same id, so
/// a client can send back what it read.
fn value_id(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("|").as_bytes());
    format!("TenantVariables-{}", hex::encode(&digest[..8]))
}

/// One value for a library set template: where it applies (sorted; empty: everywhere).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct CommonValue {
    library: String,
    template: String,
    environments: Vec<String>,
    value: String,
}

impl CommonValue {
    fn id(&self, tenant: &str) -> String {
        value_id(&[
            "common",
            tenant,
            &self.library,
            &self.template,
            &self.environments.join(","),
        ])
    }

    /// Whether both apply somewhere alike: both everywhere, or in a shared environment.
    fn overlaps(&self, other: &CommonValue) -> bool {
        self.library == other.library
            && self.template == other.template
            && match (self.environments.is_empty(), other.environments.is_empty()) {
                (true, true) => true,
                (false, false) => self
                    .environments
                    .iter()
                    .any(|e| other.environments.contains(e)),
                _ => false,
            }
    }
}

/// A tenant's library set values, as one list.
fn common_values(stored: &StoredTenantVariables) -> Vec<CommonValue> {
    let everywhere = stored
        .library_variables
        .iter()
        .flat_map(|(library, values)| {
            values.iter().map(|(template, value)| CommonValue {
                library: library.clone(),
                template: template.clone(),
                environments: Vec::new(),
                value: value.clone(),
            })
        });
    let scoped = stored
        .scoped_library_variables
        .iter()
        .map(|scoped| CommonValue {
            library: scoped.library_variable_set_id.clone(),
            template: scoped.template_id.clone(),
            environments: sorted(&scoped.environment_ids),
            value: scoped.value.clone(),
        });
    everywhere.chain(scoped).collect()
}

/// Stores `values` as the tenant's library set values.
fn set_common_values(stored: &mut StoredTenantVariables, values: Vec<CommonValue>) {
    stored.library_variables.clear();
    stored.scoped_library_variables.clear();
    for value in values {
        if value.environments.is_empty() {
            stored
                .library_variables
                .entry(value.library)
                .or_default()
                .insert(value.template, value.value);
        } else {
            stored.scoped_library_variables.push(ScopedTenantValue {
                library_variable_set_id: value.library,
                template_id: value.template,
                environment_ids: value.environments,
                value: value.value,
            });
        }
    }
}

fn sorted(ids: &[String]) -> Vec<String> {
    ids.iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The values a `PUT` body sends: `{"Variables": [...]}` as Octopus's clients send it, or the
/// bare list.
fn sent_values(body: &Value) -> ApiResult<&Vec<Value>> {
    match body {
        Value::Array(items) => Ok(items),
        Value::Object(_) => match tenants::member(body, "Variables") {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(ApiError::invalid_field(
                "Variables",
                "must be the list of values, as GET returns it",
            )),
        },
        _ => Err(ApiError::invalid_field(
            "Variables",
            "the body must be {\"Variables\": [...]}",
        )),
    }
}

/// The text of `entry`'s member `key`; a 400 naming `field.key` when it is missing or empty.
fn text<'v>(entry: &'v Value, key: &str, field: &str) -> ApiResult<&'v str> {
    tenants::member(entry, key)
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::invalid_field(&format!("{field}.{key}"), "is required"))
}

/// `Scope.EnvironmentIds` of `entry`, sorted and without repeats.
fn scope_environments(entry: &Value, field: &str) -> ApiResult<Vec<String>> {
    let field = format!("{field}.Scope.EnvironmentIds");
    let Some(scope) = tenants::member(entry, "Scope").filter(|s| !s.is_null()) else {
        return Ok(Vec::new());
    };
    match tenants::member(scope, "EnvironmentIds") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            let ids = items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ApiError::invalid_field(&field, "must list environment ids"))
                })
                .collect::<ApiResult<Vec<_>>>()?;
            Ok(sorted(&ids))
        }
        Some(_) => Err(ApiError::invalid_field(&field, "must list environment ids")),
    }
}

/// What to store for a value sent for `template`: `None` for nothing (cleared, or kept when
/// nothing was stored); `kept` is the stored value it would keep.
fn to_store(
    template: &VariableTemplate,
    entry: &Value,
    field: &str,
    kept: Option<&String>,
    seal: &dyn Fn(&str, &str) -> ApiResult<String>,
) -> ApiResult<Option<String>> {
    let field = format!("{field}.Value");
    let value = tenants::member(entry, "Value").unwrap_or(&Value::Null);
    Ok(match tenants::given(template, value, &field)? {
        Given::Clear => None,
        Given::Keep => kept.cloned(),
        Given::Set(text) if template.is_sensitive() => Some(seal(&field, &text)?),
        Given::Set(text) => Some(text),
    })
}

/// The answer of a `GET` or `PUT` of `route`: the values, and the templates without one when
/// they were asked for.
fn page(
    scope: &SpaceScope,
    tenant: &Tenant,
    route: &str,
    variables: Vec<Value>,
    missing: Option<Vec<Value>>,
) -> Value {
    let mut out = json!({
        "TenantId": tenant.id,
        "Variables": variables,
        "Links": { "Self": format!("{}/tenants/{}/{route}", space_prefix(scope.id.as_str()), tenant.id) },
    });
    if let Some(missing) = missing {
        out["MissingVariables"] = Value::Array(missing);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Common (library set) values.

fn common_json(
    library: &LibraryVariableSet,
    template: &VariableTemplate,
    value: Option<&CommonValue>,
    tenant: &Tenant,
) -> Value {
    json!({
        "Id": value.map(|v| v.id(&tenant.id)).unwrap_or_default(),
        "LibraryVariableSetId": library.id,
        "LibraryVariableSetName": library.name,
        "TemplateId": template.id,
        "Template": template,
        "Value": tenants::shown(template, value.map(|v| &v.value)),
        "Scope": { "EnvironmentIds": value.map(|v| v.environments.clone()).unwrap_or_default() },
    })
}

/// `GET /tenants/{id}/commonvariables`: the values the caller may see, and with
/// `includeMissingVariables=true` the templates that have none.
fn present_common(
    scope: &SpaceScope,
    principal: &Principal,
    loaded: &TenantValues,
    include_missing: bool,
) -> Value {
    let TenantValues {
        tenant,
        stored,
        libraries,
        ..
    } = loaded;
    let access = loaded.access(principal, scope);
    let values = common_values(stored);
    let mut variables = Vec::new();
    let mut missing = Vec::new();
    for library in libraries {
        for template in &library.templates {
            let mut given: Vec<&CommonValue> = values
                .iter()
                .filter(|v| v.library == library.id && v.template == template.id)
                .collect();
            given.sort();
            if given.is_empty() && access.can_see_common() {
                missing.push(common_json(library, template, None, tenant));
            }
            for value in given
                .into_iter()
                .filter(|v| access.can_see_common_in(&v.environments))
            {
                variables.push(common_json(library, template, Some(value), tenant));
            }
        }
    }
    page(
        scope,
        tenant,
        "commonvariables",
        variables,
        include_missing.then_some(missing),
    )
}

async fn get_common(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    params: Params,
) -> ApiResult<Json<Value>> {
    let include_missing = params.flag("includeMissingVariables")?.unwrap_or(false);
    let loaded =
        TenantValues::load(state.store.conn(), &scope, &principal, path.get("id")?).await?;
    Ok(Json(present_common(
        &scope,
        &principal,
        &loaded,
        include_missing,
    )))
}

/// `PUT /tenants/{id}/commonvariables`: the tenant's library set values become the ones sent.
async fn put_common(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let edit = ValuesEdit::open(&state, &scope, &principal, &path).await?;
    let access = edit.values.access(&principal, &scope);
    let TenantValues {
        tenant,
        stored: current,
        projects,
        libraries,
    } = &edit.values;
    let seal = tenants::sealer(&state);
    let before = common_values(current);
    let mut after: Vec<CommonValue> = Vec::new();
    for (index, entry) in sent_values(&body)?.iter().enumerate() {
        let field = format!("Variables[{index}]");
        let library_id = text(entry, "LibraryVariableSetId", &field)?;
        let library = libraries.iter().find(|l| l.id == library_id).ok_or_else(|| {
            ApiError::invalid_field(
                &format!("{field}.LibraryVariableSetId"),
                format!(
                    "no project tenant '{}' is connected to includes library variable set '{library_id}' with templates",
                    tenant.name
                ),
            )
        })?;
        let template_id = text(entry, "TemplateId", &field)?;
        let template = library
            .templates
            .iter()
            .find(|t| t.id == template_id)
            .ok_or_else(|| {
                ApiError::invalid_field(
                    &format!("{field}.TemplateId"),
                    format!(
                        "library variable set '{}' has no variable template '{template_id}'",
                        library.name
                    ),
                )
            })?;
        let environments = scope_environments(entry, &field)?;
        // A library set's values apply where the projects that include it run for the tenant.
        let connected: BTreeSet<&String> = projects
            .iter()
            .filter(|p| p.included_library_variable_set_ids.contains(&library.id))
            .flat_map(|p| tenant.project_environments.get(&p.id).into_iter().flatten())
            .collect();
        if let Some(stranger) = environments.iter().find(|e| !connected.contains(e)) {
            return Err(ApiError::invalid_field(
                &format!("{field}.Scope.EnvironmentIds"),
                format!(
                    "tenant '{}' runs no project that includes library variable set '{}' in environment '{stranger}'",
                    tenant.name, library.name
                ),
            ));
        }
        let mut value = CommonValue {
            library: library.id.clone(),
            template: template.id.clone(),
            environments,
            value: String::new(),
        };
        // A secret sent back unchanged is the one stored under the value's id (its scope may
        // have changed), else the one stored for the same environments.
        let sent_id = tenants::member(entry, "Id").and_then(Value::as_str);
        let of_template = || {
            before
                .iter()
                .filter(|v| v.library == value.library && v.template == value.template)
        };
        let kept = of_template()
            .find(|v| sent_id.is_some_and(|id| v.id(&tenant.id) == id))
            .or_else(|| of_template().find(|v| v.environments == value.environments))
            .map(|v| &v.value);
        let Some(stored) = to_store(template, entry, &field, kept, &seal)? else {
            continue;
        };
        value.value = stored;
        if after.iter().any(|other| other.overlaps(&value)) {
            return Err(ApiError::invalid_field(
                &format!("{field}.Scope.EnvironmentIds"),
                format!(
                    "another value of template '{}' already applies {}",
                    template.name,
                    if value.environments.is_empty() {
                        "in every environment".to_owned()
                    } else {
                        format!("in one of {}", value.environments.join(", "))
                    }
                ),
            ));
        }
        after.push(value);
    }
    // Values the caller cannot see stay; what it sends must be where it may change values.
    let what = |value: &CommonValue| {
        let library = libraries
            .iter()
            .find(|l| l.id == value.library)
            .map_or(value.library.as_str(), |l| l.name.as_str());
        format!("the tenant's values for library variable set '{library}' there")
    };
    for value in before.iter().filter(|v| !after.contains(v)) {
        if access.can_see_common_in(&value.environments)
            && !access.can_change_common_in(&value.environments)
        {
            return Err(access.refuse(&what(value)));
        }
    }
    for value in after.iter().filter(|v| !before.contains(v)) {
        if !access.can_change_common_in(&value.environments) {
            return Err(access.refuse(&what(value)));
        }
    }
    for hidden in before
        .iter()
        .filter(|v| !access.can_see_common_in(&v.environments))
    {
        if after.iter().any(|v| v.overlaps(hidden)) {
            return Err(access.refuse(&what(hidden)));
        }
        after.push(hidden.clone());
    }
    let mut next = current.clone();
    set_common_values(&mut next, after);
    let saved = edit.save(&scope, next).await?;
    Ok(Json(present_common(&scope, &principal, &saved, false)))
}

// ---------------------------------------------------------------------------------------------
// Project values.

fn project_json(
    project: &Project,
    template: &VariableTemplate,
    environment: &str,
    value: Option<&String>,
    tenant: &Tenant,
) -> Value {
    json!({
        "Id": value.map(|_| value_id(&["project", &tenant.id, &project.id, environment, &template.id])).unwrap_or_default(),
        "ProjectId": project.id,
        "ProjectName": project.name,
        "TemplateId": template.id,
        "Template": template,
        "Value": tenants::shown(template, value),
        "Scope": { "EnvironmentIds": [environment] },
    })
}

/// `GET /tenants/{id}/projectvariables`: one value per project, environment and template that
/// the caller may see, and with `includeMissingVariables=true` those without a value.
fn present_project(
    scope: &SpaceScope,
    principal: &Principal,
    loaded: &TenantValues,
    include_missing: bool,
) -> Value {
    let TenantValues {
        tenant,
        stored,
        projects,
        ..
    } = loaded;
    let access = loaded.access(principal, scope);
    let mut variables = Vec::new();
    let mut missing = Vec::new();
    for project in projects {
        for environment in access.environments_of(&project.id) {
            if !access.can_see(&project.id, environment) {
                continue;
            }
            let values = stored
                .project_variables
                .get(&project.id)
                .and_then(|v| v.get(environment));
            for template in &project.templates {
                match values.and_then(|v| v.get(&template.id)) {
                    Some(value) => variables.push(project_json(
                        project,
                        template,
                        environment,
                        Some(value),
                        tenant,
                    )),
                    None => {
                        missing.push(project_json(project, template, environment, None, tenant))
                    }
                }
            }
        }
    }
    page(
        scope,
        tenant,
        "projectvariables",
        variables,
        include_missing.then_some(missing),
    )
}

async fn get_project(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    params: Params,
) -> ApiResult<Json<Value>> {
    let include_missing = params.flag("includeMissingVariables")?.unwrap_or(false);
    let loaded =
        TenantValues::load(state.store.conn(), &scope, &principal, path.get("id")?).await?;
    Ok(Json(present_project(
        &scope,
        &principal,
        &loaded,
        include_missing,
    )))
}

/// `PUT /tenants/{id}/projectvariables`: the tenant's project values become the ones sent, each
/// for every environment its `Scope.EnvironmentIds` names.
async fn put_project(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Json<Value>> {
    let edit = ValuesEdit::open(&state, &scope, &principal, &path).await?;
    let access = edit.values.access(&principal, &scope);
    let TenantValues {
        tenant,
        stored: current,
        projects,
        libraries,
    } = &edit.values;
    let seal = tenants::sealer(&state);
    let mut next = StoredTenantVariables {
        project_variables: Default::default(),
        ..current.clone()
    };
    let mut sent: Vec<(String, String)> = Vec::new();
    let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (index, entry) in sent_values(&body)?.iter().enumerate() {
        let field = format!("Variables[{index}]");
        let project_id = text(entry, "ProjectId", &field)?;
        let project = projects
            .iter()
            .find(|p| p.id == project_id)
            .ok_or_else(|| {
                ApiError::invalid_field(
                    &format!("{field}.ProjectId"),
                    format!(
                        "tenant '{}' is not connected to project '{project_id}'",
                        tenant.name
                    ),
                )
            })?;
        let template_id = text(entry, "TemplateId", &field)?;
        let template = project
            .templates
            .iter()
            .find(|t| t.id == template_id)
            .ok_or_else(|| {
                ApiError::invalid_field(
                    &format!("{field}.TemplateId"),
                    format!(
                        "project '{}' has no variable template '{template_id}'",
                        project.name
                    ),
                )
            })?;
        let environments = scope_environments(entry, &field)?;
        let scope_field = format!("{field}.Scope.EnvironmentIds");
        if environments.is_empty() {
            return Err(ApiError::invalid_field(
                &scope_field,
                format!(
                    "name the environments of project '{}' the value is for",
                    project.name
                ),
            ));
        }
        let connected = access.environments_of(&project.id).collect::<Vec<_>>();
        for environment in &environments {
            if !connected.contains(&environment.as_str()) {
                return Err(ApiError::invalid_field(
                    &scope_field,
                    format!(
                        "tenant '{}' is not connected to project '{}' in environment '{environment}'",
                        tenant.name, project.name
                    ),
                ));
            }
            if !seen.insert((project.id.clone(), environment.clone(), template.id.clone())) {
                return Err(ApiError::invalid_field(
                    &scope_field,
                    format!(
                        "another value of template '{}' is already given for environment '{environment}'",
                        template.name
                    ),
                ));
            }
            sent.push((project.id.clone(), environment.clone()));
            let kept = current
                .project_variables
                .get(&project.id)
                .and_then(|v| v.get(environment))
                .and_then(|v| v.get(&template.id));
            if let Some(stored) = to_store(template, entry, &field, kept, &seal)? {
                next.project_variables
                    .entry(project.id.clone())
                    .or_default()
                    .entry(environment.clone())
                    .or_default()
                    .insert(template.id.clone(), stored);
            }
        }
    }
    tenants::keep_what_may_not_change(
        &access,
        (projects, libraries),
        current,
        &mut next,
        (&sent, &[]),
    )?;
    let saved = edit.save(&scope, next).await?;
    Ok(Json(present_project(&scope, &principal, &saved, false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(template: &str, environments: &[&str]) -> CommonValue {
        CommonValue {
            library: "LibraryVariableSets-1".into(),
            template: template.into(),
            environments: environments.iter().map(|e| e.to_string()).collect(),
            value: "v".into(),
        }
    }

    #[test]
    fn common_values_overlap_where_they_would_both_apply() {
        let everywhere = value("t1", &[]);
        let test = value("t1", &["Environments-1"]);
        let test_and_production = value("t1", &["Environments-1", "Environments-2"]);
        let production = value("t1", &["Environments-2"]);
        assert!(everywhere.overlaps(&value("t1", &[])));
        // A value for some environments beats the one for every environment there.
        assert!(!everywhere.overlaps(&test));
        assert!(test.overlaps(&test_and_production));
        assert!(!test.overlaps(&production));
        assert!(!test.overlaps(&value("t2", &["Environments-1"])));
    }

    #[test]
    fn stored_common_values_round_trip_and_keep_their_ids() {
        let mut stored = StoredTenantVariables::default();
        let values = vec![value("t1", &[]), value("t1", &["Environments-2"])];
        set_common_values(&mut stored, values.clone());
        assert_eq!(stored.library_variables.len(), 1);
        assert_eq!(stored.scoped_library_variables.len(), 1);
        assert_eq!(common_values(&stored), values);
        let id = values[1].id("Tenants-1");
        assert!(id.starts_with("TenantVariables-"), "{id}");
        assert_eq!(id, value("t1", &["Environments-2"]).id("Tenants-1"));
        assert_ne!(id, values[0].id("Tenants-1"));
        assert_ne!(id, values[1].id("Tenants-2"));
    }
}
