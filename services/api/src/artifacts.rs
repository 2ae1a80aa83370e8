//! Artifacts (`/api/{space}/artifacts`): files a task's scripts published with
//! `new_octopusartifact`. The worker stored each in the blob store and the orchestrator listed it
//! as an `Artifact` document owned by its task (with the blob key, which the API never shows).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Params, PathParams, SpaceScope};
use crate::links::{links, space_prefix};
use crate::resources;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use cuttle_domain::SpaceId;
use cuttle_store::documents::{self, Document};
use cuttle_store::{ConnectionTrait, TransactionTrait};
use cuttle_wire::Collection;
use cuttle_wire::resources::Artifact;

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

async fn load(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    id: &str,
) -> ApiResult<(Document, String)> {
    let doc = documents::get(conn, space, ARTIFACT_KIND, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("artifact '{id}'")))?;
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
    params: Params,
) -> ApiResult<Json<Collection<Artifact>>> {
    let mut query = resources::list_query(&params)?;
    query.parent_id = params
        .get("regarding")
        .filter(|r| !r.trim().is_empty())
        .map(str::to_owned);
    let (docs, total) =
        documents::list(state.store.conn(), &scope.id, ARTIFACT_KIND, &query).await?;
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
    path: PathParams,
) -> ApiResult<Json<Artifact>> {
    let (doc, _) = load(state.store.conn(), &scope.id, path.get("id")?).await?;
    Ok(Json(present(&doc, &scope.id)?))
}

/// The file itself.
async fn artifact_content(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<Response> {
    let (doc, blob_key) = load(state.store.conn(), &scope.id, path.get("id")?).await?;
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
    path: PathParams,
) -> ApiResult<StatusCode> {
    let txn = state.store.conn().begin().await?;
    let (doc, blob_key) = load(&txn, &scope.id, path.get("id")?).await?;
    documents::delete(&txn, &scope.id, ARTIFACT_KIND, &doc.id).await?;
    txn.commit().await?;
    if let Err(err) = state.blob.delete(&blob_key).await {
        tracing::warn!(artifact = %doc.id, error = %err, "the artifact's file could not be deleted");
    }
    Ok(StatusCode::OK)
}
