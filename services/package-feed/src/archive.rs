//! Checking that a pushed file really is the archive its name says, before it is stored.
//!
//! The structure is checked by `cuttle_archive::inspect`, the same walk a worker's extraction
//! makes (names, links, limits, checksums), so the feed never accepts a package a deployment
//! would then refuse. A nupkg's `.nuspec` is read here as well: its id and version must match the
//! file name, and its title, summary, description and release notes become the package's.

use crate::InvalidPackage;
use crate::file_name::{PackageFileName, PackageFormat};
use cuttle_archive::{ArchiveFormat, ExtractError, Limits};
use cuttle_domain::package::PackageVersion;
use quick_xml::events::Event;
use std::io::Read;
use std::path::Path;

/// The largest `.nuspec` read (they are a few kilobytes).
const MAX_NUSPEC_BYTES: u64 = 1024 * 1024;

/// Metadata a package carries (only nupkgs carry any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageMetadata {
    /// `<title>`.
    pub title: String,
    /// `<summary>`.
    pub summary: String,
    /// `<description>`.
    pub description: String,
    /// `<releaseNotes>`.
    pub release_notes: String,
}

/// Checks the spooled file at `path` against its parsed name. Blocking: run it off the async
/// runtime. Every refusal is an [`InvalidPackage`] that says what is wrong.
pub fn validate(path: &Path, name: &PackageFileName) -> Result<PackageMetadata, InvalidPackage> {
    let format = match name.format {
        PackageFormat::Zip | PackageFormat::Nupkg => ArchiveFormat::Zip,
        PackageFormat::Tar => ArchiveFormat::Tar,
        PackageFormat::TarGz => ArchiveFormat::TarGz,
        PackageFormat::TarBz2 => ArchiveFormat::TarBz2,
    };
    let entries =
        cuttle_archive::inspect(path, format, &Limits::default()).map_err(|err| match err {
            ExtractError::Io(io) => InvalidPackage::Io(io),
            other => InvalidPackage::Archive {
                extension: name.extension.clone(),
                reason: other.to_string(),
            },
        })?;
    if entries.is_empty() {
        return Err(InvalidPackage::Archive {
            extension: name.extension.clone(),
            reason: "the archive contains no files".to_owned(),
        });
    }
    match name.format {
        PackageFormat::Nupkg => read_nuspec(path, name),
        _ => Ok(PackageMetadata::default()),
    }
}

/// Reads the nupkg's root `.nuspec` and checks its id and version against the file name.
fn read_nuspec(path: &Path, name: &PackageFileName) -> Result<PackageMetadata, InvalidPackage> {
    let nuspec_error = |reason: String| InvalidPackage::Nuspec { reason };
    let file = std::fs::File::open(path)?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|err| nuspec_error(format!("the package cannot be read as a zip: {err}")))?;
    let index = zip
        .file_names()
        .enumerate()
        .find_map(|(index, entry_name)| {
            let entry_name = entry_name.ok()?;
            (!entry_name.contains('/') && entry_name.to_ascii_lowercase().ends_with(".nuspec"))
                .then_some(index)
        })
        .ok_or_else(|| nuspec_error("the package has no .nuspec file at its root".to_owned()))?;
    let mut text = String::new();
    zip.by_index(index)
        .map_err(|err| nuspec_error(format!("the .nuspec cannot be read: {err}")))?
        .take(MAX_NUSPEC_BYTES)
        .read_to_string(&mut text)
        .map_err(|err| nuspec_error(format!("the .nuspec is not readable UTF-8 text: {err}")))?;
    let fields = nuspec_fields(&text).map_err(nuspec_error)?;
    let id = fields.get("id").map(String::as_str).unwrap_or_default();
    if !id.eq_ignore_ascii_case(name.id.as_str()) {
        return Err(nuspec_error(format!(
            "its id '{id}' does not match the id '{}' of the file name",
            name.id
        )));
    }
    let version = fields
        .get("version")
        .map(String::as_str)
        .unwrap_or_default();
    let matches = PackageVersion::parse(version)
        .is_ok_and(|parsed| parsed.normalized() == name.version.normalized());
    if !matches {
        return Err(nuspec_error(format!(
            "its version '{version}' does not match the version '{}' of the file name",
            name.version
        )));
    }
    let field = |key: &str| fields.get(key).cloned().unwrap_or_default();
    Ok(PackageMetadata {
        title: field("title"),
        summary: field("summary"),
        description: field("description"),
        release_notes: field("releasenotes"),
    })
}

/// The text of the direct children of `<package><metadata>`, by lower-case local name.
fn nuspec_fields(text: &str) -> Result<std::collections::HashMap<String, String>, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    let mut fields = std::collections::HashMap::new();
    let mut current = String::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|err| format!("the .nuspec is not well-formed XML: {err}"))?;
        let in_field = path.len() == 3 && path[0] == "package" && path[1] == "metadata";
        match event {
            Event::Start(start) => {
                path.push(
                    String::from_utf8_lossy(start.local_name().as_ref()).to_ascii_lowercase(),
                );
                current.clear();
            }
            Event::End(_) => {
                if in_field && let Some(key) = path.last() {
                    fields.insert(key.clone(), current.trim().to_owned());
                }
                path.pop();
                current.clear();
            }
            Event::Text(content) if in_field => {
                current.push_str(&content.decode().map_err(|err| err.to_string())?);
            }
            Event::CData(content) if in_field => {
                current.push_str(&content.decode().map_err(|err| err.to_string())?);
            }
            Event::GeneralRef(reference) if in_field => {
                if let Ok(Some(c)) = reference.resolve_char_ref() {
                    current.push(c);
                } else {
                    let entity = reference.decode().map_err(|err| err.to_string())?;
                    current.push_str(match entity.as_ref() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => "",
                    });
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nuspec_metadata_is_read_with_entities_and_namespaces() {
        let fields = nuspec_fields(
            r#"<?xml version="1.0"?>
<package xmlns="http://schemas.microsoft.com/packaging/2013/05/nuspec.xsd">
  <metadata>
    <id>Acme.Web</id>
    <version>1.2.3</version>
    <title>Acme &amp; Co</title>
    <releaseNotes><![CDATA[fixed <bugs>]]></releaseNotes>
    <dependencies><group><dependency id="Other" /></group></dependencies>
  </metadata>
</package>"#,
        )
        .unwrap();
        assert_eq!(fields["id"], "Acme.Web");
        assert_eq!(fields["version"], "1.2.3");
        assert_eq!(fields["title"], "Acme & Co");
        assert_eq!(fields["releasenotes"], "fixed <bugs>");
        assert!(!fields.contains_key("group"));
    }

    #[test]
    fn malformed_nuspecs_are_refused() {
        assert!(nuspec_fields("<package><metadata><id>x</version></metadata></package>").is_err());
    }
}
