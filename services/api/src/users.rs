//! Users and service accounts of the caller's organisation (`/api/users`), their API keys
//! (`/api/users/{id}/apikeys`, shown once, stored hashed, optionally expiring, revocable), their
//! effective permissions and the spaces they can see.
//!
//! Anyone may read and manage themselves and their own keys; someone else's account takes
//! `UserView` to read and `UserEdit` to change. A user of another organisation is a 404.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathParams, Principal, hash_api_key};
use crate::links::links;
use crate::root::present_user;
use crate::teams::page_of;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use cuttle_authz::Permission;
use cuttle_store::TransactionTrait;
use cuttle_store::users::{self, User};
use cuttle_wire::Collection;
use cuttle_wire::resources::{Space, User as UserResource};
use cuttle_wire::security::{
    ApiKey, PermissionScope, TeamReference, UserCreate, UserPermissionSet,
};

/// Routes of this module (`/api/users/me` is in `root.rs`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/users", get(list).post(create))
        .route("/api/users/{id}", get(get_one).put(update).delete(delete))
        .route("/api/users/{id}/apikeys", get(list_keys).post(create_key))
        .route(
            "/api/users/{id}/apikeys/{key_id}",
            get(get_key).delete(revoke_key),
        )
        .route("/api/users/{id}/permissions", get(permissions))
        .route("/api/users/{id}/spaces", get(spaces))
}

/// A user of the principal's organisation, or 404; someone else needs `permission`.
async fn load(
    state: &AppState,
    principal: &Principal,
    id: &str,
    permission: Permission,
) -> ApiResult<User> {
    let id = if id.eq_ignore_ascii_case("me") {
        principal.user.id.as_str()
    } else {
        id
    };
    let user = users::get_user(state.store.conn(), id)
        .await?
        .filter(|u| u.organisation_id.as_deref() == Some(principal.organisation_id.as_str()))
        .ok_or_else(|| ApiError::not_found(format!("user '{id}'")))?;
    if user.id != principal.user.id && !principal.grants.allows_system(permission) {
        return Err(ApiError::forbidden(permission));
    }
    Ok(user)
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Collection<UserResource>>> {
    let ids = params.list("ids");
    let filter = params
        .get("filter")
        .or(params.get("partialName"))
        .map(str::to_lowercase);
    let items = users::list_users(state.store.conn(), &principal.organisation_id)
        .await?
        .iter()
        .filter(|u| ids.is_empty() || ids.contains(&u.id))
        .filter(|u| {
            filter.as_deref().is_none_or(|f| {
                u.username.to_lowercase().contains(f) || u.display_name.to_lowercase().contains(f)
            })
        })
        .map(present_user)
        .collect();
    Ok(Json(page_of(items, &params, "User", "/api/users")?))
}

/// Usernames: 1 to 64 characters, no whitespace or control characters.
pub fn check_username(username: &str) -> ApiResult<String> {
    let username = username.trim();
    if username.is_empty() {
        return Err(ApiError::invalid_field(
            "Username",
            "a username is required",
        ));
    }
    if username.chars().count() > 64
        || username
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::invalid_field(
            "Username",
            "a username has at most 64 characters and no spaces",
        ));
    }
    Ok(username.to_owned())
}

/// Checks an optional email address's shape.
pub fn check_email(email: Option<String>) -> ApiResult<Option<String>> {
    match email.map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()) {
        None => Ok(None),
        Some(email) => {
            let valid = email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace)
            });
            if valid {
                Ok(Some(email))
            } else {
                Err(ApiError::invalid_field(
                    "EmailAddress",
                    format!("'{email}' is not an email address"),
                ))
            }
        }
    }
}

/// The argon2id hash of a new password, checked; service accounts may not have one.
async fn password_hash(password: Option<String>, is_service: bool) -> ApiResult<Option<String>> {
    match password.filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(_) if is_service => Err(ApiError::invalid_field(
            "Password",
            "service accounts sign in with API keys only",
        )),
        Some(password) => {
            crate::sessions::check_password(&password)?;
            Ok(Some(crate::sessions::hash_password(password).await?))
        }
    }
}

async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<UserCreate>,
) -> ApiResult<(StatusCode, Json<UserResource>)> {
    let username = check_username(&body.username)?;
    let password_hash = password_hash(body.password, body.is_service).await?;
    let display_name = match body.display_name.trim() {
        "" => username.clone(),
        name => name.to_owned(),
    };
    let email = check_email(body.email_address)?;
    let txn = state.store.conn().begin().await?;
    let quota = state.limits.max_users;
    if quota > 0
        && users::list_users(&txn, &principal.organisation_id)
            .await?
            .len()
            >= quota as usize
    {
        return Err(ApiError::quota(format!(
            "Your organisation has reached its limit of {quota} users."
        )));
    }
    if users::find_user_by_name(&txn, &username).await?.is_some() {
        return Err(ApiError::invalid_field(
            "Username",
            format!("the username '{username}' is already in use"),
        ));
    }
    let user = users::insert_user(
        &txn,
        User {
            id: cuttle_store::next_id(&txn, "Users").await?,
            username,
            display_name,
            email,
            is_service: body.is_service,
            is_active: body.is_active.unwrap_or(true),
            created_at: Utc::now(),
            organisation_id: Some(principal.organisation_id.clone()),
            password_hash,
            external_id: None,
            email_verified: true,
        },
    )
    .await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(present_user(&user))))
}

async fn get_one(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<UserResource>> {
    let user = load(&state, &principal, path.get("id")?, Permission::UserView).await?;
    Ok(Json(present_user(&user)))
}

async fn update(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
    JsonBody(body): JsonBody<UserResource>,
) -> ApiResult<Json<UserResource>> {
    let current = load(&state, &principal, path.get("id")?, Permission::UserEdit).await?;
    let may_administer = principal.grants.allows_system(Permission::UserEdit);
    let username = check_username(&body.username)?;
    if (username != current.username
        || body.is_active != current.is_active
        || body.is_service != current.is_service)
        && !may_administer
    {
        return Err(ApiError::forbidden(Permission::UserEdit));
    }
    if current.id == principal.user.id && !body.is_active {
        return Err(ApiError::invalid_field(
            "IsActive",
            "you cannot deactivate yourself",
        ));
    }
    let new_password = password_hash(body.password, current.is_service || body.is_service).await?;
    let deactivated = current.is_active && !body.is_active;
    let user = User {
        username,
        display_name: match body.display_name.trim() {
            "" => current.display_name.clone(),
            name => name.to_owned(),
        },
        email: check_email(body.email_address)?,
        is_active: body.is_active,
        is_service: body.is_service,
        ..current
    };
    let txn = state.store.conn().begin().await?;
    let user = users::update_user(&txn, user).await?;
    if let Some(hash) = &new_password {
        users::set_password_hash(&txn, &user.id, Some(hash)).await?;
    }
    // A new password or a deactivation ends every session the user has.
    if new_password.is_some() || deactivated {
        cuttle_store::sessions::revoke_all(&txn, &user.id).await?;
    }
    txn.commit().await?;
    Ok(Json(present_user(&user)))
}

async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let user = load(&state, &principal, path.get("id")?, Permission::UserEdit).await?;
    if user.id == principal.user.id {
        return Err(ApiError::bad_request(
            "You cannot delete yourself.",
            Vec::new(),
        ));
    }
    let txn = state.store.conn().begin().await?;
    crate::teams::remove_member(&txn, &principal.organisation_id, &user.id).await?;
    cuttle_store::sessions::revoke_all(&txn, &user.id).await?;
    users::delete_user(&txn, &user.id).await?;
    txn.commit().await?;
    Ok(StatusCode::OK)
}

fn present_key(key: &users::ApiKey) -> ApiKey {
    ApiKey {
        id: key.id.clone(),
        purpose: key.purpose.clone(),
        user_id: key.user_id.clone(),
        api_key: None,
        created: Some(key.created_at),
        expires: key.expires_at,
        links: links([(
            "Self",
            format!("/api/users/{}/apikeys/{}", key.user_id, key.id),
        )]),
    }
}

async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
    params: Params,
) -> ApiResult<Json<Collection<ApiKey>>> {
    let user = load(&state, &principal, path.get("id")?, Permission::UserEdit).await?;
    let keys = users::list_api_keys(state.store.conn(), &user.id)
        .await?
        .iter()
        .map(present_key)
        .collect();
    let path = format!("/api/users/{}/apikeys", user.id);
    Ok(Json(page_of(keys, &params, "ApiKey", &path)?))
}

async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
    JsonBody(body): JsonBody<ApiKey>,
) -> ApiResult<(StatusCode, Json<ApiKey>)> {
    let user = load(&state, &principal, path.get("id")?, Permission::UserEdit).await?;
    let purpose = body.purpose.trim();
    if purpose.is_empty() {
        return Err(ApiError::invalid_field(
            "Purpose",
            "say what the key is for",
        ));
    }
    if body.expires.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::invalid_field(
            "Expires",
            "the expiry must be in the future",
        ));
    }
    let key = crate::bootstrap::generate_api_key();
    let txn = state.store.conn().begin().await?;
    let stored =
        users::insert_api_key_expiring(&txn, &user.id, purpose, &hash_api_key(&key), body.expires)
            .await?;
    txn.commit().await?;
    let mut shown = present_key(&stored);
    // The only time the key itself is returned.
    shown.api_key = Some(key);
    Ok((StatusCode::CREATED, Json(shown)))
}

async fn find_key(
    state: &AppState,
    principal: &Principal,
    path: &PathParams,
) -> ApiResult<users::ApiKey> {
    let user = load(state, principal, path.get("id")?, Permission::UserEdit).await?;
    let key_id = path.get("key_id")?;
    users::list_api_keys(state.store.conn(), &user.id)
        .await?
        .into_iter()
        .find(|k| k.id == key_id)
        .ok_or_else(|| ApiError::not_found(format!("API key '{key_id}'")))
}

async fn get_key(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<ApiKey>> {
    Ok(Json(present_key(
        &find_key(&state, &principal, &path).await?,
    )))
}

async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let key = find_key(&state, &principal, &path).await?;
    let txn = state.store.conn().begin().await?;
    users::delete_api_key(&txn, &key.user_id, &key.id).await?;
    txn.commit().await?;
    Ok(StatusCode::OK)
}

async fn permissions(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<UserPermissionSet>> {
    let user = load(&state, &principal, path.get("id")?, Permission::UserView).await?;
    let conn = state.store.conn();
    let grants = crate::authz::grants_for(conn, &principal.organisation_id, &user.id).await?;
    let mut space_permissions = std::collections::BTreeMap::new();
    let spaces: Vec<Option<String>> = if grants.is_administrator() {
        cuttle_store::organisations::spaces_of(conn, &principal.organisation_id)
            .await?
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None]
    };
    for space in &spaces {
        for (permission, scopes) in grants.space_permissions(space.as_deref()) {
            let entry: &mut Vec<PermissionScope> = space_permissions
                .entry(permission.as_str().to_owned())
                .or_default();
            entry.extend(scopes.into_iter().map(|scope| PermissionScope {
                space_id: scope.space.map(str::to_owned),
                restricted_to_environment_ids: scope.environments.to_vec(),
                restricted_to_project_ids: scope.projects.to_vec(),
                restricted_to_project_group_ids: scope.project_groups.to_vec(),
                restricted_to_tenant_ids: scope.tenants.to_vec(),
            }));
        }
    }
    let teams = crate::teams::teams_of(conn, &principal.organisation_id, &user.id)
        .await?
        .into_iter()
        .map(|t| TeamReference {
            id: t.id,
            name: t.name,
            space_id: t.space_id,
        })
        .collect();
    Ok(Json(UserPermissionSet {
        id: user.id.clone(),
        space_permissions,
        system_permissions: grants
            .system_permissions()
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        teams,
        is_permissions_complete: true,
        is_teams_complete: true,
        links: links([("Self", format!("/api/users/{}/permissions", user.id))]),
    }))
}

async fn spaces(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<Vec<Space>>> {
    let user = load(&state, &principal, path.get("id")?, Permission::UserView).await?;
    let conn = state.store.conn();
    let grants = crate::authz::grants_for(conn, &principal.organisation_id, &user.id).await?;
    let docs = crate::spaces::organisation_spaces(
        conn,
        &principal.organisation_id,
        &cuttle_store::documents::ListQuery::everything(),
    )
    .await?;
    let mut out = Vec::new();
    for doc in docs.iter().filter(|d| grants.can_see_space(&d.id)) {
        out.push(crate::spaces::present(doc)?);
    }
    Ok(Json(out))
}
