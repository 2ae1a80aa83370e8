//! Package file names: `<PackageId>.<Version>.<ext>`, the only place a pushed file's id, version
//! and format come from (D.13 of the spec).

use crate::InvalidPackage;
use cuttle_domain::package::{PackageId, PackageVersion, split_id_and_version};

/// How a package file is laid out, which decides how it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageFormat {
    /// A zip archive (`.zip`, and the Java archives `.jar`, `.war`, `.ear`).
    Zip,
    /// A NuGet package: a zip with a `.nuspec` whose id and version must match the file name.
    Nupkg,
    /// An uncompressed tar archive.
    Tar,
    /// A gzip-compressed tar archive.
    TarGz,
    /// A bzip2-compressed tar archive.
    TarBz2,
}

/// Extensions the feed accepts, longest first so that `.tar.gz` wins over `.gz`.
const EXTENSIONS: &[(&str, PackageFormat)] = &[
    (".tar.bz2", PackageFormat::TarBz2),
    (".tar.gz", PackageFormat::TarGz),
    (".tar.bz", PackageFormat::TarBz2),
    (".nupkg", PackageFormat::Nupkg),
    (".tbz2", PackageFormat::TarBz2),
    (".tgz", PackageFormat::TarGz),
    (".tbz", PackageFormat::TarBz2),
    (".zip", PackageFormat::Zip),
    (".jar", PackageFormat::Zip),
    (".war", PackageFormat::Zip),
    (".ear", PackageFormat::Zip),
    (".tar", PackageFormat::Tar),
];

/// A parsed package file name.
#[derive(Debug, Clone)]
pub struct PackageFileName {
    /// The package id.
    pub id: PackageId,
    /// The version.
    pub version: PackageVersion,
    /// The extension, lower-cased, with its dot: `.zip`, `.tar.gz`.
    pub extension: String,
    /// The layout the extension promises.
    pub format: PackageFormat,
}

impl PackageFileName {
    /// Parses `<PackageId>.<Version>.<ext>`. Only the last path segment counts: clients send
    /// bare names, but a name with directories must not reach a blob key.
    pub fn parse(file_name: &str) -> Result<PackageFileName, InvalidPackage> {
        let name = file_name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or(file_name)
            .trim();
        if name.is_empty() {
            return Err(InvalidPackage::FileName {
                name: file_name.to_owned(),
                reason: "the upload has no file name; name the file <PackageId>.<Version>.<ext>"
                    .to_owned(),
            });
        }
        let lower = name.to_ascii_lowercase();
        let Some((extension, format)) = EXTENSIONS
            .iter()
            .find(|(extension, _)| lower.ends_with(extension))
        else {
            return Err(InvalidPackage::FileName {
                name: name.to_owned(),
                reason: "the extension is not one the built-in feed accepts (.zip, .nupkg, .jar, .war, .ear, .tar, .tar.gz, .tgz, .tar.bz2, .tbz2)".to_owned(),
            });
        };
        let stem = &name[..name.len() - extension.len()];
        let Some((id, version)) = split_id_and_version(stem) else {
            let reason = explain_stem(stem);
            return Err(InvalidPackage::FileName {
                name: name.to_owned(),
                reason,
            });
        };
        Ok(PackageFileName {
            id,
            version,
            extension: (*extension).to_owned(),
            format: *format,
        })
    }
}

/// Says why `<Id>.<Version>` could not be split, naming the first problem found.
fn explain_stem(stem: &str) -> String {
    let expected = "expected <PackageId>.<Version>.<ext>, such as Hello.1.0.0.zip";
    let candidate = stem.char_indices().find(|(index, c)| {
        *c == '.'
            && stem[index + 1..]
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_digit())
    });
    match candidate {
        None => format!("no version was found in the name; {expected}"),
        Some((index, _)) => {
            if let Err(err) = PackageId::parse(&stem[..index]) {
                format!("{err}; {expected}")
            } else if let Err(err) = PackageVersion::parse(&stem[index + 1..]) {
                format!("{err}; {expected}")
            } else {
                expected.to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str) -> (String, String, String, PackageFormat) {
        let parsed = PackageFileName::parse(name).unwrap();
        (
            parsed.id.to_string(),
            parsed.version.to_string(),
            parsed.extension,
            parsed.format,
        )
    }

    #[test]
    fn names_split_into_id_version_and_extension() {
        assert_eq!(
            parse("My.Pkg.1.2.3-beta.4.zip"),
            (
                "My.Pkg".into(),
                "1.2.3-beta.4".into(),
                ".zip".into(),
                PackageFormat::Zip
            )
        );
        assert_eq!(
            parse("hello-world.1.0.0.TAR.GZ"),
            (
                "hello-world".into(),
                "1.0.0".into(),
                ".tar.gz".into(),
                PackageFormat::TarGz
            )
        );
        assert_eq!(parse("a.1.0.0.4.tgz").3, PackageFormat::TarGz);
        assert_eq!(parse("a.1.0.0.tar.bz2").3, PackageFormat::TarBz2);
        assert_eq!(parse("a.1.0.0.nupkg").3, PackageFormat::Nupkg);
        assert_eq!(parse("a.1.0.0.jar").3, PackageFormat::Zip);
        assert_eq!(parse("a.1.0.0.tar").3, PackageFormat::Tar);
        assert_eq!(parse("dir/sub/a.1.0.0.zip").0, "a");
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        let reason = |name: &str| PackageFileName::parse(name).unwrap_err().to_string();
        assert!(
            reason("Hello.zip").contains("no version"),
            "{}",
            reason("Hello.zip")
        );
        assert!(reason("Hello.1.0.0.exe").contains("extension"));
        assert!(reason("Hel lo.1.0.0.zip").contains("not a valid package id"));
        assert!(reason("Hello.1.0.0-.zip").contains("not a valid package version"));
        assert!(reason("").contains("no file name"));
        assert!(reason(".1.0.0.zip").contains("not a valid package id"));
    }
}
