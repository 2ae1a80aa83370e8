//! The master key that seals sensitive values at rest (`cuttle_secrets`).
//!
//! `secrets.master_key` (base64 of 32 bytes; `CUTTLE_SECRETS__MASTER_KEY`) is the key; keys in
//! `secrets.retired_keys` still open what they sealed. Without a configured key, a server on
//! SQLite (embedded mode: one process owns the data) creates `<data_dir>/master.key` on first
//! start, readable by its owner only, as Octopus creates its master key at install. Distributed
//! services must all be given the same key; without one, sensitive values are refused with a
//! reason instead of being stored in clear text.

use crate::Config;
use anyhow::Context;
use cuttle_secrets::Keyring;
use std::sync::Arc;

/// The file embedded mode keeps its generated key in.
pub const KEY_FILE: &str = "master.key";

/// The configured keyring, or embedded mode's own, or `None` when no key is available.
pub fn keyring(config: &Config) -> anyhow::Result<Option<Arc<Keyring>>> {
    let retired: Vec<&str> = config
        .secrets
        .retired_keys
        .iter()
        .map(|k| k.expose())
        .collect();
    if let Some(key) = &config.secrets.master_key {
        let ring = Keyring::new(key.expose(), retired.iter().copied())
            .context("secrets.master_key or secrets.retired_keys is not a valid key")?;
        return Ok(Some(Arc::new(ring)));
    }
    if !config.database_url().starts_with("sqlite:") {
        return Ok(None);
    }
    let path = config.server.data_dir.join(KEY_FILE);
    let key = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = Keyring::generate_key()?;
            write_private(&path, &key)
                .with_context(|| format!("cannot write the master key {}", path.display()))?;
            tracing::info!(file = %path.display(), "created a master key for sensitive values; back it up with the database");
            key
        }
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot read the master key {}", path.display()));
        }
    };
    let ring = Keyring::new(&key, retired.iter().copied())
        .with_context(|| format!("the master key in {} is not valid", path.display()))?;
    Ok(Some(Arc::new(ring)))
}

/// Creates `path` with mode 0600 and `text` in it; never replaces an existing file.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_mode_creates_its_key_once_and_distributed_mode_needs_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.server.data_dir = dir.path().to_owned();
        let first = keyring(&config).expect("keyring").expect("embedded key");
        let second = keyring(&config).expect("keyring").expect("embedded key");
        assert_eq!(first.key_id(), second.key_id());
        let sealed = first.seal("x").expect("seal");
        assert_eq!(second.open(&sealed).expect("open"), "x");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        config.database.url = Some(crate::Secret::new("postgres://localhost/x"));
        assert!(keyring(&config).expect("keyring").is_none());
        config.secrets.master_key = Some(crate::Secret::new(Keyring::generate_key().expect("key")));
        assert!(keyring(&config).expect("keyring").is_some());
        config.secrets.master_key = Some(crate::Secret::new("short"));
        assert!(keyring(&config).is_err());
    }
}
