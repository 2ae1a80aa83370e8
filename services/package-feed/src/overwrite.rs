//! What a push does when the package version (or its build information) already exists.

use std::fmt;

/// `overwriteMode` of a push (legacy `replace=true` is [`OverwriteMode::OverwriteExisting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverwriteMode {
    /// Refuse a duplicate: 409 for packages, 400 for build information.
    #[default]
    FailIfExists,
    /// Replace the existing file or information.
    OverwriteExisting,
    /// Keep the existing one and answer 200.
    IgnoreIfExists,
}

/// An `overwriteMode` value that is none of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an overwrite mode: use FailIfExists, OverwriteExisting or IgnoreIfExists")]
pub struct InvalidOverwriteMode(pub String);

impl OverwriteMode {
    /// Reads `overwriteMode` (case-insensitive) and the legacy `replace` flag; `overwriteMode`
    /// wins when both are given.
    pub fn from_query(
        overwrite_mode: Option<&str>,
        replace: Option<bool>,
    ) -> Result<OverwriteMode, InvalidOverwriteMode> {
        match overwrite_mode {
            Some(text) => match text.to_ascii_lowercase().as_str() {
                "failifexists" => Ok(OverwriteMode::FailIfExists),
                "overwriteexisting" => Ok(OverwriteMode::OverwriteExisting),
                "ignoreifexists" => Ok(OverwriteMode::IgnoreIfExists),
                _ => Err(InvalidOverwriteMode(text.to_owned())),
            },
            None if replace == Some(true) => Ok(OverwriteMode::OverwriteExisting),
            None => Ok(OverwriteMode::FailIfExists),
        }
    }

    /// What to do given whether the version already exists.
    pub fn decide(self, exists: bool) -> PushDecision {
        match (exists, self) {
            (false, _) => PushDecision::Create,
            (true, OverwriteMode::FailIfExists) => PushDecision::Refuse,
            (true, OverwriteMode::OverwriteExisting) => PushDecision::Replace,
            (true, OverwriteMode::IgnoreIfExists) => PushDecision::KeepExisting,
        }
    }
}

impl fmt::Display for OverwriteMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OverwriteMode::FailIfExists => "FailIfExists",
            OverwriteMode::OverwriteExisting => "OverwriteExisting",
            OverwriteMode::IgnoreIfExists => "IgnoreIfExists",
        })
    }
}

/// The outcome of [`OverwriteMode::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushDecision {
    /// Store it as a new version (201).
    Create,
    /// Store it over the existing version (201: a new file was stored).
    Replace,
    /// Store nothing and answer with the existing version (200).
    KeepExisting,
    /// Store nothing and refuse (409).
    Refuse,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_from_the_query_with_legacy_replace() {
        assert_eq!(
            OverwriteMode::from_query(None, None),
            Ok(OverwriteMode::FailIfExists)
        );
        assert_eq!(
            OverwriteMode::from_query(None, Some(true)),
            Ok(OverwriteMode::OverwriteExisting)
        );
        assert_eq!(
            OverwriteMode::from_query(Some("ignoreIfExists"), Some(true)),
            Ok(OverwriteMode::IgnoreIfExists)
        );
        assert!(OverwriteMode::from_query(Some("Sometimes"), None).is_err());
    }

    #[test]
    fn existing_versions_are_refused_replaced_or_kept() {
        assert_eq!(
            OverwriteMode::FailIfExists.decide(false),
            PushDecision::Create
        );
        assert_eq!(
            OverwriteMode::FailIfExists.decide(true),
            PushDecision::Refuse
        );
        assert_eq!(
            OverwriteMode::OverwriteExisting.decide(true),
            PushDecision::Replace
        );
        assert_eq!(
            OverwriteMode::IgnoreIfExists.decide(true),
            PushDecision::KeepExisting
        );
    }
}
