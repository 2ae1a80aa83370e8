//! Sensitive values at rest: sensitive variables, and sensitive output variables on their way
//! from a worker to later steps.
//!
//! A sealed value is one line of text, `cuttle-sealed:v1:<key id>:<base64>`, where the base64
//! holds a random 96-bit nonce followed by the AES-256-GCM ciphertext and tag, and the key id
//! (the first 16 hex digits of the key's SHA-256) is also the associated data. The key id says
//! which master key sealed it, so a [`Keyring`] can hold retired keys: values sealed under one
//! still open, and [`Keyring::reseal`] moves them to the current key. That is the rotation path:
//! configure a new key with the old one retired, re-save (or let the server re-save) what was
//! sealed, then drop the retired key.
//!
//! The keyring never prints a key: its `Debug` shows key ids only.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use std::fmt;

/// What every sealed value starts with.
pub const SEALED_PREFIX: &str = "cuttle-sealed:v1:";

/// Bytes in a master key.
pub const KEY_LEN: usize = 32;

/// Why a key could not be used or a value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The configured key is not 32 bytes of base64.
    #[error("a master key must be {KEY_LEN} bytes written as base64 ({0})")]
    BadKey(String),
    /// The text is not a sealed value.
    #[error("the value is not a sealed value")]
    NotSealed,
    /// Sealed under a key this keyring does not hold.
    #[error(
        "the value was sealed with master key {0}, which is neither the current nor a retired key"
    )]
    UnknownKey(String),
    /// Tampered with, truncated, or sealed under another key with the same id.
    #[error("the sealed value does not open with master key {0}: it was altered or damaged")]
    Damaged(String),
    /// The system's random source failed.
    #[error("the system random source failed")]
    Random,
}

struct MasterKey {
    id: String,
    key: LessSafeKey,
    /// HMAC-SHA256 under the same bytes, for [`Keyring::derive_key`].
    derivation: ring::hmac::Key,
}

impl MasterKey {
    fn from_base64(text: &str) -> Result<MasterKey, SecretError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|err| SecretError::BadKey(err.to_string()))?;
        if bytes.len() != KEY_LEN {
            return Err(SecretError::BadKey(format!("it has {} bytes", bytes.len())));
        }
        let id = hex::encode(&Sha256::digest(&bytes)[..8]);
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| SecretError::BadKey("ring refused it".into()))?;
        Ok(MasterKey {
            id,
            key: LessSafeKey::new(key),
            derivation: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
        })
    }
}

/// The current master key, which seals, and retired ones, which only open.
pub struct Keyring {
    current: MasterKey,
    retired: Vec<MasterKey>,
    random: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field(
                "retired",
                &self.retired.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    /// A keyring from base64 keys.
    pub fn new<'a>(
        current: &str,
        retired: impl IntoIterator<Item = &'a str>,
    ) -> Result<Keyring, SecretError> {
        Ok(Keyring {
            current: MasterKey::from_base64(current)?,
            retired: retired
                .into_iter()
                .map(MasterKey::from_base64)
                .collect::<Result<_, _>>()?,
            random: SystemRandom::new(),
        })
    }

    /// A new random master key, as base64.
    pub fn generate_key() -> Result<String, SecretError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SecretError::Random)?;
        Ok(STANDARD.encode(bytes))
    }

    /// A 32-byte key for one purpose (e.g. signing session tokens), derived from the current
    /// master key with HMAC-SHA256 over the purpose's name: distinct purposes get unrelated
    /// keys, and rotating the master key rotates them all.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let tag = ring::hmac::sign(&self.current.derivation, purpose.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(&tag.as_ref()[..32]);
        out
    }

    /// The id of the key that seals.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// Whether `value` is a sealed value (of any key).
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(SEALED_PREFIX)
    }

    /// Seals `plaintext` under the current key; every call uses a fresh nonce.
    pub fn seal(&self, plaintext: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut data = plaintext.as_bytes().to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.current.id.as_bytes()),
                &mut data,
            )
            .map_err(|_| SecretError::Damaged(self.current.id.clone()))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        Ok(format!(
            "{SEALED_PREFIX}{}:{}",
            self.current.id,
            STANDARD.encode(sealed)
        ))
    }

    /// Opens a sealed value with whichever held key sealed it.
    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let rest = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SecretError::NotSealed)?;
        let (id, body) = rest.split_once(':').ok_or(SecretError::NotSealed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.retired)
            .find(|k| k.id == id)
            .ok_or_else(|| SecretError::UnknownKey(id.to_owned()))?;
        let damaged = || SecretError::Damaged(id.to_owned());
        let bytes = STANDARD.decode(body).map_err(|_| damaged())?;
        if bytes.len() < NONCE_LEN {
            return Err(damaged());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?;
        let mut data = ciphertext.to_vec();
        let plaintext = key
            .key
            .open_in_place(nonce, Aad::from(key.id.as_bytes()), &mut data)
            .map_err(|_| damaged())?;
        String::from_utf8(plaintext.to_vec()).map_err(|_| damaged())
    }

    /// `sealed` under the current key: unchanged when it already is, else opened and sealed
    /// again (a value sealed under a retired key).
    pub fn reseal(&self, sealed: &str) -> Result<String, SecretError> {
        let current = format!("{SEALED_PREFIX}{}:", self.current.id);
        if sealed.starts_with(&current) {
            return Ok(sealed.to_owned());
        }
        self.seal(&self.open(sealed)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_purpose_and_master_key() {
        let one = Keyring::new(&Keyring::generate_key().expect("key"), []).expect("ring");
        let two = Keyring::new(&Keyring::generate_key().expect("key"), []).expect("ring");
        assert_eq!(one.derive_key("sessions"), one.derive_key("sessions"));
        assert_ne!(one.derive_key("sessions"), one.derive_key("other"));
        assert_ne!(one.derive_key("sessions"), two.derive_key("sessions"));
    }

    fn key() -> String {
        Keyring::generate_key().expect("random")
    }

    #[test]
    fn a_sealed_value_opens_to_the_plaintext_and_never_contains_it() {
        let ring = Keyring::new(&key(), []).expect("key");
        let sealed = ring.seal("hunter2 and more").expect("seal");
        assert!(Keyring::is_sealed(&sealed));
        assert!(!sealed.contains("hunter2"), "{sealed}");
        assert_eq!(ring.open(&sealed).expect("open"), "hunter2 and more");
        // A fresh nonce each time.
        assert_ne!(sealed, ring.seal("hunter2 and more").expect("seal"));
        assert_eq!(ring.open(&ring.seal("").expect("seal")).expect("open"), "");
    }

    #[test]
    fn a_tampered_value_or_a_foreign_key_does_not_open() {
        let ring = Keyring::new(&key(), []).expect("key");
        let sealed = ring.seal("secret").expect("seal");
        let mut bytes = sealed.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert!(matches!(ring.open(&tampered), Err(SecretError::Damaged(_))));
        assert!(matches!(
            ring.open(&sealed[..sealed.len() - 8]),
            Err(SecretError::Damaged(_))
        ));
        let first = key();
        let ring = Keyring::new(&first, []).expect("key");
        let sealed = ring.seal("secret").expect("seal");
        let second = key();
        let other = Keyring::new(&second, []).expect("key");
        assert!(matches!(
            other.open(&sealed),
            Err(SecretError::UnknownKey(_))
        ));
        assert!(matches!(ring.open("plain"), Err(SecretError::NotSealed)));
        // Relabelled with another held key's id, it does not open under that key either.
        let both = Keyring::new(&second, [first.as_str()]).expect("keys");
        assert_eq!(both.open(&sealed).expect("open"), "secret");
        let relabelled = sealed.replace(ring.key_id(), other.key_id());
        assert!(matches!(
            both.open(&relabelled),
            Err(SecretError::Damaged(_))
        ));
    }

    #[test]
    fn rotation_opens_values_of_a_retired_key_and_reseals_them_under_the_new_one() {
        let old = key();
        let new = key();
        let before = Keyring::new(&old, []).expect("key");
        let sealed = before.seal("db-password").expect("seal");
        let after = Keyring::new(&new, [old.as_str()]).expect("keys");
        assert_eq!(after.open(&sealed).expect("open"), "db-password");
        let moved = after.reseal(&sealed).expect("reseal");
        assert!(moved.contains(after.key_id()), "{moved}");
        assert_eq!(after.reseal(&moved).expect("reseal"), moved);
        let only_new = Keyring::new(&new, []).expect("key");
        assert_eq!(only_new.open(&moved).expect("open"), "db-password");
        assert!(only_new.open(&sealed).is_err());
    }

    #[test]
    fn bad_keys_are_refused_and_debug_shows_no_key() {
        assert!(matches!(
            Keyring::new("not base64!", []),
            Err(SecretError::BadKey(_))
        ));
        assert!(matches!(
            Keyring::new(&STANDARD.encode([0u8; 16]), []),
            Err(SecretError::BadKey(_))
        ));
        let text = key();
        let ring = Keyring::new(&text, []).expect("key");
        let debug = format!("{ring:?}");
        assert!(!debug.contains(&text), "{debug}");
        assert!(debug.contains(ring.key_id()), "{debug}");
    }
}
