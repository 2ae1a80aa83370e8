//! Which package versions a release pins: one per package reference of the project's process,
//! chosen from the built-in feed when the release is created, as Octopus does.
//!
//! Selection order for each package reference (the `create/v1` command's rules, the same as the
//! Octopus CLI's `--package` and `--package-version`):
//! 1. a `Packages` entry naming it: `{step or action or package id}:{version}`, or with a
//!    reference name, `{reference}:{step, action or package id}:{version}` (either order);
//! 2. a `Packages` entry with `*` in place of the name (`*:1.2.3`);
//! 3. `PackageVersion`, the default for every package;
//! 4. the latest version in the feed (pre-releases included, as Octopus does without channel
//!    rules; `PackagePrerelease` keeps only versions with that pre-release tag).
//!
//! Every chosen version must be in the feed: a release never pins a package that cannot be
//! deployed.
//!
//! A reference may name its package with a variable (`#{WebPackage}`). As in Octopus, it is
//! evaluated when the release is created, with the variables known then: the project's and its
//! library sets' values that are unscoped or scoped to the release's channel or to the action
//! (never to an environment, a target or a tenant), and `Octopus.Project.*`,
//! `Octopus.Release.Channel.*`. The id it evaluates to is kept on the release's
//! `SelectedPackages` entry (`PackageId`), so every deployment of the release takes that package.

use crate::error::{ApiError, ApiResult};
use cuttle_domain::SpaceId;
use cuttle_domain::package::PackageVersion;
use cuttle_store::ConnectionTrait;
use cuttle_store::packages::{self, PackageRow};
use cuttle_wire::packages::OctopusBuildInformation;
use cuttle_wire::resources::{Action, DeploymentProcess, SelectedPackage, Variable};
use serde_json::{Value, json};

/// The id of the only feed Cuttle has.
pub const BUILT_IN_FEED: &str = "feeds-builtin";

/// One package reference of the process, needing a version.
#[derive(Debug, Clone)]
struct Slot {
    step_name: String,
    action_name: String,
    reference_name: String,
    /// The package id, evaluated when the reference names it with a variable.
    package_id: String,
    /// Whether `package_id` came from a variable.
    from_variable: bool,
}

/// What a variable package id (`#{WebPackage}`) is evaluated with when a release is created.
#[derive(Debug, Clone, Default)]
pub struct ReleaseVariables {
    /// The project's variables, then its library sets'.
    pub variables: Vec<Variable>,
    /// The release's channel.
    pub channel_id: String,
    /// System variables known at release creation (`Octopus.Project.Name`, ...).
    pub system: Vec<(String, String)>,
}

impl ReleaseVariables {
    /// `text` evaluated as the action sees it at release creation. Sensitive values are sealed,
    /// so they take no part.
    fn evaluate(&self, action: &Action, text: &str) -> String {
        let scope = cuttle_variables::Scope {
            environment_id: "",
            channel_id: &self.channel_id,
            action_id: &action.id,
            machine: None,
            tenant_id: None,
            tenant_tags: None,
        };
        let mut dictionary = cuttle_template::VariableDictionary::new();
        for (name, value) in &self.system {
            dictionary.set(name.as_str(), value.as_str());
        }
        for variable in cuttle_variables::resolve(&self.variables, &scope) {
            if let (false, Some(value)) = (variable.is_sensitive, &variable.value) {
                dictionary.set(variable.name.as_str(), value.as_str());
            }
        }
        dictionary.evaluate_lenient(text)
    }
}

impl Slot {
    /// True when `name` names this slot's step, action or package (or is `*`).
    fn named_by(&self, name: &str) -> bool {
        name == "*"
            || name.eq_ignore_ascii_case(&self.step_name)
            || name.eq_ignore_ascii_case(&self.action_name)
            || name.eq_ignore_ascii_case(&self.package_id)
    }

    fn describe(&self) -> String {
        let mut text = format!("package '{}' of step '{}'", self.package_id, self.step_name);
        if !self.reference_name.is_empty() {
            text.push_str(&format!(" (reference '{}')", self.reference_name));
        }
        text
    }
}

/// One `Packages` entry.
#[derive(Debug, Clone)]
struct Spec {
    /// `[name]` or `[reference, name]` (in either order).
    names: Vec<String>,
    version: String,
    text: String,
}

impl Spec {
    fn parse(text: &str) -> ApiResult<Spec> {
        let parts: Vec<&str> = text.split(':').map(str::trim).collect();
        let bad = || {
            ApiError::invalid_field(
                "Packages",
                format!(
                    "'{text}' is not {{package}}:{{version}}, {{step}}:{{version}} or {{reference}}:{{package or step}}:{{version}}"
                ),
            )
        };
        match parts.as_slice() {
            [names @ .., version] if (1..=2).contains(&names.len()) => {
                if version.is_empty() || names.iter().any(|n| n.is_empty()) {
                    return Err(bad());
                }
                Ok(Spec {
                    names: names.iter().map(|n| (*n).to_owned()).collect(),
                    version: (*version).to_owned(),
                    text: text.to_owned(),
                })
            }
            _ => Err(bad()),
        }
    }

    fn is_wildcard(&self) -> bool {
        self.names.iter().all(|n| n == "*")
    }

    fn matches(&self, slot: &Slot) -> bool {
        let reference = |name: &str| name == "*" || name.eq_ignore_ascii_case(&slot.reference_name);
        match self.names.as_slice() {
            [name] => slot.named_by(name),
            [first, second] => {
                (reference(first) && slot.named_by(second))
                    || (slot.named_by(first) && reference(second))
            }
            _ => false,
        }
    }
}

/// How the caller chose versions.
pub enum Selection {
    /// `releases/create/v1`: rules, defaults and the feed's latest.
    Rules {
        /// `Packages` entries.
        packages: Vec<String>,
        /// `PackageVersion`.
        default_version: Option<String>,
        /// `PackagePrerelease`.
        prerelease: Option<String>,
    },
    /// `POST /releases`: the client lists a version for every package reference.
    Explicit(Vec<SelectedPackage>),
}

/// What a release records about its packages.
pub struct Pinned {
    /// One per package reference.
    pub selected: Vec<SelectedPackage>,
    /// Build information of the pinned versions that have any.
    pub build_information: Vec<Value>,
}

/// Pins a version of every package the process references.
pub async fn pin(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    process: &DeploymentProcess,
    variables: &ReleaseVariables,
    selection: Selection,
) -> ApiResult<Pinned> {
    let slots = slots(process, variables)?;
    let mut selected = Vec::with_capacity(slots.len());
    let mut rows = Vec::with_capacity(slots.len());
    match selection {
        Selection::Rules {
            packages,
            default_version,
            prerelease,
        } => {
            let specs = packages
                .iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| Spec::parse(p))
                .collect::<ApiResult<Vec<_>>>()?;
            if let Some(unused) = specs
                .iter()
                .find(|s| !slots.iter().any(|slot| s.matches(slot)))
            {
                return Err(ApiError::invalid_field(
                    "Packages",
                    format!(
                        "'{}' matches no step, action, package or package reference of this project",
                        unused.text
                    ),
                ));
            }
            let default_version = default_version
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty());
            for slot in &slots {
                let wanted = specs
                    .iter()
                    .find(|s| !s.is_wildcard() && s.matches(slot))
                    .or_else(|| specs.iter().find(|s| s.is_wildcard()))
                    .map(|s| ("Packages", s.version.clone()))
                    .or_else(|| default_version.clone().map(|v| ("PackageVersion", v)));
                let row = match wanted {
                    Some((field, version)) => exact(conn, space, slot, field, &version).await?,
                    None => latest(conn, space, slot, prerelease.as_deref()).await?,
                };
                selected.push(selected_package(slot, &row));
                rows.push(row);
            }
        }
        Selection::Explicit(given) => {
            for slot in &slots {
                let choice = given
                    .iter()
                    .find(|g| {
                        g.action_name.eq_ignore_ascii_case(&slot.action_name)
                            && g.package_reference_name
                                .eq_ignore_ascii_case(&slot.reference_name)
                    })
                    .ok_or_else(|| {
                        ApiError::invalid_field(
                            "SelectedPackages",
                            format!("no version is given for the {}", slot.describe()),
                        )
                    })?;
                let row = exact(conn, space, slot, "SelectedPackages", &choice.version).await?;
                selected.push(selected_package(slot, &row));
                rows.push(row);
            }
        }
    }
    let mut build_information = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for row in &rows {
        if !seen.insert((row.package_id_lower.clone(), row.version_normalized.clone())) {
            continue;
        }
        if let Some(info) = packages::find_build_information(
            conn,
            space,
            &row.package_id_lower,
            &row.version_normalized,
        )
        .await?
        {
            build_information.push(release_build_information(&info)?);
        }
    }
    Ok(Pinned {
        selected,
        build_information,
    })
}

/// Every package reference of the process, in process order, with variable package ids
/// evaluated.
fn slots(process: &DeploymentProcess, variables: &ReleaseVariables) -> ApiResult<Vec<Slot>> {
    let mut slots = Vec::new();
    for step in &process.steps {
        for action in &step.actions {
            for reference in &action.packages {
                let feed = reference.feed_id.trim();
                if !(feed.is_empty() || feed.eq_ignore_ascii_case(BUILT_IN_FEED)) {
                    return Err(ApiError::bad_request(
                        format!(
                            "Action '{}' takes package '{}' from the feed '{feed}'; only the built-in feed ({BUILT_IN_FEED}) is available in this version of Cuttle.",
                            action.name, reference.package_id
                        ),
                        Vec::new(),
                    ));
                }
                let written = reference.package_id.trim();
                let from_variable = written.contains("#{");
                let package_id = if from_variable {
                    let evaluated = variables.evaluate(action, written).trim().to_owned();
                    if evaluated.is_empty() || evaluated.contains("#{") {
                        return Err(ApiError::bad_request(
                            format!(
                                "Action '{}' names its package with '{written}', which evaluates to '{evaluated}' when the release is created. Give the variable a value that is unscoped, or scoped to the channel or the step: environment, target and tenant scopes are not known until deployment.",
                                action.name
                            ),
                            vec![format!(
                                "the package id '{written}' of action '{}' cannot be evaluated",
                                action.name
                            )],
                        ));
                    }
                    if cuttle_domain::package::PackageId::parse(&evaluated).is_err() {
                        return Err(ApiError::bad_request(
                            format!(
                                "Action '{}' names its package with '{written}', which evaluates to '{evaluated}', not a valid package id.",
                                action.name
                            ),
                            vec![format!(
                                "the package id '{written}' of action '{}' is not valid",
                                action.name
                            )],
                        ));
                    }
                    evaluated
                } else {
                    written.to_owned()
                };
                slots.push(Slot {
                    step_name: step.name.clone(),
                    action_name: action.name.clone(),
                    reference_name: reference.reference_name().to_owned(),
                    package_id,
                    from_variable,
                });
            }
        }
    }
    Ok(slots)
}

/// The stored package version `version` of the slot's package, or a 400 naming `field`.
async fn exact(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    slot: &Slot,
    field: &str,
    version: &str,
) -> ApiResult<PackageRow> {
    let parsed = PackageVersion::parse(version.trim()).map_err(|err| {
        ApiError::invalid_field(
            field,
            format!("version '{version}' of the {}: {err}", slot.describe()),
        )
    })?;
    packages::find(
        conn,
        space,
        &slot.package_id.to_ascii_lowercase(),
        &parsed.normalized(),
    )
    .await?
    .ok_or_else(|| {
        ApiError::invalid_field(
            field,
            format!(
                "version '{version}' of the {} is not in the built-in feed",
                slot.describe()
            ),
        )
    })
}

/// The newest stored version of the slot's package (with the pre-release tag, when given).
async fn latest(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    slot: &Slot,
    prerelease: Option<&str>,
) -> ApiResult<PackageRow> {
    let prerelease = prerelease.map(str::trim).filter(|p| !p.is_empty());
    let rows = packages::list(
        conn,
        space,
        None,
        Some(&slot.package_id.to_ascii_lowercase()),
    )
    .await?;
    rows.into_iter()
        .filter_map(|row| PackageVersion::parse(&row.version).ok().map(|v| (v, row)))
        .filter(|(version, _)| {
            prerelease.is_none_or(|tag| {
                version
                    .prerelease()
                    .to_ascii_lowercase()
                    .starts_with(&tag.to_ascii_lowercase())
            })
        })
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, row)| row)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "Packages",
                format!(
                    "the built-in feed has no version{} of the {}; push one, or name a version",
                    prerelease
                        .map(|p| format!(" with the pre-release tag '{p}'"))
                        .unwrap_or_default(),
                    slot.describe()
                ),
            )
        })
}

fn selected_package(slot: &Slot, row: &PackageRow) -> SelectedPackage {
    SelectedPackage {
        action_name: slot.action_name.clone(),
        step_name: Some(slot.step_name.clone()),
        package_reference_name: slot.reference_name.clone(),
        version: row.version.clone(),
        package_id: slot.from_variable.then(|| row.package_id.clone()),
    }
}

/// A release's `BuildInformation` item (`ReleasePackageVersionBuildInformation`).
fn release_build_information(row: &packages::BuildInformationRow) -> ApiResult<Value> {
    let info: OctopusBuildInformation = serde_json::from_str(&row.data).map_err(|err| {
        ApiError::internal(format!(
            "stored build information {} is corrupt: {err}",
            row.id
        ))
    })?;
    Ok(json!({
        "PackageId": row.package_id,
        "Version": row.version,
        "BuildEnvironment": info.build_environment,
        "BuildNumber": info.build_number,
        "BuildUrl": info.build_url,
        "Branch": info.branch,
        "VcsType": info.vcs_type,
        "VcsRoot": info.vcs_root,
        "VcsCommitNumber": info.vcs_commit_number,
        "VcsCommitUrl": Value::Null,
        "IssueTrackerName": Value::Null,
        "WorkItems": [],
        "Commits": info.commits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(step: &str, reference: &str, package: &str) -> Slot {
        Slot {
            step_name: step.into(),
            action_name: step.into(),
            reference_name: reference.into(),
            package_id: package.into(),
            from_variable: false,
        }
    }

    #[test]
    fn package_entries_name_a_step_a_package_or_a_reference_in_either_order() {
        let web = slot("Deploy web", "", "Acme.Web");
        let tools = slot("Deploy web", "Tools", "Acme.Tools");
        let by_step = Spec::parse("deploy web:1.0.0").unwrap();
        assert!(by_step.matches(&web) && by_step.matches(&tools));
        let by_package = Spec::parse("Acme.Tools:2.0.0").unwrap();
        assert!(!by_package.matches(&web) && by_package.matches(&tools));
        let reference_first = Spec::parse("Tools:Deploy web:2.0.0").unwrap();
        let reference_last = Spec::parse("Deploy web:Tools:2.0.0").unwrap();
        assert!(reference_first.matches(&tools) && !reference_first.matches(&web));
        assert!(reference_last.matches(&tools) && !reference_last.matches(&web));
        let wildcard = Spec::parse("*:3.0.0").unwrap();
        assert!(wildcard.is_wildcard() && wildcard.matches(&web));
    }

    #[test]
    fn malformed_package_entries_are_refused_naming_the_field() {
        for text in ["1.0.0", "a::1.0.0", "a:", "a:b:c:1.0.0", ":1.0.0"] {
            let err = Spec::parse(text).unwrap_err();
            assert!(format!("{err:?}").contains("Packages"), "{text}: {err:?}");
        }
    }
}
