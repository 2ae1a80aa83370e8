//! Tenants and tenant tag sets (`/api/{space}/tenants`, `/api/{space}/tagsets`).
//!
//! A tag set (`TagSets-1`, "Tier") holds tags (`TagSets-1-2`, canonically `Tier/Gold`). A tenant
//! carries tags and is connected to projects in some of their environments
//! (`ProjectEnvironments`). Everything else refers to tags by canonical name: deployment targets,
//! steps, channels and variable scopes (`TenantTags`, scope key `TenantTag`). So renaming a tag
//! rewrites those references in one transaction, and a tag still referenced cannot be removed.
//! Tag filters match as [`cuttle_domain::tenant_tags`] says.
//!
//! A tenant-scoped team (`TenantIds` on a scoped user role) sees and changes only its tenants.
//!
//! Tenant variables: projects and library variable sets declare variable templates
//! (`Templates`); a tenant gives values for them (`/tenants/{id}/variables`): per environment for
//! each connected project's templates, once for each template of a library set those projects
//! include. Values of sensitive templates are sealed like sensitive variables and shown as
//! `{"HasValue": true, "NewValue": null}`. A tenanted deployment gets them as variables scoped to
//! the tenant (`cuttle_variables::tenant_variables`), read when it is planned, as Octopus does.
//! The same values, one at a time, and library set values for some environments only, go
//! through `tenant_values.rs`.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathParams, Principal, SpaceScope};
use crate::links::{links, space_prefix};
use crate::resources::{self, Resource, resource_accessors, resource_assign};
use crate::variable_access::TenantValueAccess;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use cuttle_authz::Permission;
use cuttle_domain::SpaceId;
use cuttle_domain::ids::slugify;
use cuttle_domain::tenant_tags;
use cuttle_store::documents::{self, Document, ListQuery, Replacement};
use cuttle_store::{ConnectionTrait, DatabaseTransaction, TransactionTrait};
use cuttle_wire::resources::{
    Environment, LibraryVariableSet, Project, StoredTenantVariables, TagSet, Tenant,
    VariableTemplate,
};
use cuttle_wire::{Collection, Links};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// Routes of this module.
pub fn routes(prefix: &str) -> Router<AppState> {
    let tagsets = format!("{prefix}/tagsets");
    let tenants = format!("{prefix}/tenants");
    Router::new()
        .route(
            &tagsets,
            get(resources::list::<TagSet>).post(create_tag_set),
        )
        .route(&format!("{tagsets}/all"), get(resources::all::<TagSet>))
        .route(&format!("{tagsets}/sortorder"), put(sort_tag_sets))
        .route(
            &format!("{tagsets}/{{id}}"),
            get(resources::get_one::<TagSet>)
                .put(update_tag_set)
                .delete(delete_tag_set),
        )
        .route(&tenants, get(list_tenants).post(create_tenant))
        .route(&format!("{tenants}/all"), get(all_tenants))
        .route(&format!("{tenants}/tag-test"), get(tag_test))
        .route(
            &format!("{tenants}/variables-missing"),
            get(missing_variables),
        )
        .route(
            &format!("{tenants}/{{id}}"),
            get(get_tenant).put(update_tenant).delete(delete_tenant),
        )
        .route(
            &format!("{tenants}/{{id}}/variables"),
            get(get_tenant_variables).put(update_tenant_variables),
        )
        .merge(crate::tenant_values::routes(&tenants))
}

/// Document kind of a tenant's values for variable templates.
pub const TENANT_VARIABLES_KIND: &str = "TenantVariables";

/// The id of a tenant's variables document.
pub fn tenant_variables_id(tenant_id: &str) -> String {
    format!("tenantvariables-{tenant_id}")
}

/// Checks variable templates (`Templates` of a project or library variable set): each has a
/// unique name, gets an id when it has none, and a sensitive one has no default (a default
/// would be stored in clear).
pub fn prepare_templates(templates: &mut [VariableTemplate]) -> ApiResult<()> {
    let mut names: Vec<String> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for (index, template) in templates.iter_mut().enumerate() {
        let field = |name: &str| format!("Templates[{index}].{name}");
        template.name = template.name.trim().to_owned();
        if template.name.is_empty() {
            return Err(ApiError::invalid_field(
                &field("Name"),
                "every variable template needs a variable name",
            ));
        }
        let lower = template.name.to_lowercase();
        if names.contains(&lower) {
            return Err(ApiError::invalid_field(
                &field("Name"),
                format!("the template '{}' is declared twice", template.name),
            ));
        }
        names.push(lower);
        if template.id.trim().is_empty() {
            template.id = uuid::Uuid::new_v4().to_string();
        }
        if ids.contains(&template.id) {
            return Err(ApiError::invalid_field(
                &field("Id"),
                format!("the template id '{}' is used twice", template.id),
            ));
        }
        ids.push(template.id.clone());
        if template.label.trim().is_empty() {
            template.label = template.name.clone();
        }
        if template.is_sensitive() && template.default_text().is_some() {
            return Err(ApiError::invalid_field(
                &field("DefaultValue"),
                "a sensitive template takes no default value; each tenant gives its own",
            ));
        }
    }
    Ok(())
}

/// The colour a tag gets when none is given (Octopus's grey).
const DEFAULT_TAG_COLOR: &str = "#333333";

fn is_color(text: &str) -> bool {
    text.len() == 7 && text.starts_with('#') && text[1..].chars().all(|c| c.is_ascii_hexdigit())
}

impl Resource for TagSet {
    const KIND: &'static str = "TagSet";
    const PREFIX: &'static str = "TagSets";
    const COLLECTION: &'static str = "tagsets";
    const NOUN: &'static str = "tag set";

    resource_accessors!();

    resource_assign!();
    fn links(&self, space: &SpaceId) -> Links {
        let base = format!("{}/tagsets/{}", space_prefix(space.as_str()), self.id);
        links([
            ("Self", base),
            ("Web", format!("/app#/{space}/tenants/tagSets/{}", self.id)),
        ])
    }
    fn sort_order(&self, number: i64) -> i64 {
        if self.sort_order > 0 {
            self.sort_order
        } else {
            number
        }
    }
    /// Trims names, gives new tags ids after the set's highest (`TagSets-1-3`), fills colours
    /// and canonical names, and numbers the tags in the order given.
    fn prepare(&mut self) -> ApiResult<()> {
        self.name = self.name.trim().to_owned();
        if self.name.contains('/') {
            return Err(ApiError::invalid_field(
                "Name",
                "a tag set name cannot contain '/', which separates it from the tag in 'TagSet/Tag'",
            ));
        }
        let own = format!("{}-", self.id);
        let mut next = self
            .tags
            .iter()
            .filter_map(|tag| tag.id.strip_prefix(&own)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let mut seen: Vec<String> = Vec::new();
        for (index, tag) in self.tags.iter_mut().enumerate() {
            let field = |name: &str| format!("Tags[{index}].{name}");
            tag.name = tag.name.trim().to_owned();
            if tag.name.is_empty() {
                return Err(ApiError::invalid_field(
                    &field("Name"),
                    "every tag needs a name",
                ));
            }
            if tag.name.contains('/') {
                return Err(ApiError::invalid_field(
                    &field("Name"),
                    "a tag name cannot contain '/'",
                ));
            }
            let lower = tag.name.to_lowercase();
            if seen.contains(&lower) {
                return Err(ApiError::invalid_field(
                    &field("Name"),
                    format!("the tag '{}' appears twice in this tag set", tag.name),
                ));
            }
            seen.push(lower);
            let keeps_id = tag
                .id
                .strip_prefix(&own)
                .is_some_and(|n| n.parse::<u64>().is_ok());
            if !keeps_id {
                next += 1;
                tag.id = format!("{own}{next}");
            }
            tag.color = tag.color.trim().to_owned();
            if tag.color.is_empty() {
                tag.color = DEFAULT_TAG_COLOR.into();
            }
            if !is_color(&tag.color) {
                return Err(ApiError::invalid_field(
                    &field("Color"),
                    "must be a colour written #RRGGBB",
                ));
            }
            tag.canonical_tag_name = format!("{}/{}", self.name, tag.name);
            tag.sort_order = index as i64 + 1;
        }
        Ok(())
    }
}

impl Resource for Tenant {
    const KIND: &'static str = "Tenant";
    const PREFIX: &'static str = "Tenants";
    const COLLECTION: &'static str = "tenants";
    const NOUN: &'static str = "tenant";

    resource_accessors!();

    resource_assign!();
    fn links(&self, space: &SpaceId) -> Links {
        let base = format!("{}/tenants/{}", space_prefix(space.as_str()), self.id);
        links([
            ("Self", base.clone()),
            ("Variables", format!("{base}/variables")),
            ("Web", format!("/app#/{space}/tenants/{}/overview", self.id)),
        ])
    }
    fn prepare(&mut self) -> ApiResult<()> {
        self.slug = slugify(&self.name);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Tags: lookups and the references other documents hold.

/// Every tag of the space: lower-case canonical name to canonical name.
pub async fn known_tags(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
) -> ApiResult<BTreeMap<String, String>> {
    let (docs, _) = documents::list(conn, space, TagSet::KIND, &ListQuery::everything()).await?;
    let mut known = BTreeMap::new();
    for doc in docs {
        let set: TagSet = documents::decode(&doc)?;
        for tag in set.tags {
            known.insert(
                tag.canonical_tag_name.to_lowercase(),
                tag.canonical_tag_name,
            );
        }
    }
    Ok(known)
}

/// `tags` as their canonical names (deduplicated), or a 400 naming `field[i]` for an unknown
/// one.
pub fn canonical_tags(
    known: &BTreeMap<String, String>,
    tags: &[String],
    field: &str,
) -> ApiResult<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for (index, tag) in tags.iter().enumerate() {
        let tag = tag.trim();
        if tag.is_empty() {
            continue;
        }
        let canonical = known.get(&tag.to_lowercase()).ok_or_else(|| {
            ApiError::invalid_field(
                &format!("{field}[{index}]"),
                format!(
                    "the tag '{tag}' was not found; tags are written by tag set and name, as 'Tier/Gold'"
                ),
            )
        })?;
        if !out.contains(canonical) {
            out.push(canonical.clone());
        }
    }
    Ok(out)
}

/// Document kinds whose JSON refers to tags by canonical name, under `TenantTags` (tenants,
/// deployment targets, channels, the steps of a process) or a variable's `TenantTag` scope.
const TAG_HOLDERS: &[(&str, &str)] = &[
    ("Tenant", "tenant"),
    ("Machine", "deployment target"),
    ("Channel", "channel"),
    (crate::projects::PROCESS_KIND, "deployment process"),
    (crate::projects::VARIABLES_KIND, "variable set"),
];

/// Snapshots frozen in releases and deployments that refer to tags the same way. A rename
/// reaches them too (a release keeps filtering the same tenants under the tag's new name), but
/// they do not keep a tag from being removed.
const TAG_SNAPSHOTS: &[&str] = &[
    crate::projects::PROCESS_SNAPSHOT_KIND,
    crate::projects::VARIABLES_SNAPSHOT_KIND,
];

fn is_tag_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("TenantTags") || key.eq_ignore_ascii_case("TenantTag")
}

/// Calls `visit` on every tag reference in `value`; a reference `visit` returns `false` for is
/// removed, and one it rewrites is kept rewritten. Returns whether anything changed.
fn walk_tags(value: &mut Value, visit: &mut dyn FnMut(&mut String) -> bool) -> bool {
    let mut changed = false;
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if is_tag_key(key)
                    && let Value::Array(tags) = item
                {
                    let before = tags.clone();
                    tags.retain_mut(|tag| match tag {
                        Value::String(name) => visit(name),
                        _ => true,
                    });
                    changed |= *tags != before;
                } else {
                    changed |= walk_tags(item, visit);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                changed |= walk_tags(item, visit);
            }
        }
        _ => {}
    }
    changed
}

/// Who refers to any of `tags` (canonical names): `tenant 'Acme'`, `deployment target 'web-01'`.
async fn tag_users(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    tags: &[String],
) -> ApiResult<Vec<String>> {
    let mut users = Vec::new();
    if tags.is_empty() {
        return Ok(users);
    }
    for (kind, noun) in TAG_HOLDERS {
        let (docs, _) = documents::list(conn, space, kind, &ListQuery::everything()).await?;
        for doc in docs {
            let mut value: Value = serde_json::from_str(&doc.data).unwrap_or_default();
            let mut uses = false;
            walk_tags(&mut value, &mut |name| {
                uses |= tags.iter().any(|t| t.eq_ignore_ascii_case(name));
                true
            });
            if uses {
                users.push(format!("{noun} '{}'", doc.name));
            }
        }
    }
    Ok(users)
}

/// Rewrites every reference to a renamed tag (lower-case old canonical name to the new one).
async fn rename_tags(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    renames: &HashMap<String, String>,
) -> ApiResult<()> {
    if renames.is_empty() {
        return Ok(());
    }
    let kinds = TAG_HOLDERS
        .iter()
        .map(|(kind, _)| *kind)
        .chain(TAG_SNAPSHOTS.iter().copied());
    for kind in kinds {
        let (docs, _) = documents::list(conn, space, kind, &ListQuery::everything()).await?;
        for doc in docs {
            let mut value: Value = serde_json::from_str(&doc.data).unwrap_or_default();
            let changed = walk_tags(&mut value, &mut |name| {
                if let Some(new) = renames.get(&name.to_lowercase()) {
                    *name = new.clone();
                }
                true
            });
            if changed {
                rewrite(conn, space, &doc, value).await?;
            }
        }
    }
    Ok(())
}

/// Stores `data` as the new content of `doc`, keeping its name and keys.
async fn rewrite(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    doc: &Document,
    data: Value,
) -> ApiResult<()> {
    documents::replace(
        conn,
        space,
        &doc.kind,
        &doc.id,
        Replacement {
            name: doc.name.clone(),
            unique_key: doc.unique_key.clone(),
            sort_order: doc.sort_order,
            data,
            expected_version: None,
        },
        "",
    )
    .await?;
    Ok(())
}

fn in_use(tags: &[String], users: &[String]) -> ApiError {
    let tags = tags.join("', '");
    ApiError::bad_request(
        format!(
            "The tag '{tags}' is still used by {}. Remove it there first.",
            users.join(", ")
        ),
        users.iter().map(|u| format!("used by {u}")).collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Tag sets.

async fn create_tag_set(
    State(state): State<AppState>,
    scope: SpaceScope,
    JsonBody(set): JsonBody<TagSet>,
) -> ApiResult<(StatusCode, Json<TagSet>)> {
    let txn = state.store.conn().begin().await?;
    // A new set's tags are all new: ids a client sent along (say, from another space) are not
    // this set's.
    let mut set = set;
    for tag in &mut set.tags {
        tag.id.clear();
    }
    let created = resources::insert(&txn, &scope.id, set).await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Saves a tag set. A tag that keeps its id but changes its name (or whose set is renamed) is
/// renamed everywhere it is used; a tag that is left out is removed, unless something uses it.
async fn update_tag_set(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
    JsonBody(set): JsonBody<TagSet>,
) -> ApiResult<Json<TagSet>> {
    let id = path.get("id")?;
    let txn = state.store.conn().begin().await?;
    let (_, old) = resources::load::<TagSet>(&txn, &scope.id, id).await?;
    let saved = resources::replace(&txn, &scope.id, id, set).await?;
    let removed: Vec<String> = old
        .tags
        .iter()
        .filter(|tag| !saved.tags.iter().any(|t| t.id == tag.id))
        .map(|tag| tag.canonical_tag_name.clone())
        .collect();
    let users = tag_users(&txn, &scope.id, &removed).await?;
    if !users.is_empty() {
        return Err(in_use(&removed, &users));
    }
    let renames: HashMap<String, String> = old
        .tags
        .iter()
        .filter_map(|tag| {
            let new = saved.tags.iter().find(|t| t.id == tag.id)?;
            (new.canonical_tag_name != tag.canonical_tag_name).then(|| {
                (
                    tag.canonical_tag_name.to_lowercase(),
                    new.canonical_tag_name.clone(),
                )
            })
        })
        .collect();
    rename_tags(&txn, &scope.id, &renames).await?;
    txn.commit().await?;
    Ok(Json(saved))
}

async fn delete_tag_set(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let id = path.get("id")?;
    let txn = state.store.conn().begin().await?;
    let (_, set) = resources::load::<TagSet>(&txn, &scope.id, id).await?;
    let tags: Vec<String> = set
        .tags
        .iter()
        .map(|t| t.canonical_tag_name.clone())
        .collect();
    let users = tag_users(&txn, &scope.id, &tags).await?;
    if !users.is_empty() {
        return Err(in_use(&tags, &users));
    }
    documents::delete(&txn, &scope.id, TagSet::KIND, id).await?;
    txn.commit().await?;
    Ok(StatusCode::OK)
}

/// `PUT /tagsets/sortorder` with every tag set id in the order wanted.
async fn sort_tag_sets(
    State(state): State<AppState>,
    scope: SpaceScope,
    JsonBody(ids): JsonBody<Vec<String>>,
) -> ApiResult<StatusCode> {
    let txn = state.store.conn().begin().await?;
    for (index, id) in ids.iter().enumerate() {
        let (_, mut set) = resources::load::<TagSet>(&txn, &scope.id, id).await?;
        set.sort_order = index as i64 + 1;
        resources::replace(&txn, &scope.id, id, set).await?;
    }
    txn.commit().await?;
    Ok(StatusCode::OK)
}

// ---------------------------------------------------------------------------------------------
// Tenants.

/// Whether the principal may `permission` on the tenant (`None`: on every tenant).
fn may(
    principal: &Principal,
    scope: &SpaceScope,
    permission: Permission,
    tenant: Option<&str>,
) -> bool {
    principal.grants.allows(
        permission,
        &cuttle_authz::Target {
            space: Some(scope.id.as_str()),
            tenant,
            ..Default::default()
        },
    )
}

/// 403 naming `permission` unless the principal holds it for the tenant `tenant`.
pub(crate) fn require(
    principal: &Principal,
    scope: &SpaceScope,
    permission: Permission,
    tenant: &str,
) -> ApiResult<()> {
    if may(principal, scope, permission, Some(tenant)) {
        Ok(())
    } else {
        Err(ApiError::forbidden(permission))
    }
}

/// Loads a tenant the principal can see; a hidden one is a 404 like a missing one.
pub(crate) async fn visible_tenant(
    conn: &impl ConnectionTrait,
    principal: &Principal,
    scope: &SpaceScope,
    id: &str,
) -> ApiResult<(Document, Tenant)> {
    let (doc, tenant) = resources::load::<Tenant>(conn, &scope.id, id).await?;
    if !may(principal, scope, Permission::TenantView, Some(&doc.id)) {
        return Err(ApiError::not_found(format!("tenant '{id}'")));
    }
    Ok((doc, tenant))
}

/// Checks what a tenant refers to: its tags exist (stored by canonical name), and each project
/// it is connected to exists, takes tenanted deployments, and is connected in environments of
/// this space.
async fn check_tenant(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    tenant: &mut Tenant,
) -> ApiResult<()> {
    let known = known_tags(conn, space).await?;
    tenant.tenant_tags = canonical_tags(&known, &tenant.tenant_tags, "TenantTags")?;
    let mut connected = BTreeMap::new();
    for (project_id, environment_ids) in &tenant.project_environments {
        let field = format!("ProjectEnvironments.{project_id}");
        let project: Project = match documents::get(conn, space, Project::KIND, project_id).await? {
            Some(doc) => documents::decode(&doc)?,
            None => {
                return Err(ApiError::invalid_field(
                    &field,
                    format!("project '{project_id}' was not found in this space"),
                ));
            }
        };
        if project.tenanted_deployment_mode.is_empty()
            || project.tenanted_deployment_mode == "Untenanted"
        {
            return Err(ApiError::invalid_field(
                &field,
                format!(
                    "project '{}' does not take tenanted deployments; set its TenantedDeploymentMode to Tenanted or TenantedOrUntenanted first",
                    project.name
                ),
            ));
        }
        let mut environments: Vec<String> = Vec::new();
        for (index, environment_id) in environment_ids.iter().enumerate() {
            if documents::get(conn, space, Environment::KIND, environment_id)
                .await?
                .is_none()
            {
                return Err(ApiError::invalid_field(
                    &format!("{field}[{index}]"),
                    format!("environment '{environment_id}' was not found in this space"),
                ));
            }
            if !environments.contains(environment_id) {
                environments.push(environment_id.clone());
            }
        }
        connected.insert(project.id, environments);
    }
    tenant.project_environments = connected;
    Ok(())
}

/// `POST /tenants`, or `POST /tenants?clone=Tenants-N` with `{Name, Description}`: the clone
/// takes the source's tags, project connections and variable values (sensitive ones stay
/// sealed), and names its source in `ClonedFromTenantId`.
async fn create_tenant(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    params: Params,
    JsonBody(tenant): JsonBody<Tenant>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    let mut tenant = tenant;
    let txn = state.store.conn().begin().await?;
    let source = match params.get("clone").filter(|c| !c.trim().is_empty()) {
        Some(source_id) => {
            let (doc, source) = visible_tenant(&txn, &principal, &scope, source_id).await?;
            tenant.tenant_tags = source.tenant_tags;
            tenant.project_environments = source.project_environments;
            tenant.cloned_from_tenant_id = Some(doc.id.clone());
            Some(doc.id)
        }
        None => None,
    };
    check_tenant(&txn, &scope.id, &mut tenant).await?;
    if let Some(from) = tenant
        .cloned_from_tenant_id
        .as_deref()
        .filter(|s| !s.is_empty())
        && documents::get(&txn, &scope.id, Tenant::KIND, from)
            .await?
            .is_none()
    {
        return Err(ApiError::invalid_field(
            "ClonedFromTenantId",
            format!("tenant '{from}' was not found in this space"),
        ));
    }
    let created = resources::insert(&txn, &scope.id, tenant).await?;
    if let Some(source) = source {
        let mut values = stored_variables(&txn, &scope.id, &source).await?;
        values.tenant_id = created.id.clone();
        if !values.project_variables.is_empty() || !values.library_variables.is_empty() {
            save_stored_variables(&txn, &scope.id, &created, &values).await?;
        }
    }
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn update_tenant(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    JsonBody(tenant): JsonBody<Tenant>,
) -> ApiResult<Json<Tenant>> {
    let mut tenant = tenant;
    let txn = state.store.conn().begin().await?;
    let (doc, current) = visible_tenant(&txn, &principal, &scope, path.get("id")?).await?;
    require(&principal, &scope, Permission::TenantEdit, &doc.id)?;
    tenant.cloned_from_tenant_id = current.cloned_from_tenant_id;
    check_tenant(&txn, &scope.id, &mut tenant).await?;
    let saved = resources::replace(&txn, &scope.id, &doc.id, tenant).await?;
    txn.commit().await?;
    Ok(Json(saved))
}

/// Deletes a tenant and disconnects it from the deployment targets that named it. Its past
/// deployments stay, as in Octopus.
async fn delete_tenant(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let txn = state.store.conn().begin().await?;
    let (doc, _) = visible_tenant(&txn, &principal, &scope, path.get("id")?).await?;
    require(&principal, &scope, Permission::TenantDelete, &doc.id)?;
    let (machines, _) =
        documents::list(&txn, &scope.id, "Machine", &ListQuery::everything()).await?;
    for machine in machines {
        let mut value: Value = serde_json::from_str(&machine.data).unwrap_or_default();
        if let Some(Value::Array(ids)) = value.get_mut("TenantIds") {
            let before = ids.len();
            ids.retain(|id| id.as_str() != Some(doc.id.as_str()));
            if ids.len() != before {
                rewrite(&txn, &scope.id, &machine, value).await?;
            }
        }
    }
    documents::delete(&txn, &scope.id, Tenant::KIND, &doc.id).await?;
    documents::delete(
        &txn,
        &scope.id,
        TENANT_VARIABLES_KIND,
        &tenant_variables_id(&doc.id),
    )
    .await?;
    txn.commit().await?;
    Ok(StatusCode::OK)
}

async fn get_tenant(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<Tenant>> {
    let (doc, _) = visible_tenant(state.store.conn(), &principal, &scope, path.get("id")?).await?;
    Ok(Json(resources::present(&doc, &scope.id)?))
}

/// Every tenant of the space the principal can see, with `filter` applied.
async fn tenants_matching(
    conn: &impl ConnectionTrait,
    principal: &Principal,
    scope: &SpaceScope,
    query: &ListQuery,
    params: &Params,
) -> ApiResult<Vec<(Document, Tenant)>> {
    let project = params.get("projectId").filter(|p| !p.is_empty());
    let tags = params.list("tags");
    let cloned_from = params.get("clonedFromTenantId").filter(|p| !p.is_empty());
    let (docs, _) =
        documents::list(conn, &scope.id, Tenant::KIND, &resources::unpaged(query)).await?;
    let mut out = Vec::new();
    for doc in docs {
        if !may(principal, scope, Permission::TenantView, Some(&doc.id)) {
            continue;
        }
        let tenant: Tenant = documents::decode(&doc)?;
        let keep = project.is_none_or(|p| tenant.project_environments.contains_key(p))
            && tenant_tags::matches(&tenant.tenant_tags, &tags)
            && cloned_from.is_none_or(|c| tenant.cloned_from_tenant_id.as_deref() == Some(c));
        if keep {
            out.push((doc, tenant));
        }
    }
    Ok(out)
}

/// `GET /tenants{?skip,take,ids,partialName,name,projectId,tags,clonedFromTenantId}`.
async fn list_tenants(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Collection<Tenant>>> {
    let query = resources::list_query(&params)?;
    let found = tenants_matching(state.store.conn(), &principal, &scope, &query, &params).await?;
    let (page, total) = resources::page_slice(found, &query);
    let docs = page.into_iter().map(|(doc, _)| doc).collect();
    let path = format!("{}/tenants", space_prefix(scope.id.as_str()));
    let mut collection = resources::page::<Tenant>(docs, total, &query, &scope.id, path.clone())?;
    collection.links.insert(
        "Template".into(),
        format!("{path}{{/id}}{{?skip,projectId,name,tags,take,ids,clone,partialName,clonedFromTenantId}}"),
    );
    Ok(Json(collection))
}

async fn all_tenants(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Vec<Tenant>>> {
    let found = tenants_matching(
        state.store.conn(),
        &principal,
        &scope,
        &ListQuery::everything(),
        &params,
    )
    .await?;
    Ok(Json(
        found
            .iter()
            .map(|(doc, _)| resources::present(doc, &scope.id))
            .collect::<ApiResult<_>>()?,
    ))
}

/// `GET /tenants/tag-test{?tenantIds,tags}`: for each tenant, whether it matches the tag
/// filter and, when not, which tag sets it misses.
async fn tag_test(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<BTreeMap<String, Value>>> {
    let conn = state.store.conn();
    let known = known_tags(conn, &scope.id).await?;
    let tags = canonical_tags(&known, &params.list("tags"), "tags")?;
    let mut out = BTreeMap::new();
    for id in params.list("tenantIds") {
        let (doc, tenant) = visible_tenant(conn, &principal, &scope, &id).await?;
        let missing = tenant_tags::missing(&tenant.tenant_tags, &tags);
        let reason = if missing.is_empty() {
            "Tenant matches all the tag sets in the filter.".to_owned()
        } else {
            format!("Tenant does not have {}.", missing.join(", nor "))
        };
        out.insert(
            doc.id,
            json!({ "IsMatched": missing.is_empty(), "Reason": reason, "MissingTags": missing }),
        );
    }
    Ok(Json(out))
}

/// The tenants a tenanted deployment of `project` to `environment` goes to: those named in
/// `names` (by id or name) and those matching `tags`, each of which must be connected to the
/// project in that environment and not disabled. Named tenants that are not connected are a
/// 400; tags that match none connected are a 400 too, so a deployment never silently does
/// nothing.
pub async fn deployment_tenants(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    project: &Project,
    environment: &Environment,
    names: &[String],
    tags: &[String],
) -> ApiResult<Vec<Tenant>> {
    let (docs, _) = documents::list(conn, space, Tenant::KIND, &ListQuery::everything()).await?;
    let all: Vec<Tenant> = docs
        .iter()
        .map(documents::decode::<Tenant>)
        .collect::<Result<_, _>>()?;
    let mut chosen: Vec<Tenant> = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let field = format!("Tenants[{index}]");
        let tenant = all
            .iter()
            .find(|t| t.id.eq_ignore_ascii_case(name) || t.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                ApiError::invalid_field(&field, format!("tenant '{name}' was not found"))
            })?;
        check_connected(tenant, project, environment)
            .map_err(|why| ApiError::invalid_field(&field, why))?;
        if !chosen.iter().any(|t| t.id == tenant.id) {
            chosen.push(tenant.clone());
        }
    }
    if !tags.is_empty() {
        let known = known_tags(conn, space).await?;
        let tags = canonical_tags(&known, tags, "TenantTags")?;
        let matched: Vec<&Tenant> = all
            .iter()
            .filter(|t| tenant_tags::matches(&t.tenant_tags, &tags))
            .filter(|t| check_connected(t, project, environment).is_ok())
            .collect();
        if matched.is_empty() {
            return Err(ApiError::invalid_field(
                "TenantTags",
                format!(
                    "no enabled tenant with the tags {} is connected to project '{}' in {}",
                    tags.join(", "),
                    project.name,
                    environment.name
                ),
            ));
        }
        for tenant in matched {
            if !chosen.iter().any(|t| t.id == tenant.id) {
                chosen.push(tenant.clone());
            }
        }
    }
    Ok(chosen)
}

/// Why `tenant` cannot take a deployment of `project` to `environment`, if it cannot.
pub fn check_connected(
    tenant: &Tenant,
    project: &Project,
    environment: &Environment,
) -> Result<(), String> {
    if tenant.is_disabled {
        return Err(format!("tenant '{}' is disabled", tenant.name));
    }
    let connected = tenant
        .project_environments
        .get(&project.id)
        .is_some_and(|envs| envs.contains(&environment.id));
    if !connected {
        return Err(format!(
            "tenant '{}' is not connected to project '{}' in {}",
            tenant.name, project.name, environment.name
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tenant variables.

/// The stored values of a tenant (none yet: empty).
pub async fn stored_variables(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    tenant_id: &str,
) -> ApiResult<StoredTenantVariables> {
    match documents::get(
        conn,
        space,
        TENANT_VARIABLES_KIND,
        &tenant_variables_id(tenant_id),
    )
    .await?
    {
        Some(doc) => Ok(documents::decode(&doc)?),
        None => Ok(StoredTenantVariables {
            tenant_id: tenant_id.to_owned(),
            ..StoredTenantVariables::default()
        }),
    }
}

/// The projects a tenant is connected to, and the library variable sets they include that
/// declare templates.
pub(crate) async fn template_owners(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    tenant: &Tenant,
) -> ApiResult<(Vec<Project>, Vec<LibraryVariableSet>)> {
    let mut projects = Vec::new();
    let mut libraries: Vec<LibraryVariableSet> = Vec::new();
    for project_id in tenant.project_environments.keys() {
        let Some(doc) = documents::get(conn, space, Project::KIND, project_id).await? else {
            continue;
        };
        let project: Project = documents::decode(&doc)?;
        for library_id in &project.included_library_variable_set_ids {
            if libraries.iter().any(|l| &l.id == library_id) {
                continue;
            }
            if let Some((_, library)) =
                resources::load_by_id_or_name::<LibraryVariableSet>(conn, space, library_id).await?
                && !library.templates.is_empty()
            {
                libraries.push(library);
            }
        }
        projects.push(project);
    }
    Ok((projects, libraries))
}

/// How a value shows: as text, or for a sensitive template only whether it is set.
pub(crate) fn shown(template: &VariableTemplate, value: Option<&String>) -> Value {
    if template.is_sensitive() {
        json!({ "HasValue": value.is_some(), "NewValue": null })
    } else {
        value.map_or(Value::Null, |v| Value::String(v.clone()))
    }
}

/// The values given for `templates`, by template id, as shown: those set, and every
/// sensitive one (to say whether it is set).
fn shown_values(
    templates: &[VariableTemplate],
    values: Option<&BTreeMap<String, String>>,
) -> Value {
    let items: serde_json::Map<String, Value> = templates
        .iter()
        .filter_map(|t| {
            let value = values.and_then(|v| v.get(&t.id));
            (value.is_some() || t.is_sensitive()).then(|| (t.id.clone(), shown(t, value)))
        })
        .collect();
    Value::Object(items)
}

/// `GET /tenants/{id}/variables` (Octopus's `TenantVariableResource`), with only the values the
/// principal may see ([`TenantValueAccess`]).
fn present_tenant_variables(
    scope: &SpaceScope,
    principal: &Principal,
    values: &TenantValues,
) -> Value {
    let space = &scope.id;
    let TenantValues {
        tenant,
        stored,
        projects,
        libraries,
    } = values;
    let access = values.access(principal, scope);
    let mut project_variables = serde_json::Map::new();
    for project in projects {
        let mut by_environment = serde_json::Map::new();
        let values = stored.project_variables.get(&project.id);
        for environment in tenant
            .project_environments
            .get(&project.id)
            .into_iter()
            .flatten()
            .filter(|environment| access.can_see(&project.id, environment))
        {
            let values = values.and_then(|v| v.get(environment));
            by_environment.insert(
                environment.clone(),
                shown_values(&project.templates, values),
            );
        }
        if by_environment.is_empty() {
            continue;
        }
        project_variables.insert(
            project.id.clone(),
            json!({
                "ProjectId": project.id,
                "ProjectName": project.name,
                "Templates": project.templates,
                "Variables": by_environment,
                "Links": { "Project": format!("{}/projects/{}", space_prefix(space.as_str()), project.id) },
            }),
        );
    }
    let mut library_variables = serde_json::Map::new();
    for library in libraries.iter().filter(|_| access.can_see_common()) {
        let items = shown_values(
            &library.templates,
            stored.library_variables.get(&library.id),
        );
        library_variables.insert(
            library.id.clone(),
            json!({
                "LibraryVariableSetId": library.id,
                "LibraryVariableSetName": library.name,
                "Templates": library.templates,
                "Variables": items,
                "Links": { "LibraryVariableSet": format!("{}/libraryvariablesets/{}", space_prefix(space.as_str()), library.id) },
            }),
        );
    }
    json!({
        "TenantId": tenant.id,
        "TenantName": tenant.name,
        "SpaceId": space.as_str(),
        "ProjectVariables": project_variables,
        "LibraryVariables": library_variables,
        "Links": { "Self": format!("{}/tenants/{}/variables", space_prefix(space.as_str()), tenant.id) },
    })
}

/// The templates that need a value from the tenant: none stored in `values` and no default.
fn missing_templates<'t>(
    templates: &'t [VariableTemplate],
    values: Option<&BTreeMap<String, String>>,
) -> impl Iterator<Item = &'t VariableTemplate> {
    templates.iter().filter(move |t| {
        values.and_then(|v| v.get(&t.id)).is_none() && t.default_text().is_none_or(|d| d.is_empty())
    })
}

/// `GET /tenants/variables-missing{?tenantId,projectId,environmentId,includeDetails}`: each
/// tenant the caller can see that lacks a value for some template of a connected project (per
/// connected environment) or of a library variable set such a project includes. Without
/// `includeDetails=true`, `MissingVariables` is empty and only the tenants are named.
async fn missing_variables(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Vec<Value>>> {
    let conn = state.store.conn();
    let only_tenant = params.get("tenantId").filter(|v| !v.is_empty());
    let only_project = params.get("projectId").filter(|v| !v.is_empty());
    let only_environment = params.get("environmentId").filter(|v| !v.is_empty());
    let details = params.flag("includeDetails")?.unwrap_or(false);
    let (docs, _) =
        documents::list(conn, &scope.id, Tenant::KIND, &ListQuery::everything()).await?;
    let mut out = Vec::new();
    for doc in docs {
        if only_tenant.is_some_and(|t| t != doc.id)
            || !may(&principal, &scope, Permission::TenantView, Some(&doc.id))
        {
            continue;
        }
        let tenant: Tenant = documents::decode(&doc)?;
        let stored = stored_variables(conn, &scope.id, &tenant.id).await?;
        let (projects, libraries) = template_owners(conn, &scope.id, &tenant).await?;
        let mut missing = Vec::new();
        let mut library_ids: Vec<&String> = Vec::new();
        for project in projects
            .iter()
            .filter(|p| only_project.is_none_or(|id| id == p.id))
        {
            let environments: Vec<&String> = tenant
                .project_environments
                .get(&project.id)
                .into_iter()
                .flatten()
                .filter(|e| only_environment.is_none_or(|id| id == e.as_str()))
                .collect();
            if environments.is_empty() {
                continue;
            }
            library_ids.extend(&project.included_library_variable_set_ids);
            let values = stored.project_variables.get(&project.id);
            for environment in environments {
                let values = values.and_then(|v| v.get(environment));
                for template in missing_templates(&project.templates, values) {
                    missing.push(json!({
                        "ProjectId": project.id,
                        "EnvironmentId": environment,
                        "LibraryVariableSetId": null,
                        "VariableTemplateName": template.name,
                        "VariableTemplateId": template.id,
                    }));
                }
            }
        }
        for library in libraries.iter().filter(|l| library_ids.contains(&&l.id)) {
            let values = stored.library_variables.get(&library.id);
            // Values for some environments count where they cover every environment the
            // tenant runs a project including the set in.
            let environments: Vec<&String> = projects
                .iter()
                .filter(|p| p.included_library_variable_set_ids.contains(&library.id))
                .flat_map(|p| tenant.project_environments.get(&p.id).into_iter().flatten())
                .collect();
            let covered = |template: &VariableTemplate| {
                !environments.is_empty()
                    && environments
                        .iter()
                        .all(|e| stored.library_value(&library.id, &template.id, e).is_some())
            };
            for template in missing_templates(&library.templates, values).filter(|t| !covered(t)) {
                missing.push(json!({
                    "ProjectId": null,
                    "EnvironmentId": null,
                    "LibraryVariableSetId": library.id,
                    "VariableTemplateName": template.name,
                    "VariableTemplateId": template.id,
                }));
            }
        }
        if !missing.is_empty() {
            if !details {
                missing.clear();
            }
            out.push(json!({
                "TenantId": tenant.id,
                "MissingVariables": missing,
                "Links": { "Tenant": format!("{}/tenants/{}", space_prefix(scope.id.as_str()), tenant.id) },
            }));
        }
    }
    Ok(Json(out))
}

async fn get_tenant_variables(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<Value>> {
    let values =
        TenantValues::load(state.store.conn(), &scope, &principal, path.get("id")?).await?;
    Ok(Json(present_tenant_variables(&scope, &principal, &values)))
}

/// Seals a tenant's sensitive value with the master key; the field is named when there is none.
pub(crate) fn sealer(state: &AppState) -> impl Fn(&str, &str) -> ApiResult<String> + '_ {
    |field: &str, plain: &str| {
        let keyring = state.keyring.as_deref().ok_or_else(|| {
            ApiError::invalid_field(
                field,
                "this server has no master key for sensitive values (secrets.master_key), so it cannot store them encrypted",
            )
        })?;
        keyring.seal(plain).map_err(|err| {
            tracing::error!(error = %err, "a tenant's sensitive value could not be sealed");
            ApiError::internal("a sensitive value could not be encrypted with the master key")
        })
    }
}

/// What a client sent for one template: `None` clears it.
pub(crate) enum Given {
    Clear,
    Keep,
    Set(String),
}

/// Reads a value sent for `template` at `field`: text, null, or for a sensitive template
/// `{HasValue, NewValue}` (`HasValue` without `NewValue` keeps the stored secret).
pub(crate) fn given(template: &VariableTemplate, value: &Value, field: &str) -> ApiResult<Given> {
    match value {
        Value::Null => Ok(Given::Clear),
        Value::String(text) if text.is_empty() => Ok(Given::Clear),
        Value::String(text) if cuttle_secrets::Keyring::is_sealed(text) => {
            Err(ApiError::invalid_field(
                field,
                "a value cannot begin with Cuttle's sealed-value prefix",
            ))
        }
        Value::String(text) => Ok(Given::Set(text.clone())),
        Value::Bool(b) => Ok(Given::Set(if *b { "True" } else { "False" }.into())),
        Value::Number(n) => Ok(Given::Set(n.to_string())),
        Value::Object(map) if template.is_sensitive() => {
            let new = map
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("NewValue"))
                .map(|(_, v)| v);
            let has = map
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("HasValue"))
                .is_some_and(|(_, v)| v == &Value::Bool(true));
            match new {
                Some(Value::String(text)) if !text.is_empty() => Ok(Given::Set(text.clone())),
                _ if has => Ok(Given::Keep),
                _ => Ok(Given::Clear),
            }
        }
        _ => Err(ApiError::invalid_field(
            field,
            "must be text (or, for a sensitive template, {\"HasValue\", \"NewValue\"})",
        )),
    }
}

/// What to store for the value sent for template `template_id` of `owner` (`None`: nothing),
/// sealing a sensitive one; `kept` is the value stored now.
fn value_to_store(
    owner: (&str, &[VariableTemplate]),
    template_id: &str,
    value: &Value,
    field: &str,
    kept: Option<&String>,
    seal: &dyn Fn(&str, &str) -> ApiResult<String>,
) -> ApiResult<Option<String>> {
    let (owner, templates) = owner;
    let template = templates
        .iter()
        .find(|t| t.id == template_id)
        .ok_or_else(|| {
            ApiError::invalid_field(
                field,
                format!("{owner} has no variable template '{template_id}'"),
            )
        })?;
    Ok(match given(template, value, field)? {
        Given::Clear => None,
        Given::Keep => kept.cloned(),
        Given::Set(text) if template.is_sensitive() => Some(seal(field, &text)?),
        Given::Set(text) => Some(text),
    })
}

/// The map of one JSON object member, or an empty one; a non-object is a 400 naming `field`.
pub(crate) fn members<'v>(
    value: Option<&'v Value>,
    field: &str,
) -> ApiResult<Vec<(&'v String, &'v Value)>> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => Ok(map.iter().collect()),
        Some(_) => Err(ApiError::invalid_field(field, "must be an object")),
    }
}

pub(crate) fn member<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    value
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// A tenant the principal may see, with its stored values and the projects and library sets
/// whose templates it gives values for: what every view of its values is made from.
pub(crate) struct TenantValues {
    pub tenant: Tenant,
    pub stored: StoredTenantVariables,
    pub projects: Vec<Project>,
    pub libraries: Vec<LibraryVariableSet>,
}

impl TenantValues {
    /// Loads the tenant `id` and its values; a tenant the principal cannot see is a 404.
    pub async fn load(
        conn: &impl ConnectionTrait,
        scope: &SpaceScope,
        principal: &Principal,
        id: &str,
    ) -> ApiResult<TenantValues> {
        let (_, tenant) = visible_tenant(conn, principal, scope, id).await?;
        let stored = stored_variables(conn, &scope.id, &tenant.id).await?;
        let (projects, libraries) = template_owners(conn, &scope.id, &tenant).await?;
        Ok(TenantValues {
            tenant,
            stored,
            projects,
            libraries,
        })
    }

    /// Who may see and change which of the values.
    pub fn access<'p>(
        &self,
        principal: &'p Principal,
        scope: &SpaceScope,
    ) -> TenantValueAccess<'p> {
        TenantValueAccess::new(principal, scope, &self.tenant, &self.projects)
    }
}

/// A change to a tenant's values: what it starts from, read in its transaction.
pub(crate) struct ValuesEdit {
    txn: DatabaseTransaction,
    pub values: TenantValues,
}

impl ValuesEdit {
    /// Opens the tenant `path` names for a change of its values: 404 when the principal cannot
    /// see it, 403 without TenantEdit on it.
    pub async fn open(
        state: &AppState,
        scope: &SpaceScope,
        principal: &Principal,
        path: &PathParams,
    ) -> ApiResult<ValuesEdit> {
        let txn = state.store.conn().begin().await?;
        let values = TenantValues::load(&txn, scope, principal, path.get("id")?).await?;
        require(principal, scope, Permission::TenantEdit, &values.tenant.id)?;
        Ok(ValuesEdit { txn, values })
    }

    /// Stores `next` and commits; returns the values as they now are.
    pub async fn save(
        self,
        scope: &SpaceScope,
        next: StoredTenantVariables,
    ) -> ApiResult<TenantValues> {
        let ValuesEdit { txn, mut values } = self;
        save_stored_variables(&txn, &scope.id, &values.tenant, &next).await?;
        txn.commit().await?;
        values.stored = next;
        Ok(values)
    }
}

/// `PUT /tenants/{id}/variables`: the body as `GET` returns it, with the values wanted. Every
/// template value is replaced by what the body gives; a sensitive one sent back as
/// `{"HasValue": true, "NewValue": null}` keeps its stored secret.
async fn update_tenant_variables(
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
    // What the body gives values for: (project, environment), and library sets.
    let mut sent_environments = Vec::new();
    let mut sent_libraries = Vec::new();
    let seal = sealer(&state);
    // This route shows and takes the values for every environment; those for some environments
    // only (`commonvariables`) stay as they are.
    let mut next = StoredTenantVariables {
        tenant_id: tenant.id.clone(),
        scoped_library_variables: current.scoped_library_variables.clone(),
        ..StoredTenantVariables::default()
    };
    for (project_id, entry) in members(member(&body, "ProjectVariables"), "ProjectVariables")? {
        let field = format!("ProjectVariables.{project_id}");
        let project = projects
            .iter()
            .find(|p| &p.id == project_id)
            .ok_or_else(|| {
                ApiError::invalid_field(
                    &field,
                    format!(
                        "tenant '{}' is not connected to project '{project_id}'",
                        tenant.name
                    ),
                )
            })?;
        let connected = tenant
            .project_environments
            .get(project_id)
            .cloned()
            .unwrap_or_default();
        for (environment_id, values) in
            members(member(entry, "Variables"), &format!("{field}.Variables"))?
        {
            let field = format!("{field}.Variables.{environment_id}");
            sent_environments.push((project_id.clone(), environment_id.clone()));
            if !connected.contains(environment_id) {
                return Err(ApiError::invalid_field(
                    &field,
                    format!(
                        "tenant '{}' is not connected to project '{}' in environment '{environment_id}'",
                        tenant.name, project.name
                    ),
                ));
            }
            for (template_id, value) in members(Some(values), &field)? {
                let field = format!("{field}.{template_id}");
                let kept = current
                    .project_variables
                    .get(project_id)
                    .and_then(|v| v.get(environment_id))
                    .and_then(|v| v.get(template_id));
                let owner = format!("project '{}'", project.name);
                let stored = value_to_store(
                    (&owner, &project.templates),
                    template_id,
                    value,
                    &field,
                    kept,
                    &seal,
                )?;
                if let Some(stored) = stored {
                    next.project_variables
                        .entry(project_id.clone())
                        .or_default()
                        .entry(environment_id.clone())
                        .or_default()
                        .insert(template_id.clone(), stored);
                }
            }
        }
    }
    for (library_id, entry) in members(member(&body, "LibraryVariables"), "LibraryVariables")? {
        let field = format!("LibraryVariables.{library_id}");
        sent_libraries.push(library_id.clone());
        let library = libraries.iter().find(|l| &l.id == library_id).ok_or_else(|| {
            ApiError::invalid_field(
                &field,
                format!(
                    "no project tenant '{}' is connected to includes library variable set '{library_id}' with templates",
                    tenant.name
                ),
            )
        })?;
        for (template_id, value) in
            members(member(entry, "Variables"), &format!("{field}.Variables"))?
        {
            let field = format!("{field}.Variables.{template_id}");
            let kept = current
                .library_variables
                .get(library_id)
                .and_then(|v| v.get(template_id));
            let owner = format!("library variable set '{}'", library.name);
            let stored = value_to_store(
                (&owner, &library.templates),
                template_id,
                value,
                &field,
                kept,
                &seal,
            )?;
            if let Some(stored) = stored {
                next.library_variables
                    .entry(library_id.clone())
                    .or_default()
                    .insert(template_id.clone(), stored);
            }
        }
    }
    keep_what_may_not_change(
        &access,
        (projects, libraries),
        current,
        &mut next,
        (&sent_environments, &sent_libraries),
    )?;
    let saved = edit.save(&scope, next).await?;
    Ok(Json(present_tenant_variables(&scope, &principal, &saved)))
}

/// Holds a save of a tenant's values to what the principal may change ([`TenantValueAccess`]):
/// values it cannot see are kept as stored (and sending any is a 403, so a guess cannot probe
/// them), and values it sees but may not change must come back unchanged.
pub(crate) fn keep_what_may_not_change(
    access: &TenantValueAccess<'_>,
    (projects, libraries): (&[Project], &[LibraryVariableSet]),
    current: &StoredTenantVariables,
    next: &mut StoredTenantVariables,
    (sent_environments, sent_libraries): (&[(String, String)], &[String]),
) -> ApiResult<()> {
    // Only values for templates that still exist count as a change.
    let live = |templates: &[VariableTemplate], values: Option<&BTreeMap<String, String>>| {
        values
            .into_iter()
            .flatten()
            .filter(|(id, _)| templates.iter().any(|t| &t.id == *id))
            .map(|(id, value)| (id.clone(), value.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    for project in projects {
        for environment in access.environments_of(&project.id) {
            let before = current
                .project_variables
                .get(&project.id)
                .and_then(|v| v.get(environment));
            let what = || {
                format!(
                    "the values of project '{}' in environment '{environment}'",
                    project.name
                )
            };
            if !access.can_see(&project.id, environment) {
                if sent_environments
                    .iter()
                    .any(|(p, e)| p == &project.id && e == environment)
                {
                    return Err(access.refuse(&what()));
                }
                if let Some(values) = before {
                    next.project_variables
                        .entry(project.id.clone())
                        .or_default()
                        .insert(environment.to_owned(), values.clone());
                }
                continue;
            }
            let after = next
                .project_variables
                .get(&project.id)
                .and_then(|v| v.get(environment));
            if live(&project.templates, before) != live(&project.templates, after)
                && !access.can_change(&project.id, environment)
            {
                return Err(access.refuse(&what()));
            }
        }
    }
    for library in libraries {
        let before = current.library_variables.get(&library.id);
        let what = || {
            format!(
                "the tenant's values for library variable set '{}'",
                library.name
            )
        };
        if !access.can_see_common() {
            if sent_libraries.contains(&library.id) {
                return Err(access.refuse(&what()));
            }
            if let Some(values) = before {
                next.library_variables
                    .insert(library.id.clone(), values.clone());
            }
            continue;
        }
        let after = next.library_variables.get(&library.id);
        if live(&library.templates, before) != live(&library.templates, after)
            && !access.can_change_common()
        {
            return Err(access.refuse(&what()));
        }
    }
    Ok(())
}

/// Writes a tenant's values for variable templates (its one `TenantVariables` document).
pub(crate) async fn save_stored_variables(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    tenant: &Tenant,
    values: &StoredTenantVariables,
) -> ApiResult<()> {
    let id = tenant_variables_id(&tenant.id);
    let data = documents::encode(values);
    let replaced = documents::replace(
        conn,
        space,
        TENANT_VARIABLES_KIND,
        &id,
        Replacement {
            name: tenant.name.clone(),
            unique_key: None,
            sort_order: 0,
            data: data.clone(),
            expected_version: None,
        },
        "",
    )
    .await?;
    if replaced.is_none() {
        documents::insert(
            conn,
            documents::NewDocument {
                id,
                space_id: space.clone(),
                kind: TENANT_VARIABLES_KIND,
                name: tenant.name.clone(),
                parent_id: Some(tenant.id.clone()),
                unique_key: None,
                sort_order: 0,
                data,
            },
            "",
        )
        .await?;
    }
    Ok(())
}

/// What was deleted that tenants may refer to.
pub enum Gone<'a> {
    /// A project: tenants are disconnected from it and lose their values for its templates.
    Project(&'a str),
    /// An environment: it leaves every tenant's connections and values (a library value scoped
    /// to it alone goes).
    Environment(&'a str),
}

/// Keeps tenants true to what exists after a project or environment is deleted (in the
/// deleting transaction).
pub async fn forget(conn: &impl ConnectionTrait, space: &SpaceId, gone: Gone<'_>) -> ApiResult<()> {
    let (docs, _) = documents::list(conn, space, Tenant::KIND, &ListQuery::everything()).await?;
    for doc in docs {
        let mut tenant: Tenant = documents::decode(&doc)?;
        let before = tenant.project_environments.clone();
        match gone {
            Gone::Project(id) => {
                tenant.project_environments.remove(id);
            }
            Gone::Environment(id) => {
                for environments in tenant.project_environments.values_mut() {
                    environments.retain(|e| e != id);
                }
            }
        }
        if tenant.project_environments != before {
            rewrite(conn, space, &doc, documents::encode(&tenant)).await?;
        }
        let variables_id = tenant_variables_id(&doc.id);
        if let Some(stored_doc) =
            documents::get(conn, space, TENANT_VARIABLES_KIND, &variables_id).await?
        {
            let mut stored: StoredTenantVariables = documents::decode(&stored_doc)?;
            let before = stored.clone();
            match gone {
                Gone::Project(id) => {
                    stored.project_variables.remove(id);
                }
                Gone::Environment(id) => {
                    for by_environment in stored.project_variables.values_mut() {
                        by_environment.remove(id);
                    }
                    for scoped in &mut stored.scoped_library_variables {
                        scoped.environment_ids.retain(|e| e != id);
                    }
                    stored
                        .scoped_library_variables
                        .retain(|scoped| !scoped.environment_ids.is_empty());
                }
            }
            if stored != before {
                rewrite(conn, space, &stored_doc, documents::encode(&stored)).await?;
            }
        }
    }
    Ok(())
}
