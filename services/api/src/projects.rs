//! Projects (created with a default channel, a deployment process and a variable set;
//! addressable by id, slug or name), channels, deployment processes and variable sets.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathParams, Principal, SpaceScope};
use crate::links::{links, space_prefix};
use crate::resources::{self, Resource, present, resource_accessors, resource_assign};
use crate::variable_access::VariableAccess;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cuttle_authz::Permission;
use cuttle_domain::SpaceId;
use cuttle_domain::ids::slugify;
use cuttle_domain::script::ScriptSyntax;
use cuttle_store::documents::{self, Document, ListQuery, NewDocument, Replacement};
use cuttle_store::{ConnectionTrait, TransactionTrait};
use cuttle_wire::resources::{
    Channel, DeploymentProcess, Environment, Lifecycle, Project, ProjectGroup, ReferenceItem,
    Release, Variable, VariableSet,
};
use cuttle_wire::{Collection, Links};
use serde_json::json;
use std::collections::HashSet;

/// Document kind of deployment processes.
pub const PROCESS_KIND: &str = "DeploymentProcess";
/// Document kind of frozen process snapshots.
pub const PROCESS_SNAPSHOT_KIND: &str = "DeploymentProcessSnapshot";
/// Document kind of variable sets.
pub const VARIABLES_KIND: &str = "VariableSet";
/// Document kind of frozen variable-set snapshots.
pub const VARIABLES_SNAPSHOT_KIND: &str = "VariableSetSnapshot";

/// Routes of this module.
pub fn routes(prefix: &str) -> Router<AppState> {
    let projects = format!("{prefix}/projects");
    Router::new()
        .route(&projects, get(list_projects).post(create_project))
        .route(&format!("{projects}/all"), get(all_projects))
        .route(
            &format!("{projects}/{{id}}"),
            get(get_project).put(update_project).delete(delete_project),
        )
        .route(
            &format!("{projects}/{{id}}/channels"),
            get(project_channels),
        )
        .route(
            &format!("{projects}/{{id}}/deploymentprocesses"),
            get(get_process).put(update_process),
        )
        .route(
            &format!("{projects}/{{id}}/deploymentprocesses/template"),
            get(process_template),
        )
        .route(
            &format!("{projects}/{{id}}/variables"),
            get(get_project_variables).put(update_project_variables),
        )
        .route(
            &format!("{prefix}/deploymentprocesses/{{id}}"),
            get(get_process_by_id),
        )
        .route(
            &format!("{prefix}/variables/{{id}}"),
            get(get_variables_by_id).put(update_variables_by_id),
        )
        .merge(channel_routes(prefix))
}

impl Resource for Project {
    const KIND: &'static str = "Project";
    const PREFIX: &'static str = "Projects";
    const COLLECTION: &'static str = "projects";
    const NOUN: &'static str = "project";

    resource_accessors!();

    fn assign(&mut self, id: String, space: &SpaceId) {
        self.variable_set_id = format!("variableset-{id}");
        self.deployment_process_id = format!("deploymentprocess-{id}");
        self.id = id;
        self.space_id = space.to_string();
    }
    fn links(&self, space: &SpaceId) -> Links {
        let base = format!("{}/projects/{}", space_prefix(space.as_str()), self.id);
        links([
            ("Self", base.clone()),
            (
                "Releases",
                format!("{base}/releases{{/version}}{{?skip,take,searchByVersion}}"),
            ),
            (
                "Channels",
                format!("{base}/channels{{/id}}{{?skip,take,partialName}}"),
            ),
            ("DeploymentProcess", format!("{base}/deploymentprocesses")),
            ("Variables", format!("{base}/variables")),
            ("DeploymentSettings", format!("{base}/deploymentsettings")),
            ("Progression", format!("{base}/progression")),
            ("Web", format!("/app#/{space}/projects/{}", self.id)),
        ])
    }
    fn prepare(&mut self) -> ApiResult<()> {
        if self.slug.trim().is_empty() {
            self.slug = slugify(&self.name);
        }
        if self.tenanted_deployment_mode.is_empty() {
            self.tenanted_deployment_mode = "Untenanted".into();
        }
        if !["Untenanted", "TenantedOrUntenanted", "Tenanted"]
            .contains(&self.tenanted_deployment_mode.as_str())
        {
            return Err(ApiError::invalid_field(
                "TenantedDeploymentMode",
                "must be Untenanted, TenantedOrUntenanted or Tenanted",
            ));
        }
        crate::tenants::prepare_templates(&mut self.templates)?;
        if self.default_guided_failure_mode.is_empty() {
            self.default_guided_failure_mode = "EnvironmentDefault".into();
        }
        if self.versioning_strategy.is_null() {
            self.versioning_strategy = json!({
                "Template": "#{Octopus.Version.LastMajor}.#{Octopus.Version.LastMinor}.#{Octopus.Version.NextPatch}",
                "DonorPackage": null, "DonorPackageStepId": null
            });
        }
        if self.release_creation_strategy.is_null() {
            self.release_creation_strategy = json!({"ChannelId": null, "ReleaseCreationPackage": null, "ReleaseCreationPackageStepId": null});
        }
        if self.persistence_settings.is_null() {
            self.persistence_settings = json!({"Type": "Database"});
        }
        if self.project_connectivity_policy.is_null() {
            self.project_connectivity_policy = json!({
                "SkipMachineBehavior": "None", "TargetRoles": [],
                "AllowDeploymentsToNoTargets": false, "ExcludeUnhealthyTargets": false
            });
        }
        Ok(())
    }
}

impl Resource for Channel {
    const KIND: &'static str = "Channel";
    const PREFIX: &'static str = "Channels";
    const COLLECTION: &'static str = "channels";
    const NOUN: &'static str = "channel";

    resource_accessors!();

    resource_assign!();
    fn links(&self, space: &SpaceId) -> Links {
        let prefix = space_prefix(space.as_str());
        links([
            ("Self", format!("{prefix}/channels/{}", self.id)),
            ("Project", format!("{prefix}/projects/{}", self.project_id)),
            (
                "Releases",
                format!(
                    "{prefix}/channels/{}/releases{{?skip,take,searchByVersion}}",
                    self.id
                ),
            ),
        ])
    }
    fn parent_id(&self) -> Option<String> {
        Some(self.project_id.clone())
    }
    fn prepare(&mut self) -> ApiResult<()> {
        self.slug = slugify(&self.name);
        if self.project_id.trim().is_empty() {
            return Err(ApiError::invalid_field(
                "ProjectId",
                "a channel belongs to a project",
            ));
        }
        Ok(())
    }
}

/// Finds a project by id, slug or name (the CLI relies on all three).
pub async fn find_project(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    id_or_slug_or_name: &str,
) -> ApiResult<Option<(Document, Project)>> {
    if let Some(found) =
        resources::load_by_id_or_name::<Project>(conn, space, id_or_slug_or_name).await?
    {
        return Ok(Some(found));
    }
    let query = ListQuery::everything();
    let (docs, _) = documents::list(conn, space, Project::KIND, &query).await?;
    for doc in docs {
        let project: Project = documents::decode(&doc)?;
        if project.slug.eq_ignore_ascii_case(id_or_slug_or_name) {
            return Ok(Some((doc, project)));
        }
    }
    Ok(None)
}

/// Like [`find_project`], 404 when absent.
pub async fn require_project(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    key: &str,
) -> ApiResult<(Document, Project)> {
    find_project(conn, space, key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("project '{key}'")))
}

/// Whether the principal may view every project of the space (no project restriction).
fn sees_every_project(principal: &Principal, scope: &SpaceScope) -> bool {
    principal.grants.allows(
        Permission::ProjectView,
        &cuttle_authz::Target {
            space: Some(scope.id.as_str()),
            ..Default::default()
        },
    )
}

/// Whether the principal may view this project (a team restricted to projects or project
/// groups sees only those).
fn sees_project(principal: &Principal, scope: &SpaceScope, doc: &Document) -> ApiResult<bool> {
    let project: Project = documents::decode(doc)?;
    Ok(principal.grants.allows(
        Permission::ProjectView,
        &cuttle_authz::Target {
            space: Some(scope.id.as_str()),
            project: Some(&project.id),
            project_group: Some(&project.project_group_id),
            ..Default::default()
        },
    ))
}

async fn list_projects(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Collection<Project>>> {
    let query = resources::list_query(&params)?;
    let path = format!("{}/projects", space_prefix(scope.id.as_str()));
    if sees_every_project(&principal, &scope) {
        let (docs, total) =
            documents::list(state.store.conn(), &scope.id, Project::KIND, &query).await?;
        return Ok(Json(resources::page(docs, total, &query, &scope.id, path)?));
    }
    // Restricted: filter everything, then page what is visible.
    let (docs, _) = documents::list(
        state.store.conn(),
        &scope.id,
        Project::KIND,
        &resources::unpaged(&query),
    )
    .await?;
    let mut visible = Vec::new();
    for doc in docs {
        if sees_project(&principal, &scope, &doc)? {
            visible.push(doc);
        }
    }
    let (page, total) = resources::page_slice(visible, &query);
    Ok(Json(resources::page(page, total, &query, &scope.id, path)?))
}

async fn all_projects(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
) -> ApiResult<Json<Vec<Project>>> {
    let query = ListQuery::everything();
    let (docs, _) = documents::list(state.store.conn(), &scope.id, Project::KIND, &query).await?;
    let mut visible = Vec::new();
    for doc in docs {
        if sees_project(&principal, &scope, &doc)? {
            visible.push(doc);
        }
    }
    let docs = visible;
    Ok(Json(
        docs.iter()
            .map(|d| present::<Project>(d, &scope.id))
            .collect::<ApiResult<_>>()?,
    ))
}

async fn get_project(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<Project>> {
    let (doc, _) = require_project(state.store.conn(), &scope.id, path.get("id")?).await?;
    // A project outside the caller's restriction is as absent as one that does not exist.
    if !sees_project(&principal, &scope, &doc)? {
        return Err(ApiError::not_found(format!(
            "project '{}'",
            path.get("id")?
        )));
    }
    Ok(Json(present(&doc, &scope.id)?))
}

async fn check_references(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    project: &Project,
) -> ApiResult<()> {
    if project.project_group_id.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "ProjectGroupId",
            "a project belongs to a project group",
        ));
    }
    if documents::get(conn, space, ProjectGroup::KIND, &project.project_group_id)
        .await?
        .is_none()
    {
        return Err(ApiError::invalid_field(
            "ProjectGroupId",
            format!(
                "project group '{}' does not exist in this space",
                project.project_group_id
            ),
        ));
    }
    crate::library_sets::check_included(conn, space, &project.included_library_variable_set_ids)
        .await?;
    if project.lifecycle_id.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "LifecycleId",
            "a project needs a lifecycle",
        ));
    }
    if documents::get(conn, space, Lifecycle::KIND, &project.lifecycle_id)
        .await?
        .is_none()
    {
        return Err(ApiError::invalid_field(
            "LifecycleId",
            format!(
                "lifecycle '{}' does not exist in this space",
                project.lifecycle_id
            ),
        ));
    }
    Ok(())
}

async fn create_project(
    State(state): State<AppState>,
    scope: SpaceScope,
    JsonBody(project): JsonBody<Project>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    let txn = state.store.conn().begin().await?;
    check_references(&txn, &scope.id, &project).await?;
    let project = resources::insert(&txn, &scope.id, project).await?;
    let process = DeploymentProcess {
        id: project.deployment_process_id.clone(),
        space_id: scope.id.to_string(),
        project_id: project.id.clone(),
        version: 1,
        ..DeploymentProcess::default()
    };
    insert_owned(
        &txn,
        &scope.id,
        PROCESS_KIND,
        &project.id,
        &process.id,
        documents::encode(&process),
    )
    .await?;
    insert_variable_set(&txn, &scope.id, &project.id, &project.variable_set_id).await?;
    let channel = Channel {
        name: "Default".into(),
        description: String::new(),
        project_id: project.id.clone(),
        is_default: true,
        ..Channel::default()
    };
    resources::insert(&txn, &scope.id, channel).await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(project)))
}

/// Creates the empty variable set `set_id` that `owner` (a project or library set) owns.
pub async fn insert_variable_set(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    owner: &str,
    set_id: &str,
) -> ApiResult<()> {
    let variables = VariableSet {
        id: set_id.to_owned(),
        owner_id: owner.to_owned(),
        space_id: space.to_string(),
        version: 1,
        ..VariableSet::default()
    };
    insert_owned(
        conn,
        space,
        VARIABLES_KIND,
        owner,
        set_id,
        documents::encode(&variables),
    )
    .await?;
    Ok(())
}

/// Inserts a document owned by `parent` (a process, variable set or snapshot).
pub async fn insert_owned(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    kind: &'static str,
    parent: &str,
    id: &str,
    data: serde_json::Value,
) -> ApiResult<()> {
    documents::insert(
        conn,
        NewDocument {
            id: id.to_owned(),
            space_id: space.clone(),
            kind,
            name: id.to_owned(),
            parent_id: Some(parent.to_owned()),
            unique_key: None,
            sort_order: 0,
            data,
        },
        "",
    )
    .await?;
    Ok(())
}

async fn update_project(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    JsonBody(project): JsonBody<Project>,
) -> ApiResult<Json<Project>> {
    let txn = state.store.conn().begin().await?;
    let (doc, current) = require_project(&txn, &scope.id, path.get("id")?).await?;
    crate::authz::require_on_project(&principal, Permission::ProjectEdit, &scope.id, &current)?;
    if project.project_group_id != current.project_group_id && !project.project_group_id.is_empty()
    {
        // Moving a project must not take it out of the caller's reach or into another's.
        let moved = Project {
            project_group_id: project.project_group_id.clone(),
            ..current.clone()
        };
        crate::authz::require_on_project(&principal, Permission::ProjectEdit, &scope.id, &moved)?;
    }
    check_references(&txn, &scope.id, &project).await?;
    let updated = resources::replace(&txn, &scope.id, &doc.id, project).await?;
    txn.commit().await?;
    Ok(Json(updated))
}

async fn delete_project(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let txn = state.store.conn().begin().await?;
    let (doc, project) = require_project(&txn, &scope.id, path.get("id")?).await?;
    crate::authz::require_on_project(&principal, Permission::ProjectDelete, &scope.id, &project)?;
    // Releases own their deployments; the project owns everything else.
    let query = ListQuery {
        parent_id: Some(doc.id.clone()),
        ..ListQuery::everything()
    };
    let (releases, _) =
        documents::list(&txn, &scope.id, crate::releases::RELEASE_KIND, &query).await?;
    for release in releases {
        documents::delete_children(&txn, &scope.id, &release.id).await?;
    }
    documents::delete_children(&txn, &scope.id, &doc.id).await?;
    documents::delete(&txn, &scope.id, Project::KIND, &doc.id).await?;
    crate::tenants::forget(&txn, &scope.id, crate::tenants::Gone::Project(&doc.id)).await?;
    txn.commit().await?;
    Ok(StatusCode::OK)
}

async fn project_channels(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
    params: Params,
) -> ApiResult<Json<Collection<Channel>>> {
    let (project_doc, _) = require_project(state.store.conn(), &scope.id, path.get("id")?).await?;
    let mut query = resources::list_query(&params)?;
    query.parent_id = Some(project_doc.id.clone());
    let (docs, total) =
        documents::list(state.store.conn(), &scope.id, Channel::KIND, &query).await?;
    let path = format!(
        "{}/projects/{}/channels",
        space_prefix(scope.id.as_str()),
        project_doc.id
    );
    Ok(Json(resources::page(docs, total, &query, &scope.id, path)?))
}

fn channel_routes(prefix: &str) -> Router<AppState> {
    let base = format!("{prefix}/channels");
    Router::new()
        .route(&base, get(list_channels).post(create_channel))
        .route(&format!("{base}/all"), get(resources::all::<Channel>))
        .route(
            &format!("{base}/{{id}}"),
            get(resources::get_one::<Channel>)
                .put(update_channel)
                .delete(delete_channel),
        )
}

/// Checks what a channel refers to: its lifecycle (none: the project's) exists, and its tenant
/// tags exist (stored by canonical name).
async fn check_channel(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    channel: &mut Channel,
) -> ApiResult<()> {
    channel.lifecycle_id = channel
        .lifecycle_id
        .take()
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty());
    if let Some(lifecycle) = &channel.lifecycle_id
        && documents::get(conn, space, Lifecycle::KIND, lifecycle)
            .await?
            .is_none()
    {
        return Err(ApiError::invalid_field(
            "LifecycleId",
            format!("lifecycle '{lifecycle}' does not exist in this space"),
        ));
    }
    let known = crate::tenants::known_tags(conn, space).await?;
    channel.tenant_tags =
        crate::tenants::canonical_tags(&known, &channel.tenant_tags, "TenantTags")?;
    Ok(())
}

/// The other channels of a channel's project.
async fn sibling_channels(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    channel: &Channel,
) -> ApiResult<Vec<Channel>> {
    let query = ListQuery {
        parent_id: Some(channel.project_id.clone()),
        ..ListQuery::everything()
    };
    let (docs, _) = documents::list(conn, space, Channel::KIND, &query).await?;
    let mut out = Vec::new();
    for doc in docs.iter().filter(|d| d.id != channel.id) {
        out.push(documents::decode::<Channel>(doc)?);
    }
    Ok(out)
}

async fn list_channels(
    State(state): State<AppState>,
    scope: SpaceScope,
    params: Params,
) -> ApiResult<Json<Collection<Channel>>> {
    let query = resources::list_query(&params)?;
    let (docs, total) =
        documents::list(state.store.conn(), &scope.id, Channel::KIND, &query).await?;
    let path = format!("{}/channels", space_prefix(scope.id.as_str()));
    Ok(Json(resources::page(docs, total, &query, &scope.id, path)?))
}

async fn create_channel(
    State(state): State<AppState>,
    scope: SpaceScope,
    JsonBody(mut channel): JsonBody<Channel>,
) -> ApiResult<(StatusCode, Json<Channel>)> {
    let txn = state.store.conn().begin().await?;
    let (project_doc, _) = find_project(&txn, &scope.id, &channel.project_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid_field(
                "ProjectId",
                format!(
                    "project '{}' does not exist in this space",
                    channel.project_id
                ),
            )
        })?;
    channel.project_id = project_doc.id;
    channel.is_default = false;
    check_channel(&txn, &scope.id, &mut channel).await?;
    let created = resources::insert(&txn, &scope.id, channel).await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `PUT /channels/{id}`: a channel stays in its project; making it the default takes the flag
/// from the project's other default, and the default is changed only that way.
async fn update_channel(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
    JsonBody(mut channel): JsonBody<Channel>,
) -> ApiResult<Json<Channel>> {
    let txn = state.store.conn().begin().await?;
    let (doc, current) = resources::load::<Channel>(&txn, &scope.id, path.get("id")?).await?;
    if !channel.project_id.trim().is_empty() && channel.project_id != current.project_id {
        return Err(ApiError::invalid_field(
            "ProjectId",
            "a channel cannot move to another project; create a channel in that project instead",
        ));
    }
    channel.project_id = current.project_id.clone();
    channel.id = doc.id.clone();
    if current.is_default && !channel.is_default {
        return Err(ApiError::invalid_field(
            "IsDefault",
            "a project always has a default channel; make another channel the default instead",
        ));
    }
    check_channel(&txn, &scope.id, &mut channel).await?;
    if channel.is_default && !current.is_default {
        for mut other in sibling_channels(&txn, &scope.id, &channel).await? {
            if other.is_default {
                other.is_default = false;
                let id = other.id.clone();
                resources::replace(&txn, &scope.id, &id, other).await?;
            }
        }
    }
    let saved = resources::replace(&txn, &scope.id, &doc.id, channel).await?;
    txn.commit().await?;
    Ok(Json(saved))
}

/// `DELETE /channels/{id}`: never the project's default channel, nor one that has releases
/// (they would lose the rules they were created under), as in Octopus.
async fn delete_channel(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let txn = state.store.conn().begin().await?;
    let (doc, channel) = resources::load::<Channel>(&txn, &scope.id, path.get("id")?).await?;
    if channel.is_default {
        return Err(ApiError::bad_request(
            format!(
                "The channel '{}' is the project's default channel and cannot be deleted.",
                channel.name
            ),
            vec!["Make another channel the default first.".into()],
        ));
    }
    let query = ListQuery {
        parent_id: Some(channel.project_id.clone()),
        ..ListQuery::everything()
    };
    let (releases, _) =
        documents::list(&txn, &scope.id, crate::releases::RELEASE_KIND, &query).await?;
    let mut used = 0;
    for release in &releases {
        let release: Release = documents::decode(release)?;
        if release.channel_id == doc.id {
            used += 1;
        }
    }
    if used > 0 {
        return Err(ApiError::bad_request(
            format!(
                "The channel '{}' has {used} release(s) and cannot be deleted.",
                channel.name
            ),
            vec!["Delete its releases first, or keep the channel.".into()],
        ));
    }
    documents::delete(&txn, &scope.id, Channel::KIND, &doc.id).await?;
    txn.commit().await?;
    Ok(StatusCode::OK)
}

fn process_links(process: &DeploymentProcess, space: &SpaceId) -> Links {
    let prefix = space_prefix(space.as_str());
    links([
        (
            "Self",
            format!("{prefix}/deploymentprocesses/{}", process.id),
        ),
        (
            "Project",
            format!("{prefix}/projects/{}", process.project_id),
        ),
        (
            "Template",
            format!(
                "{prefix}/projects/{}/deploymentprocesses/template{{?channel,releaseId}}",
                process.project_id
            ),
        ),
        (
            "Validation",
            format!(
                "{prefix}/projects/{}/deploymentprocesses/validate",
                process.project_id
            ),
        ),
    ])
}

/// Reads a process (or snapshot) document for output: `Version` is the stored version.
pub fn present_process(doc: &Document, space: &SpaceId) -> ApiResult<DeploymentProcess> {
    let mut process: DeploymentProcess = documents::decode(doc)?;
    if doc.kind == PROCESS_KIND {
        process.version = doc.version;
    }
    process.links = process_links(&process, space);
    Ok(process)
}

/// Loads the live process of a project.
pub async fn load_process(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    project: &Project,
) -> ApiResult<(Document, DeploymentProcess)> {
    let doc = documents::get(conn, space, PROCESS_KIND, &project.deployment_process_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("deployment process of project '{}'", project.name))
        })?;
    let process = present_process(&doc, space)?;
    Ok((doc, process))
}

async fn get_process(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<Json<DeploymentProcess>> {
    let (_, project) = require_project(state.store.conn(), &scope.id, path.get("id")?).await?;
    Ok(Json(
        load_process(state.store.conn(), &scope.id, &project)
            .await?
            .1,
    ))
}

async fn get_process_by_id(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<Json<DeploymentProcess>> {
    let id = path.get("id")?;
    let conn = state.store.conn();
    let doc = match documents::get(conn, &scope.id, PROCESS_KIND, id).await? {
        Some(doc) => doc,
        None => documents::get(conn, &scope.id, PROCESS_SNAPSHOT_KIND, id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("deployment process '{id}'")))?,
    };
    Ok(Json(present_process(&doc, &scope.id)?))
}

/// Checks a process and assigns ids and slugs to new steps, actions and package references.
pub fn prepare_process(process: &mut DeploymentProcess) -> ApiResult<()> {
    let mut step_names = HashSet::new();
    let mut action_names = HashSet::new();
    let new_id = || uuid::Uuid::new_v4().to_string();
    for (s, step) in process.steps.iter_mut().enumerate() {
        let field = format!("Steps[{s}]");
        step.name = step.name.trim().to_owned();
        if step.name.is_empty() {
            return Err(ApiError::invalid_field(
                &format!("{field}.Name"),
                "every step needs a name",
            ));
        }
        if !step_names.insert(step.name.to_lowercase()) {
            return Err(ApiError::invalid_field(
                &format!("{field}.Name"),
                format!("the step name '{}' is used twice", step.name),
            ));
        }
        if step.id.trim().is_empty() {
            step.id = new_id();
        }
        step.slug = slugify(&step.name);
        if step.condition.is_empty() {
            step.condition = "Success".into();
        }
        if !["Success", "Failure", "Always", "Variable"].contains(&step.condition.as_str()) {
            return Err(ApiError::invalid_field(
                &format!("{field}.Condition"),
                "must be Success, Failure, Always or Variable",
            ));
        }
        if step.start_trigger.is_empty() {
            step.start_trigger = "StartAfterPrevious".into();
        }
        if step.package_requirement.is_empty() {
            step.package_requirement = "LetOctopusDecide".into();
        }
        if step.actions.is_empty() {
            return Err(ApiError::invalid_field(
                &format!("{field}.Actions"),
                format!("step '{}' has no actions", step.name),
            ));
        }
        for (a, action) in step.actions.iter_mut().enumerate() {
            let field = format!("{field}.Actions[{a}]");
            action.name = action.name.trim().to_owned();
            if action.name.is_empty() {
                return Err(ApiError::invalid_field(
                    &format!("{field}.Name"),
                    "every action needs a name",
                ));
            }
            if !action_names.insert(action.name.to_lowercase()) {
                return Err(ApiError::invalid_field(
                    &format!("{field}.Name"),
                    format!("the action name '{}' is used twice", action.name),
                ));
            }
            if action.action_type.trim().is_empty() {
                return Err(ApiError::invalid_field(
                    &format!("{field}.ActionType"),
                    "an action needs a type such as Octopus.Script",
                ));
            }
            if action.id.trim().is_empty() {
                action.id = new_id();
            }
            action.slug = slugify(&action.name);
            if action.action_type == "Octopus.Script" {
                check_script_action(&field, &action.properties)?;
            }
            for package in &mut action.packages {
                if package.id.trim().is_empty() {
                    package.id = new_id();
                }
            }
        }
    }
    Ok(())
}

fn check_script_action(
    field: &str,
    properties: &std::collections::BTreeMap<String, String>,
) -> ApiResult<()> {
    let source = properties
        .get("Octopus.Action.Script.ScriptSource")
        .map(String::as_str)
        .unwrap_or("Inline");
    if source.eq_ignore_ascii_case("Inline") {
        let body = properties
            .get("Octopus.Action.Script.ScriptBody")
            .map(String::as_str)
            .unwrap_or("");
        if body.trim().is_empty() {
            return Err(ApiError::invalid_field(
                &format!("{field}.Properties['Octopus.Action.Script.ScriptBody']"),
                "an inline script needs a body",
            ));
        }
    }
    ScriptSyntax::parse(
        properties
            .get("Octopus.Action.Script.Syntax")
            .map(String::as_str),
    )
    .map_err(|err| {
        ApiError::invalid_field(
            &format!("{field}.Properties['Octopus.Action.Script.Syntax']"),
            err.to_string(),
        )
    })?;
    Ok(())
}

async fn update_process(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    JsonBody(mut process): JsonBody<DeploymentProcess>,
) -> ApiResult<Json<DeploymentProcess>> {
    let txn = state.store.conn().begin().await?;
    let (_, project) = require_project(&txn, &scope.id, path.get("id")?).await?;
    crate::authz::require_on_project(&principal, Permission::ProcessEdit, &scope.id, &project)?;
    let (doc, current) = load_process(&txn, &scope.id, &project).await?;
    prepare_process(&mut process)?;
    let known = crate::tenants::known_tags(&txn, &scope.id).await?;
    for (s, step) in process.steps.iter_mut().enumerate() {
        for (a, action) in step.actions.iter_mut().enumerate() {
            action.tenant_tags = crate::tenants::canonical_tags(
                &known,
                &action.tenant_tags,
                &format!("Steps[{s}].Actions[{a}].TenantTags"),
            )?;
        }
    }
    process.id = current.id.clone();
    process.project_id = project.id.clone();
    process.space_id = scope.id.to_string();
    process.last_snapshot_id = current.last_snapshot_id;
    // Version 0 means the client did not send one; otherwise it must be the version it read.
    let expected = if process.version > 0 {
        process.version
    } else {
        doc.version
    };
    let saved = documents::replace(
        &txn,
        &scope.id,
        PROCESS_KIND,
        &doc.id,
        Replacement {
            name: doc.name.clone(),
            unique_key: None,
            sort_order: 0,
            data: documents::encode(&process),
            expected_version: Some(expected),
        },
        "",
    )
    .await?
    .ok_or_else(|| ApiError::not_found(format!("deployment process '{}'", doc.id)))?;
    txn.commit().await?;
    Ok(Json(present_process(&saved, &scope.id)?))
}

async fn process_template(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<Json<serde_json::Value>> {
    let conn = state.store.conn();
    let (project_doc, project) = require_project(conn, &scope.id, path.get("id")?).await?;
    let (_, process) = load_process(conn, &scope.id, &project).await?;
    let versions = crate::releases::release_versions(conn, &scope.id, &project_doc.id).await?;
    let last = crate::releases::latest_version(&versions);
    let next = cuttle_domain::version::next_release_version(versions.iter().map(String::as_str));
    Ok(Json(json!({
        "DeploymentProcessId": process.id,
        "LastReleaseVersion": last,
        "NextVersionIncrement": next,
        "VersioningPackageStepName": null,
        "VersioningPackageReferenceName": null,
        "Packages": [],
        "GitResources": [],
    })))
}

fn variables_links(set: &VariableSet, space: &SpaceId) -> Links {
    links([(
        "Self",
        format!("{}/variables/{}", space_prefix(space.as_str()), set.id),
    )])
}

/// Reads a variable set for output, with `ScopeValues` filled from the space.
pub async fn present_variables(
    conn: &impl ConnectionTrait,
    doc: &Document,
    space: &SpaceId,
) -> ApiResult<VariableSet> {
    let mut set: VariableSet = documents::decode(doc)?;
    hide_sensitive(&mut set);
    if doc.kind == VARIABLES_KIND {
        set.version = doc.version;
    }
    let query = ListQuery::everything();
    let (environments, _) = documents::list(conn, space, Environment::KIND, &query).await?;
    set.scope_values.environments = environments
        .iter()
        .map(|e| ReferenceItem {
            id: e.id.clone(),
            name: e.name.clone(),
        })
        .collect();
    set.scope_values.tenant_tags = crate::tenants::known_tags(conn, space)
        .await?
        .into_values()
        .map(|canonical| ReferenceItem {
            id: canonical.clone(),
            name: canonical,
        })
        .collect();
    set.links = variables_links(&set, space);
    Ok(set)
}

async fn load_variables(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    id: &str,
) -> ApiResult<Document> {
    match documents::get(conn, space, VARIABLES_KIND, id).await? {
        Some(doc) => Ok(doc),
        None => documents::get(conn, space, VARIABLES_SNAPSHOT_KIND, id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("variable set '{id}'"))),
    }
}

async fn get_project_variables(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<VariableSet>> {
    let conn = state.store.conn();
    let (_, project) = require_project(conn, &scope.id, path.get("id")?).await?;
    let doc = load_variables(conn, &scope.id, &project.variable_set_id).await?;
    let access = VariableAccess::for_project(&principal, &scope, &project, false, || {
        ApiError::not_found(format!("variable set '{}'", doc.id))
    })?;
    Ok(Json(
        access.present(present_variables(conn, &doc, &scope.id).await?),
    ))
}

async fn get_variables_by_id(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<VariableSet>> {
    let conn = state.store.conn();
    let doc = load_variables(conn, &scope.id, path.get("id")?).await?;
    let access = VariableAccess::check(conn, &principal, &scope, &doc, false).await?;
    Ok(Json(
        access.present(present_variables(conn, &doc, &scope.id).await?),
    ))
}

/// Saves the variable set `id` as `access` allows (see `variable_access`): the variables the
/// principal cannot see stay as they were.
async fn save_variables(
    state: &AppState,
    scope: &SpaceScope,
    id: &str,
    mut set: VariableSet,
    access: &VariableAccess<'_>,
) -> ApiResult<VariableSet> {
    let txn = state.store.conn().begin().await?;
    let doc = documents::get(&txn, &scope.id, VARIABLES_KIND, id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("variable set '{id}' (snapshots cannot be changed)"))
        })?;
    let current: VariableSet = documents::decode(&doc)?;
    let kept = access.check_save(&current, &set)?;
    let known = crate::tenants::known_tags(&txn, &scope.id).await?;
    for (index, variable) in set.variables.iter_mut().enumerate() {
        for (dimension, values) in variable.scope.iter_mut() {
            if dimension.eq_ignore_ascii_case("TenantTag") {
                *values = crate::tenants::canonical_tags(
                    &known,
                    values,
                    &format!("Variables[{index}].Scope.TenantTag"),
                )?;
            }
        }
        variable.name = variable.name.trim().to_owned();
        if variable.name.is_empty() {
            return Err(ApiError::invalid_field(
                &format!("Variables[{index}].Name"),
                "every variable needs a name",
            ));
        }
        if variable.id.trim().is_empty() {
            variable.id = uuid::Uuid::new_v4().to_string();
        }
        if variable.is_sensitive || variable.kind.eq_ignore_ascii_case("Sensitive") {
            seal_sensitive(state, index, variable, &current)?;
        }
        if variable.kind.is_empty() {
            variable.kind = "String".into();
        }
        variable.is_editable = true;
    }
    set.variables.extend(kept);
    set.id = current.id;
    set.owner_id = current.owner_id;
    set.space_id = scope.id.to_string();
    let expected = if set.version > 0 {
        set.version
    } else {
        doc.version
    };
    let saved = documents::replace(
        &txn,
        &scope.id,
        VARIABLES_KIND,
        id,
        Replacement {
            name: doc.name.clone(),
            unique_key: None,
            sort_order: 0,
            data: documents::encode(&set),
            expected_version: Some(expected),
        },
        "",
    )
    .await?
    .ok_or_else(|| ApiError::not_found(format!("variable set '{id}'")))?;
    let presented = access.present(present_variables(&txn, &saved, &scope.id).await?);
    txn.commit().await?;
    Ok(presented)
}

/// Seals a sensitive variable's value under the master key. A sensitive value is never sent
/// back, so a variable that comes back with its id and no value keeps the value stored under
/// that id (sealed again under the current key, which is how values move off a retired key).
fn seal_sensitive(
    state: &AppState,
    index: usize,
    variable: &mut Variable,
    current: &VariableSet,
) -> ApiResult<()> {
    variable.is_sensitive = true;
    variable.kind = "Sensitive".into();
    let keyring = state.keyring.as_deref().ok_or_else(|| {
        ApiError::invalid_field(
            &format!("Variables[{index}].IsSensitive"),
            "this server has no master key for sensitive values (secrets.master_key), so it cannot store them encrypted",
        )
    })?;
    let id = variable.id.clone();
    let sealing_failed = |err: cuttle_secrets::SecretError| {
        tracing::error!(error = %err, variable.id = %id, "a sensitive value could not be sealed or opened");
        ApiError::internal(
            "a sensitive value could not be encrypted or decrypted with the master key",
        )
    };
    // An existing id with an empty or missing value keeps the stored secret (Octopus's rule,
    // go-octopusdeploy#449); a new id with no value stores none.
    variable.value = match variable.value.take().filter(|v| !v.is_empty()) {
        Some(plain) => Some(keyring.seal(&plain).map_err(sealing_failed)?),
        None => match current
            .variables
            .iter()
            .find(|old| old.id == variable.id && old.is_sensitive)
            .and_then(|old| old.value.as_deref())
        {
            Some(sealed) => Some(keyring.reseal(sealed).map_err(sealing_failed)?),
            None => None,
        },
    };
    Ok(())
}

/// What the API shows of a variable set: everything but sensitive values.
fn hide_sensitive(set: &mut VariableSet) {
    for variable in &mut set.variables {
        if variable.is_sensitive {
            variable.value = None;
        }
    }
}

async fn update_project_variables(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    JsonBody(set): JsonBody<VariableSet>,
) -> ApiResult<Json<VariableSet>> {
    let conn = state.store.conn();
    let (_, project) = require_project(conn, &scope.id, path.get("id")?).await?;
    let access = VariableAccess::for_project(&principal, &scope, &project, true, || {
        ApiError::not_found(format!("variable set '{}'", project.variable_set_id))
    })?;
    Ok(Json(
        save_variables(&state, &scope, &project.variable_set_id, set, &access).await?,
    ))
}

async fn update_variables_by_id(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    JsonBody(set): JsonBody<VariableSet>,
) -> ApiResult<Json<VariableSet>> {
    let id = path.get("id")?.to_owned();
    let doc = load_variables(state.store.conn(), &scope.id, &id).await?;
    let access = VariableAccess::check(state.store.conn(), &principal, &scope, &doc, true).await?;
    Ok(Json(
        save_variables(&state, &scope, &id, set, &access).await?,
    ))
}
