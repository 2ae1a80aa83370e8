//! `cuttle-agent register` as a real process against a small HTTP server that answers the
//! lookups as Cuttle's API does and records the machine it is asked to create. It stands in
//! for the real server only because the machines API is still being written.

#![allow(clippy::unwrap_used)]

mod support;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cuttle_agent_link::AgentIdentity;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use support::{AGENT, within};

const API_KEY: &str = "API-REGISTERTEST0001";
const SERVER_THUMBPRINT: &str = "0123456789ABCDEF0123456789ABCDEF01234567";

/// One request to create a machine, as received.
#[derive(Debug, Clone)]
struct Posted {
    path: String,
    body: Value,
}

#[derive(Clone)]
struct FakeServer {
    posts: Arc<Mutex<Vec<Posted>>>,
    /// The answer to the next machine or worker creation.
    answer: Arc<Mutex<(StatusCode, Value)>>,
}

impl FakeServer {
    /// Serves on a free loopback port; returns the state and the base URL.
    async fn start() -> (FakeServer, String) {
        let server = FakeServer {
            posts: Arc::default(),
            answer: Arc::new(Mutex::new((
                StatusCode::CREATED,
                json!({"Id": "Machines-1"}),
            ))),
        };
        let app = Router::new()
            .route("/api/certificates/certificate-global", get(certificate))
            .route("/api/spaces/all", get(spaces))
            .route("/api/{space}/environments/all", get(environments))
            .route("/api/{space}/workerpools/all", get(worker_pools))
            .route("/api/{space}/machines", post(create))
            .route("/api/{space}/workers", post(create))
            .with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (server, base)
    }

    fn answer_next(&self, status: StatusCode, body: Value) {
        *self.answer.lock().unwrap() = (status, body);
    }

    fn posts(&self) -> Vec<Posted> {
        self.posts.lock().unwrap().clone()
    }
}

/// The 401 Octopus answers a missing or wrong key with, carrying an `ErrorMessage`; `None` when
/// the key is right.
fn refusal(headers: &HeaderMap) -> Option<Response> {
    if headers
        .get("X-Octopus-ApiKey")
        .and_then(|v| v.to_str().ok())
        == Some(API_KEY)
    {
        return None;
    }
    let body = json!({
        "ErrorMessage": "You must be logged in to perform this action. Please provide a valid API key.",
        "Errors": [],
    });
    Some((StatusCode::UNAUTHORIZED, Json(body)).into_response())
}

async fn certificate(headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&headers) {
        return refused;
    }
    Json(json!({
        "Id": "certificate-global",
        "Name": "Octopus Portal",
        "Thumbprint": SERVER_THUMBPRINT,
    }))
    .into_response()
}

async fn spaces(headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&headers) {
        return refused;
    }
    Json(json!([
        {"Id": "Spaces-1", "Name": "Default", "IsDefault": true},
        {"Id": "Spaces-2", "Name": "Platform", "IsDefault": false},
    ]))
    .into_response()
}

async fn environments(headers: HeaderMap, Path(space): Path<String>) -> Response {
    if let Some(refused) = refusal(&headers) {
        return refused;
    }
    let prefix = if space == "Spaces-2" { "P-" } else { "" };
    Json(json!([
        {"Id": "Environments-1", "Name": format!("{prefix}Development")},
        {"Id": "Environments-2", "Name": format!("{prefix}Test")},
        {"Id": "Environments-3", "Name": format!("{prefix}Production")},
    ]))
    .into_response()
}

async fn worker_pools(headers: HeaderMap, Path(_space): Path<String>) -> Response {
    if let Some(refused) = refusal(&headers) {
        return refused;
    }
    Json(json!([
        {"Id": "WorkerPools-1", "Name": "Default Worker Pool"},
        {"Id": "WorkerPools-2", "Name": "Linux Builders"},
    ]))
    .into_response()
}

async fn create(
    State(server): State<FakeServer>,
    headers: HeaderMap,
    Path(space): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = refusal(&headers) {
        return refused;
    }
    let collection = if body.get("WorkerPoolIds").is_some() {
        "workers"
    } else {
        "machines"
    };
    server.posts.lock().unwrap().push(Posted {
        path: format!("/api/{space}/{collection}"),
        body,
    });
    let (status, answer) = server.answer.lock().unwrap().clone();
    (status, Json(answer)).into_response()
}

/// Runs `cuttle-agent register` with `args` to completion: (exit code, stdout, stderr).
async fn register(home: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = within(
        tokio::process::Command::new(AGENT)
            .arg("--home")
            .arg(home)
            .arg("register")
            .args(args)
            .env_remove("CUTTLE_AGENT_HOME")
            .env_remove("OCTOPUS_URL")
            .env_remove("OCTOPUS_API_KEY")
            .env_remove("OCTOPUS_SPACE")
            .output(),
    )
    .await
    .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn agent_json(home: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(home.join("agent.json")).unwrap()).unwrap()
}

fn agent_thumbprint(home: &std::path::Path) -> String {
    AgentIdentity::load_or_create(home)
        .unwrap()
        .thumbprint()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_listening_target_posts_the_octopus_machine_body_and_writes_agent_json() {
    let (server, base) = FakeServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = register(
        home.path(),
        &[
            "--server",
            &base,
            "--api-key",
            API_KEY,
            "--environment",
            "Production",
            "--environment",
            "Environments-2",
            "--role",
            "web",
            "--role",
            "db",
            "--name",
            "web-01",
            "--listen",
            "0.0.0.0:10933",
            "--public-host",
            "web01.example.com",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("Machines-1"), "{stdout}");
    assert!(!stdout.contains(API_KEY) && !stderr.contains(API_KEY));

    let thumbprint = agent_thumbprint(home.path());
    let posts = server.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].path, "/api/Spaces-1/machines");
    assert_eq!(
        posts[0].body,
        json!({
            "Name": "web-01",
            "EnvironmentIds": ["Environments-3", "Environments-2"],
            "Roles": ["web", "db"],
            "Endpoint": {
                "CommunicationStyle": "TentaclePassive",
                "Uri": "https://web01.example.com:10933/",
                "Thumbprint": thumbprint,
            },
        })
    );

    let config = agent_json(home.path());
    assert_eq!(config["mode"], "listening");
    assert_eq!(config["listen"], "0.0.0.0:10933");
    assert_eq!(config["trusted_thumbprints"], json!([SERVER_THUMBPRINT]));
    let registration = &config["registration"];
    assert_eq!(registration["machine_id"], "Machines-1");
    assert_eq!(registration["space_id"], "Spaces-1");
    assert_eq!(registration["kind"], "deployment_target");
    assert_eq!(registration["server"], base.as_str());
    let subscription_id = config["subscription_id"].as_str().unwrap();
    assert_eq!(subscription_id.len(), 20);
    assert!(subscription_id.bytes().all(|b| b.is_ascii_lowercase()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_polling_worker_posts_its_pools_and_a_poll_uri() {
    let (server, base) = FakeServer::start().await;
    server.answer_next(StatusCode::CREATED, json!({"Id": "Workers-4"}));
    let home = tempfile::tempdir().unwrap();
    let (code, _, stderr) = register(
        home.path(),
        &[
            "--server",
            &format!("{base}/api/"),
            "--api-key",
            API_KEY,
            "--space",
            "platform",
            "--worker-pool",
            "Linux Builders",
            "--name",
            "builder-1",
            "--polling",
            "--server-comms",
            "cuttle.example.com:10943",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");

    let config = agent_json(home.path());
    let subscription_id = config["subscription_id"].as_str().unwrap();
    let posts = server.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].path, "/api/Spaces-2/workers");
    assert_eq!(
        posts[0].body,
        json!({
            "Name": "builder-1",
            "WorkerPoolIds": ["WorkerPools-2"],
            "Endpoint": {
                "CommunicationStyle": "TentacleActive",
                "Uri": format!("poll://{subscription_id}/"),
                "Thumbprint": agent_thumbprint(home.path()),
            },
        })
    );
    assert_eq!(config["mode"], "polling");
    assert_eq!(config["server_comms"], "cuttle.example.com:10943");
    assert_eq!(config["registration"]["kind"], "worker");
    assert_eq!(config["registration"]["machine_id"], "Workers-4");
    assert_eq!(config["registration"]["space_id"], "Spaces-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_again_keeps_the_subscription_id_and_updates_agent_json() {
    let (server, base) = FakeServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let polling = [
        "--server",
        &base,
        "--api-key",
        API_KEY,
        "--environment",
        "Test",
        "--role",
        "web",
        "--polling",
        "--server-comms",
        "cuttle.example.com:10943",
    ];
    let (code, _, stderr) = register(home.path(), &polling).await;
    assert_eq!(code, Some(0), "{stderr}");
    let first = agent_json(home.path());

    server.answer_next(StatusCode::CREATED, json!({"Id": "Machines-9"}));
    let (code, _, stderr) = register(home.path(), &polling).await;
    assert_eq!(code, Some(0), "{stderr}");
    let second = agent_json(home.path());

    assert_eq!(second["subscription_id"], first["subscription_id"]);
    assert_eq!(second["registration"]["machine_id"], "Machines-9");
    assert_eq!(second["trusted_thumbprints"], json!([SERVER_THUMBPRINT]));
    let posts = server.posts();
    assert_eq!(posts[0].body["Endpoint"], posts[1].body["Endpoint"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_environment_is_named_in_the_error_and_nothing_is_registered() {
    let (server, base) = FakeServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let (code, _, stderr) = register(
        home.path(),
        &[
            "--server",
            &base,
            "--api-key",
            API_KEY,
            "--environment",
            "Production",
            "--environment",
            "Staging",
            "--role",
            "web",
            "--listen",
            "10933",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("'Staging'"), "{stderr}");
    assert!(
        stderr.contains("'Production'"),
        "the known ones are listed: {stderr}"
    );
    assert!(server.posts().is_empty());
    assert!(!home.path().join("agent.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_api_key_says_to_check_it_without_printing_it() {
    let (server, base) = FakeServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let wrong_key = "API-WRONGKEY9999";
    let (code, _, stderr) = register(
        home.path(),
        &[
            "--server",
            &base,
            "--api-key",
            wrong_key,
            "--environment",
            "Test",
            "--role",
            "web",
            "--listen",
            "10933",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--api-key"), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!stderr.contains(wrong_key), "{stderr}");
    assert!(server.posts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_says_to_check_the_url() {
    let home = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{}", support::free_port());
    let (code, _, stderr) = register(
        home.path(),
        &[
            "--server",
            &base,
            "--api-key",
            API_KEY,
            "--environment",
            "Test",
            "--role",
            "web",
            "--listen",
            "10933",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("could not reach the server"), "{stderr}");
    assert!(stderr.contains("--server"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_the_server_refuses_prints_its_error_message_and_errors() {
    let (server, base) = FakeServer::start().await;
    server.answer_next(
        StatusCode::BAD_REQUEST,
        json!({
            "ErrorMessage": "There was a problem with your request.",
            "Errors": ["A machine with the name web-01 already exists."],
        }),
    );
    let home = tempfile::tempdir().unwrap();
    let (code, _, stderr) = register(
        home.path(),
        &[
            "--server",
            &base,
            "--api-key",
            API_KEY,
            "--name",
            "web-01",
            "--environment",
            "Test",
            "--role",
            "web",
            "--listen",
            "10933",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("There was a problem with your request."),
        "{stderr}"
    );
    assert!(
        stderr.contains("A machine with the name web-01 already exists."),
        "{stderr}"
    );
    assert!(!home.path().join("agent.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_target_without_a_role_is_refused_before_contacting_the_server() {
    let (server, base) = FakeServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let (code, _, stderr) = register(
        home.path(),
        &[
            "--server",
            &base,
            "--api-key",
            API_KEY,
            "--environment",
            "Test",
            "--listen",
            "10933",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--role"), "{stderr}");
    assert!(server.posts().is_empty());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_defaults_its_home_to_a_private_directory_under_xdg_data_home() {
    use std::os::unix::fs::PermissionsExt;
    let (_server, base) = FakeServer::start().await;
    let data_home = tempfile::tempdir().unwrap();
    let output = within(
        tokio::process::Command::new(AGENT)
            .args(["register", "--server", &base, "--api-key", API_KEY])
            .args([
                "--environment",
                "Test",
                "--role",
                "web",
                "--listen",
                "10933",
            ])
            .env_remove("CUTTLE_AGENT_HOME")
            .env("XDG_DATA_HOME", data_home.path())
            .output(),
    )
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let home = data_home.path().join("cuttle-agent");
    assert!(home.join("agent.json").exists());
    let mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}
