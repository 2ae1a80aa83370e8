//! Who an end of the link is: a key pair and a self-signed certificate, kept as PEM files, and
//! the certificate's SHA-1 thumbprint that the other end pins.
//!
//! Octopus trusts Tentacles the same way: no certificate authority, each side stores the other's
//! thumbprint (spec D.17). The thumbprint is therefore the whole identity, so the files must
//! survive restarts: a new key is a new thumbprint that every peer has to trust again.

use crate::error::IdentityError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha1::{Digest, Sha1};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The SHA-1 hash of a DER certificate, shown as 40 upper-case hex digits as Octopus shows it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Thumbprint([u8; 20]);

impl Thumbprint {
    /// Hashes a DER-encoded certificate.
    pub fn of_certificate(der: &[u8]) -> Thumbprint {
        Thumbprint(Sha1::digest(der).into())
    }

    /// Parses 40 hex digits in either case; Octopus prints upper case, people paste lower.
    pub fn parse(text: &str) -> Result<Thumbprint, InvalidThumbprint> {
        let text = text.trim();
        let mut bytes = [0u8; 20];
        if text.len() != 40 || hex::decode_to_slice(text, &mut bytes).is_err() {
            return Err(InvalidThumbprint(text.to_owned()));
        }
        Ok(Thumbprint(bytes))
    }

    /// The raw 20 bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode_upper(self.0))
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({self})")
    }
}

impl FromStr for Thumbprint {
    type Err = InvalidThumbprint;
    fn from_str(text: &str) -> Result<Thumbprint, InvalidThumbprint> {
        Thumbprint::parse(text)
    }
}

impl serde::Serialize for Thumbprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Thumbprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Thumbprint, D::Error> {
        let text = String::deserialize(deserializer)?;
        Thumbprint::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Text that is not a 40-digit hex thumbprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a certificate thumbprint; expected 40 hex digits")]
pub struct InvalidThumbprint(pub String);

/// A certificate and its private key: one end's identity on the link.
pub struct Identity {
    certificate: CertificateDer<'static>,
    private_key: PrivatePkcs8KeyDer<'static>,
    certificate_pem: String,
    thumbprint: Thumbprint,
}

impl Identity {
    /// Generates a fresh key pair and self-signed certificate in memory, persisting nothing.
    pub fn generate(common_name: &str) -> Result<Identity, IdentityError> {
        let key_pair = rcgen::KeyPair::generate().map_err(IdentityError::Generate)?;
        Identity::issue(common_name, &key_pair)
    }

    /// Builds an identity from PEM text, checking that the key belongs to the certificate.
    pub fn from_pem(
        certificate_pem: &str,
        private_key_pem: &str,
    ) -> Result<Identity, IdentityError> {
        let certificate = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|err| IdentityError::InvalidPem(format!("certificate: {err}")))?;
        let private_key = PrivatePkcs8KeyDer::from_pem_slice(private_key_pem.as_bytes())
            .map_err(|err| IdentityError::InvalidPem(format!("private key: {err}")))?;
        let identity = Identity {
            thumbprint: Thumbprint::of_certificate(&certificate),
            certificate,
            private_key,
            certificate_pem: certificate_pem.to_owned(),
        };
        // rustls would refuse a mismatched pair only when the first connection is configured;
        // saying so at load time points at the files instead.
        rustls::sign::CertifiedKey::from_der(
            vec![identity.certificate.clone()],
            identity.private_key(),
            &crate::tls::provider(),
        )
        .map_err(|err| IdentityError::KeyMismatch(err.to_string()))?;
        Ok(identity)
    }

    /// The SHA-1 thumbprint peers pin.
    pub fn thumbprint(&self) -> Thumbprint {
        self.thumbprint
    }

    /// The DER certificate.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The PEM certificate, e.g. for an operator to copy to the other side.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// A copy of the private key for a rustls config.
    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.private_key.clone_key())
    }

    fn issue(common_name: &str, key_pair: &rcgen::KeyPair) -> Result<Identity, IdentityError> {
        // The validity period is rcgen's default (1975 to 4096): peers trust the pinned
        // thumbprint alone and never check dates, as Octopus's 100-year Tentacle certificates
        // show, so an expiry would only break links without adding safety.
        let mut params = rcgen::CertificateParams::new(vec![crate::tls::SERVER_NAME.to_owned()])
            .map_err(IdentityError::Generate)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let certificate = params
            .self_signed(key_pair)
            .map_err(IdentityError::Generate)?;
        Ok(Identity {
            thumbprint: Thumbprint::of_certificate(certificate.der()),
            certificate: certificate.der().clone(),
            private_key: PrivatePkcs8KeyDer::from(key_pair.serialize_der()),
            certificate_pem: certificate.pem(),
        })
    }

    /// Loads the identity from `dir`, creating the key and certificate on first use.
    fn load_or_create(dir: &Path, files: &IdentityFiles) -> Result<Identity, IdentityError> {
        create_private_dir(dir)?;
        let key_path = dir.join(files.key);
        let certificate_path = dir.join(files.certificate);
        let key_pem = read_if_present(&key_path)?;
        let certificate_pem = read_if_present(&certificate_path)?;
        match (key_pem, certificate_pem) {
            (Some(key_pem), Some(certificate_pem)) => {
                warn_if_key_readable_by_others(&key_path);
                Identity::from_pem(&certificate_pem, &key_pem).map_err(|err| IdentityError::File {
                    path: dir.to_path_buf(),
                    reason: err.to_string(),
                })
            }
            (None, None) => {
                let key_pair = rcgen::KeyPair::generate().map_err(IdentityError::Generate)?;
                // The key goes first: a crash before the certificate is written leaves a state
                // the next start repairs (below) without changing anything peers already know.
                write_new_file(&key_path, key_pair.serialize_pem().as_bytes(), 0o600)?;
                let identity = Identity::issue(files.common_name, &key_pair)?;
                write_new_file(
                    &certificate_path,
                    identity.certificate_pem.as_bytes(),
                    0o644,
                )?;
                tracing::info!(
                    identity.thumbprint = %identity.thumbprint,
                    identity.dir = %dir.display(),
                    "created a new link identity; peers must trust this thumbprint"
                );
                Ok(identity)
            }
            (Some(key_pem), None) => {
                // Only a crash between the two writes gets here, before the thumbprint was ever
                // logged or presented, so issuing a new certificate breaks no existing trust.
                let key_pair =
                    rcgen::KeyPair::from_pem(&key_pem).map_err(|err| IdentityError::File {
                        path: key_path.clone(),
                        reason: err.to_string(),
                    })?;
                let identity = Identity::issue(files.common_name, &key_pair)?;
                write_new_file(
                    &certificate_path,
                    identity.certificate_pem.as_bytes(),
                    0o644,
                )?;
                tracing::warn!(
                    identity.thumbprint = %identity.thumbprint,
                    identity.dir = %dir.display(),
                    "the link certificate was missing; issued a new one for the existing key"
                );
                Ok(identity)
            }
            // A certificate without its key cannot be used, and silently replacing it would
            // change the thumbprint every peer trusts; an operator must decide.
            (None, Some(_)) => Err(IdentityError::MissingKey { path: key_path }),
        }
    }
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            certificate: self.certificate.clone(),
            private_key: self.private_key.clone_key(),
            certificate_pem: self.certificate_pem.clone(),
            thumbprint: self.thumbprint,
        }
    }
}

impl fmt::Debug for Identity {
    // The private key never prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// The file names and certificate subject of one kind of identity.
struct IdentityFiles {
    key: &'static str,
    certificate: &'static str,
    common_name: &'static str,
}

const AGENT_FILES: IdentityFiles = IdentityFiles {
    key: "agent-key.pem",
    certificate: "agent-cert.pem",
    common_name: "Cuttle Agent",
};

const WORKER_FILES: IdentityFiles = IdentityFiles {
    key: "worker-key.pem",
    certificate: "worker-cert.pem",
    common_name: "Cuttle Worker",
};

/// An agent's (deployment target's) identity; workers pin its thumbprint.
#[derive(Clone, Debug)]
pub struct AgentIdentity(Identity);

impl AgentIdentity {
    /// Loads `agent-key.pem` and `agent-cert.pem` from `dir`, creating them on first run.
    pub fn load_or_create(dir: &Path) -> Result<AgentIdentity, IdentityError> {
        Identity::load_or_create(dir, &AGENT_FILES).map(AgentIdentity)
    }

    /// A fresh in-memory identity that is never saved (tests, throwaway agents).
    pub fn generate() -> Result<AgentIdentity, IdentityError> {
        Identity::generate(AGENT_FILES.common_name).map(AgentIdentity)
    }

    /// The thumbprint workers must trust.
    pub fn thumbprint(&self) -> Thumbprint {
        self.0.thumbprint
    }

    /// The underlying certificate and key.
    pub fn identity(&self) -> &Identity {
        &self.0
    }
}

/// A worker's (the requesting server side's) identity; agents pin its thumbprint.
#[derive(Clone, Debug)]
pub struct WorkerIdentity(Identity);

impl WorkerIdentity {
    /// Loads `worker-key.pem` and `worker-cert.pem` from `dir`, creating them on first run.
    pub fn load_or_create(dir: &Path) -> Result<WorkerIdentity, IdentityError> {
        Identity::load_or_create(dir, &WORKER_FILES).map(WorkerIdentity)
    }

    /// A fresh in-memory identity that is never saved (tests).
    pub fn generate() -> Result<WorkerIdentity, IdentityError> {
        Identity::generate(WORKER_FILES.common_name).map(WorkerIdentity)
    }

    /// The thumbprint agents must trust.
    pub fn thumbprint(&self) -> Thumbprint {
        self.0.thumbprint
    }

    /// The underlying certificate and key.
    pub fn identity(&self) -> &Identity {
        &self.0
    }
}

fn io_error(path: &Path, source: std::io::Error) -> IdentityError {
    IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn create_private_dir(dir: &Path) -> Result<(), IdentityError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        // Only a newly created directory gets this mode; an existing one is the operator's.
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|err| io_error(dir, err))
}

fn read_if_present(path: &Path) -> Result<Option<String>, IdentityError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_error(path, err)),
    }
}

/// Writes `bytes` to a temporary sibling created with `mode`, then renames it into place, so the
/// final name never holds a half-written file and a key is never readable by others, not even
/// for the moment between creating and restricting it.
fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary: PathBuf = path.with_file_name(format!(".{file_name}.partial"));
    // A leftover from a crash is ours and incomplete; `create_new` below must not trip on it.
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_error(&temporary, err)),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(&temporary)
        .map_err(|err| io_error(&temporary, err))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|err| io_error(&temporary, err))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(|err| io_error(path, err))?;
    sync_parent_dir(path)
}

/// Makes the rename durable: losing it on power failure would mint a new thumbprint next start.
fn sync_parent_dir(path: &Path) -> Result<(), IdentityError> {
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| io_error(parent, err))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn warn_if_key_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Ok(metadata) if metadata.permissions().mode() & 0o077 != 0 => tracing::warn!(
                identity.key = %path.display(),
                "the link private key is readable by other users; restrict it to mode 0600"
            ),
            Ok(_) => {}
            // The key was just read successfully, so this is a race with an operator; the
            // check is advice only and loading goes on.
            Err(err) => tracing::debug!(error = %err, "could not check the link key's mode"),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_prints_forty_upper_case_hex_digits_and_parses_either_case() {
        let thumbprint = Thumbprint::of_certificate(b"not really a certificate");
        let text = thumbprint.to_string();
        assert_eq!(text.len(), 40);
        assert_eq!(text, text.to_uppercase());
        assert_eq!(Thumbprint::parse(&text.to_lowercase()), Ok(thumbprint));
        assert!(Thumbprint::parse("ABCD").is_err());
        assert!(Thumbprint::parse(&"Z".repeat(40)).is_err());
    }

    #[test]
    fn thumbprint_is_the_sha1_of_the_der_certificate() {
        let identity = Identity::generate("test").unwrap();
        let expected = hex::encode_upper(Sha1::digest(identity.certificate_der().as_ref()));
        assert_eq!(identity.thumbprint().to_string(), expected);
    }
}
