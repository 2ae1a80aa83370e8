//! Who may do what.
//!
//! - A principal's grants come from their organisation's teams (`grants_for`): the teams they
//!   are a member of, plus `teams-everyone`, each with its scoped user roles. Members of
//!   `teams-administrators` may do everything in their organisation.
//! - Every route has a rule in [`rule_for`], checked by [`authorize`] before any handler runs. A
//!   route without a rule answers 500 for everybody (fail closed), so a new route cannot be
//!   served until someone decides who may call it; the isolation test walks [`ROUTES`].
//! - Handlers that know the project, project group and environment a request concerns check
//!   the restricted form with [`require`] (a team scoped to `Test` may deploy there and nowhere
//!   else).
//! - A space of another organisation, or one the caller holds nothing in, is a 404, never a 403
//!   (`extract::resolve_space`).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Principal, SpaceScope};
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cuttle_authz::{Grant, Grants, Permission, Target};
use cuttle_store::ConnectionTrait;
use cuttle_store::organisations;
use cuttle_wire::security::{ScopedUserRole, Team, UserRole};
use std::collections::{BTreeSet, HashMap};

/// Document kind of teams.
pub const TEAM_KIND: &str = "Team";
/// Document kind of custom user roles (the built-in ones live in `cuttle_authz`).
pub const ROLE_KIND: &str = "UserRole";
/// Document kind of scoped user roles.
pub const SCOPED_ROLE_KIND: &str = "ScopedUserRole";
/// Every organisation's team of all its users.
pub const EVERYONE_TEAM: &str = "teams-everyone";
/// Every organisation's administrators: everything, everywhere in the organisation.
pub const ADMINISTRATORS_TEAM: &str = "teams-administrators";

/// What a route demands of its caller before the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, signed in or not (the root document).
    Public,
    /// Any signed-in user; the handler shows only what is theirs or checks the resource it loads.
    SignedIn,
    /// A system permission of the caller's organisation.
    System(Permission),
    /// A permission somewhere in the organisation (a team in any space, or the system); the
    /// handler checks the resource it loads.
    Anywhere(Permission),
    /// A permission in the route's space (from the path, else the organisation's default
    /// space), restrictions aside: the handler applies them when it knows the resource.
    Space(Permission),
    /// Task routes: in the route's space when it names one; across spaces (`/api/tasks`) the
    /// permission somewhere, with the handler limiting results to spaces where it is held.
    Tasks(Permission),
}

use Permission as P;
use Rule::*;

/// Every route Cuttle serves (relative to `/api`, to `/api/{space_id}` or to
/// `/api/spaces/{space_id}` for space routes) with its methods' rules. [`rule_for`] reads it;
/// the isolation test calls every entry as principals of two organisations.
pub const ROUTES: &[(&str, &[(Method, Rule)])] = &[
    ("", &[(Method::GET, Public)]),
    ("/", &[(Method::GET, Public)]),
    // The portal (`/app`, outside `/api`): its pages authenticate by the session cookie.
    ("/app", &[(Method::GET, Public)]),
    ("/app/", &[(Method::GET, Public)]),
    (
        "/app/signup",
        &[(Method::GET, Public), (Method::POST, Public)],
    ),
    (
        "/app/login",
        &[(Method::GET, Public), (Method::POST, Public)],
    ),
    ("/app/logout", &[(Method::POST, Public)]),
    ("/app/verify", &[(Method::GET, Public)]),
    (
        "/app/join",
        &[(Method::GET, Public), (Method::POST, Public)],
    ),
    ("/app/sso", &[(Method::GET, Public)]),
    ("/app/sso/callback", &[(Method::GET, Public)]),
    (
        "/sso",
        &[
            (Method::GET, System(P::ConfigureServer)),
            (Method::PUT, System(P::ConfigureServer)),
        ],
    ),
    ("/capabilities", &[(Method::GET, SignedIn)]),
    (
        "/certificates/certificate-global",
        &[(Method::GET, SignedIn)],
    ),
    ("/permissions/all", &[(Method::GET, SignedIn)]),
    // The audit log: the handlers show the events of the spaces (and the system) where the
    // caller holds EventView.
    ("/events", &[(Method::GET, Anywhere(P::EventView))]),
    ("/events/categories", &[(Method::GET, SignedIn)]),
    ("/events/{id}", &[(Method::GET, Anywhere(P::EventView))]),
    // Users: a user may always read and manage themselves and their own keys; the handlers ask
    // for UserView / UserEdit when the user is someone else.
    (
        "/users",
        &[
            (Method::GET, System(P::UserView)),
            (Method::POST, System(P::UserEdit)),
        ],
    ),
    ("/users/me", &[(Method::GET, SignedIn)]),
    ("/users/me/verification", &[(Method::POST, SignedIn)]),
    (
        "/invitations",
        &[
            (Method::GET, System(P::UserInvite)),
            (Method::POST, System(P::UserInvite)),
        ],
    ),
    (
        "/invitations/{id}",
        &[(Method::DELETE, System(P::UserInvite))],
    ),
    // Sign-in: the handlers authenticate by password or by the session's own cookies.
    ("/users/login", &[(Method::POST, Public)]),
    ("/users/logout", &[(Method::POST, Public)]),
    ("/users/refresh", &[(Method::POST, Public)]),
    (
        "/users/{id}",
        &[
            (Method::GET, SignedIn),
            (Method::PUT, SignedIn),
            (Method::DELETE, System(P::UserEdit)),
        ],
    ),
    (
        "/users/{id}/apikeys",
        &[(Method::GET, SignedIn), (Method::POST, SignedIn)],
    ),
    (
        "/users/{id}/apikeys/{key_id}",
        &[(Method::GET, SignedIn), (Method::DELETE, SignedIn)],
    ),
    ("/users/{id}/permissions", &[(Method::GET, SignedIn)]),
    ("/users/{id}/spaces", &[(Method::GET, SignedIn)]),
    (
        "/teams",
        &[
            (Method::GET, Anywhere(P::TeamView)),
            (Method::POST, Anywhere(P::TeamCreate)),
        ],
    ),
    (
        "/teams/{id}",
        &[
            (Method::GET, Anywhere(P::TeamView)),
            (Method::PUT, Anywhere(P::TeamEdit)),
            (Method::DELETE, Anywhere(P::TeamDelete)),
        ],
    ),
    (
        "/teams/{id}/scopeduserroles",
        &[(Method::GET, Anywhere(P::TeamView))],
    ),
    (
        "/userroles",
        &[
            (Method::GET, SignedIn),
            (Method::POST, System(P::UserRoleEdit)),
        ],
    ),
    ("/userroles/all", &[(Method::GET, SignedIn)]),
    (
        "/userroles/{id}",
        &[
            (Method::GET, SignedIn),
            (Method::PUT, System(P::UserRoleEdit)),
            (Method::DELETE, System(P::UserRoleEdit)),
        ],
    ),
    (
        "/scopeduserroles",
        &[
            (Method::GET, Anywhere(P::TeamView)),
            (Method::POST, Anywhere(P::TeamEdit)),
        ],
    ),
    (
        "/scopeduserroles/{id}",
        &[
            (Method::GET, Anywhere(P::TeamView)),
            (Method::PUT, Anywhere(P::TeamEdit)),
            (Method::DELETE, Anywhere(P::TeamEdit)),
        ],
    ),
    // Spaces: the list shows the spaces the caller can see; one space is a 404 unless they can.
    (
        "/spaces",
        &[
            (Method::GET, SignedIn),
            (Method::POST, System(P::SpaceCreate)),
        ],
    ),
    ("/spaces/all", &[(Method::GET, SignedIn)]),
    (
        "/spaces/{id}",
        &[
            (Method::GET, SignedIn),
            (Method::PUT, SignedIn),
            (Method::DELETE, System(P::SpaceDelete)),
        ],
    ),
    // The space home resolves its space among the caller's (an unknown one goes to the
    // fallback, so `/api/<feature not built>` still answers 501).
    ("/{space_id}", &[(Method::GET, SignedIn)]),
    // Tasks.
    (
        "/tasks",
        &[
            (Method::GET, Tasks(P::TaskView)),
            (Method::POST, Tasks(P::TaskCreate)),
        ],
    ),
    ("/tasks/{id}", &[(Method::GET, Tasks(P::TaskView))]),
    ("/tasks/{id}/details", &[(Method::GET, Tasks(P::TaskView))]),
    ("/tasks/{id}/raw", &[(Method::GET, Tasks(P::TaskView))]),
    (
        "/tasks/{id}/cancel",
        &[(Method::POST, Tasks(P::TaskCancel))],
    ),
    // Space resources.
    (
        "/projectgroups",
        &[
            (Method::GET, Space(P::ProjectGroupView)),
            (Method::POST, Space(P::ProjectGroupCreate)),
        ],
    ),
    (
        "/projectgroups/all",
        &[(Method::GET, Space(P::ProjectGroupView))],
    ),
    (
        "/projectgroups/{id}",
        &[
            (Method::GET, Space(P::ProjectGroupView)),
            (Method::PUT, Space(P::ProjectGroupEdit)),
            (Method::DELETE, Space(P::ProjectGroupDelete)),
        ],
    ),
    (
        "/lifecycles",
        &[
            (Method::GET, Space(P::LifecycleView)),
            (Method::POST, Space(P::LifecycleCreate)),
        ],
    ),
    ("/lifecycles/all", &[(Method::GET, Space(P::LifecycleView))]),
    (
        "/lifecycles/{id}",
        &[
            (Method::GET, Space(P::LifecycleView)),
            (Method::PUT, Space(P::LifecycleEdit)),
            (Method::DELETE, Space(P::LifecycleDelete)),
        ],
    ),
    (
        "/environments",
        &[
            (Method::GET, Space(P::EnvironmentView)),
            (Method::POST, Space(P::EnvironmentCreate)),
        ],
    ),
    (
        "/environments/all",
        &[(Method::GET, Space(P::EnvironmentView))],
    ),
    (
        "/environments/sortorder",
        &[(Method::PUT, Space(P::EnvironmentEdit))],
    ),
    (
        "/environments/{id}",
        &[
            (Method::GET, Space(P::EnvironmentView)),
            (Method::PUT, Space(P::EnvironmentEdit)),
            (Method::DELETE, Space(P::EnvironmentDelete)),
        ],
    ),
    (
        "/environments/{id}/machines",
        &[(Method::GET, Space(P::MachineView))],
    ),
    (
        "/feeds",
        &[
            (Method::GET, Space(P::FeedView)),
            (Method::POST, Space(P::FeedEdit)),
        ],
    ),
    ("/feeds/all", &[(Method::GET, Space(P::FeedView))]),
    (
        "/feeds/{id}",
        &[
            (Method::GET, Space(P::FeedView)),
            (Method::PUT, Space(P::FeedEdit)),
            (Method::DELETE, Space(P::FeedEdit)),
        ],
    ),
    (
        "/feeds/{id}/packages/versions",
        &[(Method::GET, Space(P::FeedView))],
    ),
    (
        "/projects",
        &[
            (Method::GET, Space(P::ProjectView)),
            (Method::POST, Space(P::ProjectCreate)),
        ],
    ),
    ("/projects/all", &[(Method::GET, Space(P::ProjectView))]),
    (
        "/projects/{id}",
        &[
            (Method::GET, Space(P::ProjectView)),
            (Method::PUT, Space(P::ProjectEdit)),
            (Method::DELETE, Space(P::ProjectDelete)),
        ],
    ),
    (
        "/projects/{id}/channels",
        &[(Method::GET, Space(P::ProjectView))],
    ),
    (
        "/projects/{id}/deploymentprocesses",
        &[
            (Method::GET, Space(P::ProcessView)),
            (Method::PUT, Space(P::ProcessEdit)),
        ],
    ),
    (
        "/projects/{id}/deploymentprocesses/template",
        &[(Method::GET, Space(P::ProcessView))],
    ),
    (
        "/projects/{id}/variables",
        &[
            (Method::GET, Space(P::VariableView)),
            (Method::PUT, Space(P::VariableEdit)),
        ],
    ),
    (
        "/projects/{id}/releases",
        &[(Method::GET, Space(P::ReleaseView))],
    ),
    (
        "/projects/{id}/releases/{version}",
        &[(Method::GET, Space(P::ReleaseView))],
    ),
    (
        "/deploymentprocesses/{id}",
        &[(Method::GET, Space(P::ProcessView))],
    ),
    (
        "/variables/{id}",
        &[
            (Method::GET, Space(P::VariableView)),
            (Method::PUT, Space(P::VariableEdit)),
        ],
    ),
    (
        "/variables/preview",
        &[(Method::GET, Space(P::VariableView))],
    ),
    (
        "/channels",
        &[
            (Method::GET, Space(P::ProjectView)),
            (Method::POST, Space(P::ProjectEdit)),
        ],
    ),
    ("/channels/all", &[(Method::GET, Space(P::ProjectView))]),
    (
        "/channels/{id}",
        &[
            (Method::GET, Space(P::ProjectView)),
            (Method::PUT, Space(P::ProjectEdit)),
            (Method::DELETE, Space(P::ProjectEdit)),
        ],
    ),
    (
        "/libraryvariablesets",
        &[
            (Method::GET, Space(P::LibraryVariableSetView)),
            (Method::POST, Space(P::LibraryVariableSetCreate)),
        ],
    ),
    (
        "/libraryvariablesets/all",
        &[(Method::GET, Space(P::LibraryVariableSetView))],
    ),
    (
        "/libraryvariablesets/{id}",
        &[
            (Method::GET, Space(P::LibraryVariableSetView)),
            (Method::PUT, Space(P::LibraryVariableSetEdit)),
            (Method::DELETE, Space(P::LibraryVariableSetDelete)),
        ],
    ),
    ("/artifacts", &[(Method::GET, Space(P::ArtifactView))]),
    (
        "/artifacts/{id}",
        &[
            (Method::GET, Space(P::ArtifactView)),
            (Method::DELETE, Space(P::ArtifactDelete)),
        ],
    ),
    (
        "/artifacts/{id}/content",
        &[(Method::GET, Space(P::ArtifactView))],
    ),
    (
        "/releases",
        &[
            (Method::GET, Space(P::ReleaseView)),
            (Method::POST, Space(P::ReleaseCreate)),
        ],
    ),
    (
        "/releases/create/v1",
        &[(Method::POST, Space(P::ReleaseCreate))],
    ),
    (
        "/releases/{id}",
        &[
            (Method::GET, Space(P::ReleaseView)),
            (Method::PUT, Space(P::ReleaseEdit)),
            (Method::DELETE, Space(P::ReleaseDelete)),
        ],
    ),
    (
        "/releases/{id}/deployments",
        &[(Method::GET, Space(P::DeploymentView))],
    ),
    (
        "/releases/{id}/snapshot-variables",
        &[(Method::POST, Space(P::ReleaseEdit))],
    ),
    (
        "/deployments",
        &[
            (Method::GET, Space(P::DeploymentView)),
            (Method::POST, Space(P::DeploymentCreate)),
        ],
    ),
    (
        "/deployments/create/untenanted/v1",
        &[(Method::POST, Space(P::DeploymentCreate))],
    ),
    (
        "/deployments/create/tenanted/v1",
        &[(Method::POST, Space(P::DeploymentCreate))],
    ),
    (
        "/deployments/{id}",
        &[
            (Method::GET, Space(P::DeploymentView)),
            (Method::DELETE, Space(P::DeploymentDelete)),
        ],
    ),
    ("/packages", &[(Method::GET, Space(P::FeedView))]),
    (
        "/packages/raw",
        &[(Method::POST, Space(P::BuiltInFeedPush))],
    ),
    (
        "/packages/bulk",
        &[(Method::DELETE, Space(P::BuiltInFeedAdminister))],
    ),
    (
        "/packages/bulk-delete",
        &[(Method::DELETE, Space(P::BuiltInFeedAdminister))],
    ),
    (
        "/packages/{id}",
        &[
            (Method::GET, Space(P::FeedView)),
            (Method::DELETE, Space(P::BuiltInFeedAdminister)),
        ],
    ),
    (
        "/packages/{id}/raw",
        &[(Method::GET, Space(P::BuiltInFeedDownload))],
    ),
    (
        "/packages/{id}/{version}/delta-signature",
        &[(Method::GET, Space(P::BuiltInFeedDownload))],
    ),
    (
        "/build-information",
        &[
            (Method::GET, Space(P::FeedView)),
            (Method::POST, Space(P::BuildInformationPush)),
        ],
    ),
    (
        "/build-information/{id}",
        &[(Method::GET, Space(P::FeedView))],
    ),
    (
        "/machines",
        &[
            (Method::GET, Space(P::MachineView)),
            (Method::POST, Space(P::MachineCreate)),
        ],
    ),
    ("/machines/all", &[(Method::GET, Space(P::MachineView))]),
    (
        "/machines/discover",
        &[(Method::GET, Space(P::MachineCreate))],
    ),
    (
        "/machines/{id}",
        &[
            (Method::GET, Space(P::MachineView)),
            (Method::PUT, Space(P::MachineEdit)),
            (Method::DELETE, Space(P::MachineDelete)),
        ],
    ),
    (
        "/workers",
        &[
            (Method::GET, Space(P::WorkerView)),
            (Method::POST, Space(P::WorkerEdit)),
        ],
    ),
    ("/workers/all", &[(Method::GET, Space(P::WorkerView))]),
    ("/workers/discover", &[(Method::GET, Space(P::WorkerEdit))]),
    (
        "/workers/{id}",
        &[
            (Method::GET, Space(P::WorkerView)),
            (Method::PUT, Space(P::WorkerEdit)),
            (Method::DELETE, Space(P::WorkerEdit)),
        ],
    ),
    (
        "/workerpools",
        &[
            (Method::GET, Space(P::WorkerView)),
            (Method::POST, Space(P::WorkerEdit)),
        ],
    ),
    ("/workerpools/all", &[(Method::GET, Space(P::WorkerView))]),
    (
        "/workerpools/{id}",
        &[
            (Method::GET, Space(P::WorkerView)),
            (Method::PUT, Space(P::WorkerEdit)),
            (Method::DELETE, Space(P::WorkerEdit)),
        ],
    ),
    (
        "/workerpools/{id}/workers",
        &[(Method::GET, Space(P::WorkerView))],
    ),
    // Tag sets are seen by whoever may see tenants; tenants are filtered to a tenant-scoped
    // team's own, and edits check the tenant (`tenants.rs`).
    (
        "/tagsets",
        &[
            (Method::GET, Space(P::TenantView)),
            (Method::POST, Space(P::TagSetCreate)),
        ],
    ),
    ("/tagsets/all", &[(Method::GET, Space(P::TenantView))]),
    ("/tagsets/sortorder", &[(Method::PUT, Space(P::TagSetEdit))]),
    (
        "/tagsets/{id}",
        &[
            (Method::GET, Space(P::TenantView)),
            (Method::PUT, Space(P::TagSetEdit)),
            (Method::DELETE, Space(P::TagSetDelete)),
        ],
    ),
    (
        "/tenants",
        &[
            (Method::GET, Space(P::TenantView)),
            (Method::POST, Space(P::TenantCreate)),
        ],
    ),
    ("/tenants/all", &[(Method::GET, Space(P::TenantView))]),
    ("/tenants/tag-test", &[(Method::GET, Space(P::TenantView))]),
    (
        "/tenants/variables-missing",
        &[(Method::GET, Space(P::TenantView))],
    ),
    (
        "/tenants/{id}/variables",
        &[
            (Method::GET, Space(P::TenantView)),
            (Method::PUT, Space(P::TenantEdit)),
        ],
    ),
    (
        "/tenants/{id}/commonvariables",
        &[
            (Method::GET, Space(P::TenantView)),
            (Method::PUT, Space(P::TenantEdit)),
        ],
    ),
    (
        "/tenants/{id}/projectvariables",
        &[
            (Method::GET, Space(P::TenantView)),
            (Method::PUT, Space(P::TenantEdit)),
        ],
    ),
    (
        "/tenants/{id}",
        &[
            (Method::GET, Space(P::TenantView)),
            (Method::PUT, Space(P::TenantEdit)),
            (Method::DELETE, Space(P::TenantDelete)),
        ],
    ),
    (
        "/machinepolicies",
        &[
            (Method::GET, Space(P::MachinePolicyView)),
            (Method::POST, Space(P::MachinePolicyCreate)),
        ],
    ),
    (
        "/machinepolicies/all",
        &[(Method::GET, Space(P::MachinePolicyView))],
    ),
    (
        "/machinepolicies/{id}",
        &[
            (Method::GET, Space(P::MachinePolicyView)),
            (Method::PUT, Space(P::MachinePolicyEdit)),
            (Method::DELETE, Space(P::MachinePolicyDelete)),
        ],
    ),
];

/// The route template relative to its mount point, and whether the path named a space.
pub fn relative_route(matched: &str) -> (&str, bool) {
    for prefix in ["/api/spaces/{space_id}", "/api/{space_id}"] {
        if let Some(rest) = matched.strip_prefix(prefix)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            // `/api/{space_id}` alone is the space home, a route of its own.
            if rest.is_empty() && prefix == "/api/{space_id}" {
                return ("/{space_id}", false);
            }
            return (rest, true);
        }
    }
    (matched.strip_prefix("/api").unwrap_or(matched), false)
}

/// The rule of a method on a route template (relative, see [`relative_route`]).
pub fn rule_for(method: &Method, route: &str) -> Option<Rule> {
    // HEAD is answered by GET handlers.
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    ROUTES
        .iter()
        .find(|(path, _)| *path == route)
        .and_then(|(_, rules)| rules.iter().find(|(m, _)| m == method))
        .map(|(_, rule)| *rule)
}

/// Middleware: authenticates and applies the route's [`Rule`] before its handler runs.
pub async fn authorize(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    // No matched route: the fallback answers (404, or 501 for an Octopus feature not built).
    let Some(matched) = matched else {
        return next.run(request).await;
    };
    let (route, spaced) = relative_route(matched.as_str());
    let Some(rule) = rule_for(request.method(), route) else {
        return ApiError::internal(format!(
            "route {} {} has no permission rule in authz::ROUTES",
            request.method(),
            matched.as_str()
        ))
        .into_response();
    };
    if rule == Public {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let principal = match check(&state, &mut parts, rule, spaced).await {
        Ok(principal) => principal,
        Err(err) => return err.into_response(),
    };
    if let Err(err) = rate_limit(&state, &principal.organisation_id).await {
        return err.into_response();
    }
    // Until their address is verified, a user may only read themselves and ask for a new link.
    if !principal.user.email_verified && !matches!(route, "/users/me" | "/users/me/verification") {
        return ApiError::with_status(
            axum::http::StatusCode::FORBIDDEN,
            format!(
                "Verify your email address first: open the link sent to {} (POST /api/users/me/verification sends a new one).",
                principal.user.email.as_deref().unwrap_or("your address")
            ),
        )
        .into_response();
    }
    // Row-level security (PostgreSQL): the handler's queries see only rows of the spaces of the
    // caller's organisation that the caller can see.
    let organisation = principal.organisation_id.clone();
    let spaces = || {
        principal
            .grants
            .visible_spaces()
            .map(|spaces| spaces.into_iter().collect::<Vec<_>>())
    };
    if !matches!(parts.method, Method::POST | Method::PUT | Method::DELETE) {
        return cuttle_store::rls::scoped_to(
            &organisation,
            spaces(),
            next.run(Request::from_parts(parts, body)),
        )
        .await;
    }
    // A write: its audit event is stored first, and completed once it has succeeded.
    let actor = crate::events::Actor::of(&principal, &parts);
    let space = parts.extensions.get::<SpaceScope>().cloned();
    let ids = crate::extract::PathParams::from_request_parts(&mut parts, &state)
        .await
        .map(|p| p.ids())
        .unwrap_or_default();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let route = route.to_owned();
    let (request, document) =
        crate::events::capture_request(Request::from_parts(parts, body)).await;
    let record = match crate::events::WriteRecord::begin(
        &state,
        &actor,
        space.as_ref(),
        (&method, &route, &path),
        ids,
        document,
    )
    .await
    {
        Ok(record) => record,
        Err(err) => return err.into_response(),
    };
    let response = cuttle_store::rls::scoped_to(&organisation, spaces(), next.run(request)).await;
    if !response.status().is_success() {
        record.failed(&state).await;
        return response;
    }
    let (response, created) = crate::events::capture_response(response).await;
    record.succeeded(&state, created).await;
    response
}

/// Counts an organisation's request against `limits.requests_per_minute`: 429 with
/// `Retry-After` (the rest of the minute) beyond it. A cache failure lets the request through
/// (a rate limit protects capacity; refusing everyone would be the outage it prevents).
async fn rate_limit(state: &AppState, organisation_id: &str) -> ApiResult<()> {
    let limit = state.limits.requests_per_minute;
    if limit == 0 {
        return Ok(());
    }
    let now = chrono::Utc::now().timestamp();
    let key = format!("rate:{organisation_id}:{}", now.div_euclid(60));
    match state
        .cache
        .increment(&key, 1, std::time::Duration::from_secs(61))
        .await
    {
        Ok(count) if count > i64::from(limit) => Err(ApiError::too_many_requests(
            format!("Your organisation has made more than {limit} requests this minute."),
            u64::try_from(60 - now.rem_euclid(60)).unwrap_or(60),
        )),
        Ok(_) => Ok(()),
        Err(err) => {
            tracing::warn!(error = %err, "the request rate could not be counted; letting the request through");
            Ok(())
        }
    }
}

async fn check(
    state: &AppState,
    parts: &mut axum::http::request::Parts,
    rule: Rule,
    spaced: bool,
) -> ApiResult<Principal> {
    let principal = Principal::from_request_parts(parts, state).await?;
    check_rule(state, parts, &principal, rule, spaced).await?;
    Ok(principal)
}

async fn check_rule(
    state: &AppState,
    parts: &mut axum::http::request::Parts,
    principal: &Principal,
    rule: Rule,
    spaced: bool,
) -> ApiResult<()> {
    match rule {
        Public | SignedIn => Ok(()),
        System(permission) => require_system(principal, permission),
        Anywhere(permission) => require_anywhere(principal, permission),
        Tasks(permission) if !spaced => require_anywhere(principal, permission),
        Space(permission) | Tasks(permission) => {
            let scope = SpaceScope::from_request_parts(parts, state).await?;
            if principal
                .grants
                .allows_somewhere(permission, Some(scope.id.as_str()))
            {
                Ok(())
            } else {
                Err(ApiError::forbidden(permission))
            }
        }
    }
}

/// A system permission, or 403.
pub fn require_system(principal: &Principal, permission: Permission) -> ApiResult<()> {
    if principal.grants.allows_system(permission) {
        Ok(())
    } else {
        Err(ApiError::forbidden(permission))
    }
}

/// A permission held anywhere in the organisation, or 403.
pub fn require_anywhere(principal: &Principal, permission: Permission) -> ApiResult<()> {
    if holds_anywhere(&principal.grants, permission) {
        Ok(())
    } else {
        Err(ApiError::forbidden(permission))
    }
}

/// Whether a permission is held in some space or system-wide.
pub fn holds_anywhere(grants: &Grants, permission: Permission) -> bool {
    grants.is_administrator()
        || grants
            .grants()
            .iter()
            .any(|grant| grant.permissions.contains(&permission))
}

/// A permission on a known resource (its space, project, group, environment), or 403.
pub fn require(
    principal: &Principal,
    permission: Permission,
    target: &Target<'_>,
) -> ApiResult<()> {
    if principal.grants.allows(permission, target) {
        Ok(())
    } else {
        Err(ApiError::forbidden(permission))
    }
}

/// A permission on one project (restrictions by project and project group apply), or 403.
pub fn require_on_project(
    principal: &Principal,
    permission: Permission,
    space: &cuttle_domain::SpaceId,
    project: &cuttle_wire::resources::Project,
) -> ApiResult<()> {
    require(
        principal,
        permission,
        &Target {
            space: Some(space.as_str()),
            project: Some(&project.id),
            project_group: Some(&project.project_group_id),
            ..Target::default()
        },
    )
}

/// The grants of `user_id` in `organisation_id`: from the teams they belong to (and
/// `teams-everyone`), through each team's scoped user roles.
pub async fn grants_for(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    user_id: &str,
) -> ApiResult<Grants> {
    let docs = organisations::list_documents(
        conn,
        organisation_id,
        &[TEAM_KIND, ROLE_KIND, SCOPED_ROLE_KIND],
    )
    .await?;
    let mut teams = HashMap::new();
    let mut roles = HashMap::new();
    let mut scoped = Vec::new();
    for doc in &docs {
        match doc.kind.as_str() {
            TEAM_KIND => {
                let team: Team = organisations::decode(doc)?;
                if team.id == EVERYONE_TEAM || team.member_user_ids.iter().any(|m| m == user_id) {
                    if team.id == ADMINISTRATORS_TEAM {
                        return Ok(Grants::administrator());
                    }
                    teams.insert(team.id.clone(), team);
                }
            }
            ROLE_KIND => {
                let role: UserRole = organisations::decode(doc)?;
                roles.insert(role.id.clone(), role);
            }
            _ => scoped.push(organisations::decode::<ScopedUserRole>(doc)?),
        }
    }
    let mut grants = Vec::new();
    for binding in scoped {
        let Some(team) = teams.get(&binding.team_id) else {
            continue;
        };
        let Some((space_permissions, system_permissions)) =
            role_permissions(&roles, &binding.user_role_id)
        else {
            tracing::warn!(scoped_user_role = %binding.id, user_role = %binding.user_role_id, "a scoped user role names a user role that does not exist; it grants nothing");
            continue;
        };
        // A space team's roles apply in its space only, whatever the binding says.
        let space = team.space_id.clone().or(binding.space_id.clone());
        if !space_permissions.is_empty() && space.is_some() {
            grants.push(Grant {
                permissions: space_permissions,
                space,
                environments: binding.environment_ids.clone(),
                projects: binding.project_ids.clone(),
                project_groups: binding.project_group_ids.clone(),
                tenants: binding.tenant_ids.clone(),
            });
        }
        if !system_permissions.is_empty() && team.space_id.is_none() {
            grants.push(Grant {
                permissions: system_permissions,
                ..Grant::default()
            });
        }
    }
    Ok(Grants::new(grants))
}

/// A role's (space, system) permissions, built-in or the organisation's own.
pub fn role_permissions(
    custom: &HashMap<String, UserRole>,
    role_id: &str,
) -> Option<(BTreeSet<Permission>, BTreeSet<Permission>)> {
    if let Some(role) = cuttle_authz::built_in_role(role_id) {
        return Some((
            role.space_permissions.iter().copied().collect(),
            role.system_permissions.iter().copied().collect(),
        ));
    }
    let role = custom.get(role_id)?;
    let parse = |names: &[String]| names.iter().filter_map(|n| Permission::parse(n)).collect();
    Some((
        parse(&role.granted_space_permissions),
        parse(&role.granted_system_permissions),
    ))
}

/// Creates an organisation's built-in teams when missing: `teams-everyone` and
/// `teams-administrators` (with `administrators` as its members when it is new).
pub async fn ensure_builtin_teams(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    administrators: &[String],
) -> ApiResult<()> {
    let builtins = [
        (
            EVERYONE_TEAM,
            "Everyone",
            "Every user of the organisation belongs to this team.",
            Vec::new(),
        ),
        (
            ADMINISTRATORS_TEAM,
            "Octopus Administrators",
            "Members may do everything in the organisation.",
            administrators.to_vec(),
        ),
    ];
    for (id, name, description, members) in builtins {
        if organisations::get_document(conn, organisation_id, TEAM_KIND, id)
            .await?
            .is_some()
        {
            continue;
        }
        let team = Team {
            id: id.to_owned(),
            name: name.to_owned(),
            description: description.to_owned(),
            member_user_ids: members,
            can_be_deleted: false,
            can_be_renamed: false,
            can_change_members: id != EVERYONE_TEAM,
            can_change_roles: id != ADMINISTRATORS_TEAM,
            ..Team::default()
        };
        organisations::insert_document(conn, organisation_id, TEAM_KIND, id, name, &team, "")
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_relative_to_their_mount_point() {
        assert_eq!(
            relative_route("/api/{space_id}/projects"),
            ("/projects", true)
        );
        assert_eq!(
            relative_route("/api/spaces/{space_id}/projects/{id}"),
            ("/projects/{id}", true)
        );
        assert_eq!(relative_route("/api/projects"), ("/projects", false));
        assert_eq!(relative_route("/api/spaces/{id}"), ("/spaces/{id}", false));
        assert_eq!(relative_route("/api/{space_id}"), ("/{space_id}", false));
        assert_eq!(relative_route("/api"), ("", false));
        assert_eq!(relative_route("/api/users/me"), ("/users/me", false));
    }

    #[test]
    fn every_rule_is_found_and_unknown_routes_have_none() {
        for (path, rules) in ROUTES {
            for (method, rule) in *rules {
                assert_eq!(rule_for(method, path), Some(*rule), "{method} {path}");
            }
        }
        assert_eq!(
            rule_for(&Method::HEAD, "/packages/{id}/raw"),
            Some(Space(P::BuiltInFeedDownload))
        );
        assert_eq!(rule_for(&Method::PATCH, "/projects"), None);
        assert_eq!(rule_for(&Method::GET, "/nothing"), None);
    }

    #[test]
    fn no_route_is_listed_twice() {
        let mut seen = BTreeSet::new();
        for (path, _) in ROUTES {
            assert!(seen.insert(*path), "{path} is listed twice");
        }
    }
}
