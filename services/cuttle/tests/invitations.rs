//! Invitations and email verification end to end, in both modes, through a real SMTP server
//! (aiosmtpd on 127.0.0.1:2525, started by `infra/up.sh`, which keeps every message as a file):
//! a sign-up owner can do nothing but verify until they open the mailed link; an invitee joins
//! through theirs into the teams they were invited to; links work once.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::InProcess;
use cuttle_testkit::{Client, Mode};
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use std::time::Duration;

both_modes!(
    an_owner_verifies_their_address_and_invites_a_colleague,
    without_mail_invitations_are_refused_and_addresses_count_as_verified,
);

const SMTP_PORT: u16 = 2525;

fn mail_dir() -> std::path::PathBuf {
    let home = std::env::var("HOME").unwrap();
    std::path::PathBuf::from(home).join(format!(".cache/cuttle/smtp-mail/{SMTP_PORT}"))
}

/// The link to `path` in the mail sent to `to` (waits up to 15 s for it).
async fn mailed_link(to: &str, path: &str) -> String {
    for _ in 0..150 {
        if let Ok(entries) = std::fs::read_dir(mail_dir()) {
            for entry in entries.flatten() {
                let Ok(text) = std::fs::read_to_string(entry.path()) else {
                    continue;
                };
                if !text.contains(to) {
                    continue;
                }
                // Undo quoted-printable soft line breaks and the escaped `=`.
                let text = text
                    .replace("=\r\n", "")
                    .replace("=\n", "")
                    .replace("=3D", "=");
                if let Some(start) = text.find(path) {
                    let rest = &text[start..];
                    let end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
                    return rest[..end].to_owned();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no mail to {to} with {path} in {} (is infra/smtp.sh running?)",
        mail_dir().display()
    );
}

fn form(fields: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://form.invalid/").unwrap();
    url.query_pairs_mut().extend_pairs(fields);
    url.query().unwrap_or_default().to_owned()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn cookies(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next())
        .collect::<Vec<_>>()
        .join("; ")
}

async fn with_mail(mode: Mode) -> InProcess {
    InProcess::start_with(mode, |config| {
        config.smtp.host = Some("127.0.0.1".into());
        config.smtp.port = SMTP_PORT;
        config.smtp.security = "none".into();
        config.smtp.from = "Cuttle <cuttle@test.example>".into();
    })
    .await
}

async fn get(base: &str, path: &str, cookie: &str) -> (u16, Value) {
    let response = no_redirects()
        .get(format!("{base}{path}"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn an_owner_verifies_their_address_and_invites_a_colleague(mode: Mode) {
    let app = with_mail(mode).await;
    let base = app.client.base.clone();
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let owner_email = format!("owner-{unique}@acme.example");
    let signed_up = no_redirects()
        .post(format!("{base}/app/signup"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[
            ("organisation", "Acme"),
            ("slug", &format!("acme-{}", &unique[..8])),
            ("username", &format!("owner-{}", &unique[..8])),
            ("email", &owner_email),
            ("password", "a long enough password"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), 303);
    let session = cookies(&signed_up);

    // Before verifying: reading yourself works, everything else is refused with the reason.
    let (status, me) = get(&base, "/api/users/me", &session).await;
    assert_eq!(status, 200, "{me}");
    let (status, refused) = get(&base, "/api/spaces", &session).await;
    assert_eq!(status, 403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("Verify your email address"),
        "{refused}"
    );

    let link = mailed_link(&owner_email, "/app/verify?token=").await;
    let verified = no_redirects()
        .get(format!("{base}{link}"))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 303, "{link}");
    let (status, spaces) = get(&base, "/api/spaces", &session).await;
    assert_eq!(status, 200, "{spaces}");
    // A used link does not work twice.
    let again = no_redirects()
        .get(format!("{base}{link}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);

    // The owner invites a colleague into a team of their organisation.
    let csrf = session
        .split("; ")
        .find_map(|c| c.strip_prefix("Octopus-Csrf-Token="))
        .unwrap()
        .to_owned();
    let post = |path: &str, body: Value| {
        no_redirects()
            .post(format!("{base}{path}"))
            .header(COOKIE, &session)
            .header("X-Octopus-Csrf-Token", &csrf)
            .json(&body)
            .send()
    };
    let team: Value = post("/api/teams", json!({"Name": "Release managers"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let colleague = format!("colleague-{unique}@acme.example");
    let invited = post(
        "/api/invitations",
        json!({"EmailAddress": colleague, "TeamIds": [team["Id"]]}),
    )
    .await
    .unwrap();
    assert_eq!(invited.status(), 201);
    let invitation: Value = invited.json().await.unwrap();
    assert!(invitation.get("Token").is_none(), "{invitation}");
    let bad = post(
        "/api/invitations",
        json!({"EmailAddress": "not an address"}),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);

    let link = mailed_link(&colleague, "/app/join?token=").await;
    let page = reqwest::get(format!("{base}{link}")).await.unwrap();
    assert_eq!(page.status(), 200);
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let short = no_redirects()
        .post(format!("{base}/app/join"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[
            ("token", &token),
            ("username", "colleague"),
            ("password", "short"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(short.status(), 400);
    let joined = no_redirects()
        .post(format!("{base}/app/join"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[
            ("token", &token),
            ("username", &format!("colleague-{}", &unique[..8])),
            ("password", "another long password"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), 303);
    assert_eq!(joined.headers()[LOCATION], "/app");
    let colleague_session = cookies(&joined);
    let (status, me) = get(&base, "/api/users/me", &colleague_session).await;
    assert_eq!(status, 200);
    assert_eq!(me["EmailAddress"], colleague.as_str());
    let (_, team_now) = get(
        &base,
        &format!("/api/teams/{}", team["Id"].as_str().unwrap()),
        &session,
    )
    .await;
    assert_eq!(team_now["MemberUserIds"], json!([me["Id"]]), "{team_now}");
    // The invitation is used up.
    let replay = no_redirects()
        .post(format!("{base}/app/join"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[
            ("token", &token),
            ("username", "someone-else"),
            ("password", "another long password"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400);
    app.stop().await;
}

async fn without_mail_invitations_are_refused_and_addresses_count_as_verified(mode: Mode) {
    let app = InProcess::start(mode).await;
    let admin: &Client = &app.client;
    let refused = admin
        .post(
            "/api/invitations",
            json!({"EmailAddress": "someone@example.com"}),
        )
        .await
        .expect(400);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("Mail is not configured"),
        "{refused}"
    );
    let signed_up = no_redirects()
        .post(format!("{}/app/signup", admin.base))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form(&[
            ("organisation", "Nomail"),
            ("slug", "nomail"),
            ("username", "nomail-owner"),
            ("email", "owner@nomail.example"),
            ("password", "a long enough password"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_up.status(), 303);
    let (status, _) = get(&admin.base, "/api/spaces", &cookies(&signed_up)).await;
    assert_eq!(status, 200);
    app.stop().await;
}
