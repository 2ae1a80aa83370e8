//! Spaces: `/api/spaces` CRUD, `/api/spaces/all`, the space home `/api/{spaceId}`, and the
//! defaults every new space gets (project group, lifecycle, built-in feed).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathParams, Principal, SpaceScope, resolve_space};
use crate::links::links;
use crate::resources::{self, require_name};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use cuttle_domain::SpaceId;
use cuttle_domain::ids::slugify;
use cuttle_store::documents::{self, Document, ListQuery, NewDocument, Replacement, SPACE_KIND};
use cuttle_store::{ConnectionTrait, TransactionTrait};
use cuttle_wire::resources::{Feed, Lifecycle, ProjectGroup, Space};
use cuttle_wire::{Collection, Links};
use serde_json::{Value, json};

/// Document kind of spaces.
pub const KIND: &str = SPACE_KIND;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/spaces", get(list).post(create))
        .route("/api/spaces/all", get(all))
        .route("/api/spaces/{id}", get(get_one).put(update).delete(delete))
        .route("/api/{space_id}", get(space_home))
}

fn space_links(space: &Space) -> Links {
    links([
        ("Self", format!("/api/spaces/{}", space.id)),
        ("SpaceHome", format!("/api/{}", space.id)),
        ("Web", format!("/app#/spaces/{}", space.id)),
        ("Logo", format!("/api/spaces/{}/logo", space.id)),
        ("Search", format!("/api/spaces/{}/search", space.id)),
    ])
}

/// The wire form of a stored space.
pub fn present(doc: &Document) -> ApiResult<Space> {
    let mut space: Space = documents::decode(doc)?;
    space.links = space_links(&space);
    Ok(space)
}

/// The spaces of an organisation (all of them, whoever asks).
pub async fn organisation_spaces(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    query: &ListQuery,
) -> ApiResult<Vec<Document>> {
    let owned: std::collections::HashSet<String> =
        cuttle_store::organisations::spaces_of(conn, organisation_id)
            .await?
            .into_iter()
            .collect();
    let (docs, _) = documents::list_spaces(conn, &resources::unpaged(query)).await?;
    Ok(docs.into_iter().filter(|d| owned.contains(&d.id)).collect())
}

/// The spaces of the principal's organisation that the principal can see.
async fn visible_spaces(
    state: &AppState,
    principal: &Principal,
    query: &ListQuery,
) -> ApiResult<Vec<Document>> {
    let docs = organisation_spaces(state.store.conn(), &principal.organisation_id, query).await?;
    Ok(docs
        .into_iter()
        .filter(|d| principal.grants.can_see_space(&d.id))
        .collect())
}

/// The principal's organisation's space marked `IsDefault`, when they can see it.
pub async fn default_space(
    state: &AppState,
    principal: &Principal,
) -> ApiResult<Option<SpaceScope>> {
    for doc in visible_spaces(state, principal, &ListQuery::everything()).await? {
        let space: Space = documents::decode(&doc)?;
        if space.is_default {
            let id = SpaceId::parse(&space.id).map_err(ApiError::internal)?;
            return Ok(Some(SpaceScope { id, space }));
        }
    }
    Ok(None)
}

/// Finds a space of the principal's organisation by slug or exact (case-insensitive) name.
pub async fn find_by_slug_or_name(
    state: &AppState,
    principal: &Principal,
    identifier: &str,
) -> ApiResult<Option<Document>> {
    for doc in visible_spaces(state, principal, &ListQuery::everything()).await? {
        let space: Space = documents::decode(&doc)?;
        if space.slug.eq_ignore_ascii_case(identifier)
            || space.name.eq_ignore_ascii_case(identifier)
        {
            return Ok(Some(doc));
        }
    }
    Ok(None)
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Collection<Space>>> {
    let query = resources::list_query(&params)?;
    let docs = visible_spaces(&state, &principal, &query).await?;
    let (docs, total) = resources::page_slice(docs, &query);
    let items = docs.iter().map(present).collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(Collection::page(
        "Space",
        items,
        total,
        query.skip,
        query.take,
        "/api/spaces",
        "/api/spaces{/id}{?skip,ids,take,partialName}",
    )))
}

async fn all(State(state): State<AppState>, principal: Principal) -> ApiResult<Json<Vec<Space>>> {
    let docs = visible_spaces(&state, &principal, &ListQuery::everything()).await?;
    Ok(Json(docs.iter().map(present).collect::<ApiResult<_>>()?))
}

async fn load(state: &AppState, principal: &Principal, identifier: &str) -> ApiResult<SpaceScope> {
    resolve_space(state, principal, identifier)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("space '{identifier}'")))
}

async fn get_one(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<Space>> {
    let scope = load(&state, &principal, path.get("id")?).await?;
    let mut space = scope.space;
    space.links = space_links(&space);
    Ok(Json(space))
}

/// Creates a space of `organisation_id` and its defaults (project group, lifecycle, built-in
/// feed, machine policy, and its space managers team) in the caller's transaction. Used by the
/// API, signup and bootstrap. `owner` (the creating user) manages the space when the body names
/// no managers.
pub async fn insert_space(
    conn: &impl ConnectionTrait,
    mut space: Space,
    organisation_id: &str,
    owner: Option<&str>,
) -> ApiResult<Space> {
    let name = require_name(&space.name, "space")?;
    let number = cuttle_store::next_number(conn, "Spaces").await?;
    let id = SpaceId::from_number(number as u64);
    space.id = id.to_string();
    space.name = name.clone();
    space.slug = if space.slug.trim().is_empty() {
        slugify(&name)
    } else {
        slugify(&space.slug)
    };
    if space.space_managers_teams.is_empty() {
        space.space_managers_teams = vec![format!("teams-spacemanagers-{id}")];
    }
    if space.space_managers_team_members.is_empty() {
        space.space_managers_team_members = owner.map(|o| vec![o.to_owned()]).unwrap_or_default();
    }
    space.last_modified_on = Some(Utc::now());
    // Owned first: with row-level security, rows of an unowned space cannot be written.
    cuttle_store::organisations::set_space_owner(conn, id.as_str(), organisation_id).await?;
    // A caller who could not see the new space yet may write its rows.
    cuttle_store::rls::admit_space(conn, id.as_str()).await?;
    documents::insert(
        conn,
        NewDocument {
            id: id.to_string(),
            space_id: id.clone(),
            kind: KIND,
            name: name.clone(),
            parent_id: None,
            // Names and slugs are unique across the installation, not per space.
            unique_key: None,
            sort_order: number,
            data: documents::encode(&space),
        },
        "",
    )
    .await?;
    ensure_unique_space(conn, organisation_id, &space).await?;
    save_space_managers(conn, organisation_id, &space).await?;
    resources::insert(
        conn,
        &id,
        ProjectGroup {
            name: "Default Project Group".into(),
            ..Default::default()
        },
    )
    .await?;
    resources::insert(
        conn,
        &id,
        Lifecycle {
            name: "Default Lifecycle".into(),
            description: "The default lifecycle: environments in their sort order.".into(),
            ..Default::default()
        },
    )
    .await?;
    let feed = Feed {
        id: "feeds-builtin".into(),
        name: "Octopus Server (built-in)".into(),
        slug: "octopus-server-built-in".into(),
        feed_type: "BuiltIn".into(),
        space_id: id.to_string(),
        delete_unreleased_packages_after_days: 0,
        keep_latest_versions_per_package: 0,
        is_built_in_repo_sync_enabled: false,
        package_acquisition_location_options: vec!["Server".into(), "ExecutionTarget".into()],
        links: Links::new(),
    };
    documents::insert(
        conn,
        NewDocument {
            id: feed.id.clone(),
            space_id: id.clone(),
            kind: "Feed",
            name: feed.name.clone(),
            parent_id: None,
            unique_key: Some(feed.name.to_lowercase()),
            // Listed first: clients take `list({take:1}).Items[0]` as the built-in feed.
            sort_order: 0,
            data: documents::encode(&feed),
        },
        "",
    )
    .await?;
    crate::machines::create_defaults(conn, &id).await?;
    space.links = space_links(&space);
    Ok(space)
}

/// The id of a space's own managers team.
pub fn space_managers_team_id(space_id: &str) -> String {
    format!("teams-spacemanagers-{space_id}")
}

/// Creates or updates the space's managers team (members `SpaceManagersTeamMembers`) with the
/// Space manager role in the space.
async fn save_space_managers(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    space: &Space,
) -> ApiResult<()> {
    use crate::authz::{SCOPED_ROLE_KIND, TEAM_KIND};
    use cuttle_store::organisations;
    use cuttle_wire::security::{ScopedUserRole, Team};
    let team_id = space_managers_team_id(&space.id);
    let team = Team {
        id: team_id.clone(),
        name: format!("Space Managers ({})", space.id),
        description: format!("Members manage the space '{}'.", space.name),
        member_user_ids: space.space_managers_team_members.clone(),
        space_id: Some(space.id.clone()),
        can_be_deleted: false,
        can_be_renamed: false,
        can_change_members: true,
        can_change_roles: false,
        ..Team::default()
    };
    let existed = organisations::replace_document(
        conn,
        organisation_id,
        TEAM_KIND,
        &team_id,
        &team.name,
        &team,
        "",
    )
    .await?;
    if !existed {
        organisations::insert_document(
            conn,
            organisation_id,
            TEAM_KIND,
            &team_id,
            &team.name,
            &team,
            "",
        )
        .await?;
        let binding = ScopedUserRole {
            id: cuttle_store::next_id(conn, "ScopedUserRoles").await?,
            team_id: team_id.clone(),
            user_role_id: "userroles-spacemanager".into(),
            space_id: Some(space.id.clone()),
            ..ScopedUserRole::default()
        };
        organisations::insert_document(
            conn,
            organisation_id,
            SCOPED_ROLE_KIND,
            &binding.id,
            &binding.id,
            &binding,
            "",
        )
        .await?;
    }
    Ok(())
}

/// Space names and slugs are unique within an organisation (checked inside the transaction).
async fn ensure_unique_space(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    space: &Space,
) -> ApiResult<()> {
    let docs = organisation_spaces(conn, organisation_id, &ListQuery::everything()).await?;
    for doc in docs.iter().filter(|d| d.id != space.id) {
        let other: Space = documents::decode(doc)?;
        if other.name.eq_ignore_ascii_case(&space.name) {
            return Err(ApiError::invalid_field(
                "Name",
                format!(
                    "the name '{}' is already in use by another space",
                    space.name
                ),
            ));
        }
        if other.slug.eq_ignore_ascii_case(&space.slug) {
            return Err(ApiError::invalid_field(
                "Slug",
                format!(
                    "the slug '{}' is already in use by another space",
                    space.slug
                ),
            ));
        }
    }
    Ok(())
}

async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(space): JsonBody<Space>,
) -> ApiResult<(StatusCode, Json<Space>)> {
    let make_default = space.is_default;
    let txn = state.store.conn().begin().await?;
    let quota = state.limits.max_spaces;
    if quota > 0
        && organisation_spaces(&txn, &principal.organisation_id, &ListQuery::everything())
            .await?
            .len()
            >= quota as usize
    {
        return Err(ApiError::quota(format!(
            "Your organisation has reached its limit of {quota} spaces."
        )));
    }
    let mut created = insert_space(
        &txn,
        Space {
            is_default: false,
            ..space
        },
        &principal.organisation_id,
        Some(&principal.user.id),
    )
    .await?;
    if make_default {
        created = set_default(&txn, &principal.organisation_id, created).await?;
    }
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Makes `space` its organisation's only default space.
async fn set_default(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    mut space: Space,
) -> ApiResult<Space> {
    let docs = organisation_spaces(conn, organisation_id, &ListQuery::everything()).await?;
    for doc in docs.iter().filter(|d| d.id != space.id) {
        let mut other: Space = documents::decode(doc)?;
        if other.is_default {
            other.is_default = false;
            save(conn, &other).await?;
        }
    }
    space.is_default = true;
    save(conn, &space).await?;
    space.links = space_links(&space);
    Ok(space)
}

async fn save(conn: &impl ConnectionTrait, space: &Space) -> ApiResult<()> {
    let id = SpaceId::parse(&space.id).map_err(ApiError::internal)?;
    let number = cuttle_domain::ids::numeric_suffix(&space.id, "Spaces").unwrap_or(0) as i64;
    documents::replace(
        conn,
        &id,
        KIND,
        &space.id,
        Replacement {
            name: space.name.clone(),
            unique_key: None,
            sort_order: number,
            data: documents::encode(space),
            expected_version: None,
        },
        "",
    )
    .await?;
    Ok(())
}

async fn update(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
    JsonBody(body): JsonBody<Space>,
) -> ApiResult<Json<Space>> {
    let current = load(&state, &principal, path.get("id")?).await?.space;
    crate::authz::require(
        &principal,
        cuttle_authz::Permission::SpaceEdit,
        &cuttle_authz::Target {
            space: Some(&current.id),
            ..Default::default()
        },
    )?;
    let name = require_name(&body.name, "space")?;
    let slug = if body.slug.trim().is_empty() {
        current.slug.clone()
    } else {
        slugify(&body.slug)
    };
    if current.is_default && !body.is_default {
        return Err(ApiError::invalid_field(
            "IsDefault",
            "make another space the default instead of clearing it here",
        ));
    }
    let space = Space {
        id: current.id.clone(),
        name,
        slug,
        description: body.description,
        is_default: body.is_default,
        is_private: body.is_private,
        task_queue_stopped: body.task_queue_stopped,
        space_managers_teams: body.space_managers_teams,
        space_managers_team_members: body.space_managers_team_members,
        icon: body.icon,
        extension_settings: body.extension_settings,
        last_modified_on: Some(Utc::now()),
        links: Links::new(),
    };
    let organisation = principal.organisation_id.as_str();
    let txn = state.store.conn().begin().await?;
    ensure_unique_space(&txn, organisation, &space).await?;
    let mut space = if space.is_default && !current.is_default {
        set_default(&txn, organisation, space).await?
    } else {
        space
    };
    save(&txn, &space).await?;
    save_space_managers(&txn, organisation, &space).await?;
    txn.commit().await?;
    space.links = space_links(&space);
    Ok(Json(space))
}

async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let scope = load(&state, &principal, path.get("id")?).await?;
    if scope.space.is_default {
        return Err(ApiError::bad_request(
            "The default space cannot be deleted.",
            vec!["Make another space the default first.".into()],
        ));
    }
    if !scope.space.task_queue_stopped {
        return Err(ApiError::bad_request(
            format!(
                "The task queue of space '{}' must be stopped before the space can be deleted.",
                scope.space.name
            ),
            vec!["Set TaskQueueStopped to true with PUT /api/spaces/{id}, then delete.".into()],
        ));
    }
    let txn = state.store.conn().begin().await?;
    cuttle_store::tasks::delete_space_tasks(&txn, &scope.id).await?;
    documents::delete_space(&txn, &scope.id).await?;
    crate::teams::delete_space_teams(&txn, &principal.organisation_id, scope.id.as_str()).await?;
    cuttle_store::organisations::delete_space_owner(&txn, scope.id.as_str()).await?;
    let package_files = cuttle_store::packages::delete_space(&txn, &scope.id).await?;
    txn.commit().await?;
    // The rows are gone, so nothing can reach these files any more; a failure leaves an orphan.
    for key in package_files {
        if let Err(err) = state.blob.delete(&key).await {
            tracing::warn!(blob.key = %key, error = %err, "could not delete a package file of a deleted space; it is left as an orphan");
        }
    }
    Ok(StatusCode::OK)
}

/// The space-scoped links of one space (`GET /api/{spaceId}`).
pub fn space_home_links(space_id: &str) -> Value {
    let p = format!("/api/{space_id}");
    json!({
        "Self": p,
        "SpaceHome": p,
        "Projects": format!("{p}/projects{{/id}}{{?name,skip,ids,clone,take,partialName,clonedFromProjectId}}"),
        "ProjectGroups": format!("{p}/projectgroups{{/id}}{{?skip,take,ids,partialName}}"),
        "Environments": format!("{p}/environments{{/id}}{{?name,skip,ids,take,partialName}}"),
        "EnvironmentSortOrder": format!("{p}/environments/sortorder"),
        "Lifecycles": format!("{p}/lifecycles{{/id}}{{?skip,take,ids,partialName}}"),
        "Channels": format!("{p}/channels{{/id}}{{?skip,take,ids,partialName}}"),
        "Releases": format!("{p}/releases{{/id}}{{?skip,ignoreChannelRules,take,ids}}"),
        "Deployments": format!("{p}/deployments{{/id}}{{?skip,take,ids,projects,environments,tenants,channels,taskState,partialName}}"),
        "DeploymentProcesses": format!("{p}/deploymentprocesses{{/id}}{{?skip,take,ids}}"),
        "Feeds": format!("{p}/feeds{{/id}}{{?skip,take,ids,partialName,feedType,name}}"),
        "Tasks": format!("{p}/tasks{{/id}}{{?skip,active,environment,project,name,node,running,states,take,ids,partialName}}"),
        "Variables": format!("{p}/variables{{/id}}{{?ids}}"),
        "CreateRelease": format!("{p}/releases/create/v1"),
        "CreateDeploymentUntenanted": format!("{p}/deployments/create/untenanted/v1"),
    })
}

/// `GET /api/{spaceId}`. The route also catches `/api/<anything>`, so an identifier that is no
/// space goes to the fallback (a 501 for Octopus features not built yet, like `/api/teams`).
async fn space_home(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiResult<Json<Value>> {
    let identifier = path.get("space_id")?;
    let Some(scope) = resolve_space(&state, &principal, identifier).await? else {
        return Err(crate::fallback::fallback(method, uri).await);
    };
    Ok(Json(json!({
        "Id": scope.id.as_str(),
        "Name": scope.space.name,
        "Links": space_home_links(scope.id.as_str()),
    })))
}
