//! Configuration and wiring: one typed config (defaults, then an optional TOML file, then
//! `CUTTLE_SECTION__KEY` environment variables) and the adapters it selects for each port.
//!
//! Embedded mode is simply the defaults: SQLite under the data directory, the in-process bus,
//! a local blob directory and the memory cache. Distributed mode names PostgreSQL, RabbitMQ, S3
//! and Redis in the config file or the environment (see `infra/cuttle.example.toml`).

use anyhow::Context;
use cuttle_blob::{BlobStore, LocalBlobStore, S3BlobStore, S3Config};
use cuttle_bus::{Bus, InProcessBus, RabbitMqBus};
use cuttle_cache::{Cache, MemoryCache, RedisCache};
use cuttle_store::Store;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod agent_trust;
pub mod outbox;
pub mod secrets;

pub use cuttle_telemetry::TelemetryConfig;

/// A secret string: never printed by `Debug` or `Display`, so configs can be logged.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"********\""
        })
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Fixes the first administrator's API key (`CUTTLE_ADMIN_API_KEY`), like Octopus's
    /// `ADMIN_API_KEY`.
    pub admin_api_key: Option<Secret>,
    /// HTTP listener and data directory.
    pub server: ServerConfig,
    /// Database.
    pub database: DatabaseConfig,
    /// Message bus.
    pub bus: BusConfig,
    /// Blob store.
    pub blob: BlobConfig,
    /// Cache and locks.
    pub cache: CacheConfig,
    /// Logs, traces.
    pub telemetry: TelemetryConfig,
    /// Task supervision.
    pub orchestrator: OrchestratorConfig,
    /// Script execution.
    pub worker: WorkerConfig,
    /// The built-in package feed.
    pub feed: FeedConfig,
    /// The master key for sensitive values.
    pub secrets: SecretsConfig,
    /// Sign-in: sessions and login throttling.
    pub auth: AuthConfig,
    /// Per-organisation request rate and quotas.
    pub limits: LimitsConfig,
    /// Outgoing mail (invitations, address verification).
    pub smtp: SmtpConfig,
}

/// How mail is sent. Without a host no mail is sent: invitations are refused with a reason and
/// sign-up addresses are taken as verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// The SMTP server; unset turns mail off.
    pub host: Option<String>,
    /// Its port.
    pub port: u16,
    /// `starttls` (upgrade a plain connection), `tls` (TLS from the start) or `none`.
    pub security: String,
    /// The sender, e.g. `Cuttle <cuttle@example.com>`.
    pub from: String,
    /// Credentials, when the server wants them.
    pub username: Option<String>,
    /// The password of `username`.
    pub password: Option<Secret>,
    /// The address people reach the portal at, for the links in mail (e.g.
    /// `https://deploy.example.com`); unset, the address of the request that caused the mail.
    pub public_url: Option<String>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: None,
            port: 587,
            security: "starttls".into(),
            from: "Cuttle <cuttle@localhost>".into(),
            username: None,
            password: None,
            public_url: None,
        }
    }
}

/// What one organisation may use (0 = unlimited).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Authenticated API requests per organisation per minute; beyond it, 429 with
    /// `Retry-After` until the minute ends. Counted in the cache, so replicas share it.
    pub requests_per_minute: u32,
    /// Spaces an organisation may have.
    pub max_spaces: u32,
    /// Users and service accounts an organisation may have.
    pub max_users: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            requests_per_minute: 6_000,
            max_spaces: 100,
            max_users: 1_000,
        }
    }
}

/// Sign-in: session lifetimes and how hard logins are throttled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Lifetime of a session's access token (a signed JWT), in seconds.
    pub access_token_secs: u64,
    /// Lifetime of a session's refresh token (revocable, stored hashed), in seconds.
    pub refresh_token_secs: u64,
    /// Failed logins allowed per account in `login_window_secs` before 429.
    pub login_attempts_per_account: u32,
    /// Failed logins allowed per client address in `login_window_secs` before 429.
    pub login_attempts_per_address: u32,
    /// The throttling window, in seconds.
    pub login_window_secs: u64,
    /// Marks cookies `Secure`: set it when clients reach the api over HTTPS (a proxy in front).
    pub secure_cookies: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_token_secs: 900,
            refresh_token_secs: 14 * 86_400,
            login_attempts_per_account: 10,
            login_attempts_per_address: 50,
            login_window_secs: 300,
            secure_cookies: false,
        }
    }
}

/// The master key that seals sensitive values (see [`secrets`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    /// Base64 of 32 random bytes (`openssl rand -base64 32`); every api and worker of one
    /// installation needs the same. Unset on SQLite: `<data_dir>/master.key`, created once.
    pub master_key: Option<Secret>,
    /// Earlier keys: values they sealed still open, and are sealed again under `master_key`
    /// when saved.
    pub retired_keys: Vec<Secret>,
}

/// Where the api listens and where embedded data lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the api (and, in embedded mode, the whole server).
    pub listen: SocketAddr,
    /// Address of the package-feed service's own listener (distributed mode).
    pub feed_listen: SocketAddr,
    /// Address of the health/metrics listener of orchestrator and worker processes.
    pub ops_listen: SocketAddr,
    /// Root of everything embedded mode stores.
    pub data_dir: PathBuf,
    /// A name for this node in task logs (`ServerNode`); defaults to the host name.
    pub node_name: Option<String>,
    /// Where the server certificate agents pin lives (created on first start); defaults to
    /// `<data_dir>/certificates`. In distributed mode the api and every worker must read the
    /// same files (a shared directory or a mounted secret).
    pub certificate_dir: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            feed_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            ops_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            data_dir: default_data_dir(),
            node_name: None,
            certificate_dir: None,
        }
    }
}

/// `$XDG_DATA_HOME/cuttle`, `~/.local/share/cuttle`, or `./cuttle-data` without a home.
fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("cuttle");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/cuttle"),
        None => PathBuf::from("cuttle-data"),
    }
}

/// Database selection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://...` or `sqlite://...`; empty means SQLite at `<data_dir>/cuttle.db`.
    pub url: Option<Secret>,
}

/// Which bus.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BusKind {
    /// Channels inside one process (embedded mode).
    #[default]
    InProcess,
    /// RabbitMQ through lapin.
    Rabbitmq,
}

/// Bus selection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// in-process or rabbitmq.
    pub kind: BusKind,
    /// AMQP URL for rabbitmq.
    pub url: Option<Secret>,
    /// Prefix of queue and exchange names (lets several installations share a broker).
    pub prefix: String,
}

/// Which blob store.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BlobKind {
    /// A directory (embedded mode).
    #[default]
    Local,
    /// An S3-compatible server.
    S3,
}

/// Blob store selection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobConfig {
    /// local or s3.
    pub kind: BlobKind,
    /// Directory for local; defaults to `<data_dir>/blobs`.
    pub dir: Option<PathBuf>,
    /// S3 endpoint URL (empty: AWS).
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: String,
    /// S3 bucket, created if missing.
    pub bucket: String,
    /// S3 access key id.
    pub access_key_id: Option<String>,
    /// S3 secret key.
    pub secret_access_key: Option<Secret>,
    /// Path-style addressing (needed by most self-hosted S3 servers).
    pub force_path_style: bool,
    /// Parts of one multipart upload sent at once.
    pub upload_concurrency: usize,
    /// Ranges of one download fetched at once.
    pub download_concurrency: usize,
}

impl Default for BlobConfig {
    fn default() -> Self {
        BlobConfig {
            kind: BlobKind::Local,
            dir: None,
            endpoint: None,
            region: "us-east-1".into(),
            bucket: "cuttle".into(),
            access_key_id: None,
            secret_access_key: None,
            force_path_style: true,
            upload_concurrency: cuttle_blob::DEFAULT_UPLOAD_CONCURRENCY,
            download_concurrency: cuttle_blob::DEFAULT_DOWNLOAD_CONCURRENCY,
        }
    }
}

/// Which cache.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CacheKind {
    /// In this process (embedded mode).
    #[default]
    Memory,
    /// Redis.
    Redis,
}

/// Cache selection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// memory or redis.
    pub kind: CacheKind,
    /// Redis URL.
    pub url: Option<Secret>,
    /// Key prefix.
    pub prefix: String,
}

/// How the orchestrator supervises running work.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrchestratorConfig {
    /// A running job without a heartbeat for this long is failed: its worker died.
    pub heartbeat_timeout_secs: u64,
    /// A dispatched job nobody started within this long is failed.
    pub start_timeout_secs: u64,
    /// How often the reaper looks for such jobs.
    pub reaper_interval_ms: u64,
    /// Machines a health-check task checks at once.
    pub health_check_parallelism: u32,
    /// A step for a polling agent that no worker holding its connection picked up within this
    /// long is failed (Octopus's PollingRequestQueueTimeout, 2 minutes by default).
    pub polling_pickup_timeout_secs: u64,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            heartbeat_timeout_secs: 15,
            start_timeout_secs: 900,
            reaper_interval_ms: 2_000,
            health_check_parallelism: 64,
            polling_pickup_timeout_secs: 120,
        }
    }
}

impl OrchestratorConfig {
    /// Heartbeat timeout as a duration.
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(self.heartbeat_timeout_secs)
    }
}

/// How workers run scripts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Jobs run at once by one worker process.
    pub concurrency: u16,
    /// Heartbeat period while a job runs.
    pub heartbeat_interval_ms: u64,
    /// Where scripts are written; defaults to `<data_dir>/work` (embedded) or a temp dir.
    pub work_dir: Option<PathBuf>,
    /// Seconds between SIGTERM and SIGKILL when a script is canceled.
    pub kill_grace_secs: u64,
    /// The comms port polling agents dial (`host:port`, Octopus uses 10943); unset: this worker
    /// accepts no polling agents.
    pub polling_listen: Option<String>,
}

/// The built-in package feed's housekeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedConfig {
    /// Seconds between retention rounds (each space's policy, then orphaned files); 0 turns the
    /// rounds off (`POST /api/{space}/tasks {"Name":"Retention"}` still works).
    pub retention_interval_secs: u64,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            retention_interval_secs: 3_600,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 8,
            heartbeat_interval_ms: 3_000,
            work_dir: None,
            kill_grace_secs: 3,
            polling_listen: None,
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if given), then `CUTTLE_*` variables (`__` separates sections:
    /// `CUTTLE_DATABASE__URL`, `CUTTLE_BUS__KIND`). Unknown keys are errors naming the key.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                anyhow::bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("CUTTLE_").split("__").filter(|key| {
            // CUTTLE_TEST_* belong to the test suite and CUTTLE_CONFIG names the file (read by
            // the CLI), so neither is a configuration key.
            let key = key.as_str().to_ascii_lowercase();
            !key.starts_with("test_") && key != "config"
        }));
        let config: Config = figment.extract().context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// Fails fast on combinations that cannot work, naming the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.bus.kind == BusKind::Rabbitmq && self.bus.url.is_none() {
            anyhow::bail!("bus.url (CUTTLE_BUS__URL) is required when bus.kind is rabbitmq");
        }
        if self.cache.kind == CacheKind::Redis && self.cache.url.is_none() {
            anyhow::bail!("cache.url (CUTTLE_CACHE__URL) is required when cache.kind is redis");
        }
        if self.blob.kind == BlobKind::S3 && self.blob.bucket.trim().is_empty() {
            anyhow::bail!("blob.bucket (CUTTLE_BLOB__BUCKET) is required when blob.kind is s3");
        }
        if let Some(key) = &self.admin_api_key
            && !is_valid_api_key(key.expose())
        {
            anyhow::bail!(
                "admin_api_key (CUTTLE_ADMIN_API_KEY) must look like API-XXXXXXXX: 'API-' then at least 16 upper-case letters or digits"
            );
        }
        if self.worker.concurrency == 0 {
            anyhow::bail!("worker.concurrency must be at least 1");
        }
        Ok(())
    }

    /// The database URL, defaulting to SQLite in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) if !url.expose().is_empty() => url.expose().to_owned(),
            _ => format!(
                "sqlite://{}?mode=rwc",
                self.server.data_dir.join("cuttle.db").display()
            ),
        }
    }

    /// True when every port uses its embedded implementation.
    pub fn is_embedded(&self) -> bool {
        self.bus.kind == BusKind::InProcess
            && self.cache.kind == CacheKind::Memory
            && self.blob.kind == BlobKind::Local
            && !self.database_url().starts_with("postgres")
    }

    /// This node's name for task logs.
    pub fn node_name(&self) -> String {
        self.server.node_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|name| name.trim().to_owned())
                .ok()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "cuttle".to_owned())
        })
    }
}

/// The shape Go's client enforces and Octopus issues: `API-` then upper-case letters and digits.
pub fn is_valid_api_key(key: &str) -> bool {
    key.strip_prefix("API-").is_some_and(|rest| {
        rest.len() >= 16
            && rest
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    })
}

/// Opens the database (creating the data directory for SQLite).
pub async fn connect_store(config: &Config) -> anyhow::Result<Store> {
    let url = config.database_url();
    if url.starts_with("sqlite:") {
        std::fs::create_dir_all(&config.server.data_dir).with_context(|| {
            format!(
                "cannot create data directory {}",
                config.server.data_dir.display()
            )
        })?;
    }
    Store::connect(&url)
        .await
        .context("cannot connect to the database (database.url)")
}

/// Connects the configured bus. The in-process bus only connects services of this process.
pub async fn connect_bus(config: &Config) -> anyhow::Result<Arc<dyn Bus>> {
    Ok(match config.bus.kind {
        BusKind::InProcess => Arc::new(InProcessBus::new()),
        BusKind::Rabbitmq => {
            let url = config
                .bus
                .url
                .as_ref()
                .map(Secret::expose)
                .unwrap_or_default();
            Arc::new(
                RabbitMqBus::connect(url, &config.bus.prefix)
                    .await
                    .context("cannot connect to RabbitMQ (bus.url)")?,
            )
        }
    })
}

/// Connects the configured blob store.
pub async fn connect_blob(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    Ok(match config.blob.kind {
        BlobKind::Local => {
            let dir = config
                .blob
                .dir
                .clone()
                .unwrap_or_else(|| config.server.data_dir.join("blobs"));
            Arc::new(LocalBlobStore::new(dir).context("cannot open the blob directory (blob.dir)")?)
        }
        BlobKind::S3 => {
            let blob = &config.blob;
            let s3 = S3Config {
                endpoint: blob.endpoint.clone(),
                region: blob.region.clone(),
                bucket: blob.bucket.clone(),
                access_key_id: blob.access_key_id.clone(),
                secret_access_key: blob
                    .secret_access_key
                    .as_ref()
                    .map(|s| s.expose().to_owned()),
                force_path_style: blob.force_path_style,
                part_size: cuttle_blob::DEFAULT_PART_SIZE,
                upload_concurrency: blob.upload_concurrency,
                download_concurrency: blob.download_concurrency,
            };
            Arc::new(
                S3BlobStore::connect(s3)
                    .await
                    .context("cannot connect to S3 (blob.*)")?,
            )
        }
    })
}

/// Connects the configured cache.
pub async fn connect_cache(config: &Config) -> anyhow::Result<Arc<dyn Cache>> {
    Ok(match config.cache.kind {
        CacheKind::Memory => Arc::new(MemoryCache::new()),
        CacheKind::Redis => {
            let url = config
                .cache
                .url
                .as_ref()
                .map(Secret::expose)
                .unwrap_or_default();
            Arc::new(
                RedisCache::connect(url, &config.cache.prefix)
                    .await
                    .context("cannot connect to Redis (cache.url)")?,
            )
        }
    })
}

/// Every port, connected: what `cuttle server` shares between its services.
#[derive(Clone)]
pub struct Backends {
    /// Database.
    pub store: Store,
    /// Message bus.
    pub bus: Arc<dyn Bus>,
    /// Blob store.
    pub blob: Arc<dyn BlobStore>,
    /// Cache and locks.
    pub cache: Arc<dyn Cache>,
    /// The master key for sensitive values, when there is one (see [`secrets`]).
    pub keyring: Option<Arc<cuttle_secrets::Keyring>>,
}

impl Backends {
    /// Connects all four ports and migrates the database when `migrate` is set.
    pub async fn connect(config: &Config, migrate: bool) -> anyhow::Result<Backends> {
        let store = connect_store(config).await?;
        if migrate {
            store.migrate().await.context("database migration failed")?;
        }
        Ok(Backends {
            store,
            bus: connect_bus(config).await?,
            blob: connect_blob(config).await?,
            cache: connect_cache(config).await?,
            keyring: secrets::keyring(config)?,
        })
    }
}

/// Resolves when the watch flips to true (or its sender is gone): how one shutdown signal
/// reaches every loop of a process.
pub async fn wait_for(mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C; only SIGTERM will stop the process");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM; only Ctrl-C will stop the process");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let config = Config {
            admin_api_key: Some(Secret::new("API-SECRETSECRETSECRET")),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("SECRETSECRET"));
    }

    #[test]
    fn file_values_are_read_and_unknown_keys_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cuttle.toml");
        std::fs::write(&path, "[bus]\nkind = \"rabbitmq\"\nurl = \"amqp://x\"\n").unwrap();
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.bus.kind, BusKind::Rabbitmq);
        std::fs::write(&path, "[bus]\nkinds = \"rabbitmq\"\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(err.contains("kinds"), "{err}");
    }

    #[test]
    #[allow(
        clippy::result_large_err,
        reason = "figment's Jail API fixes the error type"
    )]
    fn test_suite_variables_are_not_read_as_configuration() {
        // SAFETY of the global environment: no other test in this crate reads CUTTLE_TEST_*.
        figment::Jail::expect_with(|jail| {
            jail.set_env("CUTTLE_TEST_SOMETHING", "1");
            jail.set_env("CUTTLE_BUS__PREFIX", "from-env.");
            let config = Config::load(None).map_err(|e| figment::Error::from(e.to_string()))?;
            assert_eq!(config.bus.prefix, "from-env.");
            Ok(())
        });
    }

    #[test]
    fn api_keys_must_have_the_octopus_shape() {
        assert!(is_valid_api_key("API-ABCDEFGHIJKLMNOP1234"));
        assert!(!is_valid_api_key("API-short"));
        assert!(!is_valid_api_key("API-abcdefghijklmnopqrst"));
    }
}
