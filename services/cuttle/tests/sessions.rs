//! Password sign-in end to end, in both modes: a session in cookies (HttpOnly access and
//! refresh tokens, a CSRF token that writes must echo), bearer use of the access token,
//! refresh with rotation, logout that revokes at once, refused forged and expired tokens, and
//! throttled brute force.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::InProcess;
use cuttle_testkit::{Client, Mode};
use reqwest::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

both_modes!(
    a_password_login_starts_a_session_that_logout_ends,
    expired_forged_and_replayed_tokens_are_refused,
    brute_force_login_is_throttled,
);

const PASSWORD: &str = "correct horse battery";

/// A user with a password and a viewer role in Spaces-1; returns its id.
async fn user_with_password(admin: &Client, username: &str) -> String {
    let user = admin
        .post(
            "/api/users",
            json!({"Username": username, "Password": PASSWORD}),
        )
        .await
        .expect(201);
    user["Id"].as_str().unwrap().to_owned()
}

/// The cookies a response sets: name -> (value, attributes).
fn set_cookies(response: &reqwest::Response) -> BTreeMap<String, (String, String)> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|line| {
            let (pair, attributes) = line.split_once(';').unwrap_or((line, ""));
            let (name, value) = pair.split_once('=')?;
            Some((name.to_owned(), (value.to_owned(), attributes.to_owned())))
        })
        .collect()
}

struct Session {
    access: String,
    refresh: String,
    csrf: String,
}

impl Session {
    fn cookie_header(&self) -> String {
        format!(
            "OctopusIdentificationToken={}; CuttleRefreshToken={}; Octopus-Csrf-Token={}",
            self.access, self.refresh, self.csrf
        )
    }
}

async fn login(base: &str, username: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/users/login"))
        .json(&json!({"Username": username, "Password": password}))
        .send()
        .await
        .unwrap()
}

async fn sign_in(base: &str, username: &str) -> Session {
    let response = login(base, username, PASSWORD).await;
    assert_eq!(response.status(), 200);
    let cookies = set_cookies(&response);
    Session {
        access: cookies["OctopusIdentificationToken"].0.clone(),
        refresh: cookies["CuttleRefreshToken"].0.clone(),
        csrf: cookies["Octopus-Csrf-Token"].0.clone(),
    }
}

async fn send(
    base: &str,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn a_password_login_starts_a_session_that_logout_ends(mode: Mode) {
    let app = InProcess::start(mode).await;
    let base = app.client.base.clone();
    let alice = user_with_password(&app.client, "alice").await;

    // A wrong password and an unknown user get the same answer.
    let wrong = login(&base, "alice", "not the password").await;
    assert_eq!(wrong.status(), 401);
    let unknown = login(&base, "nobody", PASSWORD).await;
    assert_eq!(unknown.status(), 401);
    let wrong: Value = wrong.json().await.unwrap();
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(wrong["ErrorMessage"], unknown["ErrorMessage"]);

    let response = login(&base, "alice", PASSWORD).await;
    assert_eq!(response.status(), 200);
    let cookies = set_cookies(&response);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["Id"], alice.as_str());
    let (_, access_attributes) = &cookies["OctopusIdentificationToken"];
    assert!(
        access_attributes.contains("HttpOnly"),
        "{access_attributes}"
    );
    assert!(
        access_attributes.contains("SameSite=Lax"),
        "{access_attributes}"
    );
    assert!(cookies["CuttleRefreshToken"].1.contains("HttpOnly"));
    assert!(!cookies["Octopus-Csrf-Token"].1.contains("HttpOnly"));
    let session = Session {
        access: cookies["OctopusIdentificationToken"].0.clone(),
        refresh: cookies["CuttleRefreshToken"].0.clone(),
        csrf: cookies["Octopus-Csrf-Token"].0.clone(),
    };
    let cookie = (COOKIE.as_str(), session.cookie_header());

    // Reads with the cookie; writes only with the CSRF header too.
    let (status, body) = send(
        &base,
        reqwest::Method::GET,
        "/api/users/me",
        std::slice::from_ref(&cookie),
        None,
    )
    .await;
    assert_eq!((status, body["Id"].clone()), (200, json!(alice)));
    let rename = json!({"Username": "alice", "DisplayName": "Alice A.", "IsActive": true});
    let path = format!("/api/users/{alice}");
    let (status, body) = send(
        &base,
        reqwest::Method::PUT,
        &path,
        std::slice::from_ref(&cookie),
        Some(rename.clone()),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("X-Octopus-Csrf-Token")
    );
    let wrong_csrf = ("X-Octopus-Csrf-Token", "0".repeat(64));
    let (status, _) = send(
        &base,
        reqwest::Method::PUT,
        &path,
        &[cookie.clone(), wrong_csrf],
        Some(rename.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let csrf = ("X-Octopus-Csrf-Token", session.csrf.clone());
    let (status, body) = send(
        &base,
        reqwest::Method::PUT,
        &path,
        &[cookie.clone(), csrf.clone()],
        Some(rename),
    )
    .await;
    assert_eq!(
        (status, body["DisplayName"].clone()),
        (200, json!("Alice A.")),
        "{body}"
    );

    // The access token also works as a bearer token (no cookie, so no CSRF needed).
    let bearer = (AUTHORIZATION.as_str(), format!("Bearer {}", session.access));
    let (status, _) = send(
        &base,
        reqwest::Method::GET,
        "/api/users/me",
        std::slice::from_ref(&bearer),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Logout revokes the session: its access token stops working at once.
    let (status, _) = send(
        &base,
        reqwest::Method::POST,
        "/api/users/logout",
        std::slice::from_ref(&cookie),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &base,
        reqwest::Method::GET,
        "/api/users/me",
        &[bearer],
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = send(
        &base,
        reqwest::Method::POST,
        "/api/users/refresh",
        &[cookie],
        None,
    )
    .await;
    assert_eq!(status, 401);

    // A new password ends every session.
    let second = sign_in(&base, "alice").await;
    app.client
        .put(
            &path,
            json!({"Username": "alice", "IsActive": true, "Password": "another long password"}),
        )
        .await
        .expect(200);
    let (status, _) = send(
        &base,
        reqwest::Method::GET,
        "/api/users/me",
        &[(COOKIE.as_str(), second.cookie_header())],
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(login(&base, "alice", PASSWORD).await.status(), 401);
    assert_eq!(
        login(&base, "alice", "another long password")
            .await
            .status(),
        200
    );

    // Short passwords are refused, naming the field; service accounts have none.
    let bad = app
        .client
        .post(
            "/api/users",
            json!({"Username": "bob", "Password": "short"}),
        )
        .await
        .expect(400);
    assert!(bad.to_string().contains("Password"), "{bad}");
    app.client
        .post(
            "/api/users",
            json!({"Username": "ci", "IsService": true, "Password": "long enough password"}),
        )
        .await
        .expect(400);
    app.stop().await;
}

fn tamper(token: &str) -> String {
    // Change one character of the signature.
    let mut chars: Vec<char> = token.chars().collect();
    let last = chars.len() - 2;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

fn unsigned(token: &str) -> String {
    // The same claims with `alg: none` and no signature.
    let payload = token.split('.').nth(1).unwrap();
    // {"alg":"none","typ":"JWT"}
    format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
}

async fn expired_forged_and_replayed_tokens_are_refused(mode: Mode) {
    let app = InProcess::start_with(mode, |config| config.auth.access_token_secs = 1).await;
    let base = app.client.base.clone();
    user_with_password(&app.client, "carol").await;
    let session = sign_in(&base, "carol").await;
    let me = |token: String| {
        let base = base.clone();
        async move {
            send(
                &base,
                reqwest::Method::GET,
                "/api/users/me",
                &[(AUTHORIZATION.as_str(), format!("Bearer {token}"))],
                None,
            )
            .await
            .0
        }
    };
    assert_eq!(me(session.access.clone()).await, 200);
    assert_eq!(me(tamper(&session.access)).await, 401);
    assert_eq!(me(unsigned(&session.access)).await, 401);
    assert_eq!(me("not.a.token".into()).await, 401);

    // Past its expiry (and the 5 s leeway) the access token is refused; the refresh token
    // gets a new one, once.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(me(session.access.clone()).await, 401);
    let refresh_cookie = (
        COOKIE.as_str(),
        format!("CuttleRefreshToken={}", session.refresh),
    );
    let response = reqwest::Client::new()
        .post(format!("{base}/api/users/refresh"))
        .header(refresh_cookie.0, &refresh_cookie.1)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let renewed = set_cookies(&response);
    assert_ne!(renewed["CuttleRefreshToken"].0, session.refresh);
    assert_eq!(
        me(renewed["OctopusIdentificationToken"].0.clone()).await,
        200
    );
    let (status, _) = send(
        &base,
        reqwest::Method::POST,
        "/api/users/refresh",
        &[refresh_cookie],
        None,
    )
    .await;
    assert_eq!(status, 401, "a refresh token works once");
    app.stop().await;
}

async fn brute_force_login_is_throttled(mode: Mode) {
    let app = InProcess::start_with(mode, |config| {
        config.auth.login_attempts_per_account = 3;
    })
    .await;
    let base = app.client.base.clone();
    user_with_password(&app.client, "dave").await;
    user_with_password(&app.client, "erin").await;
    for _ in 0..3 {
        assert_eq!(
            login(&base, "dave", "guess guess guess").await.status(),
            401
        );
    }
    // The fourth attempt is refused before the password is looked at, even the right one.
    let refused = login(&base, "dave", PASSWORD).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["ErrorMessage"].as_str().unwrap().contains("Too many"),
        "{body}"
    );
    // Other accounts from the same address are not locked out by it.
    assert_eq!(login(&base, "erin", PASSWORD).await.status(), 200);
    app.stop().await;
}
