//! Password sign-in and sessions.
//!
//! - `POST /api/users/login {Username, Password}` checks an argon2id hash (throttled per
//!   account and per client address through the cache: Redis in distributed mode) and starts a
//!   session: an HttpOnly cookie `OctopusIdentificationToken` with a short-lived HS256 JWT
//!   (algorithm pinned; issuer, audience and expiry checked), an HttpOnly refresh cookie stored
//!   only as a hash, and `Octopus-Csrf-Token`, which a browser echoes in `X-Octopus-Csrf-Token`
//!   on every write made with the cookie.
//! - `POST /api/users/refresh` rotates the refresh token and issues a new access token.
//! - `POST /api/users/logout` revokes the session: its access tokens stop working at once.
//!
//! The signing key is derived from the secrets master key, so every api replica agrees and
//! rotating the master key ends every session.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::root::present_user;
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use cuttle_platform::AuthConfig;
use cuttle_store::users::{self, User};
use cuttle_store::{TransactionTrait, sessions};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// The access token cookie (Octopus's name).
pub const ACCESS_COOKIE: &str = "OctopusIdentificationToken";
/// The CSRF cookie a browser reads and echoes in [`CSRF_HEADER`].
pub const CSRF_COOKIE: &str = "Octopus-Csrf-Token";
/// The header that must carry the CSRF token on cookie-authenticated writes.
pub const CSRF_HEADER: &str = "x-octopus-csrf-token";
/// The refresh token cookie, sent only to the session routes.
pub const REFRESH_COOKIE: &str = "CuttleRefreshToken";

const AUDIENCE: &str = "cuttle-api";
const REFRESH_PATH: &str = "/api/users";

/// Signing keys and settings of sessions.
pub struct Auth {
    /// Lifetimes and throttling.
    pub config: AuthConfig,
    keys: Option<(EncodingKey, DecodingKey)>,
    issuer: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .field("keys", &self.keys.as_ref().map(|_| "********"))
            .finish()
    }
}

impl Auth {
    /// Sessions signed with a key derived from `keyring`; without one, password sign-in is
    /// refused with a reason.
    pub fn new(
        config: AuthConfig,
        keyring: Option<&cuttle_secrets::Keyring>,
        installation_id: &str,
    ) -> Auth {
        let keys = keyring.map(|ring| {
            let secret = ring.derive_key("cuttle session tokens v1");
            (
                EncodingKey::from_secret(&secret),
                DecodingKey::from_secret(&secret),
            )
        });
        Auth {
            config,
            keys,
            issuer: format!("cuttle:{installation_id}"),
        }
    }

    fn keys(&self) -> ApiResult<&(EncodingKey, DecodingKey)> {
        self.keys.as_ref().ok_or_else(|| {
            ApiError::unavailable(
                "Password sign-in without secrets.master_key (sessions are signed with a key derived from it)",
            )
        })
    }

    fn validation(&self) -> Validation {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        validation
    }

    /// Signs an access token for a session.
    fn sign(&self, claims: &Claims) -> ApiResult<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.keys()?.0)
            .map_err(ApiError::internal)
    }

    /// Verifies an access token: signature, algorithm, issuer, audience, expiry.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let keys = self.keys.as_ref()?;
        jsonwebtoken::decode::<Claims>(token, &keys.1, &self.validation())
            .ok()
            .map(|data| data.claims)
    }
}

/// What an access token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's organisation.
    pub org: String,
    /// The session (revocable).
    pub sid: String,
    /// The CSRF token writes made with the cookie must echo.
    pub csrf: String,
    /// Issuer: this installation.
    pub iss: String,
    /// Audience: the api.
    pub aud: String,
    /// Issued at (seconds).
    pub iat: i64,
    /// Expiry (seconds).
    pub exp: i64,
}

/// The session routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/users/login", post(login))
        .route("/api/users/logout", post(logout))
        .route("/api/users/refresh", post(refresh))
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Authenticates by session: a `Bearer` JWT, or the access cookie (with the CSRF header on
/// writes). `Ok(None)` when the request carries neither.
pub async fn authenticate(state: &AppState, parts: &Parts) -> ApiResult<Option<User>> {
    let bearer = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.starts_with("API-"));
    let (token, from_cookie) = match bearer {
        Some(token) => (token, false),
        None => match cookie(&parts.headers, ACCESS_COOKIE) {
            Some(token) => (token, true),
            None => return Ok(None),
        },
    };
    let claims = state
        .auth
        .verify(token)
        .ok_or_else(ApiError::unauthorized)?;
    if from_cookie && !parts.method.is_safe() {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !constant_time_eq(sent.as_bytes(), claims.csrf.as_bytes()) {
            return Err(ApiError::csrf());
        }
    }
    if !sessions::is_live(state.store.conn(), &claims.sid).await? {
        return Err(ApiError::unauthorized());
    }
    let user = users::get_user(state.store.conn(), &claims.sub)
        .await?
        .filter(|u| u.is_active && u.organisation_id.as_deref() == Some(claims.org.as_str()))
        .ok_or_else(ApiError::unauthorized)?;
    Ok(Some(user))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Revokes a session: its access tokens stop working at once.
pub async fn end_session(state: &AppState, session_id: &str) -> ApiResult<()> {
    let txn = state.store.conn().begin().await?;
    sessions::revoke(&txn, session_id).await?;
    txn.commit().await?;
    Ok(())
}

/// The verified claims of the request's access cookie, if any.
pub fn cookie_claims(state: &AppState, headers: &HeaderMap) -> Option<Claims> {
    state.auth.verify(cookie(headers, ACCESS_COOKIE)?)
}

/// Hashes a password with argon2id (off the async threads).
pub async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

/// Verifies a password against a stored hash. Without a hash (unknown user, service account)
/// the password is hashed anyway, so a wrong username costs as much time as a wrong password.
async fn verify_password(password: String, hash: Option<String>) -> ApiResult<bool> {
    tokio::task::spawn_blocking(move || match hash {
        Some(text) => match PasswordHash::new(&text) {
            Ok(parsed) => Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(err) => {
                tracing::error!(error = %err, "a stored password hash does not parse");
                false
            }
        },
        None => {
            let _ = Argon2::default().hash_password(password.as_bytes());
            false
        }
    })
    .await
    .map_err(ApiError::internal)
}

/// Checks a new password: 10 to 128 characters.
pub fn check_password(password: &str) -> ApiResult<()> {
    let length = password.chars().count();
    if !(10..=128).contains(&length) {
        return Err(ApiError::invalid_field(
            "Password",
            "a password has 10 to 128 characters",
        ));
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
struct LoginCommand {
    username: String,
    password: String,
    remember_me: bool,
}

/// The client's address, for throttling.
pub fn client_address(parts_extensions: &axum::http::Extensions) -> String {
    parts_extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// 429 with `Retry-After` when an account or address has failed too often.
async fn throttled(state: &AppState, keys: &[(String, u32)]) -> ApiResult<()> {
    for (key, limit) in keys {
        let failures = match state.cache.get(key).await {
            Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).parse::<u32>().unwrap_or(0),
            Ok(None) => 0,
            Err(err) => {
                // Failing open would make brute force free whenever the cache is down.
                return Err(ApiError::internal(format!(
                    "login throttle unavailable: {err}"
                )));
            }
        };
        if failures >= *limit {
            return Err(ApiError::too_many_requests(
                "Too many failed sign-in attempts. Try again later.",
                state.auth.config.login_window_secs,
            ));
        }
    }
    Ok(())
}

async fn login(
    State(state): State<AppState>,
    parts: Parts,
    JsonBody(body): JsonBody<LoginCommand>,
) -> ApiResult<Response> {
    let user = check_password_login(
        &state,
        &client_address(&parts.extensions),
        &body.username,
        body.password,
    )
    .await?;
    let cookies = start_session(&state, &user).await?;
    Ok(with_cookies(
        Json(present_user(&user)).into_response(),
        cookies,
    ))
}

/// Checks a username and password, throttled per account and per client address; the user
/// when they match.
pub async fn check_password_login(
    state: &AppState,
    address: &str,
    username: &str,
    password: String,
) -> ApiResult<User> {
    let config = &state.auth.config;
    state.auth.keys()?;
    let raw_username = username.trim();
    let username = raw_username.to_lowercase();
    if username.is_empty() {
        return Err(ApiError::invalid_field(
            "Username",
            "a username is required",
        ));
    }
    let window = Duration::from_secs(config.login_window_secs.max(1));
    let keys = [
        (
            format!("login-failures:account:{username}"),
            config.login_attempts_per_account,
        ),
        (
            format!("login-failures:address:{address}"),
            config.login_attempts_per_address,
        ),
    ];
    throttled(state, &keys).await?;
    let user = users::find_user_by_name(state.store.conn(), raw_username).await?;
    let usable = user
        .as_ref()
        .filter(|u| u.is_active && !u.is_service && u.organisation_id.is_some());
    let ok = verify_password(password, usable.and_then(|u| u.password_hash.clone())).await?;
    if let Some(known) = usable {
        crate::events::record_login(state, known, "a password", address, ok).await;
    }
    let Some(user) = usable.filter(|_| ok) else {
        for (key, _) in &keys {
            if let Err(err) = state.cache.increment(key, 1, window).await {
                tracing::warn!(error = %err, "could not count a failed sign-in");
            }
        }
        return Err(ApiError::unauthorized_with("Invalid username or password."));
    };
    if let Err(err) = state.cache.delete(&keys[0].0).await {
        tracing::warn!(error = %err, "could not reset the account's failed sign-ins");
    }
    Ok(user.clone())
}

/// Starts a session for `user` and answers the cookies that carry it.
pub async fn start_session(state: &AppState, user: &User) -> ApiResult<Vec<String>> {
    let organisation = user
        .organisation_id
        .clone()
        .ok_or_else(ApiError::unauthorized)?;
    let refresh = random_token();
    let session_id = uuid::Uuid::new_v4().to_string();
    let expires = Utc::now()
        + chrono::Duration::seconds(
            i64::try_from(state.auth.config.refresh_token_secs).unwrap_or(i64::MAX / 2),
        );
    let txn = state.store.conn().begin().await?;
    sessions::insert_session(&txn, &session_id, &user.id, &hash(&refresh), expires).await?;
    txn.commit().await?;
    issue(state, &user.id, &organisation, &session_id, &refresh)
}

fn issue(
    state: &AppState,
    user_id: &str,
    organisation: &str,
    session_id: &str,
    refresh: &str,
) -> ApiResult<Vec<String>> {
    let config = &state.auth.config;
    let now = Utc::now().timestamp();
    let csrf = random_token();
    let claims = Claims {
        sub: user_id.to_owned(),
        org: organisation.to_owned(),
        sid: session_id.to_owned(),
        csrf: csrf.clone(),
        iss: state.auth.issuer.clone(),
        aud: AUDIENCE.to_owned(),
        iat: now,
        exp: now + i64::try_from(config.access_token_secs).unwrap_or(900),
    };
    let token = state.auth.sign(&claims)?;
    let secure = if config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    Ok(vec![
        format!(
            "{ACCESS_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            config.access_token_secs
        ),
        format!(
            "{REFRESH_COOKIE}={refresh}; Path={REFRESH_PATH}; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            config.refresh_token_secs
        ),
        format!(
            "{CSRF_COOKIE}={csrf}; Path=/; SameSite=Strict; Max-Age={}{secure}",
            config.access_token_secs
        ),
    ])
}

/// Adds `Set-Cookie` headers to a response.
pub fn with_cookies(mut response: Response, cookies: Vec<String>) -> Response {
    for cookie in cookies {
        match HeaderValue::from_str(&cookie) {
            Ok(value) => {
                response.headers_mut().append(SET_COOKIE, value);
            }
            Err(err) => tracing::error!(error = %err, "a session cookie is not a valid header"),
        }
    }
    response
}

/// Cookies that end a session in the browser.
pub fn cleared_cookies() -> Vec<String> {
    vec![
        format!("{ACCESS_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
        format!("{REFRESH_COOKIE}=; Path={REFRESH_PATH}; HttpOnly; SameSite=Strict; Max-Age=0"),
        format!("{CSRF_COOKIE}=; Path=/; SameSite=Strict; Max-Age=0"),
    ]
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

fn hash(token: &str) -> String {
    crate::extract::hash_api_key(token)
}

async fn refresh(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let token = cookie(&headers, REFRESH_COOKIE).ok_or_else(ApiError::unauthorized)?;
    let txn = state.store.conn().begin().await?;
    let session = sessions::live_session_by_refresh(&txn, &hash(token))
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    let user = users::get_user(&txn, &session.user_id)
        .await?
        .filter(|u| u.is_active)
        .ok_or_else(ApiError::unauthorized)?;
    let organisation = user
        .organisation_id
        .clone()
        .ok_or_else(ApiError::unauthorized)?;
    let next = random_token();
    // Rotation: a refresh token works once; a replayed one finds nothing to rotate.
    if !sessions::rotate_refresh(&txn, &session.id, &hash(token), &hash(&next)).await? {
        return Err(ApiError::unauthorized());
    }
    txn.commit().await?;
    let cookies = issue(&state, &user.id, &organisation, &session.id, &next)?;
    Ok(with_cookies(
        Json(present_user(&user)).into_response(),
        cookies,
    ))
}

async fn logout(State(state): State<AppState>, parts: Parts) -> ApiResult<Response> {
    let token = cookie(&parts.headers, ACCESS_COOKIE).or_else(|| {
        parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    });
    let session = match token.and_then(|t| state.auth.verify(t)) {
        Some(claims) => Some(claims.sid),
        None => match cookie(&parts.headers, REFRESH_COOKIE) {
            Some(refresh) => sessions::live_session_by_refresh(state.store.conn(), &hash(refresh))
                .await?
                .map(|s| s.id),
            None => None,
        },
    };
    if let Some(id) = session {
        end_session(&state, &id).await?;
    }
    Ok(with_cookies(
        StatusCode::OK.into_response(),
        cleared_cookies(),
    ))
}
