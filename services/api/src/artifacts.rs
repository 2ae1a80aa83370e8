//! Artifacts (`/api/{space}/artifacts`): files a task's scripts published with
//! `new_octopusartifact`. The worker stored each in the blob store and the orchestrator listed it
//! as an `Artifact` document owned by its task (with the blob key, which the API never shows).
//!
//! An artifact is seen as its task is: a team restricted to some projects or environments sees
//! only the artifacts of their deployments; others answer 404.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Params, PathParams, Principal, SpaceScope};
use crate::links::{links, space_prefix};
use crate::resources;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use cuttle_authz::{Permission, Target};
use cuttle_domain::SpaceId;
use cuttle_store::documents::{self, Document};
use cuttle_store::tasks;
use cuttle_store::{ConnectionTrait, TransactionTrait};
use cuttle_wire::Collection;
use cuttle_wire::resources::Artifact;
use std::collections::HashMap;

/// Document kind, as the orchestrator writes it.
pub const ARTIFACT_KIND: &str = "Artifact";

/// Routes of this module.
pub fn routes(prefix: &str) -> Router<AppState> {
    let base = format!("{prefix}/artifacts");
    Router::new()
        .route(&base, get(list_artifacts))
        .route(
            &format!("{base}/{{id}}"),
            get(get_artifact).delete(delete_artifact),
        )
        .route(&format!("{base}/{{id}}/content"), get(artifact_content))
}

fn present(doc: &Document, space: &SpaceId) -> ApiResult<Artifact> {
    let mut artifact: Artifact = documents::decode(doc)?;
    let base = format!("{}/artifacts/{}", space_prefix(space.as_str()), artifact.id);
    artifact.links = links([
        ("Self", base.clone()),
        ("Content", format!("{base}/content")),
    ]);
    Ok(artifact)
}

/// The project and environment of the task an artifact belongs to (none for other tasks).
async fn owner(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    doc: &Document,
) -> ApiResult<(Option<String>, Option<String>)> {
    let Some(task_id) = doc.parent_id.as_deref() else {
        return Ok((None, None));
    };
    Ok(tasks::get_task(conn, Some(space), task_id)
        .await?
        .map(|task| (task.project_id, task.environment_id))
        .unwrap_or_default())
}

/// Whether `principal` holds `permission` for an artifact of a task of `owner`.
fn allowed(
    principal: &Principal,
    permission: Permission,
    space: &SpaceId,
    owner: &(Option<String>, Option<String>),
) -> bool {
    principal.grants.allows(
        permission,
        &Target {
            space: Some(space.as_str()),
            project: owner.0.as_deref(),
            environment: owner.1.as_deref(),
            ..Target::default()
        },
    )
}

/// An artifact the principal may see, with its blob key; 404 otherwise.
async fn load(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    principal: &Principal,
    id: &str,
) -> ApiResult<(Document, String)> {
    let not_found = || ApiError::not_found(format!("artifact '{id}'"));
    let doc = documents::get(conn, space, ARTIFACT_KIND, id)
        .await?
        .ok_or_else(not_found)?;
    let owner = owner(conn, space, &doc).await?;
    if !allowed(principal, Permission::ArtifactView, space, &owner) {
        return Err(not_found());
    }
    let data: serde_json::Value = serde_json::from_str(&doc.data).map_err(ApiError::internal)?;
    let blob_key = data["BlobKey"]
        .as_str()
        .filter(|key| !key.is_empty())
        .ok_or_else(|| ApiError::internal(format!("artifact {id} has no file")))?
        .to_owned();
    Ok((doc, blob_key))
}

/// `?regarding=ServerTasks-N` lists one task's artifacts (the only filter Cuttle has).
async fn list_artifacts(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Collection<Artifact>>> {
    let mut query = resources::list_query(&params)?;
    query.parent_id = params
        .get("regarding")
        .filter(|r| !r.trim().is_empty())
        .map(str::to_owned);
    let conn = state.store.conn();
    // A grant that holds with no project or environment named covers the whole space.
    let sees_all = allowed(
        &principal,
        Permission::ArtifactView,
        &scope.id,
        &(None, None),
    );
    let (docs, total) = if !sees_all {
        // Filtered by each task's project and environment, then paged.
        let (all, _) =
            documents::list(conn, &scope.id, ARTIFACT_KIND, &resources::unpaged(&query)).await?;
        let mut owners = HashMap::new();
        let mut seen = Vec::new();
        for doc in all {
            let key = doc.parent_id.clone().unwrap_or_default();
            if !owners.contains_key(&key) {
                owners.insert(key.clone(), owner(conn, &scope.id, &doc).await?);
            }
            if owners.get(&key).is_some_and(|owner| {
                allowed(&principal, Permission::ArtifactView, &scope.id, owner)
            }) {
                seen.push(doc);
            }
        }
        resources::page_slice(seen, &query)
    } else {
        documents::list(conn, &scope.id, ARTIFACT_KIND, &query).await?
    };
    let items = docs
        .iter()
        .map(|doc| present(doc, &scope.id))
        .collect::<ApiResult<Vec<_>>>()?;
    let path = format!("{}/artifacts", space_prefix(scope.id.as_str()));
    Ok(Json(Collection::page(
        ARTIFACT_KIND,
        items,
        total,
        query.skip,
        query.take,
        &path,
        &format!("{path}{{/id}}{{?skip,take,regarding}}"),
    )))
}

async fn get_artifact(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<Artifact>> {
    let (doc, _) = load(state.store.conn(), &scope.id, &principal, path.get("id")?).await?;
    Ok(Json(present(&doc, &scope.id)?))
}

/// The file itself.
async fn artifact_content(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Response> {
    let (doc, blob_key) = load(state.store.conn(), &scope.id, &principal, path.get("id")?).await?;
    let reader = state
        .blob
        .get(&blob_key, None)
        .await
        .map_err(ApiError::internal)?;
    let mut response = Response::new(Body::from_stream(reader.stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(reader.size));
    let file_name: String = doc
        .name
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .collect();
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Removes the listing, then the file (a file left behind by a failed delete is only space).
async fn delete_artifact(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let txn = state.store.conn().begin().await?;
    let (doc, blob_key) = load(&txn, &scope.id, &principal, path.get("id")?).await?;
    let owner = owner(&txn, &scope.id, &doc).await?;
    crate::authz::require(
        &principal,
        Permission::ArtifactDelete,
        &Target {
            space: Some(scope.id.as_str()),
            project: owner.0.as_deref(),
            environment: owner.1.as_deref(),
            ..Target::default()
        },
    )?;
    documents::delete(&txn, &scope.id, ARTIFACT_KIND, &doc.id).await?;
    txn.commit().await?;
    if let Err(err) = state.blob.delete(&blob_key).await {
        tracing::warn!(artifact = %doc.id, error = %err, "the artifact's file could not be deleted");
    }
    Ok(StatusCode::OK)
}
