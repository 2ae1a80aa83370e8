//! The versioned handshake each side sends first over the TLS stream.
//!
//! Each side writes one hello as a single line of JSON ending in `\n` (at most
//! [`MAX_HELLO_LEN`] bytes), then reads the peer's. Both sides then pick the highest version in
//! both lists, so they agree without another round trip, or both fail naming both lists. This
//! plays the part of Halibut's `MX-CLIENT 1.0` / `MX-SUBSCRIBER` / `MX-SERVER 1.0` lines, and
//! stays readable when debugging with `openssl s_client`. Length-delimited frames follow.
//!
//! ```text
//! {"protocol":"cuttle-agent-link","versions":[1],"role":"subscriber","subscription_id":"poll://k3j2/","capabilities":["script","package_upload"]}
//! ```

use crate::error::LinkError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol name every hello carries; anything else is not a Cuttle link.
pub const PROTOCOL: &str = "cuttle-agent-link";

/// The protocol versions this build speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];

/// The longest hello line accepted, so a peer cannot make the handshake buffer grow unbounded.
pub const MAX_HELLO_LEN: usize = 8 * 1024;

/// Capabilities a v1 agent announces in its hello.
pub mod capability {
    /// Runs scripts: `start_script`, `get_status`, `cancel`.
    pub const SCRIPT: &str = "script";
    /// Receives packages by `upload_package`, with a cache keyed by SHA-256.
    pub const PACKAGE_UPLOAD: &str = "package_upload";
    /// Installs and stages packages: `extract_package`, `stage_package`, `rewrite_files`, and
    /// `start_script` in their folders.
    pub const PACKAGE_INSTALL: &str = "package_install";
}

/// What part a side plays on a connection, whichever side dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sends requests: the worker, whether it dialled a listening agent or a polling agent
    /// dialled it.
    Client,
    /// A polling agent that dialled the worker; it answers requests.
    Subscriber,
    /// A listening agent that the worker dialled; it answers requests.
    Service,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Client => "client",
            Role::Subscriber => "subscriber",
            Role::Service => "service",
        })
    }
}

/// Names a polling agent to the worker it dials, as Octopus's `poll://…/` subscription URI does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubscriptionId(String);

impl SubscriptionId {
    /// Accepts 1 to 200 printable characters.
    pub fn parse(text: &str) -> Result<SubscriptionId, InvalidSubscriptionId> {
        let printable = text.chars().all(|c| !c.is_control());
        if text.is_empty() || text.len() > 200 || !printable {
            return Err(InvalidSubscriptionId(text.to_owned()));
        }
        Ok(SubscriptionId(text.to_owned()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SubscriptionId {
    type Error = InvalidSubscriptionId;
    fn try_from(text: String) -> Result<SubscriptionId, InvalidSubscriptionId> {
        SubscriptionId::parse(&text)
    }
}

impl From<SubscriptionId> for String {
    fn from(id: SubscriptionId) -> String {
        id.0
    }
}

/// Text that cannot be a subscription id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a subscription id; use 1 to 200 printable characters")]
pub struct InvalidSubscriptionId(pub String);

/// The first message on a connection, one from each side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`PROTOCOL`].
    pub protocol: String,
    /// The versions the sender speaks.
    pub versions: Vec<u32>,
    /// The sender's role.
    pub role: Role,
    /// Present exactly when the role is [`Role::Subscriber`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<SubscriptionId>,
    /// Optional features the sender offers, e.g. [`capability::SCRIPT`].
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl Hello {
    /// This build's hello for a role.
    pub fn new(
        role: Role,
        subscription_id: Option<SubscriptionId>,
        capabilities: Vec<String>,
    ) -> Hello {
        Hello {
            protocol: PROTOCOL.to_owned(),
            versions: SUPPORTED_VERSIONS.to_vec(),
            role,
            subscription_id,
            capabilities,
        }
    }

    /// Checks the peer's hello against ours and returns the version both will speak.
    ///
    /// `expected_role` is the role the peer must play given ours and who dialled.
    pub fn agree(&self, peer: &Hello, expected_role: Role) -> Result<u32, LinkError> {
        if peer.protocol != PROTOCOL {
            return Err(LinkError::WrongProtocol(peer.protocol.clone()));
        }
        let version = negotiate(&self.versions, &peer.versions)?;
        if peer.role != expected_role {
            return Err(LinkError::RoleMismatch {
                ours: self.role,
                theirs: peer.role,
            });
        }
        match (peer.role, &peer.subscription_id) {
            (Role::Subscriber, None) => Err(LinkError::BadHello(
                "a subscriber must send its subscription_id".to_owned(),
            )),
            (Role::Client | Role::Service, Some(_)) => Err(LinkError::BadHello(format!(
                "only a subscriber sends a subscription_id, not a {}",
                peer.role
            ))),
            _ => Ok(version),
        }
    }
}

/// The highest version both lists contain, or an error that names both lists.
pub fn negotiate(ours: &[u32], theirs: &[u32]) -> Result<u32, LinkError> {
    ours.iter()
        .filter(|version| theirs.contains(version))
        .max()
        .copied()
        .ok_or_else(|| LinkError::VersionMismatch {
            ours: ours.to_vec(),
            theirs: theirs.to_vec(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate(&[1, 2, 3], &[2, 3, 4]).unwrap(), 3);
        assert_eq!(negotiate(&[1], &[1, 7]).unwrap(), 1);
    }

    #[test]
    fn negotiation_without_a_common_version_names_both_sides() {
        let err = negotiate(&[1], &[2, 3]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("[1]") && text.contains("[2, 3]"), "{text}");
    }

    #[test]
    fn a_subscriber_hello_carries_its_subscription_id_on_one_line() {
        let hello = Hello::new(
            Role::Subscriber,
            Some(SubscriptionId::parse("poll://abc/").unwrap()),
            vec![capability::SCRIPT.to_owned()],
        );
        let line = serde_json::to_string(&hello).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(
            line,
            r#"{"protocol":"cuttle-agent-link","versions":[1],"role":"subscriber","subscription_id":"poll://abc/","capabilities":["script"]}"#
        );
    }

    #[test]
    fn a_peer_in_the_wrong_role_is_refused() {
        let ours = Hello::new(Role::Client, None, vec![]);
        let theirs = Hello::new(Role::Client, None, vec![]);
        assert!(matches!(
            ours.agree(&theirs, Role::Service),
            Err(LinkError::RoleMismatch { .. })
        ));
    }
}
