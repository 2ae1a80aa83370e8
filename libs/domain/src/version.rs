//! Release versions: validation and the default "next patch" versioning strategy.

/// A release version as Octopus accepts it: `Major.Minor[.Patch[.Revision]][-pre][+meta]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseVersion {
    numbers: Vec<u64>,
    suffix: String,
}

/// A version string that is not a valid release version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a valid version: expected Major.Minor.Patch with an optional -prerelease or +metadata, such as 1.2.3 or 1.2.3-beta.1"
)]
pub struct InvalidVersion(pub String);

impl ReleaseVersion {
    /// Parses and validates a version (at most 349 characters, as Octopus limits it).
    pub fn parse(value: &str) -> Result<ReleaseVersion, InvalidVersion> {
        let invalid = || InvalidVersion(value.to_owned());
        let text = value.trim();
        if text.is_empty() || text.len() > 349 {
            return Err(invalid());
        }
        let split_at = text.find(['-', '+']).unwrap_or(text.len());
        let (core, suffix) = text.split_at(split_at);
        let numbers: Vec<u64> = core
            .split('.')
            .map(|part| {
                if part.is_empty() || part.len() > 18 || !part.bytes().all(|b| b.is_ascii_digit()) {
                    Err(invalid())
                } else {
                    part.parse::<u64>().map_err(|_| invalid())
                }
            })
            .collect::<Result<_, _>>()?;
        if !(2..=4).contains(&numbers.len()) {
            return Err(invalid());
        }
        let suffix_ok = suffix
            .chars()
            .skip(1)
            .all(|c| c.is_ascii_alphanumeric() || "-.+".contains(c))
            && suffix.len() != 1;
        if !suffix_ok {
            return Err(invalid());
        }
        Ok(ReleaseVersion {
            numbers,
            suffix: suffix.to_owned(),
        })
    }

    /// The version after this one under the default template
    /// `#{Octopus.Version.LastMajor}.#{Octopus.Version.LastMinor}.#{Octopus.Version.NextPatch}`.
    pub fn next_patch(&self) -> String {
        let major = self.numbers.first().copied().unwrap_or(0);
        let minor = self.numbers.get(1).copied().unwrap_or(0);
        let patch = self.numbers.get(2).copied().unwrap_or(0);
        format!("{major}.{minor}.{}", patch.saturating_add(1))
    }

    /// Ordering key: numbers first (missing parts are zero), then releases before pre-releases.
    pub fn sort_key(&self) -> (Vec<u64>, bool, String) {
        let mut numbers = self.numbers.clone();
        numbers.resize(4, 0);
        let is_release = self.suffix.is_empty() || self.suffix.starts_with('+');
        (numbers, is_release, self.suffix.clone())
    }
}

/// The version for a new release when none was given: next patch after the highest existing one.
pub fn next_release_version<'a>(existing: impl IntoIterator<Item = &'a str>) -> String {
    existing
        .into_iter()
        .filter_map(|v| ReleaseVersion::parse(v).ok())
        .max_by_key(ReleaseVersion::sort_key)
        .map(|v| v.next_patch())
        .unwrap_or_else(|| "0.0.1".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_accept_semver_and_four_parts_and_refuse_garbage() {
        for ok in [
            "1.0",
            "1.2.3",
            "1.2.3.4",
            "1.2.3-beta.1",
            "1.2.3+build.5",
            "2025.1.0-rc1+sha",
        ] {
            assert!(ReleaseVersion::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1",
            "1.2.3.4.5",
            "a.b.c",
            "1..2",
            "1.2.3-",
            "1.2.3 beta",
            "1.2.3-bé",
        ] {
            assert!(ReleaseVersion::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn first_release_is_0_0_1_and_later_ones_bump_the_patch_of_the_highest() {
        assert_eq!(next_release_version([]), "0.0.1");
        assert_eq!(next_release_version(["0.0.1", "0.0.9", "0.0.10"]), "0.0.11");
        assert_eq!(next_release_version(["1.2.0-beta", "1.1.7"]), "1.2.1");
    }
}
