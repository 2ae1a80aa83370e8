//! Invitations and email verification, by links sent through SMTP.
//!
//! - `POST /api/invitations {EmailAddress, TeamIds}` mails a link (`/app/join?token=...`, valid
//!   seven days, usable once) with which the invitee picks a username and password and joins the
//!   organisation in those teams. Inviting into a team takes `TeamEdit` on it (the
//!   administrators team: being an administrator), so inviting never grants more than the
//!   inviter could.
//! - When mail is configured, the owner who signs up must verify their address
//!   (`/app/verify?token=...`) before anything but reading themselves and asking for a new link
//!   (`POST /api/users/me/verification`) is allowed.
//!
//! Tokens are stored only as SHA-256 hashes, in `org_documents`.

use crate::AppState;
use crate::authz::{ADMINISTRATORS_TEAM, TEAM_KIND};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, PathParams, Principal, hash_api_key};
use crate::links::links;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use cuttle_authz::Permission;
use cuttle_store::organisations::{self};
use cuttle_store::users::{self, User};
use cuttle_store::{ConnectionTrait, TransactionTrait};
use cuttle_wire::security::Team;
use serde::{Deserialize, Serialize};

/// Document kind of invitation and verification tokens.
pub const TOKEN_KIND: &str = "EmailToken";
const INVITATION: &str = "Invitation";
const VERIFICATION: &str = "Verification";
const INVITATION_DAYS: i64 = 7;
const VERIFICATION_DAYS: i64 = 2;

/// A pending invitation or verification (the token itself only as a hash).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct EmailToken {
    pub id: String,
    pub purpose: String,
    pub token_hash: String,
    pub email_address: String,
    pub team_ids: Vec<String>,
    pub user_id: Option<String>,
    pub invited_by: Option<String>,
    pub expires: Option<DateTime<Utc>>,
}

/// The body of `POST /api/invitations`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct InvitationCommand {
    pub email_address: String,
    pub team_ids: Vec<String>,
}

/// The routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/invitations", get(list).post(invite))
        .route("/api/invitations/{id}", delete(revoke))
        .route("/api/users/me/verification", post(resend_verification))
        .route("/app/verify", get(verify))
        .route("/app/join", get(join_form).post(join))
}

fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

fn present(token: &EmailToken) -> serde_json::Value {
    serde_json::json!({
        "Id": token.id,
        "EmailAddress": token.email_address,
        "TeamIds": token.team_ids,
        "InvitedBy": token.invited_by,
        "Expires": token.expires.as_ref().map(cuttle_wire::dates::format),
        "Links": links([("Self", format!("/api/invitations/{}", token.id))]),
    })
}

fn mailer(state: &AppState) -> ApiResult<&crate::mail::Mailer> {
    state.mailer.as_deref().ok_or_else(|| {
        ApiError::bad_request(
            "Mail is not configured on this server, so no invitation can be sent.",
            vec!["Set [smtp] host (CUTTLE_SMTP__HOST) and restart.".into()],
        )
    })
}

async fn store_token(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    token: &EmailToken,
) -> ApiResult<()> {
    organisations::insert_document(
        conn,
        organisation_id,
        TOKEN_KIND,
        &token.id,
        &token.id,
        token,
        "",
    )
    .await?;
    Ok(())
}

/// A live token by its clear value: its organisation and content.
async fn find_token(
    conn: &impl ConnectionTrait,
    raw: &str,
    purpose: &str,
) -> ApiResult<Option<(String, EmailToken)>> {
    let hash = hash_api_key(raw);
    for doc in organisations::documents_of_kind(conn, TOKEN_KIND).await? {
        let token: EmailToken = organisations::decode(&doc)?;
        if token.purpose == purpose
            && token.token_hash == hash
            && token.expires.is_some_and(|at| at > Utc::now())
        {
            return Ok(Some((doc.organisation_id, token)));
        }
    }
    Ok(None)
}

async fn invite(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    JsonBody(body): JsonBody<InvitationCommand>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let mailer = mailer(&state)?;
    let email = crate::users::check_email(Some(body.email_address))?
        .ok_or_else(|| ApiError::invalid_field("EmailAddress", "an email address is required"))?;
    let txn = state.store.conn().begin().await?;
    for team_id in &body.team_ids {
        let doc = organisations::get_document(&txn, &principal.organisation_id, TEAM_KIND, team_id)
            .await?
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "TeamIds",
                    format!("'{team_id}' is not a team of your organisation"),
                )
            })?;
        let team: Team = organisations::decode(&doc)?;
        let allowed = if team.id == ADMINISTRATORS_TEAM {
            principal.grants.is_administrator()
        } else {
            match &team.space_id {
                Some(space) => principal.grants.allows(
                    Permission::TeamEdit,
                    &cuttle_authz::Target {
                        space: Some(space),
                        ..Default::default()
                    },
                ),
                None => principal.grants.allows_system(Permission::TeamEdit),
            }
        };
        if !allowed {
            return Err(ApiError::forbidden(Permission::TeamEdit));
        }
    }
    let raw = new_token();
    let token = EmailToken {
        id: cuttle_store::next_id(&txn, "Invitations").await?,
        purpose: INVITATION.into(),
        token_hash: hash_api_key(&raw),
        email_address: email.clone(),
        team_ids: body.team_ids,
        user_id: None,
        invited_by: Some(principal.user.id.clone()),
        expires: Some(Utc::now() + chrono::Duration::days(INVITATION_DAYS)),
    };
    store_token(&txn, &principal.organisation_id, &token).await?;
    // Sent inside the transaction: if the mail cannot go, no invitation is left behind.
    let organisation = organisations::get_organisation(&txn, &principal.organisation_id)
        .await?
        .map(|o| o.name)
        .unwrap_or_default();
    let link = mailer.link(&headers, &format!("/app/join?token={raw}"));
    mailer
        .send(
            &email,
            &format!("You are invited to {organisation} on Cuttle"),
            format!(
                "{} invited you to join {organisation} on Cuttle.\n\nAccept the invitation within {INVITATION_DAYS} days:\n{link}\n",
                principal.user.display_name
            ),
        )
        .await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(present(&token))))
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let mut out = Vec::new();
    for doc in organisations::list_documents(
        state.store.conn(),
        &principal.organisation_id,
        &[TOKEN_KIND],
    )
    .await?
    {
        let token: EmailToken = organisations::decode(&doc)?;
        if token.purpose == INVITATION && token.expires.is_some_and(|at| at > Utc::now()) {
            out.push(present(&token));
        }
    }
    Ok(Json(out))
}

async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let id = path.get("id")?;
    let txn = state.store.conn().begin().await?;
    let doc = organisations::get_document(&txn, &principal.organisation_id, TOKEN_KIND, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("invitation '{id}'")))?;
    let token: EmailToken = organisations::decode(&doc)?;
    if token.purpose != INVITATION {
        return Err(ApiError::not_found(format!("invitation '{id}'")));
    }
    organisations::delete_document(&txn, &principal.organisation_id, TOKEN_KIND, id).await?;
    txn.commit().await?;
    Ok(StatusCode::OK)
}

/// Starts verifying `user`'s address: stores a token and mails its link. Without mail the
/// address counts as verified (nothing could prove it).
pub async fn start_verification(
    state: &AppState,
    user: &User,
    headers: &HeaderMap,
) -> ApiResult<()> {
    let (Some(mailer), Some(email), Some(organisation)) = (
        state.mailer.as_deref(),
        user.email.as_deref(),
        user.organisation_id.as_deref(),
    ) else {
        return Ok(());
    };
    let raw = new_token();
    let txn = state.store.conn().begin().await?;
    let token = EmailToken {
        id: cuttle_store::next_id(&txn, "Verifications").await?,
        purpose: VERIFICATION.into(),
        token_hash: hash_api_key(&raw),
        email_address: email.to_owned(),
        user_id: Some(user.id.clone()),
        expires: Some(Utc::now() + chrono::Duration::days(VERIFICATION_DAYS)),
        ..EmailToken::default()
    };
    store_token(&txn, organisation, &token).await?;
    let link = mailer.link(headers, &format!("/app/verify?token={raw}"));
    mailer
        .send(
            email,
            "Verify your email address for Cuttle",
            format!("Open this link within {VERIFICATION_DAYS} days to verify {email}:\n{link}\n"),
        )
        .await?;
    txn.commit().await?;
    Ok(())
}

async fn resend_verification(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    if principal.user.email_verified {
        return Err(ApiError::bad_request(
            "Your email address is already verified.",
            Vec::new(),
        ));
    }
    mailer(&state)?;
    start_verification(&state, &principal.user, &headers).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn verify(State(state): State<AppState>, params: crate::extract::Params) -> Response {
    let Some(raw) = params.get("token") else {
        return crate::portal::login_page_with_error(
            StatusCode::BAD_REQUEST,
            "The link has no token.",
        );
    };
    let result: ApiResult<bool> = async {
        let txn = state.store.conn().begin().await?;
        let Some((organisation, token)) = find_token(&txn, raw, VERIFICATION).await? else {
            return Ok(false);
        };
        if let Some(user_id) = &token.user_id {
            users::set_email_verified(&txn, user_id).await?;
        }
        organisations::delete_document(&txn, &organisation, TOKEN_KIND, &token.id).await?;
        txn.commit().await?;
        Ok(true)
    }
    .await;
    match result {
        Ok(true) => Redirect::to("/app").into_response(),
        Ok(false) => crate::portal::login_page_with_error(
            StatusCode::BAD_REQUEST,
            "This verification link is unknown, used or expired; sign in and ask for a new one.",
        ),
        Err(err) => err.into_response(),
    }
}

fn join_page(status: StatusCode, token: &str, username: &str, error: Option<&str>) -> Response {
    crate::portal::page(
        status,
        "join.html",
        minijinja::context! { token => token, username => username, error => error },
    )
}

async fn join_form(State(state): State<AppState>, params: crate::extract::Params) -> Response {
    let token = params.get("token").unwrap_or_default();
    match find_token(state.store.conn(), token, INVITATION).await {
        Ok(Some(_)) => join_page(StatusCode::OK, token, "", None),
        Ok(None) => crate::portal::login_page_with_error(
            StatusCode::BAD_REQUEST,
            "This invitation is unknown, used or expired; ask for a new one.",
        ),
        Err(err) => err.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct JoinForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn join(State(state): State<AppState>, body: Bytes) -> Response {
    let form: JoinForm = crate::portal::read_form(&body).unwrap_or_default();
    match accept(&state, &form).await {
        Ok(cookies) => crate::sessions::with_cookies(Redirect::to("/app").into_response(), cookies),
        Err(err) => join_page(
            err.status(),
            &form.token,
            &form.username,
            Some(&err.describe()),
        ),
    }
}

async fn accept(state: &AppState, form: &JoinForm) -> ApiResult<Vec<String>> {
    let username = crate::users::check_username(&form.username)?;
    crate::sessions::check_password(&form.password)?;
    let hash = crate::sessions::hash_password(form.password.clone()).await?;
    let txn = state.store.conn().begin().await?;
    let (organisation, token) = find_token(&txn, &form.token, INVITATION)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(
                "This invitation is unknown, used or expired; ask for a new one.",
                Vec::new(),
            )
        })?;
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
            username: username.clone(),
            display_name: username,
            email: Some(token.email_address.clone()),
            is_service: false,
            is_active: true,
            created_at: Utc::now(),
            organisation_id: Some(organisation.clone()),
            password_hash: Some(hash),
            external_id: None,
            // The link reached this address.
            email_verified: true,
        },
    )
    .await?;
    for team_id in &token.team_ids {
        if let Some(doc) =
            organisations::get_document(&txn, &organisation, TEAM_KIND, team_id).await?
        {
            let team: Team = organisations::decode(&doc)?;
            crate::teams::set_membership(&txn, &organisation, team, &user.id, true).await?;
        }
    }
    organisations::delete_document(&txn, &organisation, TOKEN_KIND, &token.id).await?;
    txn.commit().await?;
    crate::sessions::start_session(state, &user).await
}
