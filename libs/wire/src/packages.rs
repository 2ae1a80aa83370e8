//! The built-in package feed's JSON: package versions, feed search results and build
//! information (spec B.11 to B.13).

use crate::Links;
use serde::{Deserialize, Serialize};

/// One package version of the built-in feed (`GET /api/{space}/packages/{id}`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Package {
    /// `packages-<PackageId>.<Version>`.
    pub id: String,
    pub package_id: String,
    pub version: String,
    pub title: String,
    pub summary: String,
    pub description: String,
    pub release_notes: String,
    /// When the file was stored, Octopus-formatted.
    pub published: String,
    /// `.zip`, `.tar.gz`, ...
    pub file_extension: String,
    /// Always `feeds-builtin`.
    pub feed_id: String,
    pub nu_get_package_id: String,
    pub nu_get_feed_id: String,
    pub package_size_bytes: u64,
    /// Hex SHA-256 of the file.
    pub hash: String,
    /// The build information pushed for this version, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_version_build_information: Option<BuildInformation>,
    pub links: Links,
}

/// One version in a feed search (`GET /api/{space}/feeds/{id}/packages/versions`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PackageVersionSummary {
    /// `packages-<PackageId>.<Version>`.
    pub id: String,
    pub package_id: String,
    pub version: String,
    pub published: String,
    pub size_bytes: u64,
    pub title: String,
    pub release_notes: String,
    pub feed_id: String,
    pub links: Links,
}

/// A commit of build information.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Commit {
    pub id: String,
    pub comment: String,
    #[serde(skip_deserializing)]
    pub link_url: Option<String>,
}

/// A work item linked from build information (none are derived yet: no issue trackers).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct WorkItem {
    pub id: String,
    pub description: String,
    pub link_url: String,
}

/// `OctopusBuildInformation` of a push: what the build server knows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct OctopusBuildInformation {
    pub branch: Option<String>,
    pub build_environment: Option<String>,
    pub build_number: Option<String>,
    pub build_url: Option<String>,
    pub commits: Vec<Commit>,
    pub vcs_commit_number: Option<String>,
    pub vcs_root: Option<String>,
    pub vcs_type: Option<String>,
}

/// `POST /api/{space}/build-information`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBuildInformationCommand {
    pub package_id: String,
    pub version: String,
    pub octopus_build_information: Option<OctopusBuildInformation>,
}

/// Stored build information as served (`MappedOctopusPackageVersionBuildInformation`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct BuildInformation {
    pub id: String,
    pub package_id: String,
    pub version: String,
    pub branch: Option<String>,
    pub build_environment: Option<String>,
    pub build_number: Option<String>,
    pub build_url: Option<String>,
    pub commits: Vec<Commit>,
    pub vcs_type: Option<String>,
    pub vcs_root: Option<String>,
    pub vcs_commit_number: Option<String>,
    pub vcs_commit_url: Option<String>,
    pub issue_tracker_id: Option<String>,
    pub work_items: Vec<WorkItem>,
    pub incomplete_data_warning: Option<String>,
    pub created: String,
    pub links: Links,
}
