//! The audit log: `GET /api/events` (Octopus's filters), and the recording of events.
//!
//! Every successful write through the API (POST, PUT, DELETE) is recorded by the `authorize`
//! middleware: who (user, how they authenticated, address, user agent),
//! when, what (category, message, the documents involved) and the change: the request's document
//! with sensitive values removed, and its differences from the same document's previous event.
//! Sign-ins are recorded by the sign-in code.
//!
//! A write's event is stored before its handler runs and completed after it ([`WriteRecord`]),
//! so a change never commits without a trace: if the server stops between the two, the event
//! stays and says its outcome was not recorded. A failed write's event is removed.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Params, PathParams, Principal, SpaceScope};
use crate::links::links;
use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::response::Response;
use axum::routing::get;
use cuttle_authz::Permission;
use cuttle_store::events::{self, Event, EventQuery};
use cuttle_wire::Collection;
use serde_json::{Value, json};

/// Requests and responses larger than this are recorded without their document.
const DOCUMENT_LIMIT: usize = 1024 * 1024;

/// Octopus's event categories that Cuttle records.
pub const CATEGORIES: &[(&str, &str)] = &[
    ("Created", "Document created"),
    ("Modified", "Document modified"),
    ("Deleted", "Document deleted"),
    ("DeploymentQueued", "Deployment queued"),
    ("TaskCanceled", "Task canceled"),
    ("LoginSucceeded", "Login succeeded"),
    ("LoginFailed", "Login failed"),
];

/// The routes of the audit log.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/events", get(list))
        .route("/api/events/categories", get(categories))
        .route("/api/events/{id}", get(get_one))
}

/// Who made a change and from where.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The organisation the event belongs to.
    pub organisation_id: String,
    /// The user, if known.
    pub user_id: Option<String>,
    /// Their username (or the name tried, for a failed sign-in).
    pub username: String,
    /// Whether a service account.
    pub is_service: bool,
    /// How the request authenticated.
    pub identity: String,
    /// The client's address.
    pub ip_address: String,
    /// The client's user agent.
    pub user_agent: String,
}

impl Actor {
    /// The actor of an authenticated request.
    pub fn of(principal: &Principal, parts: &axum::http::request::Parts) -> Actor {
        let identity = if parts.headers.contains_key("x-octopus-apikey")
            || crate::extract::Params::parse(parts.uri.query())
                .get("apikey")
                .is_some()
            || parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("API-"))
        {
            "API key"
        } else {
            "Session"
        };
        Actor {
            organisation_id: principal.organisation_id.clone(),
            user_id: Some(principal.user.id.clone()),
            username: principal.user.username.clone(),
            is_service: principal.user.is_service,
            identity: identity.to_owned(),
            ip_address: crate::sessions::client_address(&parts.extensions),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .chars()
                .take(500)
                .collect(),
        }
    }
}

impl Actor {
    /// An event by this actor, about the first of `related` (to be stored: no id yet).
    fn event(
        &self,
        space_id: Option<String>,
        category: &str,
        message: String,
        related: Vec<String>,
        details: &Value,
    ) -> Event {
        Event {
            id: String::new(),
            organisation_id: self.organisation_id.clone(),
            space_id,
            category: category.to_owned(),
            user_id: self.user_id.clone(),
            username: self.username.clone(),
            is_service: self.is_service,
            identity_established_with: self.identity.clone(),
            user_agent: self.user_agent.clone(),
            ip_address: self.ip_address.clone(),
            occurred: chrono::Utc::now(),
            message,
            document_id: related.first().cloned(),
            related_document_ids: Value::from(related).to_string(),
            details: details.to_string(),
        }
    }

    /// A person signing in (no principal yet).
    pub fn signing_in(
        user: &cuttle_store::users::User,
        identity: &str,
        ip_address: &str,
    ) -> Option<Actor> {
        Some(Actor {
            organisation_id: user.organisation_id.clone()?,
            user_id: Some(user.id.clone()),
            username: user.username.clone(),
            is_service: user.is_service,
            identity: identity.to_owned(),
            ip_address: ip_address.to_owned(),
            user_agent: String::new(),
        })
    }
}

/// Records a sign-in attempt of a known user.
pub async fn record_login(
    state: &AppState,
    user: &cuttle_store::users::User,
    identity: &str,
    address: &str,
    succeeded: bool,
) {
    let Some(actor) = Actor::signing_in(user, identity, address) else {
        return;
    };
    let (category, verb) = if succeeded {
        ("LoginSucceeded", "signed in")
    } else {
        ("LoginFailed", "failed to sign in")
    };
    let message = format!("{} {verb} with {identity} from {address}", user.username);
    record(
        state,
        &actor,
        None,
        category,
        message,
        vec![user.id.clone()],
        Value::Null,
    )
    .await;
}

/// Records one event; a failure is logged, never turned into a failed request (the change
/// already happened).
pub async fn record(
    state: &AppState,
    actor: &Actor,
    space_id: Option<String>,
    category: &str,
    message: String,
    related: Vec<String>,
    details: Value,
) {
    let event = actor.event(space_id, category, message, related, &details);
    if let Err(err) = events::insert_event(state.store.conn(), event).await {
        tracing::error!(error = %err, category, "an audit event could not be recorded");
    }
}

/// Whether a write should be recorded and, if so, its request document (buffered so the handler
/// still reads it).
pub async fn capture_request(request: Request) -> (Request, Option<Value>) {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let small = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= DOCUMENT_LIMIT);
    if !is_json || !small {
        return (request, None);
    }
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, DOCUMENT_LIMIT).await {
        Ok(bytes) => {
            let document = serde_json::from_slice::<Value>(&bytes).ok();
            (Request::from_parts(parts, Body::from(bytes)), document)
        }
        // The body was shorter or longer than it said: the handler sees an empty body and
        // answers for itself.
        Err(_) => (Request::from_parts(parts, Body::empty()), None),
    }
}

/// The `Id` a JSON response names (the created or changed document), keeping the response whole.
pub async fn capture_response(response: Response) -> (Response, Option<String>) {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let small = axum::body::HttpBody::size_hint(response.body())
        .exact()
        .is_some_and(|n| n <= DOCUMENT_LIMIT as u64);
    if !is_json || !small {
        return (response, None);
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, DOCUMENT_LIMIT).await {
        Ok(bytes) => {
            let id = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("Id").and_then(Value::as_str).map(str::to_owned));
            (Response::from_parts(parts, Body::from(bytes)), id)
        }
        Err(err) => {
            tracing::warn!(error = %err, "a response could not be read for the audit log");
            (Response::from_parts(parts, Body::from(Bytes::new())), None)
        }
    }
}

/// The category of a successful write.
pub fn category(method: &Method, route: &str) -> &'static str {
    match (method.as_str(), route) {
        (
            "POST",
            "/deployments"
            | "/deployments/create/untenanted/v1"
            | "/deployments/create/tenanted/v1",
        ) => "DeploymentQueued",
        ("POST", "/tasks/{id}/cancel") => "TaskCanceled",
        ("POST", _) => "Created",
        ("PUT", _) => "Modified",
        _ => "Deleted",
    }
}

const SECRET_KEYS: &[&str] = &[
    "password",
    "newpassword",
    "clientsecret",
    "apikey",
    "secret",
    "token",
];

/// A copy of a document without sensitive values: secret fields are dropped and the `Value` of
/// anything marked `IsSensitive` is null.
pub fn without_secrets(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let sensitive = map
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("IsSensitive") && v == &Value::Bool(true));
            map.iter()
                .filter(|(k, _)| !SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()))
                .map(|(k, v)| {
                    let kept = if sensitive && k.eq_ignore_ascii_case("Value") {
                        Value::Null
                    } else {
                        without_secrets(v)
                    };
                    (k.clone(), kept)
                })
                .collect::<serde_json::Map<_, _>>()
                .into()
        }
        Value::Array(items) => Value::Array(items.iter().map(without_secrets).collect()),
        other => other.clone(),
    }
}

/// The leaves that differ between two documents: `[{Path, Before, After}]` (`Links` ignored).
pub fn differences(before: &Value, after: &Value) -> Vec<Value> {
    fn walk(path: &str, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<Value>) {
        match (before, after) {
            (Some(Value::Object(a)), Some(Value::Object(b))) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys.into_iter().filter(|k| *k != "Links") {
                    walk(&format!("{path}/{key}"), a.get(key), b.get(key), out);
                }
            }
            (Some(Value::Array(a)), Some(Value::Array(b))) => {
                for i in 0..a.len().max(b.len()) {
                    walk(&format!("{path}/{i}"), a.get(i), b.get(i), out);
                }
            }
            (a, b) if a != b => out.push(json!({
                "Path": if path.is_empty() { "/" } else { path },
                "Before": a.cloned().unwrap_or(Value::Null),
                "After": b.cloned().unwrap_or(Value::Null),
            })),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", Some(before), Some(after), &mut out);
    out
}

/// The audit event of one write through the API. It is stored before the handler runs, marked
/// as having no recorded outcome, and completed once the handler succeeded (or deleted when it
/// failed). So no change can commit without a trace in the audit log: if the server stops, or
/// the client goes, between the change and its record, the event stays, saying that its outcome
/// was not recorded.
pub struct WriteRecord {
    event: Event,
    actor: Actor,
    method: Method,
    path: String,
    path_ids: Vec<String>,
    space: Option<String>,
    document: Option<Value>,
}

/// What an event of a write says happened.
fn write_message(actor: &Actor, category: &str, what: &str, method: &Method, path: &str) -> String {
    let verb = match category {
        "Created" => "created",
        "Modified" => "modified",
        "Deleted" => "deleted",
        "DeploymentQueued" => "queued deployment",
        "TaskCanceled" => "canceled task",
        _ => "changed",
    };
    format!("{} {verb} {what} ({method} {path})", actor.username)
}

impl WriteRecord {
    /// Stores the event of a write about to run through `route`. An event that cannot be
    /// stored stops the write with a 503: a change must not happen unrecorded.
    pub async fn begin(
        state: &AppState,
        actor: &Actor,
        space: Option<&SpaceScope>,
        (method, route, path): (&Method, &str, &str),
        path_ids: Vec<String>,
        document: Option<Value>,
    ) -> ApiResult<WriteRecord> {
        let category = category(method, route);
        let document = document.map(|d| without_secrets(&d));
        let space = space.map(|s| s.id.to_string());
        let what = path_ids.first().map_or(path, String::as_str);
        let mut related = path_ids.clone();
        related.extend(space.clone());
        let mut event = actor.event(
            space.clone(),
            category,
            format!(
                "{}; its outcome was not recorded",
                write_message(actor, category, what, method, path)
            ),
            related,
            &json!({"DocumentContext": document, "Differences": null, "Outcome": "Unknown"}),
        );
        // Set once the outcome is known, so a write in progress is never taken as the
        // document's last known state.
        event.document_id = None;
        let event = events::insert_event(state.store.conn(), event)
            .await
            .map_err(|err| {
                tracing::error!(error = %err, category, "the audit event of a write could not be stored; the write is refused");
                ApiError::with_status(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "The change could not be recorded in the audit log, so it was not made. Try again later.",
                )
            })?;
        Ok(WriteRecord {
            event,
            actor: actor.clone(),
            method: method.clone(),
            path: path.to_owned(),
            path_ids,
            space,
            document,
        })
    }

    /// Completes the event of a write that succeeded; `response_id` is the `Id` of the document
    /// it answered with. A failure is logged: the event stays, without its outcome.
    pub async fn succeeded(self, state: &AppState, response_id: Option<String>) {
        let WriteRecord {
            mut event,
            actor,
            method,
            path,
            path_ids,
            space,
            document,
        } = self;
        let conn = state.store.conn();
        let mut related: Vec<String> = response_id.into_iter().chain(path_ids).collect();
        related.dedup();
        related.extend(space);
        let main = related.first().cloned();
        let previous = match (&main, method.as_str()) {
            (Some(id), "PUT" | "DELETE") => {
                match events::latest_regarding(conn, &event.organisation_id, id).await {
                    Ok(previous) => previous
                        .and_then(|e| serde_json::from_str::<Value>(&e.details).ok())
                        .and_then(|d| d.get("DocumentContext").cloned())
                        .filter(|d| !d.is_null()),
                    Err(err) => {
                        tracing::warn!(error = %err, "the previous event of a document could not be read");
                        None
                    }
                }
            }
            _ => None,
        };
        let changes = match (&previous, &document) {
            (Some(before), Some(after)) => Value::from(differences(before, after)),
            _ => Value::Null,
        };
        let what = main.clone().unwrap_or_else(|| path.clone());
        event.message = write_message(&actor, &event.category, &what, &method, &path);
        event.document_id = main;
        event.related_document_ids = Value::from(related).to_string();
        event.details = json!({"DocumentContext": document, "Differences": changes}).to_string();
        let category = event.category.clone();
        if let Err(err) = events::update_event(conn, event).await {
            tracing::error!(error = %err, category, "the outcome of a write could not be recorded in its audit event");
        }
    }

    /// Removes the event of a write that failed (nothing changed). A failure is logged: the
    /// event stays, without its outcome.
    pub async fn failed(self, state: &AppState) {
        if let Err(err) = events::delete_event(state.store.conn(), &self.event.id).await {
            tracing::warn!(error = %err, "the audit event of a failed write could not be removed");
        }
    }
}

fn present(event: &Event) -> Value {
    let details: Value = serde_json::from_str(&event.details).unwrap_or(Value::Null);
    let related: Value = serde_json::from_str(&event.related_document_ids).unwrap_or(json!([]));
    json!({
        "Id": event.id,
        "RelatedDocumentIds": related,
        "Category": event.category,
        "UserId": event.user_id,
        "Username": event.username,
        "IsService": event.is_service,
        "IdentityEstablishedWith": event.identity_established_with,
        "UserAgent": event.user_agent,
        "Occurred": cuttle_wire::dates::format(&event.occurred),
        "Message": event.message,
        "MessageHtml": event.message,
        "MessageReferences": [],
        "Comments": null,
        "Details": null,
        "ChangeDetails": details,
        "IpAddress": event.ip_address,
        "SpaceId": event.space_id,
        "Links": links([("Self", format!("/api/events/{}", event.id))]),
    })
}

/// The spaces whose events the principal may read, and whether system events too.
async fn readable(state: &AppState, principal: &Principal) -> ApiResult<(Vec<String>, bool)> {
    let spaces =
        cuttle_store::organisations::spaces_of(state.store.conn(), &principal.organisation_id)
            .await?
            .into_iter()
            .filter(|s| {
                principal
                    .grants
                    .allows_somewhere(Permission::EventView, Some(s))
            })
            .collect();
    Ok((
        spaces,
        principal.grants.allows_system(Permission::EventView),
    ))
}

fn date(params: &Params, key: &str) -> ApiResult<Option<chrono::DateTime<chrono::Utc>>> {
    match params.get(key) {
        None => Ok(None),
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|d| Some(d.with_timezone(&chrono::Utc)))
            .or_else(|_| {
                chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .map(|d| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()))
            })
            .map_err(|_| ApiError::invalid_field(key, format!("'{text}' is not a date"))),
    }
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Collection<Value>>> {
    let (skip, take) = params.paging()?;
    let (readable_spaces, system) = readable(&state, &principal).await?;
    let wanted = params.list("spaces");
    let spaces = readable_spaces
        .into_iter()
        .filter(|s| wanted.is_empty() || wanted.contains(s))
        .collect();
    let include_system = system && params.flag("includeSystem")?.unwrap_or(true);
    // Filters Cuttle does not have the data for answer 400 rather than an unfiltered list.
    for unsupported in [
        "eventGroups",
        "eventAgents",
        "tags",
        "fromAutoId",
        "toAutoId",
    ] {
        if params.get(unsupported).is_some() {
            return Err(ApiError::invalid_field(
                unsupported,
                format!("Filtering events by {unsupported} is not supported yet."),
            ));
        }
    }
    let mut users = params.list("users");
    users.extend(params.list("user"));
    let regarding_any = ["regardingAny", "projects", "environments", "tenants"]
        .into_iter()
        .filter(|name| params.get(name).is_some())
        .map(|name| params.list(name))
        .collect();
    let exclude_difference = params.flag("excludeDifference")?.unwrap_or(false);
    let query = EventQuery {
        organisation_id: principal.organisation_id.clone(),
        spaces: Some(spaces),
        include_system,
        categories: params.list("eventCategories"),
        users,
        regarding_all: params.list("regarding"),
        regarding_any,
        document_types: params.list("documentTypes"),
        from: date(&params, "from")?,
        to: date(&params, "to")?,
        skip,
        take,
    };
    let (rows, total) = events::list_events(state.store.conn(), &query).await?;
    Ok(Json(Collection::page(
        "Event",
        rows.iter()
            .map(|row| {
                let mut event = present(row);
                if exclude_difference && let Some(details) = event["ChangeDetails"].as_object_mut()
                {
                    details.remove("Differences");
                }
                event
            })
            .collect(),
        total,
        skip,
        take,
        "/api/events",
        "/api/events{/id}{?skip,regarding,regardingAny,user,users,projects,environments,eventGroups,eventCategories,tags,tenants,from,to,internal,fromAutoId,toAutoId,documentTypes,eventAgents,spaces,includeSystem,excludeDifference}",
    )))
}

async fn get_one(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<Value>> {
    let id = path.get("id")?;
    let (spaces, system) = readable(&state, &principal).await?;
    let event = events::get_event(state.store.conn(), &principal.organisation_id, id)
        .await?
        .filter(|e| match &e.space_id {
            Some(space) => spaces.contains(space),
            None => system,
        })
        .ok_or_else(|| ApiError::not_found(format!("event '{id}'")))?;
    Ok(Json(present(&event)))
}

async fn categories(_: Principal) -> Json<Vec<Value>> {
    Json(
        CATEGORIES
            .iter()
            .map(|(id, name)| json!({"Id": id, "Name": name}))
            .collect(),
    )
}
