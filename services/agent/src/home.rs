//! The agent's home directory and its `agent.json`: where the agent keeps its identity, its
//! configuration, its packages and the working directories of running scripts.
//!
//! ```text
//! <home>/agent-key.pem, agent-cert.pem   the link identity (cuttle-agent-link)
//! <home>/agent.json                      written by `register`, read by `run`
//! <home>/packages/<sha256>               uploaded packages, by content hash
//! <home>/work/<job id>/                  one fresh directory per running script
//! <home>/Applications/<env>/<id>/<ver>/  installed packages, a fresh folder per deployment
//! <home>/staging/<job id>/               packages of a script step, removed when it ends
//! ```

use anyhow::{Context, bail};
use cuttle_agent_link::{SubscriptionId, Thumbprint};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Directory name of the agent's home under the XDG data directory.
const HOME_DIR_NAME: &str = "cuttle-agent";

/// The folder of package installations inside the home, named as a Tentacle names it.
pub const APPLICATIONS_DIR: &str = "Applications";

/// The configuration file's name inside the home directory.
pub const CONFIG_FILE: &str = "agent.json";

/// How long a canceled script gets between SIGTERM and SIGKILL unless `agent.json` says otherwise.
pub const DEFAULT_KILL_GRACE_SECS: u64 = 10;

/// Length of a polling agent's subscription id, as Octopus generates them.
const SUBSCRIPTION_ID_LEN: usize = 20;

/// `$XDG_DATA_HOME/cuttle-agent`, else `~/.local/share/cuttle-agent`.
pub fn default_home() -> anyhow::Result<PathBuf> {
    // The XDG specification says relative paths in XDG_DATA_HOME are invalid and to be ignored.
    let xdg_data_home = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|path| path.is_absolute());
    if let Some(data_home) = xdg_data_home {
        return Ok(data_home.join(HOME_DIR_NAME));
    }
    match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/share").join(HOME_DIR_NAME)),
        None => {
            bail!("cannot choose a home directory: pass --home DIR or set XDG_DATA_HOME or HOME")
        }
    }
}

/// Creates the home directory readable by its owner only; it holds the agent's private key.
pub fn prepare_home(home: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    match std::fs::metadata(home) {
        Ok(metadata) if metadata.is_dir() => {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                // Not changed behind the operator's back: --home may point at a shared folder.
                tracing::warn!(
                    agent.home = %home.display(),
                    mode = format!("{mode:o}"),
                    "agent home is accessible to other users; restrict it with chmod 700"
                );
            }
            Ok(())
        }
        Ok(_) => bail!(
            "agent home {} exists but is not a directory",
            home.display()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(home)
                .with_context(|| format!("could not create agent home {}", home.display()))?;
            // The umask may have removed bits from the mode above; set it exactly.
            std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).with_context(
                || {
                    format!(
                        "could not restrict agent home {} to mode 700",
                        home.display()
                    )
                },
            )?;
            tracing::info!(agent.home = %home.display(), "created agent home");
            Ok(())
        }
        Err(error) => {
            Err(error).with_context(|| format!("could not inspect agent home {}", home.display()))
        }
    }
}

/// Creates a directory inside the home, private like the home itself.
pub fn private_subdir(home: &Path, name: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = home.join(name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("could not create {}", dir.display()))?;
    Ok(dir)
}

/// The contents of `agent.json`.
///
/// ```json
/// {
///   "mode": "listening",
///   "listen": "0.0.0.0:10933",
///   "subscription_id": "qhxwrnbvtkazmdpoyles",
///   "trusted_thumbprints": ["6E3C…40 hex digits…"],
///   "kill_grace_secs": 10,
///   "registration": { "server": "https://cuttle.example", "space_id": "Spaces-1",
///                     "machine_id": "Machines-3", "kind": "deployment_target",
///                     "name": "web-01", "registered_at": "2026-11-24T10:00:00Z" }
/// }
/// ```
///
/// A polling agent has `"mode": "polling", "server_comms": "cuttle.example:10943"` instead of
/// `listen`. Only `mode`, its address, `subscription_id` and `trusted_thumbprints` are needed
/// to run; `registration` records what `register` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Listening or polling, with its address.
    #[serde(flatten)]
    pub mode: Mode,
    /// The polling subscription id, generated once and kept across registrations so that the
    /// server's `poll://<id>/` keeps naming this agent.
    pub subscription_id: String,
    /// The server certificates whose holders (workers) may connect or be connected to.
    pub trusted_thumbprints: Vec<Thumbprint>,
    /// Seconds between SIGTERM and SIGKILL when a script is canceled or the agent stops.
    #[serde(default = "default_kill_grace_secs")]
    pub kill_grace_secs: u64,
    /// What the last successful `register` created on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,
}

fn default_kill_grace_secs() -> u64 {
    DEFAULT_KILL_GRACE_SECS
}

/// How the agent and the workers find each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    /// Workers dial the agent at this `host:port` (Octopus's listening Tentacle).
    Listening {
        /// The address to bind, e.g. `0.0.0.0:10933`.
        listen: String,
    },
    /// The agent dials the server's comms port (Octopus's polling Tentacle).
    Polling {
        /// The `host:port` to dial, e.g. `cuttle.example:10943`.
        server_comms: String,
    },
}

/// The machine `register` created on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The server's base URL.
    pub server: String,
    /// The space the machine is in.
    pub space_id: String,
    /// The machine's id, e.g. `Machines-3` or `Workers-2`.
    pub machine_id: String,
    /// A deployment target or a worker.
    pub kind: MachineKind,
    /// The machine's name on the server.
    pub name: String,
    /// When it was registered.
    pub registered_at: chrono::DateTime<chrono::Utc>,
}

/// What the agent is registered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineKind {
    /// A deployment target (`/api/{space}/machines`), with environments and roles.
    DeploymentTarget,
    /// A worker (`/api/{space}/workers`), in worker pools.
    Worker,
}

impl MachineKind {
    /// How people call it.
    pub fn describe(self) -> &'static str {
        match self {
            MachineKind::DeploymentTarget => "deployment target",
            MachineKind::Worker => "worker",
        }
    }
}

impl AgentConfig {
    /// The subscription id as the polling hello carries it: the machine's `poll://<id>/` URI,
    /// as Halibut names a polling Tentacle by its subscription URI (spec D.17).
    pub fn poll_uri(&self) -> String {
        format!("poll://{}/", self.subscription_id)
    }

    /// [`AgentConfig::poll_uri`] for the link's hello.
    pub fn subscription(&self) -> anyhow::Result<SubscriptionId> {
        SubscriptionId::parse(&self.poll_uri()).with_context(|| {
            format!(
                "subscription_id '{}' in agent.json is not usable",
                self.subscription_id
            )
        })
    }

    /// Reads `agent.json` from `home`; `None` when the agent was never registered.
    pub fn load(home: &Path) -> anyhow::Result<Option<AgentConfig>> {
        let path = home.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(err).with_context(|| format!("could not read {}", path.display()));
            }
        };
        let config: AgentConfig = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid agent configuration; fix it, or delete it and run `cuttle-agent register` again",
                path.display()
            )
        })?;
        config.validate(&path)?;
        Ok(Some(config))
    }

    fn validate(&self, path: &Path) -> anyhow::Result<()> {
        let valid_id = !self.subscription_id.is_empty()
            && self.subscription_id.len() <= 100
            && self
                .subscription_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid_id {
            bail!(
                "{}: subscription_id '{}' must be lower-case letters and digits",
                path.display(),
                self.subscription_id
            );
        }
        if self.trusted_thumbprints.is_empty() {
            bail!(
                "{} trusts no server certificate, so every worker would be refused; run `cuttle-agent register` again",
                path.display()
            );
        }
        Ok(())
    }

    /// Writes `agent.json` into `home` atomically (a temporary file renamed into place), so a
    /// crash never leaves a half-written configuration behind.
    pub fn save(&self, home: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = home.join(CONFIG_FILE);
        let temporary = home.join(format!(".{CONFIG_FILE}.partial"));
        let mut text = serde_json::to_string_pretty(self).context("could not encode agent.json")?;
        text.push('\n');
        let write = || -> std::io::Result<()> {
            match std::fs::remove_file(&temporary) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)
        };
        write().with_context(|| format!("could not write {}", path.display()))
    }
}

/// A fresh subscription id: 20 random lower-case letters, like Octopus's.
pub fn new_subscription_id() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    // Random bytes from v4 UUIDs (the OS's generator); bytes at or above 234 = 9 * 26 are
    // skipped so that every letter is equally likely.
    let mut id = String::with_capacity(SUBSCRIPTION_ID_LEN);
    while id.len() < SUBSCRIPTION_ID_LEN {
        for byte in uuid::Uuid::new_v4().into_bytes() {
            if byte < 234 && id.len() < SUBSCRIPTION_ID_LEN {
                id.push(char::from(LETTERS[usize::from(byte % 26)]));
            }
        }
    }
    id
}

/// This machine's host name, or `localhost` when it has none that is valid text.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_ids_are_twenty_lower_case_letters_and_differ() {
        let first = new_subscription_id();
        assert_eq!(first.len(), 20);
        assert!(first.bytes().all(|b| b.is_ascii_lowercase()));
        assert_ne!(first, new_subscription_id());
    }

    #[test]
    fn agent_json_round_trips_with_the_mode_flattened() {
        let config = AgentConfig {
            mode: Mode::Polling {
                server_comms: "cuttle.example:10943".to_owned(),
            },
            subscription_id: "abcdefghijklmnopqrst".to_owned(),
            trusted_thumbprints: vec![
                Thumbprint::parse("00112233445566778899AABBCCDDEEFF00112233").unwrap(),
            ],
            kill_grace_secs: 10,
            registration: None,
        };
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "mode": "polling",
                "server_comms": "cuttle.example:10943",
                "subscription_id": "abcdefghijklmnopqrst",
                "trusted_thumbprints": ["00112233445566778899AABBCCDDEEFF00112233"],
                "kill_grace_secs": 10,
            })
        );
        let back: AgentConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
    }
}
