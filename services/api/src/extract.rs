//! Request extractors: the authenticated principal, the space in scope, query parameters and
//! case-insensitive JSON bodies.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use cuttle_domain::SpaceId;
use cuttle_store::documents;
use cuttle_store::users::{self, User};
use cuttle_wire::resources::Space;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Query parameters, keys matched case-insensitively; a list is comma-joined (TypeScript) or the
/// parameter repeated (Go), and both forms are accepted.
#[derive(Debug, Default, Clone)]
pub struct Params(HashMap<String, Vec<String>>);

/// Octopus's default page size.
pub const DEFAULT_TAKE: u64 = 30;

impl Params {
    /// Parses a raw query string.
    pub fn parse(query: Option<&str>) -> Params {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            map.entry(key.to_ascii_lowercase())
                .or_default()
                .push(value.into_owned());
        }
        Params(map)
    }

    /// The first value of a parameter, if non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(&key.to_ascii_lowercase())
            .and_then(|values| values.first())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// All values of a list parameter.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.0
            .get(&key.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// A non-negative integer parameter; a malformed one is a 400 naming it.
    pub fn number(&self, key: &str, default: u64) -> Result<u64, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(text) => text.parse::<u64>().map_err(|_| {
                ApiError::invalid_field(key, format!("'{text}' is not a non-negative whole number"))
            }),
        }
    }

    /// A boolean parameter.
    pub fn flag(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(text) if text.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(text) if text.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(text) => Err(ApiError::invalid_field(
                key,
                format!("'{text}' is not true or false"),
            )),
        }
    }

    /// `skip` and `take` (default 30; `2147483647` means all).
    pub fn paging(&self) -> Result<(u64, u64), ApiError> {
        Ok((self.number("skip", 0)?, self.number("take", DEFAULT_TAKE)?))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Params::parse(parts.uri.query()))
    }
}

/// The path parameters of the matched route, by name.
#[derive(Debug, Default, Clone)]
pub struct PathParams(HashMap<String, String>);

impl PathParams {
    /// A path parameter that only some of a handler's routes have.
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every path parameter's value but the space's (the ids a request names).
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<(&String, &String)> =
            self.0.iter().filter(|(k, _)| *k != "space_id").collect();
        ids.sort();
        ids.into_iter().map(|(_, v)| v.clone()).collect()
    }

    /// A path parameter the route is known to have.
    pub fn get(&self, name: &str) -> Result<&str, ApiError> {
        self.0
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| ApiError::internal(format!("route has no path parameter '{name}'")))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PathParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(map) =
            axum::extract::Path::<HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|err| ApiError::bad_request(format!("Invalid path: {err}"), Vec::new()))?;
        Ok(PathParams(map))
    }
}

/// The caller, authenticated by API key (`X-Octopus-ApiKey`, `?apikey=`, or `Authorization:
/// Bearer API-...`).
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user.
    pub user: User,
    /// The user's organisation: nothing of another organisation is ever visible.
    pub organisation_id: String,
    /// What the user may do (from their teams' scoped user roles).
    pub grants: std::sync::Arc<cuttle_authz::Grants>,
}

/// SHA-256 of an API key, as stored.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn presented_key(parts: &Parts) -> Option<String> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(key) = header("x-octopus-apikey") {
        return Some(key.to_owned());
    }
    if let Some(bearer) = header("authorization").and_then(|v| v.strip_prefix("Bearer "))
        && bearer.trim().starts_with("API-")
    {
        return Some(bearer.trim().to_owned());
    }
    Params::parse(parts.uri.query())
        .get("apikey")
        .map(str::to_owned)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let user = match presented_key(parts) {
            Some(key) => users::user_for_key_hash(state.store.conn(), &hash_api_key(&key))
                .await?
                .ok_or_else(ApiError::unauthorized)?,
            // Not an API key: a session (bearer token or cookie), or nobody.
            None => crate::sessions::authenticate(state, parts)
                .await?
                .ok_or_else(ApiError::unauthorized)?,
        };
        let Some(organisation_id) = user.organisation_id.clone() else {
            // Bootstrap gives every user an organisation; a row without one is unusable.
            tracing::warn!(user.id = %user.id, "a user without an organisation presented an API key");
            return Err(ApiError::unauthorized());
        };
        let grants =
            crate::authz::grants_for(state.store.conn(), &organisation_id, &user.id).await?;
        let principal = Principal {
            user,
            organisation_id,
            grants: std::sync::Arc::new(grants),
        };
        parts.extensions.insert(principal.clone());
        Ok(principal)
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    /// The caller when they present a valid key; `None` for anonymous callers and bad keys
    /// (for the public root document, which only adds their default space's links).
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        if presented_key(parts).is_none()
            && parts
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .is_none()
            && crate::sessions::cookie(&parts.headers, crate::sessions::ACCESS_COOKIE).is_none()
        {
            return Ok(None);
        }
        match <Principal as FromRequestParts<AppState>>::from_request_parts(parts, state).await {
            Ok(principal) => Ok(Some(principal)),
            Err(err) if err.status() == axum::http::StatusCode::UNAUTHORIZED => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// The space a space-scoped route works in: `/api/{space_id}/...`, `/api/spaces/{space_id}/...`
/// (id, slug or name), or the default space for `/api/...`.
#[derive(Debug, Clone)]
pub struct SpaceScope {
    /// The space's id; every query below starts from it.
    pub id: SpaceId,
    /// The space itself.
    pub space: Space,
}

/// Finds a space by id, slug or exact name among the spaces of the principal's organisation
/// that the principal can see: any other space is `None`, as if it did not exist.
pub async fn resolve_space(
    state: &AppState,
    principal: &Principal,
    identifier: &str,
) -> Result<Option<SpaceScope>, ApiError> {
    let conn = state.store.conn();
    let doc = match SpaceId::parse(identifier) {
        Ok(id) => documents::get(conn, &id, crate::spaces::KIND, id.as_str()).await?,
        Err(_) => crate::spaces::find_by_slug_or_name(state, principal, identifier).await?,
    };
    let Some(doc) = doc else {
        return Ok(None);
    };
    let owner = cuttle_store::organisations::space_owner(conn, &doc.id).await?;
    if owner.as_deref() != Some(principal.organisation_id.as_str())
        || !principal.grants.can_see_space(&doc.id)
    {
        return Ok(None);
    }
    let space: Space = documents::decode(&doc)?;
    Ok(Some(SpaceScope {
        id: SpaceId::parse(&doc.id).map_err(ApiError::internal)?,
        space,
    }))
}

impl FromRequestParts<AppState> for SpaceScope {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(scope) = parts.extensions.get::<SpaceScope>() {
            return Ok(scope.clone());
        }
        // Authenticate first: an anonymous caller must not learn which spaces exist.
        let principal = Principal::from_request_parts(parts, state).await?;
        let params = PathParams::from_request_parts(parts, state)
            .await
            .unwrap_or_default();
        let scope = match params.0.get("space_id") {
            Some(identifier) => resolve_space(state, &principal, identifier)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("space '{identifier}'")))?,
            None => crate::spaces::default_space(state, &principal)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(
                        "the default space (your organisation has no space marked IsDefault that you can see)",
                    )
                })?,
        };
        parts.extensions.insert(scope.clone());
        Ok(scope)
    }
}

/// A JSON body in any key case; a malformed body is a 400 that says where.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|err| {
                ApiError::bad_request(
                    format!("The request body could not be read: {err}"),
                    Vec::new(),
                )
            })?;
        let text = if bytes.iter().all(u8::is_ascii_whitespace) {
            &b"{}"[..]
        } else {
            &bytes[..]
        };
        let value: serde_json::Value = serde_json::from_slice(text).map_err(|err| {
            ApiError::bad_request("The request body is not valid JSON.", vec![err.to_string()])
        })?;
        let parsed = cuttle_wire::from_request_json(value).map_err(|err| {
            ApiError::bad_request(
                "The request body has a field of the wrong type.",
                vec![err.0],
            )
        })?;
        Ok(JsonBody(parsed))
    }
}
