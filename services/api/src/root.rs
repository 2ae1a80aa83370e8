//! The root document (`/api`), capabilities and the current user.

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::Principal;
use crate::links::links;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use cuttle_wire::resources::User;
use serde_json::{Value, json};

/// The Octopus version Cuttle's API corresponds to. Clients gate features on it (the TypeScript
/// client refuses servers older than 2022.3.5512); Cuttle's own version is `CuttleVersion`.
pub const OCTOPUS_COMPATIBLE_VERSION: &str = "2025.3.12000";

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api", get(root))
        .route("/api/", get(root))
        .route("/api/capabilities", get(capabilities))
        .route("/api/users/me", get(me))
}

async fn root(
    State(state): State<AppState>,
    principal: Option<Principal>,
) -> ApiResult<Json<Value>> {
    let default_space = match &principal {
        Some(principal) => crate::spaces::default_space(&state, principal).await?,
        None => None,
    };
    let mut links = json!({
        "Self": "/api",
        "CurrentUser": "/api/users/me",
        "SpaceHome": "/api/{spaceId}",
        "Spaces": "/api/spaces{/id}{?skip,ids,take,partialName}",
        "Tasks": "/api/tasks{/id}{?skip,active,environment,tenant,runbook,project,name,node,running,states,hasPendingInterruptions,hasWarningsOrErrors,take,ids,partialName,spaces,includeSystem,description,fromCompletedDate,toCompletedDate,fromQueueDate,toQueueDate,fromStartDate,toStartDate}",
        "Capabilities": "/api/capabilities",
        "Web": "/app",
        "Health": "/health/ready",
    });
    // Space-scoped links of the root document point at the default space, as Octopus's do.
    if let (Some(space), Some(map)) = (default_space, links.as_object_mut())
        && let Some(space_links) = crate::spaces::space_home_links(space.id.as_str()).as_object()
    {
        for (key, value) in space_links {
            if key != "Self" {
                map.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(Json(json!({
        "Application": "Octopus Deploy",
        "Version": OCTOPUS_COMPATIBLE_VERSION,
        "ApiVersion": "3.0.0",
        "CuttleVersion": env!("CARGO_PKG_VERSION"),
        "InstallationId": state.installation_id,
        "HasLongTermSupport": false,
        "Links": links,
    })))
}

/// Capabilities Cuttle implements, named as Octopus names its request types.
pub const CAPABILITIES: &[&str] = &[
    "GetAllSpacesRequest",
    "CreateReleaseCommandV1",
    "CreateDeploymentUntenantedCommandV1",
];

async fn capabilities(_: Principal) -> Json<Value> {
    Json(json!({ "Capabilities": CAPABILITIES }))
}

/// The wire form of a stored user.
pub fn present_user(user: &cuttle_store::users::User) -> User {
    User {
        id: user.id.clone(),
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        email_address: user.email.clone(),
        is_active: user.is_active,
        is_service: user.is_service,
        is_requestor: false,
        can_password_be_edited: !user.is_service,
        identities: Vec::new(),
        password: None,
        links: links([
            ("Self", format!("/api/users/{}", user.id)),
            ("Spaces", format!("/api/users/{}/spaces", user.id)),
            (
                "ApiKeys",
                format!("/api/users/{}/apikeys{{/id}}{{?skip,take}}", user.id),
            ),
        ]),
    }
}

async fn me(principal: Principal) -> Json<User> {
    Json(present_user(&principal.user))
}
