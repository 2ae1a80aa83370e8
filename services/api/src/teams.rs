//! Teams, user roles and scoped user roles (`/api/teams`, `/api/userroles`,
//! `/api/scopeduserroles`) and the permission catalogue (`/api/permissions/all`), all owned by
//! the caller's organisation. The checks that turn them into decisions are in `authz.rs`.
//!
//! A team with a `SpaceId` lives in that space: seeing or changing it takes the team permission
//! there. A system team (`SpaceId` null) takes the system-level team permission.

use crate::AppState;
use crate::authz::{ADMINISTRATORS_TEAM, EVERYONE_TEAM, ROLE_KIND, SCOPED_ROLE_KIND, TEAM_KIND};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathParams, Principal};
use crate::links::links;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cuttle_authz::{Permission, Target};
use cuttle_store::documents;
use cuttle_store::organisations::{self, OrgDocument};
use cuttle_store::{ConnectionTrait, SpaceId, TransactionTrait};
use cuttle_wire::Collection;
use cuttle_wire::security::{PermissionDescription, ScopedUserRole, Team, UserRole};
use std::collections::{BTreeMap, HashMap};

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/teams", get(list_teams).post(create_team))
        .route(
            "/api/teams/{id}",
            get(get_team).put(update_team).delete(delete_team),
        )
        .route("/api/teams/{id}/scopeduserroles", get(team_bindings))
        .route("/api/userroles", get(list_roles).post(create_role))
        .route("/api/userroles/all", get(all_roles))
        .route(
            "/api/userroles/{id}",
            get(get_role).put(update_role).delete(delete_role),
        )
        .route(
            "/api/scopeduserroles",
            get(list_bindings).post(create_binding),
        )
        .route(
            "/api/scopeduserroles/{id}",
            get(get_binding).put(update_binding).delete(delete_binding),
        )
        .route("/api/permissions/all", get(all_permissions))
}

/// A page of an in-memory list, with Octopus's `skip`/`take`.
pub fn page_of<T>(
    items: Vec<T>,
    params: &Params,
    item_type: &str,
    path: &str,
) -> ApiResult<Collection<T>> {
    let (skip, take) = params.paging()?;
    let total = items.len() as u64;
    let page = items
        .into_iter()
        .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        .take(usize::try_from(take).unwrap_or(usize::MAX))
        .collect();
    Ok(Collection::page(
        item_type,
        page,
        total,
        skip,
        take,
        path,
        &format!("{path}{{/id}}{{?skip,take,ids,partialName}}"),
    ))
}

fn matches_filters(params: &Params, id: &str, name: &str) -> bool {
    let ids = params.list("ids");
    (ids.is_empty() || ids.iter().any(|i| i == id))
        && params
            .get("partialName")
            .is_none_or(|part| name.to_lowercase().contains(&part.to_lowercase()))
}

// ---- teams ----

fn present_team(mut team: Team) -> Team {
    team.links = links([
        ("Self", format!("/api/teams/{}", team.id)),
        (
            "ScopedUserRoles",
            format!("/api/teams/{}/scopeduserroles{{?skip,take}}", team.id),
        ),
    ]);
    team
}

/// The team permission a principal needs on a team, by the team's level.
fn team_target(team_space: Option<&str>) -> Target<'_> {
    Target {
        space: team_space,
        ..Target::default()
    }
}

fn may(principal: &Principal, permission: Permission, team_space: Option<&str>) -> bool {
    match team_space {
        Some(space) => principal
            .grants
            .allows(permission, &team_target(Some(space))),
        None => principal.grants.allows_system(permission),
    }
}

/// Every team of the organisation the principal may see.
async fn visible_teams(conn: &impl ConnectionTrait, principal: &Principal) -> ApiResult<Vec<Team>> {
    let docs =
        organisations::list_documents(conn, &principal.organisation_id, &[TEAM_KIND]).await?;
    let mut teams = Vec::new();
    for doc in &docs {
        let team: Team = organisations::decode(doc)?;
        if may(principal, Permission::TeamView, team.space_id.as_deref()) {
            teams.push(team);
        }
    }
    Ok(teams)
}

/// A team of the principal's organisation that they may see, or 404.
async fn load_team(
    conn: &impl ConnectionTrait,
    principal: &Principal,
    id: &str,
) -> ApiResult<Team> {
    let doc = organisations::get_document(conn, &principal.organisation_id, TEAM_KIND, id).await?;
    let not_found = || ApiError::not_found(format!("team '{id}'"));
    let team: Team = organisations::decode(&doc.ok_or_else(not_found)?)?;
    if !may(principal, Permission::TeamView, team.space_id.as_deref()) {
        return Err(not_found());
    }
    Ok(team)
}

async fn list_teams(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Collection<Team>>> {
    let spaces = params.list("spaces");
    let include_system = params.flag("includeSystem")?.unwrap_or(true);
    let teams = visible_teams(state.store.conn(), &principal)
        .await?
        .into_iter()
        .filter(|t| matches_filters(&params, &t.id, &t.name))
        .filter(|t| match &t.space_id {
            None => include_system,
            Some(space) => spaces.is_empty() || spaces.contains(space),
        })
        .map(present_team)
        .collect();
    Ok(Json(page_of(teams, &params, "Team", "/api/teams")?))
}

async fn get_team(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<Team>> {
    let team = load_team(state.store.conn(), &principal, path.get("id")?).await?;
    Ok(Json(present_team(team)))
}

/// Checks a team's members are users of the organisation.
async fn check_members(
    conn: &impl ConnectionTrait,
    principal: &Principal,
    members: &[String],
) -> ApiResult<()> {
    for member in members {
        let user = cuttle_store::users::get_user(conn, member).await?;
        if user.and_then(|u| u.organisation_id).as_deref() != Some(&principal.organisation_id) {
            return Err(ApiError::invalid_field(
                "MemberUserIds",
                format!("'{member}' is not a user of your organisation"),
            ));
        }
    }
    Ok(())
}

/// Checks a space id names a space of the organisation that the principal can see (on `conn`,
/// so it works inside the caller's transaction).
async fn check_space(
    conn: &impl ConnectionTrait,
    principal: &Principal,
    field: &str,
    space: &str,
) -> ApiResult<SpaceId> {
    let refused = || {
        ApiError::invalid_field(
            field,
            format!("'{space}' is not a space of your organisation"),
        )
    };
    let id = SpaceId::parse(space).map_err(|_| refused())?;
    let owner = organisations::space_owner(conn, id.as_str()).await?;
    if owner.as_deref() != Some(principal.organisation_id.as_str())
        || !principal.grants.can_see_space(id.as_str())
    {
        return Err(refused());
    }
    Ok(id)
}

async fn create_team(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<Team>,
) -> ApiResult<(StatusCode, Json<Team>)> {
    let name = crate::resources::require_name(&body.name, "team")?;
    let space_id = match body.space_id.as_deref().filter(|s| !s.is_empty()) {
        Some(space) => Some(
            check_space(state.store.conn(), &principal, "SpaceId", space)
                .await?
                .to_string(),
        ),
        None => None,
    };
    if !may(&principal, Permission::TeamCreate, space_id.as_deref()) {
        return Err(ApiError::forbidden(Permission::TeamCreate));
    }
    let txn = state.store.conn().begin().await?;
    check_members(&txn, &principal, &body.member_user_ids).await?;
    let team = Team {
        id: cuttle_store::next_id(&txn, "Teams").await?,
        name: name.clone(),
        description: body.description,
        member_user_ids: dedup(body.member_user_ids),
        external_security_groups: body.external_security_groups,
        space_id,
        can_be_deleted: true,
        can_be_renamed: true,
        can_change_members: true,
        can_change_roles: true,
        links: Default::default(),
    };
    organisations::insert_document(
        &txn,
        &principal.organisation_id,
        TEAM_KIND,
        &team.id,
        &name,
        &team,
        &format!("A team named '{name}' already exists."),
    )
    .await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(present_team(team))))
}

fn dedup(mut ids: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
    ids
}

async fn update_team(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
    JsonBody(body): JsonBody<Team>,
) -> ApiResult<Json<Team>> {
    let txn = state.store.conn().begin().await?;
    let current = load_team(&txn, &principal, path.get("id")?).await?;
    if !may(
        &principal,
        Permission::TeamEdit,
        current.space_id.as_deref(),
    ) {
        return Err(ApiError::forbidden(Permission::TeamEdit));
    }
    let name = crate::resources::require_name(&body.name, "team")?;
    if name != current.name && !current.can_be_renamed {
        return Err(ApiError::invalid_field(
            "Name",
            format!("the team '{}' cannot be renamed", current.name),
        ));
    }
    let members = dedup(body.member_user_ids);
    if members != current.member_user_ids && !current.can_change_members {
        return Err(ApiError::invalid_field(
            "MemberUserIds",
            format!("the members of '{}' cannot be changed", current.name),
        ));
    }
    if body.space_id.as_deref().filter(|s| !s.is_empty()) != current.space_id.as_deref()
        && body.space_id.is_some()
    {
        return Err(ApiError::invalid_field(
            "SpaceId",
            "a team cannot move to another space",
        ));
    }
    check_members(&txn, &principal, &members).await?;
    if current.id == ADMINISTRATORS_TEAM && members.is_empty() {
        return Err(ApiError::invalid_field(
            "MemberUserIds",
            "the administrators team needs at least one member",
        ));
    }
    let team = Team {
        name: name.clone(),
        description: body.description,
        member_user_ids: members,
        external_security_groups: body.external_security_groups,
        ..current
    };
    organisations::replace_document(
        &txn,
        &principal.organisation_id,
        TEAM_KIND,
        &team.id,
        &name,
        &team,
        &format!("A team named '{name}' already exists."),
    )
    .await?;
    txn.commit().await?;
    Ok(Json(present_team(team)))
}

async fn delete_team(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let txn = state.store.conn().begin().await?;
    let team = load_team(&txn, &principal, path.get("id")?).await?;
    if !may(&principal, Permission::TeamDelete, team.space_id.as_deref()) {
        return Err(ApiError::forbidden(Permission::TeamDelete));
    }
    if !team.can_be_deleted {
        return Err(ApiError::bad_request(
            format!(
                "The team '{}' is built in and cannot be deleted.",
                team.name
            ),
            Vec::new(),
        ));
    }
    delete_team_and_bindings(&txn, &principal.organisation_id, &team.id).await?;
    txn.commit().await?;
    Ok(StatusCode::OK)
}

async fn delete_team_and_bindings(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    team_id: &str,
) -> ApiResult<()> {
    for binding in bindings(conn, organisation_id).await? {
        if binding.team_id == team_id {
            organisations::delete_document(conn, organisation_id, SCOPED_ROLE_KIND, &binding.id)
                .await?;
        }
    }
    organisations::delete_document(conn, organisation_id, TEAM_KIND, team_id).await?;
    Ok(())
}

/// Removes a deleted space's teams and every scoped user role in it.
pub async fn delete_space_teams(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    space_id: &str,
) -> ApiResult<()> {
    for binding in bindings(conn, organisation_id).await? {
        if binding.space_id.as_deref() == Some(space_id) {
            organisations::delete_document(conn, organisation_id, SCOPED_ROLE_KIND, &binding.id)
                .await?;
        }
    }
    for doc in organisations::list_documents(conn, organisation_id, &[TEAM_KIND]).await? {
        let team: Team = organisations::decode(&doc)?;
        if team.space_id.as_deref() == Some(space_id) {
            delete_team_and_bindings(conn, organisation_id, &team.id).await?;
        }
    }
    Ok(())
}

/// Makes `user_id` a member of `team` or not; saves the team only when that changes it.
pub async fn set_membership(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    mut team: Team,
    user_id: &str,
    member: bool,
) -> ApiResult<()> {
    if team.member_user_ids.iter().any(|m| m == user_id) == member {
        return Ok(());
    }
    if member {
        team.member_user_ids.push(user_id.to_owned());
    } else {
        team.member_user_ids.retain(|m| m != user_id);
    }
    organisations::replace_document(
        conn,
        organisation_id,
        TEAM_KIND,
        &team.id,
        &team.name,
        &team,
        "",
    )
    .await?;
    Ok(())
}

/// Takes a deleted user out of every team.
pub async fn remove_member(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    user_id: &str,
) -> ApiResult<()> {
    for doc in organisations::list_documents(conn, organisation_id, &[TEAM_KIND]).await? {
        let mut team: Team = organisations::decode(&doc)?;
        let before = team.member_user_ids.len();
        team.member_user_ids.retain(|m| m != user_id);
        if team.member_user_ids.len() != before {
            organisations::replace_document(
                conn,
                organisation_id,
                TEAM_KIND,
                &team.id,
                &team.name,
                &team,
                "",
            )
            .await?;
        }
    }
    Ok(())
}

// ---- user roles ----

fn present_role(mut role: UserRole) -> UserRole {
    role.links = links([("Self", format!("/api/userroles/{}", role.id))]);
    role
}

fn built_in(role: &cuttle_authz::BuiltInRole) -> UserRole {
    let names = |ps: &[Permission]| ps.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>();
    let descriptions = |ps: &[Permission]| {
        ps.iter()
            .map(|p| format!("{} ({})", p.description(), p.as_str()))
            .collect::<Vec<_>>()
    };
    UserRole {
        id: role.id.to_owned(),
        name: role.name.to_owned(),
        description: role.description.to_owned(),
        supported_restrictions: role
            .supported_restrictions()
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        space_permission_descriptions: descriptions(role.space_permissions),
        system_permission_descriptions: descriptions(role.system_permissions),
        granted_space_permissions: names(role.space_permissions),
        granted_system_permissions: names(role.system_permissions),
        can_be_deleted: false,
        links: Default::default(),
    }
}

/// Built-in roles, then the organisation's own, by name.
async fn roles(conn: &impl ConnectionTrait, organisation_id: &str) -> ApiResult<Vec<UserRole>> {
    let mut roles: Vec<UserRole> = cuttle_authz::built_in_roles()
        .iter()
        .map(built_in)
        .collect();
    for doc in organisations::list_documents(conn, organisation_id, &[ROLE_KIND]).await? {
        roles.push(organisations::decode(&doc)?);
    }
    roles.sort_by_key(|r| r.name.to_lowercase());
    Ok(roles.into_iter().map(present_role).collect())
}

async fn load_role(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    id: &str,
) -> ApiResult<UserRole> {
    if let Some(role) = cuttle_authz::built_in_role(id) {
        return Ok(present_role(built_in(role)));
    }
    let doc = organisations::get_document(conn, organisation_id, ROLE_KIND, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user role '{id}'")))?;
    Ok(present_role(organisations::decode(&doc)?))
}

async fn list_roles(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Collection<UserRole>>> {
    let roles = roles(state.store.conn(), &principal.organisation_id)
        .await?
        .into_iter()
        .filter(|r| matches_filters(&params, &r.id, &r.name))
        .collect();
    Ok(Json(page_of(roles, &params, "UserRole", "/api/userroles")?))
}

async fn all_roles(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<UserRole>>> {
    Ok(Json(
        roles(state.store.conn(), &principal.organisation_id).await?,
    ))
}

async fn get_role(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<UserRole>> {
    Ok(Json(
        load_role(
            state.store.conn(),
            &principal.organisation_id,
            path.get("id")?,
        )
        .await?,
    ))
}

/// Validates a custom role's permission lists: known names, at the level they are granted.
fn checked_role(id: String, body: UserRole) -> ApiResult<UserRole> {
    let name = crate::resources::require_name(&body.name, "user role")?;
    let parse = |field: &str, names: &[String], system: bool| -> ApiResult<Vec<Permission>> {
        let mut out = Vec::new();
        for name in names {
            let permission = Permission::parse(name).ok_or_else(|| {
                ApiError::invalid_field(field, format!("'{name}' is not a permission"))
            })?;
            let fits = if system {
                permission.is_system()
            } else {
                permission.is_space()
            };
            if !fits {
                return Err(ApiError::invalid_field(
                    field,
                    format!(
                        "'{name}' cannot be granted at the {} level",
                        if system { "system" } else { "space" }
                    ),
                ));
            }
            if !out.contains(&permission) {
                out.push(permission);
            }
        }
        Ok(out)
    };
    let space = parse(
        "GrantedSpacePermissions",
        &body.granted_space_permissions,
        false,
    )?;
    let system = parse(
        "GrantedSystemPermissions",
        &body.granted_system_permissions,
        true,
    )?;
    let mut restrictions: Vec<String> = cuttle_authz::Restriction::ALL
        .iter()
        .filter(|r| space.iter().any(|p| p.supports(**r)))
        .map(|r| r.as_str().to_owned())
        .collect();
    restrictions.dedup();
    Ok(UserRole {
        id,
        name,
        description: body.description,
        supported_restrictions: restrictions,
        space_permission_descriptions: space.iter().map(|p| p.description().to_owned()).collect(),
        system_permission_descriptions: system.iter().map(|p| p.description().to_owned()).collect(),
        granted_space_permissions: space.iter().map(|p| p.as_str().to_owned()).collect(),
        granted_system_permissions: system.iter().map(|p| p.as_str().to_owned()).collect(),
        can_be_deleted: true,
        links: Default::default(),
    })
}

async fn create_role(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<UserRole>,
) -> ApiResult<(StatusCode, Json<UserRole>)> {
    let txn = state.store.conn().begin().await?;
    let role = checked_role(cuttle_store::next_id(&txn, "UserRoles").await?, body)?;
    if cuttle_authz::built_in_roles()
        .iter()
        .any(|r| r.name.eq_ignore_ascii_case(&role.name))
    {
        return Err(ApiError::invalid_field(
            "Name",
            format!("'{}' is the name of a built-in role", role.name),
        ));
    }
    organisations::insert_document(
        &txn,
        &principal.organisation_id,
        ROLE_KIND,
        &role.id,
        &role.name,
        &role,
        &format!("A user role named '{}' already exists.", role.name),
    )
    .await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(present_role(role))))
}

async fn update_role(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
    JsonBody(body): JsonBody<UserRole>,
) -> ApiResult<Json<UserRole>> {
    let id = path.get("id")?;
    let txn = state.store.conn().begin().await?;
    let current = load_role(&txn, &principal.organisation_id, id).await?;
    if !current.can_be_deleted {
        return Err(ApiError::bad_request(
            format!(
                "The built-in role '{}' cannot be changed; create a custom role instead.",
                current.name
            ),
            Vec::new(),
        ));
    }
    let role = checked_role(current.id, body)?;
    organisations::replace_document(
        &txn,
        &principal.organisation_id,
        ROLE_KIND,
        &role.id,
        &role.name,
        &role,
        &format!("A user role named '{}' already exists.", role.name),
    )
    .await?;
    txn.commit().await?;
    Ok(Json(present_role(role)))
}

async fn delete_role(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let id = path.get("id")?;
    let txn = state.store.conn().begin().await?;
    let role = load_role(&txn, &principal.organisation_id, id).await?;
    if !role.can_be_deleted {
        return Err(ApiError::bad_request(
            format!("The built-in role '{}' cannot be deleted.", role.name),
            Vec::new(),
        ));
    }
    let in_use: Vec<String> = bindings(&txn, &principal.organisation_id)
        .await?
        .into_iter()
        .filter(|b| b.user_role_id == role.id)
        .map(|b| b.team_id)
        .collect();
    if !in_use.is_empty() {
        return Err(ApiError::bad_request(
            format!(
                "The role '{}' is still given to teams; remove it from them first.",
                role.name
            ),
            in_use,
        ));
    }
    organisations::delete_document(&txn, &principal.organisation_id, ROLE_KIND, &role.id).await?;
    txn.commit().await?;
    Ok(StatusCode::OK)
}

// ---- scoped user roles ----

fn present_binding(mut binding: ScopedUserRole) -> ScopedUserRole {
    binding.links = links([("Self", format!("/api/scopeduserroles/{}", binding.id))]);
    binding
}

async fn bindings(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
) -> ApiResult<Vec<ScopedUserRole>> {
    organisations::list_documents(conn, organisation_id, &[SCOPED_ROLE_KIND])
        .await?
        .iter()
        .map(|doc: &OrgDocument| organisations::decode(doc).map_err(ApiError::from))
        .collect()
}

/// The scoped user roles of the teams the principal may see.
async fn visible_bindings(
    conn: &impl ConnectionTrait,
    principal: &Principal,
) -> ApiResult<Vec<ScopedUserRole>> {
    let teams: HashMap<String, Team> = visible_teams(conn, principal)
        .await?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    Ok(bindings(conn, &principal.organisation_id)
        .await?
        .into_iter()
        .filter(|b| teams.contains_key(&b.team_id))
        .map(present_binding)
        .collect())
}

async fn list_bindings(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Collection<ScopedUserRole>>> {
    let items = visible_bindings(state.store.conn(), &principal)
        .await?
        .into_iter()
        .filter(|b| matches_filters(&params, &b.id, &b.id))
        .collect();
    Ok(Json(page_of(
        items,
        &params,
        "ScopedUserRole",
        "/api/scopeduserroles",
    )?))
}

async fn team_bindings(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
    params: Params,
) -> ApiResult<Json<Collection<ScopedUserRole>>> {
    let team = load_team(state.store.conn(), &principal, path.get("id")?).await?;
    let items = visible_bindings(state.store.conn(), &principal)
        .await?
        .into_iter()
        .filter(|b| b.team_id == team.id)
        .collect();
    let path = format!("/api/teams/{}/scopeduserroles", team.id);
    Ok(Json(page_of(items, &params, "ScopedUserRole", &path)?))
}

async fn get_binding(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<ScopedUserRole>> {
    let id = path.get("id")?;
    Ok(Json(
        load_binding(state.store.conn(), &principal, id).await?,
    ))
}

/// A scoped user role of a team the principal may see, or 404.
async fn load_binding(
    conn: &impl ConnectionTrait,
    principal: &Principal,
    id: &str,
) -> ApiResult<ScopedUserRole> {
    visible_bindings(conn, principal)
        .await?
        .into_iter()
        .find(|b| b.id == id)
        .ok_or_else(|| ApiError::not_found(format!("scoped user role '{id}'")))
}

/// Validates a binding: its team (which the principal may edit), its role, its space, and that
/// every restriction names something of that space.
async fn checked_binding(
    conn: &impl ConnectionTrait,
    principal: &Principal,
    id: String,
    body: ScopedUserRole,
) -> ApiResult<ScopedUserRole> {
    let team = load_team(conn, principal, &body.team_id)
        .await
        .map_err(|_| {
            ApiError::invalid_field(
                "TeamId",
                format!("'{}' is not a team of your organisation", body.team_id),
            )
        })?;
    if !may(principal, Permission::TeamEdit, team.space_id.as_deref()) {
        return Err(ApiError::forbidden(Permission::TeamEdit));
    }
    if !team.can_change_roles {
        return Err(ApiError::invalid_field(
            "TeamId",
            format!("the roles of '{}' cannot be changed", team.name),
        ));
    }
    let role = load_role(conn, &principal.organisation_id, &body.user_role_id)
        .await
        .map_err(|_| {
            ApiError::invalid_field(
                "UserRoleId",
                format!("'{}' is not a user role", body.user_role_id),
            )
        })?;
    let requested = body.space_id.filter(|s| !s.is_empty());
    let space = match (&team.space_id, requested) {
        (Some(team_space), Some(asked)) if *team_space != asked => {
            return Err(ApiError::invalid_field(
                "SpaceId",
                format!(
                    "the team '{}' belongs to {team_space}; its roles apply there",
                    team.name
                ),
            ));
        }
        (Some(team_space), _) => Some(team_space.clone()),
        (None, Some(asked)) => Some(
            check_space(conn, principal, "SpaceId", &asked)
                .await?
                .to_string(),
        ),
        (None, None) => None,
    };
    if space.is_none() && !role.granted_space_permissions.is_empty() {
        return Err(ApiError::invalid_field(
            "SpaceId",
            format!(
                "the role '{}' grants space permissions, so it needs a space",
                role.name
            ),
        ));
    }
    if space.is_some() && role.granted_space_permissions.is_empty() {
        return Err(ApiError::invalid_field(
            "SpaceId",
            format!(
                "the role '{}' grants only system permissions; give it without a space",
                role.name
            ),
        ));
    }
    let restricted = !body.environment_ids.is_empty()
        || !body.project_ids.is_empty()
        || !body.project_group_ids.is_empty()
        || !body.tenant_ids.is_empty();
    if let Some(space) = &space {
        let space_id = SpaceId::parse(space).map_err(ApiError::internal)?;
        for (field, kind, ids) in [
            ("EnvironmentIds", "Environment", &body.environment_ids),
            ("ProjectIds", "Project", &body.project_ids),
            ("ProjectGroupIds", "ProjectGroup", &body.project_group_ids),
            ("TenantIds", "Tenant", &body.tenant_ids),
        ] {
            for item in ids {
                if documents::get(conn, &space_id, kind, item).await?.is_none() {
                    return Err(ApiError::invalid_field(
                        field,
                        format!("'{item}' is not in {space}"),
                    ));
                }
            }
        }
    } else if restricted {
        return Err(ApiError::invalid_field(
            "EnvironmentIds",
            "restrictions apply to space roles only",
        ));
    }
    Ok(ScopedUserRole {
        id,
        team_id: team.id,
        user_role_id: role.id,
        space_id: space,
        environment_ids: dedup(body.environment_ids),
        project_ids: dedup(body.project_ids),
        project_group_ids: dedup(body.project_group_ids),
        tenant_ids: dedup(body.tenant_ids),
        links: Default::default(),
    })
}

async fn create_binding(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<ScopedUserRole>,
) -> ApiResult<(StatusCode, Json<ScopedUserRole>)> {
    let txn = state.store.conn().begin().await?;
    let id = cuttle_store::next_id(&txn, "ScopedUserRoles").await?;
    let binding = checked_binding(&txn, &principal, id, body).await?;
    organisations::insert_document(
        &txn,
        &principal.organisation_id,
        SCOPED_ROLE_KIND,
        &binding.id,
        &binding.id,
        &binding,
        "",
    )
    .await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(present_binding(binding))))
}

async fn update_binding(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
    JsonBody(body): JsonBody<ScopedUserRole>,
) -> ApiResult<Json<ScopedUserRole>> {
    let id = path.get("id")?;
    let txn = state.store.conn().begin().await?;
    let current = load_binding(&txn, &principal, id).await?;
    // The team it belonged to must be editable too: moving a role out of a team changes both.
    let old_team = load_team(&txn, &principal, &current.team_id).await?;
    if !may(
        &principal,
        Permission::TeamEdit,
        old_team.space_id.as_deref(),
    ) {
        return Err(ApiError::forbidden(Permission::TeamEdit));
    }
    let binding = checked_binding(&txn, &principal, current.id, body).await?;
    organisations::replace_document(
        &txn,
        &principal.organisation_id,
        SCOPED_ROLE_KIND,
        &binding.id,
        &binding.id,
        &binding,
        "",
    )
    .await?;
    txn.commit().await?;
    Ok(Json(present_binding(binding)))
}

async fn delete_binding(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let id = path.get("id")?;
    let txn = state.store.conn().begin().await?;
    let binding = load_binding(&txn, &principal, id).await?;
    let team = load_team(&txn, &principal, &binding.team_id).await?;
    if !may(&principal, Permission::TeamEdit, team.space_id.as_deref()) {
        return Err(ApiError::forbidden(Permission::TeamEdit));
    }
    if !team.can_change_roles {
        return Err(ApiError::bad_request(
            format!("The roles of '{}' cannot be changed.", team.name),
            Vec::new(),
        ));
    }
    organisations::delete_document(
        &txn,
        &principal.organisation_id,
        SCOPED_ROLE_KIND,
        &binding.id,
    )
    .await?;
    txn.commit().await?;
    Ok(StatusCode::OK)
}

// ---- permissions ----

async fn all_permissions(_: Principal) -> Json<BTreeMap<String, PermissionDescription>> {
    Json(
        Permission::ALL
            .iter()
            .map(|p| {
                (
                    p.as_str().to_owned(),
                    PermissionDescription {
                        description: p.description().to_owned(),
                        supported_restrictions: p
                            .restrictions()
                            .iter()
                            .map(|r| r.as_str().to_owned())
                            .collect(),
                        can_apply_at_system_level: p.is_system(),
                        can_apply_at_space_level: p.is_space(),
                    },
                )
            })
            .collect(),
    )
}

/// The teams a user belongs to (`teams-everyone` included).
pub async fn teams_of(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    user_id: &str,
) -> ApiResult<Vec<Team>> {
    let mut out = Vec::new();
    for doc in organisations::list_documents(conn, organisation_id, &[TEAM_KIND]).await? {
        let team: Team = organisations::decode(&doc)?;
        if team.id == EVERYONE_TEAM || team.member_user_ids.iter().any(|m| m == user_id) {
            out.push(team);
        }
    }
    Ok(out)
}
