//! Single sign-on end to end, in both modes, against a real OpenID Connect provider (npm
//! `oidc-provider`, run by `infra/oidc/provider.mjs`; `infra/up.sh` installs it): the whole
//! redirect flow over HTTP creates the user just in time in the team its groups claim names,
//! and forged or replayed states, foreign issuers and other email domains are refused.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::InProcess;
use cuttle_testkit::{Client, Mode};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tokio::io::AsyncBufReadExt;

both_modes!(
    an_sso_login_creates_the_user_in_the_team_its_groups_name,
    forged_replayed_and_foreign_sign_ins_are_refused,
);

const CLIENT_SECRET: &str = "a-client-secret-for-tests";

/// A provider process on a free port; killed on drop.
struct Provider {
    issuer: String,
    port: u64,
    _child: tokio::process::Child,
}

async fn start_provider(callback: &str, issuer_override: Option<&str>) -> Provider {
    let config = json!({
        "requirePkce": true,
        "clients": [{
            "client_id": "cuttle",
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [callback],
            "token_endpoint_auth_method": "client_secret_basic"
        }],
        "accounts": [
            {"id": "alice", "email": "alice@example.com", "name": "Alice Example", "groups": ["developers"], "password": "alice-password"},
            {"id": "mallory", "email": "mallory@elsewhere.example", "name": "Mallory", "groups": ["developers"], "password": "mallory-password"}
        ]
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/oidc/provider.mjs");
    let mut command = tokio::process::Command::new("node");
    command
        .arg(script)
        .args(["--port", "0"])
        .env("CUTTLE_OIDC_CONFIG_JSON", config.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    if let Some(issuer) = issuer_override {
        command.args(["--issuer", issuer]);
    }
    let mut child = command
        .spawn()
        .expect("node must be installed (run infra/up.sh)");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    // Generous: on a loaded two-core machine node can take tens of seconds to start.
    let first = tokio::time::timeout(std::time::Duration::from_secs(120), lines.next_line())
        .await
        .expect("the provider did not start in 120 s (run infra/oidc.sh to install it)")
        .unwrap()
        .expect("the provider exited before it started (run infra/oidc.sh to install it)");
    let started: Value = serde_json::from_str(&first).unwrap();
    // Keep draining its log so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Provider {
        issuer: started["issuer"].as_str().unwrap().to_owned(),
        port: started["port"].as_u64().unwrap(),
        _child: child,
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Cookies of one site, as a browser would keep them.
#[derive(Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, response: &reqwest::Response) {
        for line in response.headers().get_all(SET_COOKIE) {
            let line = line.to_str().unwrap();
            let pair = line.split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                self.0
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

/// Drives the provider from its authorization URL through its login form; the URL it finally
/// sends the browser back to (Cuttle's callback).
async fn sign_in_at_provider(issuer: &str, authorize: &str, login: &str, password: &str) -> String {
    let http = no_redirects();
    let mut jar = Jar::default();
    let mut url = authorize.to_owned();
    for _ in 0..10 {
        let response = http
            .get(&url)
            .header(COOKIE, jar.header())
            .send()
            .await
            .unwrap();
        jar.take(&response);
        let status = response.status().as_u16();
        if status == 200 {
            // The login form: POST login and password to <interaction>/login.
            let form_url = format!("{}/login", url.trim_end_matches('/'));
            let body = format!(
                "login={}&password={}",
                urlencode(login),
                urlencode(password)
            );
            let posted = http
                .post(&form_url)
                .header(COOKIE, jar.header())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body)
                .send()
                .await
                .unwrap();
            jar.take(&posted);
            assert!(
                posted.status().is_redirection(),
                "login form answered {}",
                posted.status()
            );
            url = absolute(issuer, posted.headers()[LOCATION].to_str().unwrap());
            continue;
        }
        assert!(
            response.status().is_redirection(),
            "{url} answered {status}: {}",
            response.text().await.unwrap()
        );
        let next = absolute(issuer, response.headers()[LOCATION].to_str().unwrap());
        if !next.starts_with(issuer) {
            return next;
        }
        url = next;
    }
    panic!("the provider never sent the browser back");
}

fn urlencode(text: &str) -> String {
    let mut url = reqwest::Url::parse("http://x.invalid/").unwrap();
    url.query_pairs_mut().append_pair("v", text);
    url.query().unwrap()[2..].to_owned()
}

/// Starts SSO at Cuttle for `who`; the provider's authorization URL.
async fn start_sso(base: &str, who: &str) -> String {
    let response = no_redirects()
        .get(format!("{base}/app/sso?organisation={}", urlencode(who)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "{}", response.text().await.unwrap());
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

async fn configure(admin: &Client, issuer: &str) {
    admin
        .put(
            "/api/sso",
            json!({
                "IsEnabled": true,
                "Issuer": issuer,
                "ClientId": "cuttle",
                "ClientSecret": CLIENT_SECRET,
                "AllowedEmailDomains": ["example.com"],
                "GroupsClaim": "groups"
            }),
        )
        .await
        .expect(200);
}

async fn an_sso_login_creates_the_user_in_the_team_its_groups_name(mode: Mode) {
    let app = InProcess::start(mode).await;
    let admin = &app.client;
    let base = admin.base.clone();
    let provider = start_provider(&format!("{base}/app/sso/callback"), None).await;
    let team = admin
        .post(
            "/api/teams",
            json!({"Name": "Developers", "SpaceId": "Spaces-1", "ExternalSecurityGroups": [{"Id": "developers"}]}),
        )
        .await
        .expect(201);
    admin
        .post(
            "/api/scopeduserroles",
            json!({"TeamId": team["Id"], "UserRoleId": "userroles-projectviewer", "SpaceId": "Spaces-1"}),
        )
        .await
        .expect(201);
    configure(admin, &provider.issuer).await;
    let settings = admin.get("/api/sso").await.expect(200);
    assert!(settings["ClientSecret"].is_null(), "{settings}");
    assert_eq!(settings["HasClientSecret"], true);

    let authorize = start_sso(&base, "alice@example.com").await;
    assert!(authorize.starts_with(&provider.issuer), "{authorize}");
    assert!(
        authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );
    assert!(authorize.contains("nonce="), "{authorize}");
    let callback =
        sign_in_at_provider(&provider.issuer, &authorize, "alice", "alice-password").await;
    assert!(
        callback.starts_with(&format!("{base}/app/sso/callback?")),
        "{callback}"
    );
    let finished = no_redirects().get(&callback).send().await.unwrap();
    assert_eq!(finished.status(), 303, "{}", finished.text().await.unwrap());
    assert_eq!(finished.headers()[LOCATION], "/app");
    let mut jar = Jar::default();
    jar.take(&finished);
    assert!(jar.0.contains_key("OctopusIdentificationToken"));

    // Signed in as the new user, a member of Developers through the groups claim.
    let me: Value = no_redirects()
        .get(format!("{base}/api/users/me"))
        .header(COOKIE, jar.header())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["EmailAddress"], "alice@example.com", "{me}");
    assert_eq!(me["DisplayName"], "Alice Example");
    let team = admin
        .get(&format!("/api/teams/{}", team["Id"].as_str().unwrap()))
        .await
        .expect(200);
    assert_eq!(team["MemberUserIds"], json!([me["Id"]]), "{team}");
    let projects = no_redirects()
        .get(format!("{base}/api/Spaces-1/projects"))
        .header(COOKIE, jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(projects.status(), 200);

    // Signing in again (by the organisation's slug this time) finds the same user.
    let authorize = start_sso(&base, "default").await;
    let callback =
        sign_in_at_provider(&provider.issuer, &authorize, "alice", "alice-password").await;
    let again = no_redirects().get(&callback).send().await.unwrap();
    assert_eq!(again.status(), 303);
    let users = admin.get("/api/users").await.expect(200);
    let alices: Vec<&Value> = users["Items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["EmailAddress"] == "alice@example.com")
        .collect();
    assert_eq!(alices.len(), 1, "{users}");
    assert_eq!(alices[0]["Id"], me["Id"]);
    app.stop().await;
}

async fn forged_replayed_and_foreign_sign_ins_are_refused(mode: Mode) {
    let app = InProcess::start(mode).await;
    let admin = &app.client;
    let base = admin.base.clone();
    let provider = start_provider(&format!("{base}/app/sso/callback"), None).await;
    configure(admin, &provider.issuer).await;
    let http = no_redirects();

    // A state Cuttle never issued.
    let forged = http
        .get(format!("{base}/app/sso/callback?code=abc&state=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert!(
        forged
            .text()
            .await
            .unwrap()
            .contains("unknown, used or expired")
    );

    // A tampered state is refused; the real one then works once, and a replay is refused.
    let authorize = start_sso(&base, "default").await;
    let callback =
        sign_in_at_provider(&provider.issuer, &authorize, "alice", "alice-password").await;
    let tampered = callback.replace("state=", "state=x");
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 400);
    assert_eq!(http.get(&callback).send().await.unwrap().status(), 303);
    let replayed = http.get(&callback).send().await.unwrap();
    assert_eq!(replayed.status(), 400);

    // A verified identity outside the organisation's email domains is refused.
    let authorize = start_sso(&base, "default").await;
    let callback =
        sign_in_at_provider(&provider.issuer, &authorize, "mallory", "mallory-password").await;
    let refused = http.get(&callback).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("elsewhere.example"));
    assert!(
        !admin
            .get("/api/users")
            .await
            .expect(200)
            .to_string()
            .contains("mallory"),
        "no user was created"
    );

    // A provider whose discovery document names another issuer is refused before any redirect.
    let foreign = start_provider(
        &format!("{base}/app/sso/callback"),
        Some("http://127.0.0.1:9/foreign"),
    )
    .await;
    configure(admin, &format!("http://127.0.0.1:{}", foreign.port)).await;
    let refused = http
        .get(format!("{base}/app/sso?organisation=default"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 502);
    app.stop().await;
}
