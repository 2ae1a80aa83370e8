//! Package ids and versions of the built-in feed, parsed once so that every later use can trust
//! them (see `shared/specs/octopus-api.md` D.13).

use std::cmp::Ordering;
use std::fmt;

/// The longest package id Octopus accepts.
pub const MAX_PACKAGE_ID_LEN: usize = 100;

/// A package id: segments of ASCII letters and digits separated by single `-`, `.` or `_`,
/// at most 100 characters. Ids compare case-insensitively (`My.Pkg` and `my.pkg` are one
/// package), but keep the spelling they were first pushed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageId(String);

/// Why a package id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{id}' is not a valid package id: {reason} (ids are letters and digits in segments separated by '-', '.' or '_', at most 100 characters)"
)]
pub struct InvalidPackageId {
    /// The id as given.
    pub id: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl PackageId {
    /// Parses and validates an id.
    pub fn parse(value: &str) -> Result<PackageId, InvalidPackageId> {
        let invalid = |reason| InvalidPackageId {
            id: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(invalid("it is empty"));
        }
        if value.len() > MAX_PACKAGE_ID_LEN {
            return Err(invalid("it is longer than 100 characters"));
        }
        let separators = ['-', '.', '_'];
        let mut previous_was_separator = true;
        for c in value.chars() {
            if c.is_ascii_alphanumeric() {
                previous_was_separator = false;
            } else if separators.contains(&c) {
                if previous_was_separator {
                    return Err(invalid(
                        "it starts with a separator or has two separators in a row",
                    ));
                }
                previous_was_separator = true;
            } else {
                return Err(invalid(
                    "it contains a character other than a letter, a digit, '-', '.' or '_'",
                ));
            }
        }
        if previous_was_separator {
            return Err(invalid("it ends with a separator"));
        }
        Ok(PackageId(value.to_owned()))
    }

    /// The id as spelled.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-case form used for lookups and uniqueness.
    pub fn lower(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for PackageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A package version: SemVer 2.0 (`1.2.3`, `1.2.3-beta.4`, `1.2.3+build`) or NuGet's four-part
/// form (`1.2.3.4`, with the same suffixes).
#[derive(Debug, Clone)]
pub struct PackageVersion {
    original: String,
    numbers: [u64; 4],
    n_numbers: usize,
    prerelease: Vec<String>,
    metadata: Option<String>,
}

/// Why a version was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a valid package version: expected SemVer 2.0 or a four-part version, such as 1.2.3, 1.2.3.4, 1.2.3-beta.1 or 1.2.3+build.5"
)]
pub struct InvalidPackageVersion(pub String);

/// A dot-separated identifier list of SemVer's pre-release or metadata: non-empty identifiers of
/// ASCII letters, digits and `-`.
fn valid_identifiers(text: &str) -> bool {
    text.split('.').all(|identifier| {
        !identifier.is_empty()
            && identifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

impl PackageVersion {
    /// Parses and validates a version (at most 349 characters, as Octopus limits versions).
    pub fn parse(value: &str) -> Result<PackageVersion, InvalidPackageVersion> {
        let invalid = || InvalidPackageVersion(value.to_owned());
        if value.is_empty() || value.len() > 349 {
            return Err(invalid());
        }
        let (rest, metadata) = match value.split_once('+') {
            Some((rest, metadata)) => {
                if !valid_identifiers(metadata) {
                    return Err(invalid());
                }
                (rest, Some(metadata.to_owned()))
            }
            None => (value, None),
        };
        let (core, prerelease) = match rest.split_once('-') {
            Some((core, prerelease)) => {
                if !valid_identifiers(prerelease) {
                    return Err(invalid());
                }
                (core, prerelease.split('.').map(str::to_owned).collect())
            }
            None => (rest, Vec::new()),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if !(3..=4).contains(&parts.len()) {
            return Err(invalid());
        }
        let mut numbers = [0u64; 4];
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            if part.is_empty() || part.len() > 18 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            *slot = part.parse().map_err(|_| invalid())?;
        }
        Ok(PackageVersion {
            original: value.to_owned(),
            numbers,
            n_numbers: parts.len(),
            prerelease,
            metadata,
        })
    }

    /// The version as spelled.
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The normalized form NuGet compares by: numbers without leading zeros, a zero fourth part
    /// dropped, the pre-release lower-cased and build metadata dropped (SemVer gives metadata no
    /// precedence). `1.02.3.0-Beta+sha` and `1.2.3-beta` are one version.
    pub fn normalized(&self) -> String {
        let [major, minor, patch, revision] = self.numbers;
        let mut text = format!("{major}.{minor}.{patch}");
        if self.n_numbers == 4 && revision != 0 {
            text.push_str(&format!(".{revision}"));
        }
        if !self.prerelease.is_empty() {
            text.push('-');
            text.push_str(&self.prerelease.join(".").to_ascii_lowercase());
        }
        text
    }

    /// True for a pre-release (`1.0.0-beta`).
    pub fn is_prerelease(&self) -> bool {
        !self.prerelease.is_empty()
    }

    /// The pre-release label, without the `-` (empty for a release).
    pub fn prerelease(&self) -> String {
        self.prerelease.join(".")
    }

    /// Build metadata, without the `+`.
    pub fn metadata(&self) -> Option<&str> {
        self.metadata.as_deref()
    }
}

/// Compares one pre-release identifier by SemVer's rules: numbers numerically and below text.
fn compare_identifier(left: &str, right: &str) -> Ordering {
    let numeric = |s: &str| {
        if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    match (numeric(left), numeric(right)) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => left.to_ascii_lowercase().cmp(&right.to_ascii_lowercase()),
    }
}

impl Ord for PackageVersion {
    /// SemVer precedence (pre-releases compared case-insensitively, as NuGet does); metadata is
    /// ignored.
    fn cmp(&self, other: &Self) -> Ordering {
        self.numbers.cmp(&other.numbers).then_with(|| {
            match (self.prerelease.is_empty(), other.prerelease.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (left, right) in self.prerelease.iter().zip(&other.prerelease) {
                        let order = compare_identifier(left, right);
                        if order != Ordering::Equal {
                            return order;
                        }
                    }
                    self.prerelease.len().cmp(&other.prerelease.len())
                }
            }
        })
    }
}

impl PartialOrd for PackageVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PackageVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PackageVersion {}

impl fmt::Display for PackageVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

/// Splits `<PackageId>.<Version>` (a file name without its extension, or the tail of an
/// Octopus package id `packages-<PackageId>.<Version>`). The version starts at the first `.`
/// followed by a digit after which both halves are valid, so `My.Pkg.1.2.3-beta.4` is `My.Pkg`
/// version `1.2.3-beta.4` and `Acme.7zip.1.0.0` is `Acme.7zip` version `1.0.0`.
pub fn split_id_and_version(stem: &str) -> Option<(PackageId, PackageVersion)> {
    stem.char_indices()
        .filter(|(index, c)| {
            *c == '.'
                && stem[index + 1..]
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_digit())
        })
        .find_map(|(index, _)| {
            let id = PackageId::parse(&stem[..index]).ok()?;
            let version = PackageVersion::parse(&stem[index + 1..]).ok()?;
            Some((id, version))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_letter_and_digit_segments_with_single_separators() {
        for ok in ["Hello", "My.Pkg", "acme-web_api", "a1.b2", "7zip"] {
            assert!(PackageId::parse(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(101);
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a/b",
            "é",
            "a+b",
            long.as_str(),
        ] {
            assert!(PackageId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions_are_semver_or_four_parts() {
        for ok in [
            "1.2.3",
            "1.2.3.4",
            "1.2.3-beta.4",
            "1.2.3+build.5",
            "1.2.3-rc-1+sha.abc",
            "0.0.0",
        ] {
            assert!(PackageVersion::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4.5",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-a..b",
            "a.b.c",
            "1.2.3 ",
            "v1.2.3",
            "1.2.3-bé",
        ] {
            assert!(PackageVersion::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn normalization_ignores_case_leading_zeros_zero_revision_and_metadata() {
        let v = |s| PackageVersion::parse(s).unwrap().normalized();
        assert_eq!(v("1.02.3.0-Beta+sha"), "1.2.3-beta");
        assert_eq!(v("1.2.3.4"), "1.2.3.4");
        assert_eq!(v("1.2.3"), "1.2.3");
    }

    #[test]
    fn ordering_follows_semver_precedence() {
        let mut versions: Vec<PackageVersion> = [
            "1.0.0",
            "1.0.0-beta.11",
            "1.0.0-alpha",
            "1.0.0-beta.2",
            "0.9.9.9",
            "1.0.0.1",
            "1.0.0-alpha.1",
        ]
        .iter()
        .map(|s| PackageVersion::parse(s).unwrap())
        .collect();
        versions.sort();
        let sorted: Vec<&str> = versions.iter().map(PackageVersion::as_str).collect();
        assert_eq!(
            sorted,
            [
                "0.9.9.9",
                "1.0.0-alpha",
                "1.0.0-alpha.1",
                "1.0.0-beta.2",
                "1.0.0-beta.11",
                "1.0.0",
                "1.0.0.1"
            ]
        );
    }

    #[test]
    fn the_version_is_found_after_the_first_dot_that_makes_both_halves_valid() {
        let split = |s| split_id_and_version(s).map(|(id, v)| (id.to_string(), v.to_string()));
        assert_eq!(
            split("My.Pkg.1.2.3-beta.4"),
            Some(("My.Pkg".into(), "1.2.3-beta.4".into()))
        );
        assert_eq!(
            split("Acme.7zip.1.0.0"),
            Some(("Acme.7zip".into(), "1.0.0".into()))
        );
        assert_eq!(
            split("Hello.1.0.0.4"),
            Some(("Hello".into(), "1.0.0.4".into()))
        );
        assert_eq!(split("Hello"), None);
        assert_eq!(split("Hello.latest"), None);
        assert_eq!(split(".1.0.0"), None);
    }
}
