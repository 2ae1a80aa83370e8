//! Typed identifiers in Octopus's formats (`Spaces-1`, `Projects-12`, ...).

use std::fmt;

/// A malformed identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid {kind} id (expected {kind}s-<number>)")]
pub struct IdError {
    /// The kind of id that was expected.
    pub kind: &'static str,
    /// The rejected value.
    pub value: String,
}

/// Returns the numeric part of `<Prefix>-<n>` ids, case-insensitively, or `None`.
pub fn numeric_suffix(value: &str, prefix: &str) -> Option<u64> {
    let (head, tail) = value.rsplit_once('-')?;
    if !head.eq_ignore_ascii_case(prefix) || tail.is_empty() || tail.len() > 18 {
        return None;
    }
    tail.parse().ok()
}

/// The identifier of a space, the hard isolation boundary. Every space-owned query starts from one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpaceId(String);

impl SpaceId {
    /// The default space every installation has.
    pub fn default_space() -> Self {
        SpaceId("Spaces-1".to_owned())
    }

    /// Parses `Spaces-<n>` (case-insensitive prefix, normalised to `Spaces-`).
    pub fn parse(value: &str) -> Result<Self, IdError> {
        match numeric_suffix(value, "Spaces") {
            Some(n) => Ok(SpaceId(format!("Spaces-{n}"))),
            None => Err(IdError {
                kind: "Space",
                value: value.to_owned(),
            }),
        }
    }

    /// Builds the id of the n-th space.
    pub fn from_number(n: u64) -> Self {
        SpaceId(format!("Spaces-{n}"))
    }

    /// The id as Octopus writes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Turns a display name into a URL slug the way Octopus does: lower case, words joined by `-`.
pub fn slugify(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    let mut pending_dash = false;
    for ch in name.chars() {
        if ch.is_alphanumeric() {
            if pending_dash && !slug.is_empty() {
                slug.push('-');
            }
            pending_dash = false;
            slug.extend(ch.to_lowercase());
        } else {
            pending_dash = true;
        }
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_ids_parse_case_insensitively_and_normalise() {
        assert_eq!(SpaceId::parse("spaces-12").unwrap().as_str(), "Spaces-12");
        assert!(SpaceId::parse("Spaces-").is_err());
        assert!(SpaceId::parse("Projects-1").is_err());
        assert!(SpaceId::parse("Spaces-x").is_err());
    }

    #[test]
    fn slugs_join_words_with_dashes() {
        assert_eq!(slugify("My Project  (v2)"), "my-project-v2");
        assert_eq!(slugify("--Hello--"), "hello");
    }
}
