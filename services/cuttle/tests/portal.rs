//! The web portal, in both modes: a person signs up in a real headless Chromium (driven by
//! `infra/browser/run.mjs`, installed by `infra/up.sh`) and lands on their organisation's
//! dashboard, signed in; bad forms say what is wrong and create nothing.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::InProcess;
use cuttle_testkit::Mode;
use serde_json::{Value, json};

both_modes!(
    signing_up_in_a_browser_lands_on_the_dashboard,
    bad_signups_say_what_is_wrong_and_create_nothing,
);

/// Runs browser steps through the driver; its JSON result.
async fn browse(steps: Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("steps.json");
    std::fs::write(&file, steps.to_string()).unwrap();
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/browser/run.mjs");
    let output = tokio::process::Command::new("node")
        .arg(driver)
        .arg(&file)
        .output()
        .await
        .expect("node must be installed (run infra/up.sh)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser run failed ({}); run infra/browser.sh if Chromium or playwright-core is missing\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

async fn signing_up_in_a_browser_lands_on_the_dashboard(mode: Mode) {
    let app = InProcess::start(mode).await;
    let base = app.client.base.clone();
    let result = browse(json!({
        "baseURL": base,
        "steps": [
            {"action": "goto", "url": "/app/signup"},
            {"action": "fill", "selector": "#organisation", "value": "Acme Ltd"},
            {"action": "fill", "selector": "#slug", "value": "acme"},
            {"action": "fill", "selector": "#username", "value": "ada"},
            {"action": "fill", "selector": "#email", "value": "ada@acme.example"},
            {"action": "fill", "selector": "#password", "value": "a long enough password"},
            {"action": "click", "selector": "#submit"},
            {"action": "waitForSelector", "selector": "#organisation"},
            {"action": "expectText", "selector": "#organisation", "text": "Acme Ltd"},
            {"action": "expectText", "selector": "#user", "text": "ada"},
            {"action": "expectText", "selector": "#spaces", "text": "Default (default)"}
        ]
    }))
    .await;
    assert_eq!(result["ok"], true, "{result}");
    assert!(
        result["url"].as_str().unwrap().ends_with("/app"),
        "{result}"
    );
    let cookies = result["cookies"].as_array().unwrap();
    let access = cookies
        .iter()
        .find(|c| c["name"] == "OctopusIdentificationToken")
        .unwrap_or_else(|| panic!("no session cookie: {result}"));
    assert_eq!(access["httpOnly"], true, "{result}");
    assert_ne!(access["sameSite"], "None", "{result}");

    // The new owner is an administrator of their own organisation only.
    let login = reqwest::Client::new()
        .post(format!("{base}/api/users/login"))
        .json(&json!({"Username": "ada", "Password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie: String = login
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next())
        .collect::<Vec<_>>()
        .join("; ");
    let spaces: Value = reqwest::Client::new()
        .get(format!("{base}/api/spaces"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(spaces["TotalResults"], 1, "{spaces}");
    assert_eq!(spaces["Items"][0]["Name"], "Default");
    assert_ne!(spaces["Items"][0]["Id"], "Spaces-1", "{spaces}");
    app.stop().await;
}

/// `application/x-www-form-urlencoded` of `fields`, as a browser sends a form.
fn urlencoded(fields: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://form.invalid/").unwrap();
    url.query_pairs_mut().extend_pairs(fields);
    url.query().unwrap_or_default().to_owned()
}

async fn post_form(
    base: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String, Option<String>) {
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{base}{path}"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(urlencoded(fields))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.text().await.unwrap(), location)
}

async fn bad_signups_say_what_is_wrong_and_create_nothing(mode: Mode) {
    let app = InProcess::start(mode).await;
    let base = app.client.base.clone();
    let form = |slug: &'static str, username: &'static str, password: &'static str| {
        vec![
            ("organisation", "Beta"),
            ("slug", slug),
            ("username", username),
            ("email", "b@beta.example"),
            ("password", password),
        ]
    };
    let (status, page, _) = post_form(&base, "/app/signup", &form("beta", "bea", "short")).await;
    assert_eq!(status, 400);
    assert!(page.contains("Password"), "{page}");
    // What was typed is kept, except the password; markup in input is escaped.
    assert!(page.contains("value=\"bea\""), "{page}");
    let (status, page, _) = post_form(
        &base,
        "/app/signup",
        &form("Not A Slug!", "bea", "long enough password"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("Slug"), "{page}");
    let (status, page, _) = post_form(
        &base,
        "/app/signup",
        &form("beta", "admin", "long enough password"),
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("already in use"), "{page}");
    let (status, page, _) = post_form(
        &base,
        "/app/signup",
        &[
            ("organisation", "<script>x</script>"),
            ("slug", "bad slug"),
            ("username", "c"),
            ("email", "c@x.example"),
            ("password", "long enough password"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        !page.contains("<script>x</script>") && page.contains("&lt;script&gt;"),
        "{page}"
    );
    // None of those created anything: the slug and username are still free.
    let (status, _, location) = post_form(
        &base,
        "/app/signup",
        &form("beta", "bea", "long enough password"),
    )
    .await;
    assert_eq!((status, location.as_deref()), (303, Some("/app")));
    let (status, page, _) = post_form(
        &base,
        "/app/signup",
        &form("beta", "bea2", "long enough password"),
    )
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("already taken"), "{page}");

    // Without a session the dashboard sends you to sign in; a wrong password says so.
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}/app"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[reqwest::header::LOCATION], "/app/login");
    let (status, page, _) = post_form(
        &base,
        "/app/login",
        &[("username", "bea"), ("password", "wrong wrong wrong")],
    )
    .await;
    assert_eq!(status, 401);
    assert!(page.contains("Invalid username or password"), "{page}");
    let (status, _, location) = post_form(
        &base,
        "/app/login",
        &[("username", "bea"), ("password", "long enough password")],
    )
    .await;
    assert_eq!((status, location.as_deref()), (303, Some("/app")));
    app.stop().await;
}
