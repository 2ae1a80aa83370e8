//! Releases (immutable snapshots of a project's process and variables) and deployments (a
//! release to an environment, run as a server task).
//!
//! Creating a deployment writes the Deployment, its ServerTask (Queued) and a `TaskQueued`
//! outbox message in one transaction; the relay then hands the task to the orchestrator.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathParams, Principal, SpaceScope};
use crate::links::{links, space_prefix};
use crate::projects::{
    PROCESS_SNAPSHOT_KIND, VARIABLES_KIND, VARIABLES_SNAPSHOT_KIND, find_project, insert_owned,
    load_process, require_project,
};
use crate::release_packages::{self, Selection};
use crate::resources::{self, Resource};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use cuttle_contracts::OrchestratorCommand;
use cuttle_domain::lifecycle::{Phase as DomainPhase, check_progression};
use cuttle_domain::version::{ReleaseVersion, next_release_version};
use cuttle_domain::{SpaceId, TaskState};
use cuttle_store::documents::{self, Document, ListQuery, NewDocument, Replacement};
use cuttle_store::tasks::{self, Task};
use cuttle_store::{ConnectionTrait, TransactionTrait};
use cuttle_wire::commands::{
    CreateDeploymentClassic, CreateDeploymentCommand, CreateDeploymentResponse,
    CreateReleaseClassic, CreateReleaseCommand, CreateReleaseResponse,
    CreateTenantedDeploymentCommand, DeploymentServerTask,
};
use cuttle_wire::resources::{
    Channel, Deployment, DeploymentProcess, Environment, LibraryVariableSet, Lifecycle, Project,
    Release, Tenant, Variable, VariableSet,
};
use cuttle_wire::{Collection, Links};
use rand::Rng;
use std::collections::BTreeMap;

/// Document kind of releases.
pub const RELEASE_KIND: &str = "Release";
/// Document kind of deployments.
pub const DEPLOYMENT_KIND: &str = "Deployment";

/// Routes of this module.
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(
            &format!("{prefix}/releases"),
            get(list_releases).post(create_release_classic),
        )
        .route(
            &format!("{prefix}/releases/create/v1"),
            post(create_release_command),
        )
        .route(
            &format!("{prefix}/releases/{{id}}"),
            get(get_release).put(update_release).delete(delete_release),
        )
        .route(
            &format!("{prefix}/releases/{{id}}/deployments"),
            get(release_deployments),
        )
        .route(
            &format!("{prefix}/releases/{{id}}/snapshot-variables"),
            post(snapshot_release_variables),
        )
        .route(
            &format!("{prefix}/projects/{{id}}/releases"),
            get(project_releases),
        )
        .route(
            &format!("{prefix}/projects/{{id}}/releases/{{version}}"),
            get(project_release_by_version),
        )
        .route(
            &format!("{prefix}/deployments"),
            get(list_deployments).post(create_deployment_classic),
        )
        .route(
            &format!("{prefix}/deployments/create/untenanted/v1"),
            post(create_deployment_command),
        )
        .route(
            &format!("{prefix}/deployments/create/tenanted/v1"),
            post(create_tenanted_deployment_command),
        )
        .route(
            &format!("{prefix}/deployments/{{id}}"),
            get(get_deployment).delete(delete_deployment),
        )
}

fn release_links(release: &Release, space: &SpaceId) -> Links {
    let p = space_prefix(space.as_str());
    let base = format!("{p}/releases/{}", release.id);
    links([
        ("Self", base.clone()),
        ("Project", format!("{p}/projects/{}", release.project_id)),
        ("Channel", format!("{p}/channels/{}", release.channel_id)),
        ("Deployments", format!("{base}/deployments{{?skip,take}}")),
        ("DeploymentTemplate", format!("{base}/deployments/template")),
        (
            "ProjectVariableSnapshot",
            format!("{p}/variables/{}", release.project_variable_set_snapshot_id),
        ),
        (
            "ProjectDeploymentProcessSnapshot",
            format!(
                "{p}/deploymentprocesses/{}",
                release.project_deployment_process_snapshot_id
            ),
        ),
        ("Web", format!("/app#/{space}/releases/{}", release.id)),
    ])
}

fn present_release(doc: &Document, space: &SpaceId) -> ApiResult<Release> {
    let mut release: Release = documents::decode(doc)?;
    release.links = release_links(&release, space);
    Ok(release)
}

fn deployment_links(deployment: &Deployment, space: &SpaceId) -> Links {
    let p = space_prefix(space.as_str());
    links([
        ("Self", format!("{p}/deployments/{}", deployment.id)),
        ("Release", format!("{p}/releases/{}", deployment.release_id)),
        (
            "Environment",
            format!("{p}/environments/{}", deployment.environment_id),
        ),
        ("Project", format!("{p}/projects/{}", deployment.project_id)),
        ("Task", format!("/api/tasks/{}", deployment.task_id)),
        (
            "DeploymentProcess",
            format!(
                "{p}/deploymentprocesses/{}",
                deployment.deployment_process_id
            ),
        ),
        (
            "Web",
            format!("/app#/{space}/deployments/{}", deployment.id),
        ),
    ])
}

fn present_deployment(doc: &Document, space: &SpaceId) -> ApiResult<Deployment> {
    let mut deployment: Deployment = documents::decode(doc)?;
    deployment.links = deployment_links(&deployment, space);
    Ok(deployment)
}

/// Versions of every release of a project.
pub async fn release_versions(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    project_id: &str,
) -> ApiResult<Vec<String>> {
    let query = ListQuery {
        parent_id: Some(project_id.to_owned()),
        ..ListQuery::everything()
    };
    let (docs, _) = documents::list(conn, space, RELEASE_KIND, &query).await?;
    Ok(docs.into_iter().map(|d| d.name).collect())
}

/// The highest version, as Octopus orders versions.
pub fn latest_version(versions: &[String]) -> Option<String> {
    versions
        .iter()
        .filter_map(|v| {
            ReleaseVersion::parse(v)
                .ok()
                .map(|parsed| (parsed.sort_key(), v.clone()))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v)
}

fn release_key(project_id: &str, version: &str) -> String {
    format!("{project_id}/{}", version.to_lowercase())
}

fn snapshot_suffix() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The variable snapshots of a release.
struct VariableSnapshots {
    /// `ProjectVariableSetSnapshotId`.
    project: String,
    /// `LibraryVariableSetSnapshotIds`, in the project's order.
    libraries: Vec<String>,
}

/// Freezes the project's variables and those of each library variable set it includes, as
/// snapshot documents owned by the project (a release is immutable; re-snapshotting makes new
/// ones and leaves earlier deployments' snapshots alone).
async fn snapshot_variables(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    project: &Project,
    release_number: u64,
) -> ApiResult<VariableSnapshots> {
    let mut sets = vec![project.variable_set_id.clone()];
    for library_id in &project.included_library_variable_set_ids {
        match resources::load_by_id_or_name::<LibraryVariableSet>(conn, space, library_id).await? {
            Some((_, library)) => sets.push(library.variable_set_id),
            // Deleted sets leave the project when they are deleted; tolerate a stale id.
            None => {
                tracing::warn!(library = %library_id, project = %project.id, "an included library variable set is missing")
            }
        }
    }
    let mut ids = Vec::new();
    for set_id in sets {
        let doc = documents::get(conn, space, VARIABLES_KIND, &set_id)
            .await?
            .ok_or_else(|| ApiError::internal(format!("variable set {set_id} is missing")))?;
        let mut frozen: serde_json::Value =
            serde_json::from_str(&doc.data).map_err(ApiError::internal)?;
        let snapshot_id = format!("{set_id}-s-{release_number}-{}", snapshot_suffix());
        frozen["Id"] = serde_json::Value::String(snapshot_id.clone());
        frozen["Version"] = serde_json::Value::from(doc.version);
        insert_owned(
            conn,
            space,
            VARIABLES_SNAPSHOT_KIND,
            &project.id,
            &snapshot_id,
            frozen,
        )
        .await?;
        ids.push(snapshot_id);
    }
    let project_snapshot = ids.remove(0);
    Ok(VariableSnapshots {
        project: project_snapshot,
        libraries: ids,
    })
}

/// What a release's variable package ids evaluate with: the variables of the sets `set_ids`
/// (documents of `kind`: the project's live sets, or a release's snapshots) and the system
/// variables known before any deployment.
async fn release_variables(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    project: &Project,
    channel_doc: &Document,
    kind: &str,
    set_ids: &[String],
) -> ApiResult<release_packages::ReleaseVariables> {
    let mut variables = Vec::new();
    for id in set_ids {
        if let Some(doc) = documents::get(conn, space, kind, id).await? {
            let set: VariableSet = documents::decode(&doc)?;
            variables.extend(set.variables);
        }
    }
    let system = [
        ("Octopus.Project.Id", project.id.clone()),
        ("Octopus.Project.Name", project.name.clone()),
        ("Octopus.Release.Channel.Id", channel_doc.id.clone()),
        ("Octopus.Release.Channel.Name", channel_doc.name.clone()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    Ok(release_packages::ReleaseVariables {
        variables,
        channel_id: channel_doc.id.clone(),
        system,
    })
}

/// The release document `id` of this space, or a 404.
async fn require_release(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    id: &str,
) -> ApiResult<Document> {
    documents::get(conn, space, RELEASE_KIND, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("release '{id}'")))
}

/// `POST /api/{space}/releases/{id}/snapshot-variables`: the release takes fresh snapshots of
/// its project's variables and included library variable sets. Deployments made before keep the
/// variables they ran with.
async fn snapshot_release_variables(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<Json<Release>> {
    let id = path.get("id")?;
    let txn = state.store.conn().begin().await?;
    let doc = require_release(&txn, &scope.id, id).await?;
    let saved = resnapshot(&txn, &scope.id, &doc).await?;
    let presented = present_release(&saved, &scope.id)?;
    txn.commit().await?;
    Ok(Json(presented))
}

/// Re-snapshots a release's variables and saves it (caller's transaction).
async fn resnapshot(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    doc: &Document,
) -> ApiResult<Document> {
    let mut release: Release = documents::decode(doc)?;
    let (_, project) = require_project(conn, space, &release.project_id).await?;
    let number = cuttle_domain::ids::numeric_suffix(&release.id, "Releases").unwrap_or(0);
    let variables = snapshot_variables(conn, space, &project, number).await?;
    release.project_variable_set_snapshot_id = variables.project;
    release.library_variable_set_snapshot_ids = variables.libraries;
    documents::replace(
        conn,
        space,
        RELEASE_KIND,
        &doc.id,
        Replacement {
            name: doc.name.clone(),
            unique_key: doc.unique_key.clone(),
            sort_order: doc.sort_order,
            data: documents::encode(&release),
            expected_version: None,
        },
        "",
    )
    .await?
    .ok_or_else(|| ApiError::not_found(format!("release '{}'", doc.id)))
}

/// What a new release needs.
struct NewRelease {
    project_doc: Document,
    project: Project,
    channel_id: Option<String>,
    version: Option<String>,
    release_notes: Option<String>,
    custom_fields: BTreeMap<String, String>,
    ignore_channel_rules: bool,
    packages: Selection,
}

/// Creates a release: validates, snapshots the process and variables, stores it. Returns the
/// existing release instead when `ignore_if_exists` and the version is taken.
async fn insert_release(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    new: NewRelease,
    ignore_if_exists: bool,
) -> ApiResult<Release> {
    let project_id = new.project_doc.id.clone();
    let channel_doc = match &new.channel_id {
        Some(key) => {
            let found = match documents::get(conn, space, Channel::KIND, key).await? {
                Some(doc) => Some(doc),
                None => {
                    documents::find_by_name(conn, space, Channel::KIND, Some(&project_id), key)
                        .await?
                }
            };
            found
                .filter(|doc| doc.parent_id.as_deref() == Some(project_id.as_str()))
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "ChannelName",
                        format!(
                            "channel '{key}' does not exist in project '{}'",
                            new.project.name
                        ),
                    )
                })?
        }
        None => default_channel(conn, space, &project_id).await?,
    };
    let existing_versions = release_versions(conn, space, &project_id).await?;
    let version = match new
        .version
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        Some(given) => {
            ReleaseVersion::parse(given)
                .map_err(|err| ApiError::invalid_field("ReleaseVersion", err.to_string()))?;
            given.to_owned()
        }
        None => next_release_version(existing_versions.iter().map(String::as_str)),
    };
    if let Some(existing) =
        documents::find_by_name(conn, space, RELEASE_KIND, Some(&project_id), &version).await?
    {
        if ignore_if_exists {
            return present_release(&existing, space);
        }
        return Err(ApiError::invalid_field(
            "ReleaseVersion",
            format!(
                "a release with version '{version}' already exists for project '{}'",
                new.project.name
            ),
        ));
    }
    let (_, process) = load_process(conn, space, &new.project).await?;
    let mut set_ids = vec![new.project.variable_set_id.clone()];
    for library_id in &new.project.included_library_variable_set_ids {
        if let Some((_, library)) =
            resources::load_by_id_or_name::<LibraryVariableSet>(conn, space, library_id).await?
        {
            set_ids.push(library.variable_set_id);
        }
    }
    let release_variables = release_variables(
        conn,
        space,
        &new.project,
        &channel_doc,
        VARIABLES_KIND,
        &set_ids,
    )
    .await?;
    let pinned =
        release_packages::pin(conn, space, &process, &release_variables, new.packages).await?;
    let release_id = cuttle_store::next_id(conn, "Releases").await?;
    let release_number = cuttle_domain::ids::numeric_suffix(&release_id, "Releases").unwrap_or(0);
    // Snapshots freeze what this release deploys: later edits to the project never reach it.
    let process_snapshot_id = format!("{}-s-{release_number}-{}", process.id, snapshot_suffix());
    let mut frozen_process = process.clone();
    frozen_process.id = process_snapshot_id.clone();
    insert_owned(
        conn,
        space,
        PROCESS_SNAPSHOT_KIND,
        &project_id,
        &process_snapshot_id,
        documents::encode(&frozen_process),
    )
    .await?;
    let variables = snapshot_variables(conn, space, &new.project, release_number).await?;
    let mut release = Release {
        id: release_id.clone(),
        space_id: space.to_string(),
        project_id: project_id.clone(),
        channel_id: channel_doc.id.clone(),
        version: version.clone(),
        release_notes: new.release_notes,
        assembled: Some(Utc::now()),
        ignore_channel_rules: new.ignore_channel_rules,
        project_deployment_process_snapshot_id: process_snapshot_id,
        project_variable_set_snapshot_id: variables.project,
        library_variable_set_snapshot_ids: variables.libraries,
        custom_fields: new.custom_fields,
        selected_packages: pinned.selected,
        build_information: pinned.build_information,
        ..Release::default()
    };
    documents::insert(
        conn,
        NewDocument {
            id: release_id,
            space_id: space.clone(),
            kind: RELEASE_KIND,
            name: version.clone(),
            parent_id: Some(project_id.clone()),
            unique_key: Some(release_key(&project_id, &version)),
            sort_order: release_number as i64,
            data: documents::encode(&release),
        },
        &format!(
            "ReleaseVersion: a release with version '{version}' already exists for project '{}'",
            new.project.name
        ),
    )
    .await?;
    release.links = release_links(&release, space);
    Ok(release)
}

async fn default_channel(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    project_id: &str,
) -> ApiResult<Document> {
    let query = ListQuery {
        parent_id: Some(project_id.to_owned()),
        ..ListQuery::everything()
    };
    let (channels, _) = documents::list(conn, space, Channel::KIND, &query).await?;
    for doc in &channels {
        let channel: Channel = documents::decode(doc)?;
        if channel.is_default {
            return Ok(doc.clone());
        }
    }
    channels
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal(format!("project {project_id} has no channel")))
}

/// The project a command names (by name, slug or id), or a 400 naming `field`.
async fn project_for_command(
    conn: &impl ConnectionTrait,
    scope: &SpaceScope,
    field: &str,
    key: &str,
) -> ApiResult<(Document, Project)> {
    find_project(conn, &scope.id, key.trim())
        .await?
        .ok_or_else(|| {
            ApiError::invalid_field(
                field,
                format!(
                    "project '{key}' was not found in space '{}'",
                    scope.space.name
                ),
            )
        })
}

async fn create_release_command(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    JsonBody(command): JsonBody<CreateReleaseCommand>,
) -> ApiResult<(StatusCode, Json<CreateReleaseResponse>)> {
    if command.project_name.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "ProjectName",
            "the project's name or id is required",
        ));
    }
    let txn = state.store.conn().begin().await?;
    let (project_doc, project) =
        project_for_command(&txn, &scope, "ProjectName", &command.project_name).await?;
    crate::authz::require_on_project(
        &principal,
        cuttle_authz::Permission::ReleaseCreate,
        &scope.id,
        &project,
    )?;
    let release = insert_release(
        &txn,
        &scope.id,
        NewRelease {
            project_doc,
            project,
            channel_id: command.channel_name.filter(|c| !c.trim().is_empty()),
            version: command.release_version,
            release_notes: command.release_notes,
            custom_fields: command.custom_fields,
            ignore_channel_rules: command.ignore_channel_rules,
            packages: Selection::Rules {
                packages: command.packages,
                default_version: command.package_version,
                prerelease: command.package_prerelease,
            },
        },
        command.ignore_if_already_exists,
    )
    .await?;
    txn.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(CreateReleaseResponse {
            release_id: release.id,
            release_version: release.version,
        }),
    ))
}

async fn create_release_classic(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    JsonBody(body): JsonBody<CreateReleaseClassic>,
) -> ApiResult<(StatusCode, Json<Release>)> {
    let txn = state.store.conn().begin().await?;
    let (project_doc, project) = find_project(&txn, &scope.id, &body.project_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid_field(
                "ProjectId",
                format!("project '{}' was not found", body.project_id),
            )
        })?;
    crate::authz::require_on_project(
        &principal,
        cuttle_authz::Permission::ReleaseCreate,
        &scope.id,
        &project,
    )?;
    let release = insert_release(
        &txn,
        &scope.id,
        NewRelease {
            project_doc,
            project,
            channel_id: body.channel_id.filter(|c| !c.trim().is_empty()),
            version: body.version,
            release_notes: body.release_notes,
            custom_fields: BTreeMap::new(),
            ignore_channel_rules: body.ignore_channel_rules,
            packages: Selection::Explicit(body.selected_packages),
        },
        false,
    )
    .await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(release)))
}

async fn list_releases(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Collection<Release>>> {
    let query = resources::list_query(&params)?;
    let (docs, total) = Viewer::new(&principal, &scope)
        .list(
            state.store.conn(),
            RELEASE_KIND,
            &query,
            cuttle_authz::Permission::ReleaseView,
        )
        .await?;
    release_page(
        docs,
        total,
        &query,
        &scope.id,
        format!("{}/releases", space_prefix(scope.id.as_str())),
    )
}

/// Who may see which releases and deployments: a team restricted to projects (or project
/// groups) and environments sees only theirs. Project groups are looked up once per project.
struct Viewer<'a> {
    principal: &'a Principal,
    scope: &'a SpaceScope,
    groups: std::collections::HashMap<String, String>,
}

impl<'a> Viewer<'a> {
    fn new(principal: &'a Principal, scope: &'a SpaceScope) -> Viewer<'a> {
        Viewer {
            principal,
            scope,
            groups: std::collections::HashMap::new(),
        }
    }

    /// Whether the permission is held without any restriction (no filtering needed).
    fn sees_all(&self, permission: cuttle_authz::Permission) -> bool {
        self.principal
            .grants
            .allows_unrestricted(permission, Some(self.scope.id.as_str()))
    }

    async fn may(
        &mut self,
        conn: &impl ConnectionTrait,
        permission: cuttle_authz::Permission,
        project_id: &str,
        environment_id: Option<&str>,
        tenant_id: Option<&str>,
    ) -> ApiResult<bool> {
        if !self.groups.contains_key(project_id) {
            let group = match find_project(conn, &self.scope.id, project_id).await? {
                Some((_, project)) => project.project_group_id,
                None => String::new(),
            };
            self.groups.insert(project_id.to_owned(), group);
        }
        let group = self.groups.get(project_id).map(String::as_str);
        Ok(self.principal.grants.allows(
            permission,
            &cuttle_authz::Target {
                space: Some(self.scope.id.as_str()),
                project: Some(project_id),
                project_group: group,
                environment: environment_id,
                tenant: tenant_id,
            },
        ))
    }

    /// A page of `kind` (releases or deployments) as `query` asks, of those the principal may
    /// view with `permission`, and their total: paged by the database when nothing is hidden.
    async fn list(
        &mut self,
        conn: &impl ConnectionTrait,
        kind: &str,
        query: &ListQuery,
        permission: cuttle_authz::Permission,
    ) -> ApiResult<(Vec<Document>, u64)> {
        if self.sees_all(permission) {
            return Ok(documents::list(conn, &self.scope.id, kind, query).await?);
        }
        let (all, _) =
            documents::list(conn, &self.scope.id, kind, &resources::unpaged(query)).await?;
        let visible = self.filter(conn, all).await?;
        Ok(resources::page_slice(visible, query))
    }

    /// The documents (releases or deployments) the principal may view.
    async fn filter(
        &mut self,
        conn: &impl ConnectionTrait,
        docs: Vec<Document>,
    ) -> ApiResult<Vec<Document>> {
        let mut kept = Vec::new();
        for doc in docs {
            let value: serde_json::Value = serde_json::from_str(&doc.data).unwrap_or_default();
            let project = value["ProjectId"].as_str().unwrap_or_default().to_owned();
            let (permission, environment, tenant) = if doc.kind == DEPLOYMENT_KIND {
                (
                    cuttle_authz::Permission::DeploymentView,
                    value["EnvironmentId"].as_str().map(str::to_owned),
                    value["TenantId"].as_str().map(str::to_owned),
                )
            } else {
                (cuttle_authz::Permission::ReleaseView, None, None)
            };
            if self
                .may(
                    conn,
                    permission,
                    &project,
                    environment.as_deref(),
                    tenant.as_deref(),
                )
                .await?
            {
                kept.push(doc);
            }
        }
        Ok(kept)
    }
}

/// One page of releases or deployments, newest first as Octopus lists them: the documents are
/// read in creation order, reversed, then rendered with `present`.
fn newest_first_page<T>(
    item_type: &str,
    mut docs: Vec<Document>,
    total: u64,
    query: &ListQuery,
    path: String,
    template_params: &str,
    present: impl Fn(&Document) -> ApiResult<T>,
) -> ApiResult<Json<Collection<T>>> {
    docs.reverse();
    let items = docs.iter().map(present).collect::<ApiResult<Vec<_>>>()?;
    let template = format!("{path}{{/id}}{{?{template_params}}}");
    Ok(Json(Collection::page(
        item_type, items, total, query.skip, query.take, &path, &template,
    )))
}

fn release_page(
    docs: Vec<Document>,
    total: u64,
    query: &ListQuery,
    space: &SpaceId,
    path: String,
) -> ApiResult<Json<Collection<Release>>> {
    newest_first_page("Release", docs, total, query, path, "skip,take", |d| {
        present_release(d, space)
    })
}

fn deployment_page(
    docs: Vec<Document>,
    total: u64,
    query: &ListQuery,
    space: &SpaceId,
    path: String,
) -> ApiResult<Json<Collection<Deployment>>> {
    newest_first_page(
        "Deployment",
        docs,
        total,
        query,
        path,
        "skip,take,ids,projects,environments,tenants,channels,taskState",
        |d| present_deployment(d, space),
    )
}

async fn project_releases(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    params: Params,
) -> ApiResult<Json<Collection<Release>>> {
    let conn = state.store.conn();
    let (project_doc, project) = require_project(conn, &scope.id, path.get("id")?).await?;
    crate::authz::require_on_project(
        &principal,
        cuttle_authz::Permission::ReleaseView,
        &scope.id,
        &project,
    )?;
    let mut query = resources::list_query(&params)?;
    query.parent_id = Some(project_doc.id.clone());
    query.partial_name = params.get("searchByVersion").map(str::to_owned);
    // Newest first means reading from the end: fetch all, then page.
    let (skip, take) = (query.skip, query.take);
    let all_query = ListQuery {
        skip: 0,
        take: u64::from(u32::MAX),
        ..query.clone()
    };
    let (mut docs, total) = documents::list(conn, &scope.id, RELEASE_KIND, &all_query).await?;
    docs.reverse();
    let page: Vec<Document> = docs
        .into_iter()
        .skip(skip as usize)
        .take(take as usize)
        .collect();
    let items = page
        .iter()
        .map(|d| present_release(d, &scope.id))
        .collect::<ApiResult<Vec<_>>>()?;
    let path = format!(
        "{}/projects/{}/releases",
        space_prefix(scope.id.as_str()),
        project_doc.id
    );
    let template = format!("{path}{{/version}}{{?skip,take,searchByVersion}}");
    Ok(Json(Collection::page(
        "Release", items, total, skip, take, &path, &template,
    )))
}

async fn project_release_by_version(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<Release>> {
    let conn = state.store.conn();
    let (project_doc, project) = require_project(conn, &scope.id, path.get("id")?).await?;
    crate::authz::require_on_project(
        &principal,
        cuttle_authz::Permission::ReleaseView,
        &scope.id,
        &project,
    )?;
    let version = path.get("version")?;
    let doc = documents::find_by_name(
        conn,
        &scope.id,
        RELEASE_KIND,
        Some(&project_doc.id),
        version,
    )
    .await?
    .ok_or_else(|| {
        ApiError::not_found(format!("release '{version}' of project '{}'", project.name))
    })?;
    Ok(Json(present_release(&doc, &scope.id)?))
}

async fn get_release(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<Release>> {
    let id = path.get("id")?;
    let doc = require_release(state.store.conn(), &scope.id, id).await?;
    let mut viewer = Viewer::new(&principal, &scope);
    if viewer
        .filter(state.store.conn(), vec![doc.clone()])
        .await?
        .is_empty()
    {
        return Err(ApiError::not_found(format!("release '{id}'")));
    }
    Ok(Json(present_release(&doc, &scope.id)?))
}

/// Changes a release's version, notes or custom fields. What it deploys (its snapshots, project
/// and channel) never changes: those fields of the body are ignored, as Octopus does.
async fn update_release(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
    JsonBody(body): JsonBody<Release>,
) -> ApiResult<Json<Release>> {
    let id = path.get("id")?;
    let txn = state.store.conn().begin().await?;
    let doc = require_release(&txn, &scope.id, id).await?;
    let mut release: Release = documents::decode(&doc)?;
    let version = body.version.trim();
    if !version.is_empty() {
        ReleaseVersion::parse(version)
            .map_err(|err| ApiError::invalid_field("Version", err.to_string()))?;
        release.version = version.to_owned();
    }
    release.release_notes = body.release_notes;
    release.custom_fields = body.custom_fields;
    // Octopus lets a release's package versions be changed ("modify release"); the versions are
    // checked against the release's own frozen process, never the project's current one.
    if !body.selected_packages.is_empty() && body.selected_packages != release.selected_packages {
        let process_doc = documents::get(
            &txn,
            &scope.id,
            PROCESS_SNAPSHOT_KIND,
            &release.project_deployment_process_snapshot_id,
        )
        .await?
        .ok_or_else(|| ApiError::internal(format!("release {id} has lost its process snapshot")))?;
        let process: DeploymentProcess = documents::decode(&process_doc)?;
        // Variable package ids evaluate as they did when the release was made: with its
        // snapshots.
        let (_, project) = require_project(&txn, &scope.id, &release.project_id).await?;
        let channel_doc = documents::get(&txn, &scope.id, Channel::KIND, &release.channel_id)
            .await?
            .ok_or_else(|| ApiError::internal(format!("release {id} has lost its channel")))?;
        let mut set_ids = vec![release.project_variable_set_snapshot_id.clone()];
        set_ids.extend(release.library_variable_set_snapshot_ids.iter().cloned());
        let release_variables = release_variables(
            &txn,
            &scope.id,
            &project,
            &channel_doc,
            VARIABLES_SNAPSHOT_KIND,
            &set_ids,
        )
        .await?;
        let pinned = release_packages::pin(
            &txn,
            &scope.id,
            &process,
            &release_variables,
            Selection::Explicit(body.selected_packages),
        )
        .await?;
        release.selected_packages = pinned.selected;
        release.build_information = pinned.build_information;
    }
    let replacement = documents::Replacement {
        name: release.version.clone(),
        unique_key: Some(release_key(&release.project_id, &release.version)),
        sort_order: doc.sort_order,
        data: documents::encode(&release),
        expected_version: None,
    };
    let conflict = format!(
        "Version: a release with version '{}' already exists for this project",
        release.version
    );
    documents::replace(&txn, &scope.id, RELEASE_KIND, id, replacement, &conflict).await?;
    txn.commit().await?;
    release.links = release_links(&release, &scope.id);
    Ok(Json(release))
}

async fn delete_deployment(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let id = path.get("id")?;
    // The task and its log stay: they are the audit trail of what ran.
    if !documents::delete(state.store.conn(), &scope.id, DEPLOYMENT_KIND, id).await? {
        return Err(ApiError::not_found(format!("deployment '{id}'")));
    }
    Ok(StatusCode::OK)
}

async fn delete_release(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let id = path.get("id")?;
    let txn = state.store.conn().begin().await?;
    let doc = require_release(&txn, &scope.id, id).await?;
    let release: Release = documents::decode(&doc)?;
    documents::delete_children(&txn, &scope.id, &doc.id).await?;
    for (kind, snapshot) in [
        (
            PROCESS_SNAPSHOT_KIND,
            &release.project_deployment_process_snapshot_id,
        ),
        (
            VARIABLES_SNAPSHOT_KIND,
            &release.project_variable_set_snapshot_id,
        ),
    ] {
        documents::delete(&txn, &scope.id, kind, snapshot).await?;
    }
    documents::delete(&txn, &scope.id, RELEASE_KIND, &doc.id).await?;
    txn.commit().await?;
    Ok(StatusCode::OK)
}

async fn release_deployments(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    params: Params,
) -> ApiResult<Json<Collection<Deployment>>> {
    let id = path.get("id")?;
    let mut query = resources::list_query(&params)?;
    query.parent_id = Some(id.to_owned());
    let (docs, total) = Viewer::new(&principal, &scope)
        .list(
            state.store.conn(),
            DEPLOYMENT_KIND,
            &query,
            cuttle_authz::Permission::DeploymentView,
        )
        .await?;
    deployment_page(
        docs,
        total,
        &query,
        &scope.id,
        format!(
            "{}/releases/{id}/deployments",
            space_prefix(scope.id.as_str())
        ),
    )
}

async fn list_deployments(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Collection<Deployment>>> {
    let conn = state.store.conn();
    let mut viewer = Viewer::new(&principal, &scope);
    let restricted = !viewer.sees_all(cuttle_authz::Permission::DeploymentView);
    let (skip, take) = params.paging()?;
    let ids = params.list("ids");
    let projects = params.list("projects");
    let environments = params.list("environments");
    let channels = params.list("channels");
    let tenants = params.list("tenants");
    let task_states: Vec<TaskState> = params
        .list("taskState")
        .iter()
        .filter_map(|s| TaskState::parse(s))
        .collect();
    let query = ListQuery {
        ids,
        ..ListQuery::everything()
    };
    let (docs, _) = documents::list(conn, &scope.id, DEPLOYMENT_KIND, &query).await?;
    let mut matching = Vec::new();
    for doc in docs {
        let deployment: Deployment = documents::decode(&doc)?;
        let keep = (projects.is_empty() || projects.contains(&deployment.project_id))
            && (environments.is_empty() || environments.contains(&deployment.environment_id))
            && (channels.is_empty() || channels.contains(&deployment.channel_id))
            && (tenants.is_empty()
                || deployment
                    .tenant_id
                    .as_ref()
                    .is_some_and(|t| tenants.contains(t)));
        if !keep {
            continue;
        }
        if restricted
            && !viewer
                .may(
                    conn,
                    cuttle_authz::Permission::DeploymentView,
                    &deployment.project_id,
                    Some(&deployment.environment_id),
                    deployment.tenant_id.as_deref(),
                )
                .await?
        {
            continue;
        }
        if !task_states.is_empty() {
            let state_now = tasks::get_task(conn, Some(&scope.id), &deployment.task_id)
                .await?
                .and_then(|t| TaskState::parse(&t.state));
            if !state_now.is_some_and(|s| task_states.contains(&s)) {
                continue;
            }
        }
        matching.push(doc);
    }
    let total = matching.len() as u64;
    matching.reverse();
    let page: Vec<Document> = matching
        .into_iter()
        .skip(skip as usize)
        .take(take as usize)
        .collect();
    let items = page
        .iter()
        .map(|d| present_deployment(d, &scope.id))
        .collect::<ApiResult<Vec<_>>>()?;
    let path = format!("{}/deployments", space_prefix(scope.id.as_str()));
    let template =
        format!("{path}{{/id}}{{?skip,take,ids,projects,environments,tenants,channels,taskState}}");
    Ok(Json(Collection::page(
        "Deployment",
        items,
        total,
        skip,
        take,
        &path,
        &template,
    )))
}

async fn get_deployment(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<Deployment>> {
    let id = path.get("id")?;
    let not_found = || ApiError::not_found(format!("deployment '{id}'"));
    let doc = documents::get(state.store.conn(), &scope.id, DEPLOYMENT_KIND, id)
        .await?
        .ok_or_else(not_found)?;
    let mut viewer = Viewer::new(&principal, &scope);
    if viewer
        .filter(state.store.conn(), vec![doc.clone()])
        .await?
        .is_empty()
    {
        return Err(not_found());
    }
    Ok(Json(present_deployment(&doc, &scope.id)?))
}

/// Every environment of the space as (id, name), in sort order.
async fn environments_in_order(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
) -> ApiResult<Vec<(String, String)>> {
    let query = ListQuery::everything();
    let (docs, _) = documents::list(conn, space, Environment::KIND, &query).await?;
    Ok(docs.into_iter().map(|d| (d.id, d.name)).collect())
}

/// Environments that already have a successful deployment of `release_id` (for a tenanted
/// deployment, to the same tenant: each tenant progresses through the lifecycle on its own).
async fn successfully_deployed(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    release_id: &str,
    tenant_id: Option<&str>,
) -> ApiResult<Vec<String>> {
    let query = ListQuery {
        parent_id: Some(release_id.to_owned()),
        ..ListQuery::everything()
    };
    let (docs, _) = documents::list(conn, space, DEPLOYMENT_KIND, &query).await?;
    let mut done = Vec::new();
    for doc in docs {
        let deployment: Deployment = documents::decode(&doc)?;
        if tenant_id.is_some() && deployment.tenant_id.as_deref() != tenant_id {
            continue;
        }
        let task = tasks::get_task(conn, Some(space), &deployment.task_id).await?;
        if task.is_some_and(|t| t.state == TaskState::Success.as_str()) {
            done.push(deployment.environment_id);
        }
    }
    Ok(done)
}

/// The variables a deployment runs with: the release's project snapshot, or, when the project
/// includes library variable sets or has prompted variables, one set of the project's variables
/// followed by each library's (`variableset-Deployments-N`; on equal scopes the project's value
/// wins, as in Octopus, because the first defined wins) with the values given for prompted
/// variables in place (sealed when sensitive).
async fn manifest_variables(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    release: &Release,
    deployment_id: &str,
    prompted: &Prompted<'_>,
) -> ApiResult<String> {
    let mut variables = Vec::new();
    for id in std::iter::once(&release.project_variable_set_snapshot_id)
        .chain(&release.library_variable_set_snapshot_ids)
    {
        let doc = documents::get(conn, space, VARIABLES_SNAPSHOT_KIND, id)
            .await?
            .ok_or_else(|| ApiError::internal(format!("variable snapshot {id} is missing")))?;
        let set: VariableSet = documents::decode(&doc)?;
        variables.extend(set.variables);
    }
    let any_prompt = variables.iter().any(|v| v.prompt.is_some());
    if !any_prompt && !prompted.values.is_empty() {
        let key = prompted.values.keys().next().cloned().unwrap_or_default();
        return Err(ApiError::invalid_field(
            &format!("{}.{key}", prompted.field),
            format!("'{key}' is not a prompted variable of this release"),
        ));
    }
    if release.library_variable_set_snapshot_ids.is_empty() && !any_prompt {
        return Ok(release.project_variable_set_snapshot_id.clone());
    }
    apply_prompted(&mut variables, prompted)?;
    let manifest = VariableSet {
        id: format!("variableset-{deployment_id}"),
        owner_id: release.project_id.clone(),
        space_id: space.to_string(),
        version: 1,
        variables,
        ..VariableSet::default()
    };
    insert_owned(
        conn,
        space,
        VARIABLES_SNAPSHOT_KIND,
        &release.project_id,
        &manifest.id,
        documents::encode(&manifest),
    )
    .await?;
    Ok(manifest.id)
}

/// Values a client gave for prompted variables, keyed as it gave them (the variable's id, name
/// or prompt label), and what seals the sensitive ones.
struct Prompted<'a> {
    /// The request field, for messages: `Variables` or `FormValues`.
    field: &'static str,
    values: BTreeMap<String, String>,
    keyring: Option<&'a cuttle_secrets::Keyring>,
}

/// Reads `Variables` / `FormValues`: strings, numbers and booleans.
fn prompted_values(
    given: &BTreeMap<String, serde_json::Value>,
    field: &str,
) -> ApiResult<BTreeMap<String, String>> {
    given
        .iter()
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
                _ => {
                    return Err(ApiError::invalid_field(
                        &format!("{field}.{key}"),
                        "a prompted value must be a string, number or boolean",
                    ));
                }
            };
            Ok((key.clone(), text))
        })
        .collect()
}

/// Puts the given values into the prompted variables; every required one needs a value, and
/// every value must name a prompted variable.
fn apply_prompted(variables: &mut [Variable], prompted: &Prompted<'_>) -> ApiResult<()> {
    let mut used = std::collections::BTreeSet::new();
    let mut missing = Vec::new();
    for variable in variables.iter_mut() {
        let Some(prompt) = &variable.prompt else {
            continue;
        };
        let label = prompt["Label"].as_str().unwrap_or_default().to_owned();
        let required = prompt["Required"].as_bool().unwrap_or(false);
        let given = prompted.values.iter().find(|(key, _)| {
            key.as_str() == variable.id
                || key.eq_ignore_ascii_case(&variable.name)
                || (!label.is_empty() && key.eq_ignore_ascii_case(&label))
        });
        match given {
            Some((key, value)) => {
                used.insert(key.clone());
                variable.value = Some(if variable.is_sensitive {
                    let keyring = prompted.keyring.ok_or_else(|| {
                        ApiError::invalid_field(
                            &format!("{}.{key}", prompted.field),
                            "this server has no master key for sensitive values (secrets.master_key)",
                        )
                    })?;
                    keyring.seal(value).map_err(|err| {
                        tracing::error!(error = %err, "a prompted sensitive value could not be sealed");
                        ApiError::internal("a sensitive value could not be encrypted")
                    })?
                } else {
                    value.clone()
                });
            }
            None if required && variable.value.as_deref().unwrap_or("").is_empty() => {
                missing.push(if label.is_empty() {
                    variable.name.clone()
                } else {
                    label
                });
            }
            None => {}
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::invalid_field(
            prompted.field,
            format!(
                "Please provide a value for the following required variables: {}",
                missing.join(", ")
            ),
        ));
    }
    if let Some(unknown) = prompted.values.keys().find(|key| !used.contains(*key)) {
        return Err(ApiError::invalid_field(
            &format!("{}.{unknown}", prompted.field),
            format!("'{unknown}' is not a prompted variable of this release"),
        ));
    }
    Ok(())
}

/// One deployment to create.
struct DeploymentRequest<'a> {
    release_doc: Document,
    environment_doc: Document,
    /// The tenant deployed for, and the request field that named it (for messages).
    tenant: Option<Tenant>,
    tenant_field: &'static str,
    comments: Option<String>,
    force_package_download: bool,
    force_package_redeployment: bool,
    use_guided_failure: bool,
    skip_actions: Vec<String>,
    prompted: Prompted<'a>,
}

/// Checks the lifecycle and writes Deployment + ServerTask + outbox message (caller's transaction).
async fn insert_deployment(
    conn: &impl ConnectionTrait,
    space: &SpaceScope,
    principal: &Principal,
    request: DeploymentRequest<'_>,
) -> ApiResult<(Deployment, Task)> {
    let release: Release = documents::decode(&request.release_doc)?;
    let environment: Environment = documents::decode(&request.environment_doc)?;
    let (project_doc, project) = require_project(conn, &space.id, &release.project_id).await?;
    // Before anything else is looked at: a team scoped to Test learns nothing about
    // Production's lifecycle rules.
    crate::authz::require(
        principal,
        cuttle_authz::Permission::DeploymentCreate,
        &cuttle_authz::Target {
            space: Some(space.id.as_str()),
            project: Some(&project.id),
            project_group: Some(&project.project_group_id),
            environment: Some(&environment.id),
            tenant: request.tenant.as_ref().map(|t| t.id.as_str()),
        },
    )?;
    check_tenancy(
        &project,
        &environment,
        request.tenant.as_ref(),
        request.tenant_field,
    )?;
    let channel: Option<Channel> =
        match documents::get(conn, &space.id, Channel::KIND, &release.channel_id).await? {
            Some(doc) => Some(documents::decode(&doc)?),
            None => None,
        };
    // A channel with tenant tags releases only to tenants matching them.
    if let (Some(channel), Some(tenant)) = (&channel, &request.tenant)
        && !channel.tenant_tags.is_empty()
        && !cuttle_domain::tenant_tags::matches(&tenant.tenant_tags, &channel.tenant_tags)
    {
        return Err(ApiError::invalid_field(
            request.tenant_field,
            format!(
                "tenant '{}' does not match the tenant tags of channel '{}' ({})",
                tenant.name,
                channel.name,
                channel.tenant_tags.join(", ")
            ),
        ));
    }
    let lifecycle_id = channel
        .and_then(|c| c.lifecycle_id)
        .filter(|l| !l.is_empty())
        .unwrap_or(project.lifecycle_id.clone());
    let (_, lifecycle) = resources::load::<Lifecycle>(conn, &space.id, &lifecycle_id).await?;
    let phases: Vec<DomainPhase> = lifecycle
        .phases
        .iter()
        .map(|p| DomainPhase {
            name: p.name.clone(),
            environment_ids: p
                .automatic_deployment_targets
                .iter()
                .chain(&p.optional_deployment_targets)
                .cloned()
                .collect(),
            minimum_environments_before_promotion: usize::try_from(
                p.minimum_environments_before_promotion,
            )
            .unwrap_or(0),
            is_optional: p.is_optional_phase,
        })
        .collect();
    let environments = environments_in_order(conn, &space.id).await?;
    let tenant_id = request.tenant.as_ref().map(|t| t.id.clone());
    let done = successfully_deployed(conn, &space.id, &release.id, tenant_id.as_deref()).await?;
    check_progression(
        &lifecycle.name,
        &phases,
        &environments,
        &environment.id,
        &done,
    )
    .map_err(|err| {
        ApiError::bad_request(
            format!("The deployment is not allowed by the lifecycle: {err}."),
            vec![err.to_string()],
        )
    })?;

    let now = Utc::now();
    let deployment_id = cuttle_store::next_id(conn, "Deployments").await?;
    let task_id = cuttle_store::next_id(conn, "ServerTasks").await?;
    let deployment = Deployment {
        id: deployment_id.clone(),
        space_id: space.id.to_string(),
        project_id: project_doc.id.clone(),
        release_id: release.id.clone(),
        channel_id: release.channel_id.clone(),
        environment_id: environment.id.clone(),
        tenant_id: tenant_id.clone(),
        deployment_process_id: release.project_deployment_process_snapshot_id.clone(),
        task_id: task_id.clone(),
        name: match &request.tenant {
            Some(tenant) => format!("Deploy to {} for {}", environment.name, tenant.name),
            None => format!("Deploy to {}", environment.name),
        },
        created: Some(now),
        deployed_by: principal.user.username.clone(),
        deployed_by_id: principal.user.id.clone(),
        comments: request.comments,
        force_package_download: request.force_package_download,
        force_package_redeployment: request.force_package_redeployment,
        priority: "LifecycleDefault".into(),
        skip_actions: request.skip_actions,
        manifest_variable_set_id: manifest_variables(
            conn,
            &space.id,
            &release,
            &deployment_id,
            &request.prompted,
        )
        .await?,
        queue_time: Some(now),
        use_guided_failure: request.use_guided_failure,
        ..Deployment::default()
    };
    let number =
        cuttle_domain::ids::numeric_suffix(&deployment_id, "Deployments").unwrap_or(0) as i64;
    documents::insert(
        conn,
        NewDocument {
            id: deployment_id.clone(),
            space_id: space.id.clone(),
            kind: DEPLOYMENT_KIND,
            name: deployment.name.clone(),
            parent_id: Some(release.id.clone()),
            unique_key: None,
            sort_order: number,
            data: documents::encode(&deployment),
        },
        "",
    )
    .await?;
    let arguments = serde_json::json!({ "DeploymentId": deployment_id }).to_string();
    let task = tasks::insert_task(
        conn,
        Task {
            project_id: Some(project_doc.id.clone()),
            environment_id: Some(environment.id.clone()),
            deployment_id: Some(deployment_id.clone()),
            tenant_id: tenant_id.clone(),
            ..tasks::queued_task(
                task_id.clone(),
                &space.id,
                "Deploy",
                match &request.tenant {
                    Some(tenant) => format!(
                        "Deploy {} release {} to {} for {}",
                        project.name, release.version, environment.name, tenant.name
                    ),
                    None => format!(
                        "Deploy {} release {} to {}",
                        project.name, release.version, environment.name
                    ),
                },
                arguments,
                now,
            )
        },
    )
    .await?;
    cuttle_platform::outbox::enqueue_command(conn, &OrchestratorCommand::TaskQueued { task_id })
        .await?;
    let mut deployment = deployment;
    deployment.links = deployment_links(&deployment, &space.id);
    Ok((deployment, task))
}

/// Whether the project takes this deployment: a `Tenanted` project deploys only for tenants,
/// an `Untenanted` one never, and the tenant must be connected to the project in the
/// environment.
fn check_tenancy(
    project: &Project,
    environment: &Environment,
    tenant: Option<&Tenant>,
    field: &str,
) -> ApiResult<()> {
    let mode = project.tenanted_deployment_mode.as_str();
    match tenant {
        None if mode == "Tenanted" => Err(ApiError::invalid_field(
            field,
            format!(
                "project '{}' deploys only to tenants (its TenantedDeploymentMode is Tenanted); choose a tenant",
                project.name
            ),
        )),
        None => Ok(()),
        Some(_) if mode.is_empty() || mode == "Untenanted" => Err(ApiError::invalid_field(
            field,
            format!(
                "project '{}' does not take tenanted deployments (its TenantedDeploymentMode is Untenanted)",
                project.name
            ),
        )),
        Some(tenant) => crate::tenants::check_connected(tenant, project, environment)
            .map_err(|why| ApiError::invalid_field(field, why)),
    }
}

async fn find_environment(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    key: &str,
) -> ApiResult<Document> {
    Ok(
        resources::load_by_id_or_name::<Environment>(conn, space, key)
            .await?
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "EnvironmentNames",
                    format!("environment '{key}' was not found"),
                )
            })?
            .0,
    )
}

async fn create_deployment_command(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    JsonBody(command): JsonBody<CreateDeploymentCommand>,
) -> ApiResult<(StatusCode, Json<CreateDeploymentResponse>)> {
    deploy_by_command(&state, &scope, &principal, command, None).await
}

/// Which tenants a tenanted command names: by id or name, and by tag.
struct TenantChoice {
    names: Vec<String>,
    tags: Vec<String>,
}

/// `POST /deployments/create/tenanted/v1`: one environment, a deployment per tenant.
async fn create_tenanted_deployment_command(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    JsonBody(command): JsonBody<CreateTenantedDeploymentCommand>,
) -> ApiResult<(StatusCode, Json<CreateDeploymentResponse>)> {
    if command.environment_name.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "EnvironmentName",
            "the environment's name or id is required",
        ));
    }
    if command.tenants.iter().all(|t| t.trim().is_empty())
        && command.tenant_tags.iter().all(|t| t.trim().is_empty())
    {
        return Err(ApiError::invalid_field(
            "Tenants",
            "name at least one tenant (Tenants) or tenant tag (TenantTags)",
        ));
    }
    let choice = TenantChoice {
        names: command
            .tenants
            .iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        tags: command.tenant_tags.clone(),
    };
    let untenanted = CreateDeploymentCommand {
        space_id: command.space_id,
        space_id_or_name: command.space_id_or_name,
        space_name: command.space_name,
        project_name: command.project_name,
        release_version: command.release_version,
        environment_names: vec![command.environment_name],
        force_package_redeployment: command.force_package_redeployment,
        update_variable_snapshot: command.update_variable_snapshot,
        force_package_download: command.force_package_download,
        specific_machine_names: command.specific_machine_names,
        excluded_machine_names: command.excluded_machine_names,
        skip_step_names: command.skip_step_names,
        use_guided_failure: command.use_guided_failure,
        run_at: command.run_at,
        no_run_after: command.no_run_after,
        variables: command.variables,
        priority: command.priority,
    };
    deploy_by_command(&state, &scope, &principal, untenanted, Some(choice)).await
}

/// Creates the deployments a command asks for, all in one transaction: one per environment,
/// or, for a tenanted command, one per chosen tenant.
async fn deploy_by_command(
    state: &AppState,
    scope: &SpaceScope,
    principal: &Principal,
    command: CreateDeploymentCommand,
    tenants: Option<TenantChoice>,
) -> ApiResult<(StatusCode, Json<CreateDeploymentResponse>)> {
    if command.project_name.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "ProjectName",
            "the project's name or id is required",
        ));
    }
    if command.release_version.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "ReleaseVersion",
            "the version of the release to deploy is required",
        ));
    }
    if command.environment_names.is_empty() {
        return Err(ApiError::invalid_field(
            "EnvironmentNames",
            "at least one environment is required",
        ));
    }
    if !command.specific_machine_names.is_empty() || !command.excluded_machine_names.is_empty() {
        return Err(ApiError::unavailable("Choosing deployment targets"));
    }
    let prompted = prompted_values(&command.variables, "Variables")?;
    if command.use_guided_failure == Some(true) {
        return Err(ApiError::unavailable("Guided failure (UseGuidedFailure)"));
    }
    if command.run_at.is_some() || command.no_run_after.is_some() {
        return Err(ApiError::unavailable(
            "Scheduled deployments (RunAt, NoRunAfter)",
        ));
    }
    let txn = state.store.conn().begin().await?;
    let (project_doc, project) =
        project_for_command(&txn, scope, "ProjectName", &command.project_name).await?;
    let release_doc = documents::find_by_name(
        &txn,
        &scope.id,
        RELEASE_KIND,
        Some(&project_doc.id),
        command.release_version.trim(),
    )
    .await?
    .ok_or_else(|| {
        ApiError::invalid_field(
            "ReleaseVersion",
            format!(
                "release '{}' of project '{}' was not found",
                command.release_version, project.name
            ),
        )
    })?;
    // UpdateVariableSnapshot: the release takes the project's current variables first.
    let release_doc = if command.update_variable_snapshot {
        resnapshot(&txn, &scope.id, &release_doc).await?
    } else {
        release_doc
    };
    let skip_actions =
        resolve_skipped_actions(&txn, &scope.id, &release_doc, &command.skip_step_names).await?;
    let mut created = Vec::new();
    for name in &command.environment_names {
        let environment_doc = find_environment(&txn, &scope.id, name).await?;
        let (chosen, field) = match &tenants {
            None => (vec![None], "ProjectName"),
            Some(choice) => {
                let environment: Environment = documents::decode(&environment_doc)?;
                let found = crate::tenants::deployment_tenants(
                    &txn,
                    &scope.id,
                    &project,
                    &environment,
                    &choice.names,
                    &choice.tags,
                )
                .await?;
                (found.into_iter().map(Some).collect(), "Tenants")
            }
        };
        for tenant in chosen {
            let (deployment, task) = insert_deployment(
                &txn,
                scope,
                principal,
                DeploymentRequest {
                    release_doc: release_doc.clone(),
                    environment_doc: environment_doc.clone(),
                    tenant,
                    tenant_field: field,
                    comments: None,
                    force_package_download: command.force_package_download,
                    force_package_redeployment: command.force_package_redeployment,
                    use_guided_failure: command.use_guided_failure.unwrap_or(false),
                    skip_actions: skip_actions.clone(),
                    prompted: Prompted {
                        field: "Variables",
                        values: prompted.clone(),
                        keyring: state.keyring.as_deref(),
                    },
                },
            )
            .await?;
            created.push(DeploymentServerTask {
                deployment_id: deployment.id,
                server_task_id: task.id,
            });
        }
    }
    txn.commit().await?;
    state.relay.wake();
    Ok((
        StatusCode::CREATED,
        Json(CreateDeploymentResponse {
            deployment_server_tasks: created,
        }),
    ))
}

/// Maps `SkipStepNames` (step or action names) to action ids of the release's process snapshot.
async fn resolve_skipped_actions(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    release_doc: &Document,
    names: &[String],
) -> ApiResult<Vec<String>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let release: Release = documents::decode(release_doc)?;
    let snapshot = documents::get(
        conn,
        space,
        PROCESS_SNAPSHOT_KIND,
        &release.project_deployment_process_snapshot_id,
    )
    .await?
    .ok_or_else(|| {
        ApiError::internal(format!("release {} lost its process snapshot", release.id))
    })?;
    let process: cuttle_wire::resources::DeploymentProcess = documents::decode(&snapshot)?;
    let mut ids = Vec::new();
    for name in names {
        let mut found = false;
        for step in &process.steps {
            for action in &step.actions {
                if step.name.eq_ignore_ascii_case(name) || action.name.eq_ignore_ascii_case(name) {
                    ids.push(action.id.clone());
                    found = true;
                }
            }
        }
        if !found {
            return Err(ApiError::invalid_field(
                "SkipStepNames",
                format!("the release has no step named '{name}'"),
            ));
        }
    }
    Ok(ids)
}

async fn create_deployment_classic(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    JsonBody(body): JsonBody<CreateDeploymentClassic>,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    if !body.specific_machine_ids.is_empty() || !body.excluded_machine_ids.is_empty() {
        return Err(ApiError::unavailable("Choosing deployment targets"));
    }
    let txn = state.store.conn().begin().await?;
    let release_doc = documents::get(&txn, &scope.id, RELEASE_KIND, &body.release_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid_field(
                "ReleaseId",
                format!("release '{}' was not found", body.release_id),
            )
        })?;
    let environment_doc = documents::get(&txn, &scope.id, Environment::KIND, &body.environment_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid_field(
                "EnvironmentId",
                format!("environment '{}' was not found", body.environment_id),
            )
        })?;
    let tenant = match body
        .tenant_id
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        Some(id) => Some(
            resources::load::<Tenant>(&txn, &scope.id, id)
                .await
                .map_err(|_| {
                    ApiError::invalid_field("TenantId", format!("tenant '{id}' was not found"))
                })?
                .1,
        ),
        None => None,
    };
    let (deployment, _) = insert_deployment(
        &txn,
        &scope,
        &principal,
        DeploymentRequest {
            release_doc,
            environment_doc,
            tenant,
            tenant_field: "TenantId",
            comments: body.comments,
            force_package_download: body.force_package_download,
            force_package_redeployment: body.force_package_redeployment,
            use_guided_failure: body.use_guided_failure,
            skip_actions: body.skip_actions,
            prompted: Prompted {
                field: "FormValues",
                values: prompted_values(&body.form_values, "FormValues")?,
                keyring: state.keyring.as_deref(),
            },
        },
    )
    .await?;
    txn.commit().await?;
    state.relay.wake();
    Ok((StatusCode::CREATED, Json(deployment)))
}
