//! The web portal's first pages (`/app`): sign up (a new organisation, its owner and `Default`
//! space, then signed in), sign in, the dashboard, and sign out. Plain HTML forms served by the
//! api, rendered with minijinja (autoescaped) from `services/api/templates/`.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::sessions;
use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, body::Bytes};
use cuttle_store::documents::{self, ListQuery};
use cuttle_wire::resources::Space;
use minijinja::{Environment, context};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The portal's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/app", get(dashboard))
        .route("/app/", get(dashboard))
        .route("/app/signup", get(signup_form).post(signup))
        .route("/app/login", get(login_form).post(login))
        .route("/app/logout", post(logout))
}

fn templates() -> &'static Environment<'static> {
    static TEMPLATES: OnceLock<Environment<'static>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in [
            ("base.html", include_str!("../templates/base.html")),
            ("signup.html", include_str!("../templates/signup.html")),
            ("login.html", include_str!("../templates/login.html")),
            (
                "dashboard.html",
                include_str!("../templates/dashboard.html"),
            ),
            ("join.html", include_str!("../templates/join.html")),
        ] {
            if let Err(err) = env.add_template(name, source) {
                // The templates are part of the binary: a broken one is a build mistake that
                // the portal tests catch; the page then answers 500.
                tracing::error!(template = name, error = %err, "a portal template does not parse");
            }
        }
        env
    })
}

/// Renders a portal page.
pub fn page(status: StatusCode, name: &str, values: minijinja::Value) -> Response {
    let rendered = templates()
        .get_template(name)
        .and_then(|template| template.render(values));
    match rendered {
        Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(err) => ApiError::internal(format!("rendering {name}: {err}")).into_response(),
    }
}

/// The signup form's fields (the password is never echoed back).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct SignupForm {
    #[serde(default)]
    organisation: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default, skip_serializing)]
    password: String,
}

async fn signup_form() -> Response {
    page(
        StatusCode::OK,
        "signup.html",
        context! { form => minijinja::Value::from(minijinja::value::Serde(SignupForm::default())), error => None::<String> },
    )
}

/// Reads a urlencoded form (every field a string); a malformed one is a 400 page rather than
/// axum's plain text.
pub fn read_form<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|err| err.to_string())
}

async fn signup(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: SignupForm = match read_form(&body) {
        Ok(form) => form,
        Err(err) => {
            return page(
                StatusCode::BAD_REQUEST,
                "signup.html",
                context! { form => minijinja::Value::from(minijinja::value::Serde(SignupForm::default())), error => format!("The form could not be read: {err}") },
            );
        }
    };
    match create_organisation(&state, &headers, &form).await {
        Ok(cookies) => sessions::with_cookies(Redirect::to("/app").into_response(), cookies),
        Err(err) => page(
            err.status(),
            "signup.html",
            context! { form => minijinja::Value::from(minijinja::value::Serde(&form)), error => err.describe() },
        ),
    }
}

async fn create_organisation(
    state: &AppState,
    headers: &HeaderMap,
    form: &SignupForm,
) -> ApiResult<Vec<String>> {
    let username = crate::users::check_username(&form.username)?;
    let email = crate::users::check_email(Some(form.email.clone()))?
        .ok_or_else(|| ApiError::invalid_field("EmailAddress", "an email address is required"))?;
    sessions::check_password(&form.password)?;
    let hash = sessions::hash_password(form.password.clone()).await?;
    let created = crate::organisations::create(
        &state.store,
        crate::organisations::Signup {
            name: &form.organisation,
            slug: &form.slug,
            username: &username,
            email: Some(&email),
            password_hash: Some(hash),
            // With mail, the address is proven by a link; without, nothing could prove it.
            email_verified: state.mailer.is_none(),
        },
    )
    .await?;
    if let Err(err) = crate::invitations::start_verification(state, &created.owner, headers).await {
        // The organisation exists; the owner can ask for a new link once signed in.
        tracing::warn!(error = %err.describe(), "the verification mail could not be sent");
    }
    tracing::info!(organisation = %created.organisation.id, owner = %created.owner.id, "an organisation signed up");
    sessions::start_session(state, &created.owner).await
}

async fn login_form() -> Response {
    page(
        StatusCode::OK,
        "login.html",
        context! { username => "", error => None::<String> },
    )
}

/// The sign-in page showing why a sign-in failed (also for single sign-on).
pub fn login_page_with_error(status: StatusCode, error: &str) -> Response {
    page(
        status,
        "login.html",
        context! { username => "", error => error },
    )
}

#[derive(Debug, Default, Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn login(State(state): State<AppState>, parts: Parts, body: Bytes) -> Response {
    let form: LoginForm = read_form(&body).unwrap_or_default();
    let address = sessions::client_address(&parts.extensions);
    let result =
        match sessions::check_password_login(&state, &address, &form.username, form.password).await
        {
            Ok(user) => sessions::start_session(&state, &user).await,
            Err(err) => Err(err),
        };
    match result {
        Ok(cookies) => sessions::with_cookies(Redirect::to("/app").into_response(), cookies),
        Err(err) => page(
            err.status(),
            "login.html",
            context! { username => form.username, error => err.describe() },
        ),
    }
}

#[derive(Debug, Serialize)]
struct SpaceRow {
    name: String,
    is_default: bool,
    projects: u64,
    environments: u64,
}

async fn dashboard(State(state): State<AppState>, parts: Parts) -> Response {
    match render_dashboard(&state, &parts).await {
        Ok(Some(response)) => response,
        Ok(None) => Redirect::to("/app/login").into_response(),
        Err(err) => err.into_response(),
    }
}

async fn render_dashboard(state: &AppState, parts: &Parts) -> ApiResult<Option<Response>> {
    let Some(claims) = sessions::cookie_claims(state, &parts.headers) else {
        return Ok(None);
    };
    let Some(user) = sessions::authenticate(state, parts).await.ok().flatten() else {
        return Ok(None);
    };
    let conn = state.store.conn();
    let organisation = cuttle_store::organisations::get_organisation(conn, &claims.org)
        .await?
        .ok_or_else(|| ApiError::internal("a session names an organisation that does not exist"))?;
    let grants = crate::authz::grants_for(conn, &organisation.id, &user.id).await?;
    let mut spaces = Vec::new();
    for doc in
        crate::spaces::organisation_spaces(conn, &organisation.id, &ListQuery::everything()).await?
    {
        if !grants.can_see_space(&doc.id) {
            continue;
        }
        let space: Space = documents::decode(&doc)?;
        let id = cuttle_domain::SpaceId::parse(&doc.id).map_err(ApiError::internal)?;
        let count = |kind: &'static str| {
            let id = id.clone();
            async move {
                documents::list(
                    conn,
                    &id,
                    kind,
                    &ListQuery {
                        take: 0,
                        ..ListQuery::default()
                    },
                )
                .await
                .map(|(_, total)| total)
            }
        };
        spaces.push(SpaceRow {
            name: space.name,
            is_default: space.is_default,
            projects: count("Project").await?,
            environments: count("Environment").await?,
        });
    }
    Ok(Some(page(
        StatusCode::OK,
        "dashboard.html",
        context! {
            organisation => organisation.name,
            user => user.username,
            user_id => user.id,
            spaces => minijinja::Value::from(minijinja::value::Serde(&spaces)),
            csrf => claims.csrf,
            unverified => (!user.email_verified).then(|| user.email.clone()).flatten(),
        },
    )))
}

#[derive(Debug, Default, Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: LogoutForm = read_form(&body).unwrap_or_default();
    if let Some(claims) = sessions::cookie_claims(&state, &headers) {
        // A cross-site form cannot know the token, so it cannot sign anyone out.
        if form.csrf != claims.csrf {
            return ApiError::csrf().into_response();
        }
        if let Err(err) = sessions::end_session(&state, &claims.sid).await {
            return err.into_response();
        }
    }
    sessions::with_cookies(
        Redirect::to("/app/login").into_response(),
        sessions::cleared_cookies(),
    )
}
