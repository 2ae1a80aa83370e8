//! Test kit: configurations for both modes on the real dependencies, each test isolated (its
//! own SQLite directory, or its own PostgreSQL database, RabbitMQ prefix, Redis prefix and S3
//! bucket), and a small JSON client that speaks with an API key.
//!
//! Distributed tests need PostgreSQL, RabbitMQ, Redis and the S3 server running; `infra/up.sh`
//! starts them. A missing dependency fails the test: nothing is silently skipped.

use anyhow::Context;
use cuttle_platform::{BlobKind, BusKind, CacheKind, Config, Secret};
use serde_json::Value;
use std::time::Duration;

/// The two ways Cuttle runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SQLite, in-process bus, local blobs, memory cache.
    Embedded,
    /// PostgreSQL, RabbitMQ, S3, Redis.
    Distributed,
}

/// Endpoints of the real dependencies, overridable for other machines.
pub mod endpoints {
    /// PostgreSQL server URL (without a database).
    pub fn postgres() -> String {
        std::env::var("CUTTLE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
    }
    /// RabbitMQ URL.
    pub fn amqp() -> String {
        std::env::var("CUTTLE_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
    }
    /// Redis URL.
    pub fn redis() -> String {
        std::env::var("CUTTLE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }
    /// S3 endpoint.
    pub fn s3() -> String {
        std::env::var("CUTTLE_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into())
    }
}

/// A generated administrator key in Octopus's shape.
pub fn random_api_key() -> String {
    let tail: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .to_uppercase()
        .chars()
        .take(26)
        .collect();
    format!("API-{tail}")
}

/// Resources a test environment owns; `cleanup` drops the PostgreSQL database.
pub struct TestEnv {
    /// Configuration for every service of this test.
    pub config: Config,
    /// The administrator key the config fixes.
    pub api_key: String,
    /// Data directory (kept alive for the test's duration).
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database, in distributed mode.
    pub database: Option<String>,
}

impl TestEnv {
    /// A fresh, isolated configuration for `mode`, with fast supervision timings for tests.
    pub async fn new(mode: Mode) -> anyhow::Result<TestEnv> {
        let dir = tempfile::tempdir()?;
        let api_key = random_api_key();
        let mut config = Config::default();
        config.server.data_dir = dir.path().join("data");
        config.server.node_name = Some("test".into());
        config.admin_api_key = Some(Secret::new(api_key.clone()));
        config.orchestrator.heartbeat_timeout_secs = 4;
        config.orchestrator.reaper_interval_ms = 250;
        config.worker.heartbeat_interval_ms = 500;
        config.worker.kill_grace_secs = 2;
        config.worker.work_dir = Some(dir.path().join("work"));
        let mut database = None;
        if mode == Mode::Distributed {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let name = format!("cuttle_test_{}", &id[..16]);
            create_database(&name).await?;
            config.database.url = Some(Secret::new(format!("{}/{name}", endpoints::postgres())));
            config.bus.kind = BusKind::Rabbitmq;
            config.bus.url = Some(Secret::new(endpoints::amqp()));
            config.bus.prefix = format!("cuttle-test-{id}.");
            config.cache.kind = CacheKind::Redis;
            config.cache.url = Some(Secret::new(endpoints::redis()));
            config.cache.prefix = format!("cuttle-test:{id}:");
            config.blob.kind = BlobKind::S3;
            config.blob.endpoint = Some(endpoints::s3());
            config.blob.bucket = format!("t-{}", &id[..20]);
            config.blob.access_key_id = Some("cuttle".into());
            config.blob.secret_access_key = Some(Secret::new("cuttle-secret"));
            config.blob.force_path_style = true;
            // Every service process of the installation shares one master key.
            config.secrets.master_key = Some(Secret::new(cuttle_secrets::Keyring::generate_key()?));
            database = Some(name);
        }
        Ok(TestEnv {
            config,
            api_key,
            dir,
            database,
        })
    }

    /// The same configuration as `CUTTLE_*` environment variables, for child processes.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let c = &self.config;
        let mut vars = vec![
            ("CUTTLE_ADMIN_API_KEY".into(), self.api_key.clone()),
            (
                "CUTTLE_SERVER__DATA_DIR".into(),
                c.server.data_dir.display().to_string(),
            ),
            ("CUTTLE_SERVER__NODE_NAME".into(), "test".into()),
            (
                "CUTTLE_ORCHESTRATOR__HEARTBEAT_TIMEOUT_SECS".into(),
                c.orchestrator.heartbeat_timeout_secs.to_string(),
            ),
            (
                "CUTTLE_ORCHESTRATOR__REAPER_INTERVAL_MS".into(),
                c.orchestrator.reaper_interval_ms.to_string(),
            ),
            (
                "CUTTLE_WORKER__HEARTBEAT_INTERVAL_MS".into(),
                c.worker.heartbeat_interval_ms.to_string(),
            ),
            ("CUTTLE_TELEMETRY__LOG_FORMAT".into(), "json".into()),
        ];
        if let Some(key) = &c.secrets.master_key {
            vars.push(("CUTTLE_SECRETS__MASTER_KEY".into(), key.expose().into()));
        }
        if let Some(url) = &c.database.url {
            vars.push(("CUTTLE_DATABASE__URL".into(), url.expose().into()));
        }
        if c.bus.kind == BusKind::Rabbitmq {
            vars.push(("CUTTLE_BUS__KIND".into(), "rabbitmq".into()));
            vars.push(("CUTTLE_BUS__URL".into(), endpoints::amqp()));
            vars.push(("CUTTLE_BUS__PREFIX".into(), c.bus.prefix.clone()));
        }
        if c.cache.kind == CacheKind::Redis {
            vars.push(("CUTTLE_CACHE__KIND".into(), "redis".into()));
            vars.push(("CUTTLE_CACHE__URL".into(), endpoints::redis()));
            vars.push(("CUTTLE_CACHE__PREFIX".into(), c.cache.prefix.clone()));
        }
        if c.blob.kind == BlobKind::S3 {
            vars.push(("CUTTLE_BLOB__KIND".into(), "s3".into()));
            vars.push(("CUTTLE_BLOB__ENDPOINT".into(), endpoints::s3()));
            vars.push(("CUTTLE_BLOB__BUCKET".into(), c.blob.bucket.clone()));
            vars.push(("CUTTLE_BLOB__ACCESS_KEY_ID".into(), "cuttle".into()));
            vars.push((
                "CUTTLE_BLOB__SECRET_ACCESS_KEY".into(),
                "cuttle-secret".into(),
            ));
        }
        vars
    }

    /// Drops the test's PostgreSQL database (best effort: a leftover is removed by
    /// `infra/clean-test-data.sh`).
    pub async fn cleanup(self) {
        if let Some(name) = &self.database
            && let Err(err) = drop_database(name).await
        {
            eprintln!("could not drop test database {name}: {err:#}");
        }
    }
}

async fn admin_connection() -> anyhow::Result<sea_orm::DatabaseConnection> {
    let url = format!("{}/postgres", endpoints::postgres());
    sea_orm::Database::connect(&url)
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {url}; run infra/up.sh"))
}

/// Creates an empty PostgreSQL database with a unique name; returns its URL and its name.
///
/// Fails (rather than letting a test skip) when the server is unreachable.
pub async fn fresh_postgres_database() -> anyhow::Result<(String, String)> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("cuttle_test_{}", &id[..16]);
    create_database(&name).await?;
    Ok((format!("{}/{name}", endpoints::postgres()), name))
}

/// Where `needle` appears in the text columns that hold what users and scripts gave the server
/// (documents, tasks, jobs, their outputs and logs, the outbox), as `table.column`: for tests
/// that a secret is never stored in clear text.
pub async fn stored_in_clear(config: &Config, needle: &str) -> anyhow::Result<Vec<String>> {
    use sea_orm::{ConnectionTrait, Statement, Value as SqlValue};
    let store = cuttle_platform::connect_store(config).await?;
    let conn = store.conn();
    let backend = conn.get_database_backend();
    let placeholder = match backend {
        sea_orm::DbBackend::Postgres => "$1",
        _ => "?",
    };
    let mut found = Vec::new();
    for (table, column) in [
        ("documents", "data"),
        ("server_tasks", "arguments"),
        ("server_tasks", "error_message"),
        ("task_jobs", "payload"),
        ("task_jobs", "output_variables"),
        ("task_jobs", "error"),
        ("task_log", "message"),
        ("outbox", "payload"),
        ("settings", "value"),
    ] {
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE {column} LIKE {placeholder}");
        let row = conn
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [SqlValue::from(format!("%{needle}%"))],
            ))
            .await
            .with_context(|| format!("reading {table}.{column}"))?;
        let count: i64 = match row {
            Some(row) => row.try_get("", "n")?,
            None => 0,
        };
        if count > 0 {
            found.push(format!("{table}.{column}"));
        }
    }
    Ok(found)
}

/// Drops a database made by [`fresh_postgres_database`], closing any connection still open.
pub async fn drop_postgres_database(name: &str) -> anyhow::Result<()> {
    drop_database(name).await
}

async fn create_database(name: &str) -> anyhow::Result<()> {
    use sea_orm::ConnectionTrait;
    let conn = admin_connection().await?;
    conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    conn.close().await?;
    Ok(())
}

async fn drop_database(name: &str) -> anyhow::Result<()> {
    use sea_orm::ConnectionTrait;
    let conn = admin_connection().await?;
    conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    conn.close().await?;
    Ok(())
}

/// A JSON client for the API.
#[derive(Clone)]
pub struct Client {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// The key sent in `X-Octopus-ApiKey` (empty: none).
    pub api_key: String,
    http: reqwest::Client,
}

/// A response: status and JSON body (or the text as a JSON string).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
}

impl Reply {
    /// Panics with the body unless the status matches: test helper.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self.body
    }
}

impl Client {
    /// A client for `base` using `api_key`.
    pub fn new(base: impl Into<String>, api_key: impl Into<String>) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Client {
            base: base.into(),
            api_key: api_key.into(),
            http,
        }
    }

    /// The same client without credentials.
    pub fn anonymous(&self) -> Client {
        Client {
            api_key: String::new(),
            ..self.clone()
        }
    }

    /// Sends a request with an optional JSON body.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !self.api_key.is_empty() {
            request = request.header("X-Octopus-ApiKey", &self.api_key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => panic!("request to {path} failed: {err}"),
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body }
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// POST JSON.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// PUT JSON.
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Polls a task until it completes (or `limit` passes), returning its last state.
    pub async fn wait_for_task(&self, task_id: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let task = self.get(&format!("/api/tasks/{task_id}")).await.expect(200);
            if task["IsCompleted"] == Value::Bool(true) || tokio::time::Instant::now() >= deadline {
                return task;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until `path` answers 200, for processes still starting.
    pub async fn wait_until_up(&self, path: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let attempt = self.http.get(format!("{}{path}", self.base)).send().await;
            if attempt.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("{}{path} did not come up within {limit:?}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A process script for the common flow: environment, project, one bash step, release, deploy.
pub mod flow {
    use super::Client;
    use serde_json::{Value, json};

    /// Creates environment `env` (if needed) and project `project` whose process runs `script`
    /// in Bash on the server. Returns the project id.
    pub async fn project_with_script(
        client: &Client,
        space: &str,
        env: &str,
        project: &str,
        script: &str,
    ) -> String {
        let envs = client
            .get(&format!("/api/{space}/environments?name={env}"))
            .await
            .expect(200);
        if envs["TotalResults"] == json!(0) {
            client
                .post(&format!("/api/{space}/environments"), json!({"Name": env}))
                .await
                .expect(201);
        }
        let group = client
            .get(&format!("/api/{space}/projectgroups?take=1"))
            .await
            .expect(200)["Items"][0]["Id"]
            .clone();
        let lifecycle = client
            .get(&format!("/api/{space}/lifecycles?take=1"))
            .await
            .expect(200)["Items"][0]["Id"]
            .clone();
        let created = client
            .post(
                &format!("/api/{space}/projects"),
                json!({"Name": project, "ProjectGroupId": group, "LifecycleId": lifecycle}),
            )
            .await
            .expect(201);
        let id = created["Id"].as_str().unwrap_or_default().to_owned();
        set_script(client, space, &id, script).await;
        id
    }

    /// A step named `name` with one action of the same name running `body` inline on the
    /// server, in `syntax` (`Bash`, `Python`, `PowerShell`).
    pub fn script_step(name: &str, syntax: &str, body: &str) -> Value {
        json!({
            "Id": "", "Name": name,
            "Actions": [{
                "Id": "", "Name": name, "ActionType": "Octopus.Script",
                "Properties": {
                    "Octopus.Action.RunOnServer": "true",
                    "Octopus.Action.Script.ScriptSource": "Inline",
                    "Octopus.Action.Script.Syntax": syntax,
                    "Octopus.Action.Script.ScriptBody": body
                }
            }]
        })
    }

    /// Replaces the project's process with `steps`.
    pub async fn set_steps(
        client: &Client,
        space: &str,
        project_id: &str,
        steps: Vec<Value>,
    ) -> Value {
        let path = format!("/api/{space}/projects/{project_id}/deploymentprocesses");
        let mut process = client.get(&path).await.expect(200);
        process["Steps"] = Value::Array(steps);
        client.put(&path, process).await.expect(200)
    }

    /// Replaces the project's process with one bash step running `script`.
    pub async fn set_script(client: &Client, space: &str, project_id: &str, script: &str) -> Value {
        set_steps(
            client,
            space,
            project_id,
            vec![script_step("Run script", "Bash", script)],
        )
        .await
    }

    /// A user of the admin's organisation with an API key; returns (user id, client).
    pub async fn user_with_key(admin: &Client, username: &str) -> (String, Client) {
        let user = admin
            .post(
                "/api/users",
                json!({"Username": username, "DisplayName": username, "EmailAddress": format!("{username}@example.com")}),
            )
            .await
            .expect(201);
        let user_id = user["Id"].as_str().unwrap_or_default().to_owned();
        let key = admin
            .post(
                &format!("/api/users/{user_id}/apikeys"),
                json!({"Purpose": "tests"}),
            )
            .await
            .expect(201);
        let key = key["ApiKey"].as_str().unwrap_or_default().to_owned();
        assert!(key.starts_with("API-"), "{key}");
        (user_id, Client::new(admin.base.clone(), key))
    }

    /// Team `name` in Spaces-1 with `members`, holding `role` restricted to `environments`
    /// (none: unrestricted); returns (team id, scoped user role id).
    pub async fn scoped_team(
        admin: &Client,
        name: &str,
        members: &[&str],
        role: &str,
        environments: &[&str],
    ) -> (String, String) {
        let team = admin
            .post(
                "/api/teams",
                json!({"Name": name, "MemberUserIds": members, "SpaceId": "Spaces-1"}),
            )
            .await
            .expect(201);
        let team_id = team["Id"].as_str().unwrap_or_default().to_owned();
        let binding = admin
            .post(
                "/api/scopeduserroles",
                json!({"TeamId": team_id, "UserRoleId": role, "SpaceId": "Spaces-1", "EnvironmentIds": environments}),
            )
            .await
            .expect(201);
        (
            team_id,
            binding["Id"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Creates a release and deploys it to `env`; returns the task id.
    pub async fn release_and_deploy(
        client: &Client,
        space: &str,
        project: &str,
        env: &str,
    ) -> String {
        let release = client
            .post(
                &format!("/api/{space}/releases/create/v1"),
                json!({"spaceIdOrName": space, "ProjectName": project}),
            )
            .await
            .expect(201);
        let version = release["ReleaseVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let deployed = client
            .post(
                &format!("/api/{space}/deployments/create/untenanted/v1"),
                json!({"spaceIdOrName": space, "ProjectName": project, "ReleaseVersion": version, "EnvironmentNames": [env]}),
            )
            .await
            .expect(201);
        deployed["DeploymentServerTasks"][0]["ServerTaskId"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}
