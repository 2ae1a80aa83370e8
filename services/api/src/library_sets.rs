//! Library variable sets (`/api/{space}/libraryvariablesets`): variables shared by every
//! project that includes the set (`Project.IncludedLibraryVariableSetIds`). Each set owns a
//! variable set, `variableset-LibraryVariableSets-N`, edited through `/api/{space}/variables/{id}`
//! like a project's. A release snapshots the sets its project includes
//! (`LibraryVariableSetSnapshotIds`).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathParams, SpaceScope};
use crate::links::{links, space_prefix};
use crate::projects::insert_variable_set;
use crate::resources::{self, Resource, resource_accessors};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cuttle_domain::SpaceId;
use cuttle_store::documents::{self, ListQuery};
use cuttle_store::{ConnectionTrait, TransactionTrait};
use cuttle_wire::resources::{LibraryVariableSet, Project};
use cuttle_wire::{Collection, Links};

/// The only content type Cuttle has: script modules are not built.
const VARIABLES_CONTENT: &str = "Variables";

impl Resource for LibraryVariableSet {
    const KIND: &'static str = "LibraryVariableSet";
    const PREFIX: &'static str = "LibraryVariableSets";
    const COLLECTION: &'static str = "libraryvariablesets";
    const NOUN: &'static str = "library variable set";

    resource_accessors!();

    fn assign(&mut self, id: String, space: &SpaceId) {
        self.variable_set_id = format!("variableset-{id}");
        self.id = id;
        self.space_id = space.to_string();
    }
    fn links(&self, space: &SpaceId) -> Links {
        let prefix = space_prefix(space.as_str());
        links([
            ("Self", format!("{prefix}/libraryvariablesets/{}", self.id)),
            (
                "Variables",
                format!("{prefix}/variables/{}", self.variable_set_id),
            ),
        ])
    }
    fn prepare(&mut self) -> ApiResult<()> {
        if self.content_type.trim().is_empty() {
            self.content_type = VARIABLES_CONTENT.into();
        }
        if !self.content_type.eq_ignore_ascii_case(VARIABLES_CONTENT) {
            return Err(ApiError::invalid_field(
                "ContentType",
                format!(
                    "'{}' is not available: Cuttle has library variable sets of content type 'Variables' only (script modules are not built yet)",
                    self.content_type
                ),
            ));
        }
        self.content_type = VARIABLES_CONTENT.into();
        crate::tenants::prepare_templates(&mut self.templates)
    }
}

/// Routes of this module.
pub fn routes(prefix: &str) -> Router<AppState> {
    let base = format!("{prefix}/libraryvariablesets");
    Router::new()
        .route(&base, get(list_sets).post(create_set))
        .route(
            &format!("{base}/all"),
            get(resources::all::<LibraryVariableSet>),
        )
        .route(
            &format!("{base}/{{id}}"),
            get(resources::get_one::<LibraryVariableSet>)
                .put(update_set)
                .delete(delete_set),
        )
}

async fn list_sets(
    State(state): State<AppState>,
    scope: SpaceScope,
    params: Params,
) -> ApiResult<Json<Collection<LibraryVariableSet>>> {
    let query = resources::list_query(&params)?;
    let path = format!("{}/libraryvariablesets", space_prefix(scope.id.as_str()));
    // Every set is of content type Variables: asking for script modules finds none.
    if params
        .get("contentType")
        .is_some_and(|t| !t.eq_ignore_ascii_case(VARIABLES_CONTENT))
    {
        return Ok(Json(resources::page(
            Vec::new(),
            0,
            &query,
            &scope.id,
            path,
        )?));
    }
    let (docs, total) = documents::list(
        state.store.conn(),
        &scope.id,
        LibraryVariableSet::KIND,
        &query,
    )
    .await?;
    Ok(Json(resources::page(docs, total, &query, &scope.id, path)?))
}

async fn create_set(
    State(state): State<AppState>,
    scope: SpaceScope,
    JsonBody(set): JsonBody<LibraryVariableSet>,
) -> ApiResult<(StatusCode, Json<LibraryVariableSet>)> {
    let txn = state.store.conn().begin().await?;
    let created = resources::insert(&txn, &scope.id, set).await?;
    insert_variable_set(&txn, &scope.id, &created.id, &created.variable_set_id).await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn update_set(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
    JsonBody(set): JsonBody<LibraryVariableSet>,
) -> ApiResult<Json<LibraryVariableSet>> {
    let txn = state.store.conn().begin().await?;
    let updated = resources::replace(&txn, &scope.id, path.get("id")?, set).await?;
    txn.commit().await?;
    Ok(Json(updated))
}

/// Deletes the set and its variables, and takes it out of every project that included it, as
/// Octopus does. Releases keep their snapshots.
async fn delete_set(
    State(state): State<AppState>,
    scope: SpaceScope,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let txn = state.store.conn().begin().await?;
    let (doc, _) = resources::load::<LibraryVariableSet>(&txn, &scope.id, path.get("id")?).await?;
    let (projects, _) =
        documents::list(&txn, &scope.id, Project::KIND, &ListQuery::everything()).await?;
    for project_doc in projects {
        let mut project: Project = documents::decode(&project_doc)?;
        let before = project.included_library_variable_set_ids.len();
        project
            .included_library_variable_set_ids
            .retain(|id| id != &doc.id);
        if project.included_library_variable_set_ids.len() != before {
            resources::replace(&txn, &scope.id, &project_doc.id, project).await?;
        }
    }
    documents::delete_children(&txn, &scope.id, &doc.id).await?;
    documents::delete(&txn, &scope.id, LibraryVariableSet::KIND, &doc.id).await?;
    txn.commit().await?;
    Ok(StatusCode::OK)
}

/// Checks that every set a project includes exists in its space; names the field when not.
pub async fn check_included(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    ids: &[String],
) -> ApiResult<()> {
    for (index, id) in ids.iter().enumerate() {
        if documents::get(conn, space, LibraryVariableSet::KIND, id)
            .await?
            .is_none()
        {
            return Err(ApiError::invalid_field(
                &format!("IncludedLibraryVariableSetIds[{index}]"),
                format!("library variable set '{id}' does not exist in this space"),
            ));
        }
    }
    Ok(())
}
