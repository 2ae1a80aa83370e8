//! `cuttle-agent register`: creates this agent's deployment target or worker on a Cuttle (or
//! Octopus-compatible) server, then records the result in `agent.json`.
//!
//! The steps follow a Tentacle's `register-with`: learn the server's certificate thumbprint
//! (`GET /api/certificates/certificate-global`) and trust it, resolve the space, environments
//! or worker pools by name or id, then `POST /api/{space}/machines` or `/workers` with an
//! endpoint of `CommunicationStyle` `TentaclePassive` (listening) or `TentacleActive`
//! (polling), carrying this agent's thumbprint (spec D.3, D.17).

use crate::home::{self, AgentConfig, MachineKind, Mode, Registration};
use anyhow::{Context, bail};
use cuttle_agent_link::{AgentIdentity, Thumbprint};
use serde_json::{Value, json};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// An API key: kept out of `Debug` output and logs.
#[derive(Clone)]
pub struct ApiKey(String);

impl FromStr for ApiKey {
    type Err = String;
    fn from_str(text: &str) -> Result<ApiKey, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the API key is empty".to_owned());
        }
        Ok(ApiKey(text.to_owned()))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(********)")
    }
}

/// The arguments of `cuttle-agent register`.
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("communication")
        .required(true)
        .args(["listen", "polling"])
))]
pub struct RegisterArgs {
    /// The server's URL, e.g. https://cuttle.example.com
    #[arg(long, env = "OCTOPUS_URL", value_name = "URL")]
    pub server: String,
    /// An API key of a user allowed to add machines; prefer the environment variable, which
    /// other users cannot read from the process list
    #[arg(
        long,
        env = "OCTOPUS_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: ApiKey,
    /// The space, by name or id [default: the server's default space]
    #[arg(long, env = "OCTOPUS_SPACE", value_name = "NAME")]
    pub space: Option<String>,
    /// An environment of the deployment target, by name or id (repeat for several)
    #[arg(long = "environment", value_name = "NAME")]
    pub environments: Vec<String>,
    /// A role (target tag) of the deployment target (repeat for several)
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// The machine's name on the server [default: this host's name]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Listening mode: the address workers dial, e.g. 0.0.0.0:10933
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Polling mode: the agent dials the server (needs --server-comms)
    #[arg(long, requires = "server_comms")]
    pub polling: bool,
    /// Polling mode: the server's comms address, e.g. cuttle.example.com:10943
    #[arg(long, value_name = "ADDR", requires = "polling")]
    pub server_comms: Option<String>,
    /// Register as a worker in this pool, by name or id (repeat for several), instead of as a
    /// deployment target
    #[arg(long = "worker-pool", value_name = "NAME", conflicts_with_all = ["environments", "roles"])]
    pub worker_pools: Vec<String>,
    /// Listening mode: the host name workers use to reach this machine [default: the --listen
    /// host, or this host's name when that is 0.0.0.0 or ::]
    #[arg(long, value_name = "HOST", conflicts_with = "polling")]
    pub public_host: Option<String>,
}

/// What the machine is registered as, with what it belongs to.
enum Membership {
    /// A deployment target in environments, with roles.
    Target {
        environments: Vec<String>,
        roles: Vec<String>,
    },
    /// A worker in worker pools.
    Worker { pools: Vec<String> },
}

/// Runs `register`; every error says what to change.
pub fn register(home: &Path, args: RegisterArgs) -> anyhow::Result<()> {
    let base = normalize_base_url(&args.server)?;
    let membership = membership(&args)?;
    let mode = mode(&args)?;
    let name = match &args.name {
        Some(name) if name.trim().is_empty() => bail!("--name is empty"),
        Some(name) => name.trim().to_owned(),
        None => home::hostname(),
    };
    home::prepare_home(home)?;
    let identity = AgentIdentity::load_or_create(home)
        .with_context(|| format!("could not load the agent identity in {}", home.display()))?;
    let existing = AgentConfig::load(home)?;
    let subscription_id = existing
        .as_ref()
        .map_or_else(home::new_subscription_id, |config| {
            config.subscription_id.clone()
        });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let api = Api::new(base, args.api_key.clone())?;
    let endpoint = match &mode {
        Mode::Listening { listen } => {
            let uri = listening_uri(listen, args.public_host.as_deref())?;
            json!({
                "CommunicationStyle": "TentaclePassive",
                "Uri": uri,
                "Thumbprint": identity.thumbprint().to_string(),
            })
        }
        Mode::Polling { .. } => json!({
            "CommunicationStyle": "TentacleActive",
            "Uri": format!("poll://{subscription_id}/"),
            "Thumbprint": identity.thumbprint().to_string(),
        }),
    };
    let (server_thumbprint, space_id, kind, machine_id) = runtime.block_on(async {
        let server_thumbprint = api.server_thumbprint().await?;
        let space_id = api.resolve_space(args.space.as_deref()).await?;
        let (kind, body) = match &membership {
            Membership::Target {
                environments,
                roles,
            } => {
                let environment_ids = api
                    .resolve_all(&space_id, "environments", "environment", environments)
                    .await?;
                let body = json!({
                    "Name": name,
                    "EnvironmentIds": environment_ids,
                    "Roles": roles,
                    "Endpoint": endpoint,
                });
                (MachineKind::DeploymentTarget, body)
            }
            Membership::Worker { pools } => {
                let pool_ids = api
                    .resolve_all(&space_id, "workerpools", "worker pool", pools)
                    .await?;
                let body = json!({
                    "Name": name,
                    "WorkerPoolIds": pool_ids,
                    "Endpoint": endpoint,
                });
                (MachineKind::Worker, body)
            }
        };
        let machine_id = api.create_machine(&space_id, kind, &body).await?;
        anyhow::Ok((server_thumbprint, space_id, kind, machine_id))
    })?;

    // A server thumbprint trusted before stays trusted, as Tentacle's `--trust` adds rather than
    // replaces: several servers (or a rotated certificate) may share one agent.
    let mut trusted = existing
        .as_ref()
        .map(|config| config.trusted_thumbprints.clone())
        .unwrap_or_default();
    if !trusted.contains(&server_thumbprint) {
        trusted.push(server_thumbprint);
    }
    let config = AgentConfig {
        mode,
        subscription_id,
        trusted_thumbprints: trusted,
        kill_grace_secs: existing
            .as_ref()
            .map_or(home::DEFAULT_KILL_GRACE_SECS, |config| {
                config.kill_grace_secs
            }),
        registration: Some(Registration {
            server: api.base.clone(),
            space_id: space_id.clone(),
            machine_id: machine_id.clone(),
            kind,
            name: name.clone(),
            registered_at: chrono::Utc::now(),
        }),
    };
    config.save(home)?;
    println!(
        "Registered {} '{name}' as {machine_id} in {space_id} on {}.",
        kind.describe(),
        api.base
    );
    println!("This agent's thumbprint: {}", identity.thumbprint());
    println!("Trusted server thumbprint: {server_thumbprint}");
    println!(
        "Configuration written to {}; start the agent with: cuttle-agent --home {} run",
        home.join(home::CONFIG_FILE).display(),
        home.display()
    );
    Ok(())
}

fn membership(args: &RegisterArgs) -> anyhow::Result<Membership> {
    if !args.worker_pools.is_empty() {
        return Ok(Membership::Worker {
            pools: args.worker_pools.clone(),
        });
    }
    // Octopus refuses a deployment target without an environment or a role; saying so before
    // contacting the server names the flag to add.
    if args.environments.is_empty() {
        bail!(
            "a deployment target needs at least one --environment NAME (or pass --worker-pool NAME to register a worker)"
        );
    }
    if args.roles.is_empty() {
        bail!("a deployment target needs at least one --role ROLE");
    }
    Ok(Membership::Target {
        environments: args.environments.clone(),
        roles: args.roles.clone(),
    })
}

fn mode(args: &RegisterArgs) -> anyhow::Result<Mode> {
    if let Some(listen) = &args.listen {
        let (host, port) = split_host_port(listen).with_context(|| {
            format!("--listen '{listen}' is not an address; use HOST:PORT such as 0.0.0.0:10933")
        })?;
        if port == 0 {
            bail!(
                "--listen needs a fixed port, such as 0.0.0.0:10933: workers must know where to dial"
            );
        }
        return Ok(Mode::Listening {
            listen: join_host_port(&host, port),
        });
    }
    let Some(server_comms) = &args.server_comms else {
        bail!("pass --listen ADDR, or --polling --server-comms ADDR");
    };
    let (host, port) = split_host_port(server_comms)
        .filter(|(host, port)| !host.is_empty() && *port != 0)
        .with_context(|| {
            format!(
                "--server-comms '{server_comms}' is not an address; use HOST:PORT such as cuttle.example.com:10943"
            )
        })?;
    Ok(Mode::Polling {
        server_comms: join_host_port(&host, port),
    })
}

/// Splits `host:port`, `[v6]:port` or a bare `port` (any address); the host comes back without
/// brackets.
fn split_host_port(text: &str) -> Option<(String, u16)> {
    let text = text.trim();
    if let Ok(port) = text.parse::<u16>() {
        return Some(("0.0.0.0".to_owned(), port));
    }
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    if host.contains(['/', ' '])
        || (host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err())
    {
        return None;
    }
    Some((host.to_owned(), port))
}

/// `host:port`, bracketing an IPv6 host.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `https://<host>:<port>/` for a listening agent, as Octopus stores a listening Tentacle.
fn listening_uri(listen: &str, public_host: Option<&str>) -> anyhow::Result<String> {
    let (listen_host, port) = split_host_port(listen)
        .with_context(|| format!("'{listen}' is not a HOST:PORT address"))?;
    let host = match public_host.map(str::trim) {
        Some("") => bail!("--public-host is empty"),
        Some(host) => host.to_owned(),
        // A wildcard address cannot be dialled; the host's name is the best guess.
        None if listen_host.is_empty() || listen_host == "0.0.0.0" || listen_host == "::" => {
            home::hostname()
        }
        None => listen_host,
    };
    Ok(format!("https://{}/", join_host_port(&host, port)))
}

/// The server's base URL by the Octopus clients' rules (A.1 of the spec): anything from the last
/// `/api/` on is cut, as is a trailing `/`, so `http://host/vdir/api` works too.
fn normalize_base_url(server: &str) -> anyhow::Result<String> {
    let mut url = server.trim().to_owned();
    if url.is_empty() {
        bail!("--server is empty: give the server's URL, e.g. https://cuttle.example.com");
    }
    if !url.ends_with('/') {
        url.push('/');
    }
    if let Some(index) = url.rfind("/api/").filter(|index| *index >= 1) {
        url.truncate(index);
    }
    let url = url.trim_end_matches('/').to_owned();
    let parsed = reqwest::Url::parse(&url).with_context(|| {
        format!("--server '{server}' is not a URL such as https://cuttle.example.com")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("--server '{server}' is not an http:// or https:// URL");
    }
    Ok(url)
}

/// An authenticated client of one server.
struct Api {
    client: reqwest::Client,
    base: String,
    api_key: ApiKey,
}

impl Api {
    fn new(base: String, api_key: ApiKey) -> anyhow::Result<Api> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("cuttle-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(60))
            .build()
            .context("could not create the HTTP client")?;
        Ok(Api {
            client,
            base,
            api_key,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .header("X-Octopus-ApiKey", &self.api_key.0);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| {
            anyhow::anyhow!(
                "could not reach the server at {}: {}; check --server and that the server is running",
                self.base,
                error_chain(&err)
            )
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|err| {
            anyhow::anyhow!(
                "{method} {path}: the server's answer (HTTP {status}) could not be read: {}",
                error_chain(&err)
            )
        })?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            bail!(
                "the server refused the API key (HTTP {status}) at {method} {path}: {}; check --api-key, and that its user may add machines",
                server_message(&body, &text)
            );
        }
        if !status.is_success() {
            bail!(
                "{method} {path} failed with HTTP {status}: {}",
                server_message(&body, &text)
            );
        }
        if body.is_null() {
            bail!(
                "{method} {path} answered HTTP {status} without JSON; is {} a Cuttle or Octopus server?",
                self.base
            );
        }
        Ok((status, body))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None)
            .await
            .map(|(_, body)| body)
    }

    /// The certificate workers present on the agent link, which the agent must trust.
    async fn server_thumbprint(&self) -> anyhow::Result<Thumbprint> {
        let certificate = self.get("/api/certificates/certificate-global").await?;
        let text = certificate["Thumbprint"].as_str().unwrap_or_default();
        Thumbprint::parse(text).with_context(|| {
            format!(
                "the server's certificate-global has no valid Thumbprint ('{text}'); is {} a Cuttle server?",
                self.base
            )
        })
    }

    /// The space's id: `--space` by id or name, else the server's default space.
    async fn resolve_space(&self, space: Option<&str>) -> anyhow::Result<String> {
        let spaces = self.get("/api/spaces/all").await?;
        let items = spaces.as_array().cloned().unwrap_or_default();
        let chosen = match space.map(str::trim).filter(|space| !space.is_empty()) {
            Some(wanted) => find_named(&items, wanted).with_context(|| {
                format!(
                    "no space '{wanted}' on {}; pass --space with one of: {}",
                    self.base,
                    names_of(&items)
                )
            })?,
            None => items
                .iter()
                .find(|item| item["IsDefault"] == Value::Bool(true))
                .or_else(|| find_named(&items, "Default"))
                .with_context(|| {
                    format!(
                        "{} has no default space; pass --space with one of: {}",
                        self.base,
                        names_of(&items)
                    )
                })?,
        };
        id_of(chosen, "space")
    }

    /// The ids of `wanted` (names or ids) among `/api/{space}/{collection}/all`.
    async fn resolve_all(
        &self,
        space_id: &str,
        collection: &str,
        noun: &str,
        wanted: &[String],
    ) -> anyhow::Result<Vec<String>> {
        let all = self
            .get(&format!("/api/{space_id}/{collection}/all"))
            .await?;
        let items = all.as_array().cloned().unwrap_or_default();
        let mut ids = Vec::with_capacity(wanted.len());
        for name in wanted {
            let item = find_named(&items, name.trim()).with_context(|| {
                format!(
                    "there is no {noun} '{name}' in {space_id}; known: {}. Check the name, or create the {noun} first",
                    names_of(&items)
                )
            })?;
            let id = id_of(item, noun)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Creates the machine and returns its id.
    async fn create_machine(
        &self,
        space_id: &str,
        kind: MachineKind,
        body: &Value,
    ) -> anyhow::Result<String> {
        let collection = match kind {
            MachineKind::DeploymentTarget => "machines",
            MachineKind::Worker => "workers",
        };
        let path = format!("/api/{space_id}/{collection}");
        let (_, created) = self
            .send(reqwest::Method::POST, &path, Some(body))
            .await
            .with_context(|| format!("the server refused to register this {}", kind.describe()))?;
        created["Id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("POST {path} answered without the new machine's Id"))
    }
}

/// The item whose `Id` or `Name` is `wanted`, ignoring case as Octopus does for names.
fn find_named<'a>(items: &'a [Value], wanted: &str) -> Option<&'a Value> {
    let matches = |field: &str, item: &Value| {
        item[field]
            .as_str()
            .is_some_and(|value| value.eq_ignore_ascii_case(wanted))
    };
    items
        .iter()
        .find(|item| matches("Id", item))
        .or_else(|| items.iter().find(|item| item["Name"] == wanted))
        .or_else(|| items.iter().find(|item| matches("Name", item)))
}

fn id_of(item: &Value, noun: &str) -> anyhow::Result<String> {
    item["Id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the server listed a {noun} without an Id"))
}

fn names_of(items: &[Value]) -> String {
    let names: Vec<String> = items
        .iter()
        .filter_map(|item| item["Name"].as_str())
        .map(|name| format!("'{name}'"))
        .collect();
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

/// Octopus's `ErrorMessage` and each of `Errors` on its own line (spec A.9), or the raw body.
fn server_message(body: &Value, text: &str) -> String {
    match body["ErrorMessage"].as_str() {
        Some(message) => {
            let mut lines = vec![message.to_owned()];
            if let Some(errors) = body["Errors"].as_array() {
                lines.extend(
                    errors
                        .iter()
                        .filter_map(Value::as_str)
                        .filter(|error| *error != message)
                        .map(|error| format!("  - {error}")),
                );
            }
            lines.join("\n")
        }
        None if text.trim().is_empty() => "(no details)".to_owned(),
        None => text.trim().chars().take(500).collect(),
    }
}

/// An error and its causes on one line ("error sending request: connection refused").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_accept_ports_hosts_and_bracketed_ipv6() {
        assert_eq!(
            split_host_port("10933"),
            Some(("0.0.0.0".to_owned(), 10933))
        );
        assert_eq!(
            split_host_port("web01:10933"),
            Some(("web01".to_owned(), 10933))
        );
        assert_eq!(
            split_host_port("[::1]:10933"),
            Some(("::1".to_owned(), 10933))
        );
        assert_eq!(split_host_port("web01"), None);
        assert_eq!(split_host_port("https://web01:1"), None);
    }

    #[test]
    fn a_listening_uri_prefers_the_public_host() {
        assert_eq!(
            listening_uri("0.0.0.0:10933", Some("web01.example.com")).unwrap(),
            "https://web01.example.com:10933/"
        );
        assert_eq!(
            listening_uri("10.0.0.5:10933", None).unwrap(),
            "https://10.0.0.5:10933/"
        );
        assert_eq!(
            listening_uri("[::1]:10933", None).unwrap(),
            "https://[::1]:10933/"
        );
    }

    #[test]
    fn the_base_url_drops_an_api_suffix_and_trailing_slashes() {
        assert_eq!(
            normalize_base_url("http://host:8080/api/").unwrap(),
            "http://host:8080"
        );
        assert_eq!(
            normalize_base_url("https://host/vdir/").unwrap(),
            "https://host/vdir"
        );
        assert!(normalize_base_url("ftp://host").is_err());
    }

    #[test]
    fn the_api_key_never_prints_in_debug_output() {
        let key: ApiKey = "API-SECRET123".parse().unwrap();
        assert!(!format!("{key:?}").contains("SECRET"));
    }
}
