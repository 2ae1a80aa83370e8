//! Organisation sign-in through the company's OpenID Connect provider.
//!
//! - An organisation's administrator sets its provider with `PUT /api/sso` (issuer, client id and
//!   secret, allowed email domains, the name of the groups claim). The secret is sealed with the
//!   master key and never returned.
//! - `GET /app/sso?organisation=<slug or email address>` discovers the provider and redirects
//!   to it: authorization code flow with PKCE (S256), a random `state` and `nonce` kept in the
//!   cache (shared by api replicas) for ten minutes and usable once.
//! - `GET /app/sso/callback` takes the state back, exchanges the code with the PKCE verifier and
//!   the client secret, and verifies the ID token (signature against the provider's keys,
//!   issuer, audience, expiry, nonce) with the openidconnect crate. The email must be verified
//!   and in an allowed domain. The user is created on first sign-in; their membership of the
//!   teams that name external groups follows the groups claim at every sign-in. Then a session
//!   starts, as after a password sign-in.

use crate::AppState;
use crate::authz::TEAM_KIND;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, Principal};
use crate::sessions;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use cuttle_store::organisations::{self, Organisation};
use cuttle_store::users::{self, User};
use cuttle_store::{ConnectionTrait, TransactionTrait};
use cuttle_wire::security::Team;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Document kind of an organisation's SSO settings (one per organisation).
pub const SSO_KIND: &str = "SsoSettings";
const SSO_ID: &str = "sso-oidc";
const STATE_TTL: Duration = Duration::from_secs(600);

/// An organisation's OpenID Connect provider, as stored (`client_secret` sealed).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct SsoSettings {
    /// Whether members may sign in through it.
    pub is_enabled: bool,
    /// The provider's issuer URL (its discovery document is under it).
    pub issuer: String,
    /// Cuttle's client id at the provider.
    pub client_id: String,
    /// The client secret: sealed when stored, `null` when shown; an empty value on `PUT`
    /// keeps the stored one.
    pub client_secret: Option<String>,
    /// Only emails in these domains may sign in (at least one).
    pub allowed_email_domains: Vec<String>,
    /// The ID token claim that lists the user's groups (default `groups`).
    pub groups_claim: String,
    /// Whether a secret is stored (output only).
    pub has_client_secret: bool,
}

/// The settings routes (`/api/sso`) and the sign-in routes (`/app/sso...`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/sso", get(get_settings).put(put_settings))
        .route("/app/sso", get(start))
        .route("/app/sso/callback", get(callback))
}

async fn load_settings(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
) -> ApiResult<Option<SsoSettings>> {
    match organisations::get_document(conn, organisation_id, SSO_KIND, SSO_ID).await? {
        Some(doc) => Ok(Some(organisations::decode(&doc)?)),
        None => Ok(None),
    }
}

fn shown(mut settings: SsoSettings) -> SsoSettings {
    settings.has_client_secret = settings.client_secret.is_some();
    settings.client_secret = None;
    settings
}

async fn get_settings(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<SsoSettings>> {
    let settings = load_settings(state.store.conn(), &principal.organisation_id)
        .await?
        .unwrap_or_else(|| SsoSettings {
            groups_claim: "groups".into(),
            ..SsoSettings::default()
        });
    Ok(Json(shown(settings)))
}

async fn put_settings(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<SsoSettings>,
) -> ApiResult<Json<SsoSettings>> {
    let issuer = body.issuer.trim().trim_end_matches('/').to_owned();
    let url = reqwest::Url::parse(&issuer)
        .map_err(|err| ApiError::invalid_field("Issuer", format!("not a URL: {err}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ApiError::invalid_field(
            "Issuer",
            "the issuer is an http(s) URL",
        ));
    }
    if body.client_id.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "ClientId",
            "a client id is required",
        ));
    }
    let domains: Vec<String> = body
        .allowed_email_domains
        .iter()
        .map(|d| d.trim().trim_start_matches('@').to_lowercase())
        .filter(|d| !d.is_empty())
        .collect();
    if domains.is_empty()
        || domains
            .iter()
            .any(|d| !d.contains('.') || d.contains(char::is_whitespace))
    {
        return Err(ApiError::invalid_field(
            "AllowedEmailDomains",
            "list at least one email domain, like example.com",
        ));
    }
    let keyring = state.keyring.as_deref().ok_or_else(|| {
        ApiError::invalid_field(
            "ClientSecret",
            "the client secret needs secrets.master_key to be stored",
        )
    })?;
    let txn = state.store.conn().begin().await?;
    let current = load_settings(&txn, &principal.organisation_id).await?;
    let client_secret = match body.client_secret.filter(|s| !s.is_empty()) {
        Some(secret) => Some(keyring.seal(&secret).map_err(ApiError::internal)?),
        None => current.as_ref().and_then(|c| c.client_secret.clone()),
    };
    if client_secret.is_none() {
        return Err(ApiError::invalid_field(
            "ClientSecret",
            "a client secret is required",
        ));
    }
    let settings = SsoSettings {
        is_enabled: body.is_enabled,
        issuer,
        client_id: body.client_id.trim().to_owned(),
        client_secret,
        allowed_email_domains: domains,
        groups_claim: match body.groups_claim.trim() {
            "" => "groups".to_owned(),
            claim => claim.to_owned(),
        },
        has_client_secret: true,
    };
    let saved = organisations::replace_document(
        &txn,
        &principal.organisation_id,
        SSO_KIND,
        SSO_ID,
        SSO_ID,
        &settings,
        "",
    )
    .await?;
    if !saved {
        organisations::insert_document(
            &txn,
            &principal.organisation_id,
            SSO_KIND,
            SSO_ID,
            SSO_ID,
            &settings,
            "",
        )
        .await?;
    }
    txn.commit().await?;
    Ok(Json(shown(settings)))
}

/// Our reqwest as the openidconnect crate's HTTP client. It never follows redirects (a
/// provider must not be able to point Cuttle at internal addresses).
struct OidcHttp(reqwest::Client);

impl OidcHttp {
    fn new() -> ApiResult<OidcHttp> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map(OidcHttp)
            .map_err(ApiError::internal)
    }
}

impl<'c> openidconnect::AsyncHttpClient<'c> for OidcHttp {
    type Error = OidcHttpError;
    type Future = Pin<
        Box<dyn Future<Output = Result<openidconnect::HttpResponse, OidcHttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request).map_err(OidcHttpError::from)?;
            let response = self.0.execute(request).await.map_err(OidcHttpError::from)?;
            let mut builder = openidconnect::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = response.bytes().await.map_err(OidcHttpError::from)?;
            builder
                .body(body.to_vec())
                .map_err(|err| OidcHttpError::Response(err.to_string()))
        })
    }
}

/// A failed HTTP exchange with the provider.
#[derive(Debug, thiserror::Error)]
pub enum OidcHttpError {
    /// The request failed.
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    /// The response could not be rebuilt.
    #[error("unreadable provider response: {0}")]
    Response(String),
}

/// What the callback needs back: kept in the cache under the `state` value, used once.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    organisation_id: String,
    pkce_verifier: String,
    nonce: String,
    redirect_uri: String,
}

fn pending_key(state: &str) -> String {
    format!("sso-state:{state}")
}

fn login_page(status: StatusCode, message: impl Into<String>) -> Response {
    crate::portal::login_page_with_error(status, &message.into())
}

/// The organisation a person names by slug or by their email address's domain.
async fn find_organisation(
    state: &AppState,
    named: &str,
) -> ApiResult<Option<(Organisation, SsoSettings)>> {
    let conn = state.store.conn();
    let named = named.trim().to_lowercase();
    if let Some((_, domain)) = named.rsplit_once('@') {
        for doc in organisations::documents_of_kind(conn, SSO_KIND).await? {
            let settings: SsoSettings = organisations::decode(&doc)?;
            if settings.is_enabled && settings.allowed_email_domains.iter().any(|d| d == domain) {
                let Some(organisation) =
                    organisations::get_organisation(conn, &doc.organisation_id).await?
                else {
                    continue;
                };
                return Ok(Some((organisation, settings)));
            }
        }
        return Ok(None);
    }
    let Some(organisation) = organisations::find_organisation_by_slug(conn, &named).await? else {
        return Ok(None);
    };
    match load_settings(conn, &organisation.id).await? {
        Some(settings) if settings.is_enabled => Ok(Some((organisation, settings))),
        _ => Ok(None),
    }
}

fn redirect_uri(headers: &HeaderMap, state: &AppState) -> String {
    let scheme = if state.auth.config.secure_cookies {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("{scheme}://{host}/app/sso/callback")
}

async fn start(State(state): State<AppState>, headers: HeaderMap, params: Params) -> Response {
    let Some(named) = params.get("organisation") else {
        return login_page(
            StatusCode::BAD_REQUEST,
            "Enter your organisation's slug or your work email address.",
        );
    };
    let found = match find_organisation(&state, named).await {
        Ok(found) => found,
        Err(err) => return err.into_response(),
    };
    let Some((organisation, settings)) = found else {
        return login_page(
            StatusCode::NOT_FOUND,
            format!("No organisation with single sign-on matches '{named}'."),
        );
    };
    let http = match OidcHttp::new() {
        Ok(http) => http,
        Err(err) => return err.into_response(),
    };
    let redirect = redirect_uri(&headers, &state);
    let issuer = match IssuerUrl::new(settings.issuer.clone()) {
        Ok(issuer) => issuer,
        Err(err) => {
            return login_page(
                StatusCode::BAD_GATEWAY,
                format!("The SSO issuer is not valid: {err}"),
            );
        }
    };
    let metadata = match CoreProviderMetadata::discover_async(issuer, &http).await {
        Ok(metadata) => metadata,
        Err(err) => {
            tracing::warn!(organisation = %organisation.id, error = %err, "SSO discovery failed");
            return login_page(
                StatusCode::BAD_GATEWAY,
                "Your organisation's sign-in provider could not be reached.",
            );
        }
    };
    let redirect_url = match RedirectUrl::new(redirect.clone()) {
        Ok(url) => url,
        Err(err) => return ApiError::internal(err).into_response(),
    };
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(settings.client_id.clone()),
        None,
    )
    .set_redirect_uri(redirect_url);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new(settings.groups_claim.clone()))
        .set_pkce_challenge(challenge)
        .url();
    let pending = Pending {
        organisation_id: organisation.id,
        pkce_verifier: verifier.secret().clone(),
        nonce: nonce.secret().clone(),
        redirect_uri: redirect,
    };
    let stored = serde_json::to_vec(&pending).map_err(ApiError::internal);
    let stored = match stored {
        Ok(bytes) => state
            .cache
            .set(&pending_key(csrf.secret()), &bytes, Some(STATE_TTL))
            .await
            .map_err(ApiError::internal),
        Err(err) => Err(err),
    };
    if let Err(err) = stored {
        return err.into_response();
    }
    Redirect::to(url.as_str()).into_response()
}

async fn callback(State(state): State<AppState>, params: Params) -> Response {
    match finish(&state, &params).await {
        Ok(cookies) => sessions::with_cookies(Redirect::to("/app").into_response(), cookies),
        Err((status, message)) => login_page(status, message),
    }
}

type Refusal = (StatusCode, String);

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    (status, message.into())
}

async fn finish(state: &AppState, params: &Params) -> Result<Vec<String>, Refusal> {
    if let Some(error) = params.get("error") {
        let description = params.get("error_description").unwrap_or_default();
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            format!("Your sign-in provider refused: {error} {description}"),
        ));
    }
    let (Some(code), Some(returned_state)) = (params.get("code"), params.get("state")) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "The sign-in response has no code or state.",
        ));
    };
    // The state is used once: taken out before anything else happens.
    let key = pending_key(returned_state);
    let pending = state
        .cache
        .get(&key)
        .await
        .map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if let Err(err) = state.cache.delete(&key).await {
        tracing::warn!(error = %err, "could not discard a used SSO state");
    }
    let pending: Pending = pending
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                "This sign-in link is unknown, used or expired: start again.",
            )
        })?;
    let conn = state.store.conn();
    let internal = |err: ApiError| refuse(err.status(), err.describe());
    let settings = load_settings(conn, &pending.organisation_id)
        .await
        .map_err(internal)?
        .filter(|s| s.is_enabled)
        .ok_or_else(|| {
            refuse(
                StatusCode::UNAUTHORIZED,
                "Single sign-on is not enabled for this organisation.",
            )
        })?;
    let http = OidcHttp::new().map_err(internal)?;
    let issuer = IssuerUrl::new(settings.issuer.clone())
        .map_err(|e| refuse(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let metadata = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .map_err(|e| {
            refuse(
                StatusCode::BAD_GATEWAY,
                format!("The sign-in provider could not be reached: {e}"),
            )
        })?;
    let secret = match (&settings.client_secret, state.keyring.as_deref()) {
        (Some(sealed), Some(ring)) => ring
            .open(sealed)
            .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        _ => {
            return Err(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "No client secret is available.",
            ));
        }
    };
    let redirect = RedirectUrl::new(pending.redirect_uri.clone())
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(settings.client_id.clone()),
        Some(ClientSecret::new(secret)),
    )
    .set_redirect_uri(redirect);
    let token = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| refuse(StatusCode::BAD_GATEWAY, e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
        .request_async(&http)
        .await
        .map_err(|e| {
            refuse(
                StatusCode::UNAUTHORIZED,
                format!("The sign-in code was refused: {e}"),
            )
        })?;
    let id_token = token.id_token().ok_or_else(|| {
        refuse(
            StatusCode::UNAUTHORIZED,
            "The provider returned no ID token.",
        )
    })?;
    let identity = checked_identity(
        &client.id_token_verifier(),
        id_token,
        &Nonce::new(pending.nonce.clone()),
        &settings,
    )?;
    let user = provision(state, &pending.organisation_id, &identity)
        .await
        .map_err(internal)?;
    crate::events::record_login(state, &user, "OpenID Connect", "", true).await;
    sessions::start_session(state, &user)
        .await
        .map_err(internal)
}

/// Who signed in, from a verified ID token.
#[derive(Debug, Clone, PartialEq)]
struct Identity {
    email: String,
    name: String,
    /// `<issuer>|<subject>`.
    subject: String,
    groups: Vec<String>,
}

/// Verifies the ID token as the organisation's provider must have issued it for Cuttle
/// (signature by the provider's keys, issuer, audience, expiry, nonce; through openidconnect),
/// then the organisation's own rules: an email not marked unverified, in an allowed domain.
fn checked_identity(
    verifier: &openidconnect::core::CoreIdTokenVerifier<'_>,
    id_token: &openidconnect::core::CoreIdToken,
    nonce: &Nonce,
    settings: &SsoSettings,
) -> Result<Identity, Refusal> {
    let claims = id_token.claims(verifier, nonce).map_err(|e| {
        refuse(
            StatusCode::UNAUTHORIZED,
            format!("The ID token was refused: {e}"),
        )
    })?;
    let email = claims
        .email()
        .map(|e| e.as_str().to_lowercase())
        .ok_or_else(|| {
            refuse(
                StatusCode::UNAUTHORIZED,
                "The ID token has no email address.",
            )
        })?;
    if claims.email_verified() == Some(false) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "Your email address is not verified by your sign-in provider.",
        ));
    }
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d.to_owned())
        .unwrap_or_default();
    if !settings.allowed_email_domains.contains(&domain) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            format!("Email addresses at '{domain}' may not sign in to this organisation."),
        ));
    }
    let name = claims
        .name()
        .and_then(|n| n.get(None))
        .map(|n| n.as_str().to_owned())
        .unwrap_or_else(|| email.clone());
    Ok(Identity {
        subject: format!("{}|{}", settings.issuer, claims.subject().as_str()),
        // The token is verified: its payload can be read for the groups claim.
        groups: groups_claim(&id_token.to_string(), &settings.groups_claim),
        email,
        name,
    })
}

/// The string values of a claim of a (verified) JWT's payload.
fn groups_claim(jwt: &str, claim: &str) -> Vec<String> {
    use base64::Engine;
    let Some(payload) = jwt.split('.').nth(1) else {
        return Vec::new();
    };
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('='))
    else {
        return Vec::new();
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    match &value[claim] {
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        serde_json::Value::String(one) => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// Finds or creates (just in time) the organisation's user for this identity, and makes their
/// membership of the teams that name external groups follow `groups`.
async fn provision(
    state: &AppState,
    organisation_id: &str,
    identity: &Identity,
) -> ApiResult<User> {
    let (email, name, subject, groups) = (
        identity.email.as_str(),
        identity.name.as_str(),
        identity.subject.as_str(),
        &identity.groups,
    );
    let txn = state.store.conn().begin().await?;
    let user = match users::find_user_by_external_id(&txn, subject).await? {
        Some(user) if user.organisation_id.as_deref() == Some(organisation_id) => user,
        Some(_) => {
            return Err(ApiError::unauthorized_with(
                "This identity belongs to another organisation.",
            ));
        }
        None => {
            if users::find_user_by_name(&txn, email).await?.is_some() {
                return Err(ApiError::unauthorized_with(
                    "A user with this email address already exists; ask your administrator to link it.",
                ));
            }
            users::insert_user(
                &txn,
                User {
                    id: cuttle_store::next_id(&txn, "Users").await?,
                    username: email.to_owned(),
                    display_name: name.to_owned(),
                    email: Some(email.to_owned()),
                    is_service: false,
                    is_active: true,
                    created_at: chrono::Utc::now(),
                    organisation_id: Some(organisation_id.to_owned()),
                    password_hash: None,
                    external_id: Some(subject.to_owned()),
                    email_verified: true,
                },
            )
            .await?
        }
    };
    if !user.is_active {
        return Err(ApiError::unauthorized_with("Your account is deactivated."));
    }
    for doc in organisations::list_documents(&txn, organisation_id, &[TEAM_KIND]).await? {
        let team: Team = organisations::decode(&doc)?;
        if team.external_security_groups.is_empty() {
            continue;
        }
        let belongs = team
            .external_security_groups
            .iter()
            .any(|g| groups.contains(&g.id));
        crate::teams::set_membership(&txn, organisation_id, team, &user.id, belongs).await?;
    }
    txn.commit().await?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    //! The ID-token refusals a real provider will not produce on demand: tokens signed here
    //! with a test RSA key stand in for a hostile or broken provider.
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
    use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use openidconnect::core::{CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet};
    use std::str::FromStr;

    const ISSUER: &str = "https://idp.example.com";
    const CLIENT: &str = "cuttle";

    struct Idp {
        key: KeyPair,
        jwks: CoreJsonWebKeySet,
    }

    fn idp() -> Idp {
        let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let public: PublicKeyComponents<Vec<u8>> = key.public_key().into();
        let jwks = serde_json::from_value(serde_json::json!({"keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "test",
            "n": URL_SAFE_NO_PAD.encode(&public.n),
            "e": URL_SAFE_NO_PAD.encode(&public.e),
        }]}))
        .unwrap();
        Idp { key, jwks }
    }

    impl Idp {
        fn sign(&self, claims: serde_json::Value) -> CoreIdToken {
            let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"test","typ":"JWT"}"#);
            let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
            let input = format!("{header}.{payload}");
            let mut signature = vec![0; self.key.public_modulus_len()];
            self.key
                .sign(
                    &RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    input.as_bytes(),
                    &mut signature,
                )
                .unwrap();
            CoreIdToken::from_str(&format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
                .unwrap()
        }

        fn verifier(&self) -> CoreIdTokenVerifier<'static> {
            CoreIdTokenVerifier::new_confidential_client(
                ClientId::new(CLIENT.into()),
                ClientSecret::new("secret".into()),
                IssuerUrl::new(ISSUER.into()).unwrap(),
                self.jwks.clone(),
            )
        }
    }

    fn claims(change: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        let mut claims = serde_json::json!({
            "iss": ISSUER, "aud": CLIENT, "sub": "alice-1", "nonce": "the-nonce",
            "iat": now, "exp": now + 300,
            "email": "alice@example.com", "email_verified": true, "name": "Alice",
            "groups": ["developers", "ops"],
        });
        change(&mut claims);
        claims
    }

    fn settings() -> SsoSettings {
        SsoSettings {
            is_enabled: true,
            issuer: ISSUER.into(),
            client_id: CLIENT.into(),
            allowed_email_domains: vec!["example.com".into()],
            groups_claim: "groups".into(),
            ..SsoSettings::default()
        }
    }

    fn check(idp: &Idp, token: &CoreIdToken, nonce: &str) -> Result<Identity, Refusal> {
        checked_identity(
            &idp.verifier(),
            token,
            &Nonce::new(nonce.into()),
            &settings(),
        )
    }

    #[test]
    fn a_valid_token_gives_the_identity_and_groups() {
        let idp = idp();
        let identity = check(&idp, &idp.sign(claims(|_| {})), "the-nonce").unwrap();
        assert_eq!(identity.email, "alice@example.com");
        assert_eq!(identity.subject, format!("{ISSUER}|alice-1"));
        assert_eq!(identity.groups, vec!["developers", "ops"]);
    }

    #[test]
    fn wrong_nonce_audience_issuer_expiry_and_signature_are_refused() {
        let idp = idp();
        let refused = |token: CoreIdToken, nonce: &str| {
            let (status, message) = check(&idp, &token, nonce).unwrap_err();
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{message}");
            message
        };
        refused(idp.sign(claims(|_| {})), "another-nonce");
        refused(
            idp.sign(claims(|c| c["aud"] = "someone-else".into())),
            "the-nonce",
        );
        refused(
            idp.sign(claims(|c| c["iss"] = "https://foreign.example.com".into())),
            "the-nonce",
        );
        let past = chrono::Utc::now().timestamp() - 3_600;
        refused(
            idp.sign(claims(|c| {
                c["iat"] = (past - 300).into();
                c["exp"] = past.into();
            })),
            "the-nonce",
        );
        // Signed by a key that is not the provider's.
        let other = super::tests::idp();
        refused(other.sign(claims(|_| {})), "the-nonce");
        refused(
            idp.sign(claims(|c| c["email_verified"] = false.into())),
            "the-nonce",
        );
    }

    #[test]
    fn other_email_domains_are_forbidden() {
        let idp = idp();
        let token = idp.sign(claims(|c| c["email"] = "mallory@elsewhere.example".into()));
        let (status, _) = check(&idp, &token, "the-nonce").unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}
