//! Octopus resources as stored and served. Every struct reads with defaults for missing fields, so
//! a minimal create body (`{"Name": "Test"}`) and a full echoed GET body both parse.

use crate::Links;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Reads a map of string properties, turning scalar JSON values into strings since clients
/// sometimes send `true` where Octopus documents `"true"`.
pub fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (key, value) in raw.unwrap_or_default() {
        let text = match value {
            Value::String(s) => s,
            Value::Null => String::new(),
            Value::Bool(b) => {
                if b {
                    "True".to_owned()
                } else {
                    "False".to_owned()
                }
            }
            Value::Number(n) => n.to_string(),
            Value::Object(_) | Value::Array(_) => {
                return Err(serde::de::Error::custom(format!(
                    "property '{key}' must be a string (sensitive properties are not supported yet)"
                )));
            }
        };
        out.insert(key, text);
    }
    Ok(out)
}

/// A space, the isolation boundary.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Space {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub is_default: bool,
    pub is_private: bool,
    pub task_queue_stopped: bool,
    pub space_managers_teams: Vec<String>,
    pub space_managers_team_members: Vec<String>,
    pub icon: Option<Value>,
    pub extension_settings: Vec<Value>,
    #[serde(with = "crate::dates::option")]
    pub last_modified_on: Option<DateTime<Utc>>,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A group of projects.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ProjectGroup {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub environment_ids: Vec<String>,
    pub retention_policy_id: Option<String>,
    pub space_id: String,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A retention setting: keep N days or items, or forever.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct RetentionPeriod {
    pub unit: String,
    pub quantity_to_keep: i64,
    pub should_keep_forever: bool,
}

impl Default for RetentionPeriod {
    /// Octopus's default is to keep everything.
    fn default() -> Self {
        RetentionPeriod {
            unit: "Days".into(),
            quantity_to_keep: 0,
            should_keep_forever: true,
        }
    }
}

/// One phase of a lifecycle.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Phase {
    pub id: String,
    pub name: String,
    pub automatic_deployment_targets: Vec<String>,
    pub optional_deployment_targets: Vec<String>,
    pub minimum_environments_before_promotion: i64,
    pub is_optional_phase: bool,
    pub is_priority_phase: bool,
    pub release_retention_policy: Option<RetentionPeriod>,
    pub tentacle_retention_policy: Option<RetentionPeriod>,
}

/// The order in which releases are promoted through environments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Lifecycle {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub space_id: String,
    pub phases: Vec<Phase>,
    pub release_retention_policy: RetentionPeriod,
    pub tentacle_retention_policy: RetentionPeriod,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// An environment (Dev, Test, Production).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Environment {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub sort_order: i64,
    pub use_guided_failure: bool,
    pub allow_dynamic_infrastructure: bool,
    pub extension_settings: Vec<Value>,
    pub environment_tags: Vec<String>,
    pub space_id: String,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A project: a deployment process, variables, channels and releases.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Project {
    pub id: String,
    pub space_id: String,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub is_disabled: bool,
    pub project_group_id: String,
    pub lifecycle_id: String,
    pub variable_set_id: String,
    pub deployment_process_id: String,
    pub cloned_from_project_id: Option<String>,
    pub discrete_channel_release: bool,
    pub included_library_variable_set_ids: Vec<String>,
    pub default_to_skip_if_already_installed: bool,
    pub tenanted_deployment_mode: String,
    pub default_guided_failure_mode: String,
    pub versioning_strategy: Value,
    pub release_creation_strategy: Value,
    /// Variable templates: values each tenant gives per environment.
    pub templates: Vec<VariableTemplate>,
    pub auto_deploy_release_overrides: Vec<Value>,
    pub release_notes_template: Option<String>,
    pub deployment_changes_template: Option<String>,
    pub force_package_download: bool,
    pub icon: Option<Value>,
    pub allow_ignore_channel_rules: bool,
    pub extension_settings: Vec<Value>,
    pub auto_create_release: bool,
    pub is_version_controlled: bool,
    pub persistence_settings: Value,
    pub project_connectivity_policy: Value,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A channel of a project.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub project_id: String,
    pub lifecycle_id: Option<String>,
    pub is_default: bool,
    pub rules: Vec<Value>,
    pub tenant_tags: Vec<String>,
    pub space_id: String,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A set of tenant tags (`TagSets-N`), such as `Tier` with `Gold` and `Silver`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TagSet {
    pub id: String,
    pub space_id: String,
    pub name: String,
    pub description: String,
    pub sort_order: i64,
    pub tags: Vec<Tag>,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// One tag of a tag set: `TagSets-1-2`, canonically `Tier/Gold`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Tag {
    pub id: String,
    pub name: String,
    pub color: String,
    pub description: String,
    pub sort_order: i64,
    pub canonical_tag_name: String,
}

/// A tenant (`Tenants-N`): a customer or location deployed to separately, connected to
/// projects in some of their environments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Tenant {
    pub id: String,
    pub space_id: String,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub cloned_from_tenant_id: Option<String>,
    pub tenant_tags: Vec<String>,
    pub project_environments: BTreeMap<String, Vec<String>>,
    pub is_disabled: bool,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A variable template (`ActionTemplateParameter`): a variable whose value each tenant gives,
/// on a project (per environment) or a library variable set (once per tenant).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct VariableTemplate {
    pub id: String,
    pub name: String,
    pub label: String,
    pub help_text: String,
    /// The value a tenant that gives none gets (not for sensitive templates).
    pub default_value: Option<Value>,
    /// `Octopus.ControlType`: `SingleLineText`, `MultiLineText`, `Checkbox`, `Select`,
    /// `Sensitive`, ...
    #[serde(deserialize_with = "string_map")]
    pub display_settings: BTreeMap<String, String>,
}

impl VariableTemplate {
    /// Whether tenants' values for it are secrets.
    pub fn is_sensitive(&self) -> bool {
        self.display_settings
            .get("Octopus.ControlType")
            .is_some_and(|t| t.eq_ignore_ascii_case("Sensitive"))
    }

    /// The default value as text (a JSON string or scalar), if any.
    pub fn default_text(&self) -> Option<String> {
        match self.default_value.as_ref()? {
            Value::Null => None,
            Value::String(text) => Some(text.clone()),
            Value::Bool(b) => Some(if *b { "True".into() } else { "False".into() }),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// A tenant's values for variable templates, as stored (`tenantvariables-Tenants-N`); values of
/// sensitive templates are sealed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct StoredTenantVariables {
    pub tenant_id: String,
    /// Project id, then environment id, then template id, to the value.
    pub project_variables: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    /// Library variable set id, then template id, to the value that applies in every
    /// environment.
    pub library_variables: BTreeMap<String, BTreeMap<String, String>>,
    /// Values of library set templates for some environments only (set through the
    /// `commonvariables` route); in those environments they win over `library_variables`.
    pub scoped_library_variables: Vec<ScopedTenantValue>,
}

impl StoredTenantVariables {
    /// The value the tenant gives the library set template `template_id` in `environment_id`:
    /// one scoped to the environment, else the unscoped one.
    pub fn library_value(
        &self,
        library_id: &str,
        template_id: &str,
        environment_id: &str,
    ) -> Option<&String> {
        self.scoped_library_variables
            .iter()
            .find(|v| {
                v.library_variable_set_id == library_id
                    && v.template_id == template_id
                    && v.environment_ids.iter().any(|e| e == environment_id)
            })
            .map(|v| &v.value)
            .or_else(|| {
                self.library_variables
                    .get(library_id)
                    .and_then(|values| values.get(template_id))
            })
    }
}

/// A tenant's value for a library set template in some environments.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ScopedTenantValue {
    pub library_variable_set_id: String,
    pub template_id: String,
    /// Never empty: an unscoped value lives in `library_variables`.
    pub environment_ids: Vec<String>,
    /// Sealed for a sensitive template.
    pub value: String,
}

/// A package an action uses.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PackageReference {
    pub id: String,
    pub name: Option<String>,
    pub package_id: String,
    pub feed_id: String,
    pub acquisition_location: String,
    #[serde(deserialize_with = "string_map")]
    pub properties: BTreeMap<String, String>,
}

/// One action of a step.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Action {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub action_type: String,
    pub notes: Option<String>,
    pub is_disabled: bool,
    pub is_required: bool,
    pub can_be_used_for_project_versioning: bool,
    pub worker_pool_id: Option<String>,
    pub worker_pool_variable: Option<String>,
    pub container: Value,
    pub environments: Vec<String>,
    pub excluded_environments: Vec<String>,
    pub channels: Vec<String>,
    pub tenant_tags: Vec<String>,
    pub packages: Vec<PackageReference>,
    pub git_dependencies: Vec<Value>,
    pub condition: Option<String>,
    #[serde(deserialize_with = "string_map")]
    pub properties: BTreeMap<String, String>,
}

/// One step of a deployment process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Step {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub package_requirement: String,
    #[serde(deserialize_with = "string_map")]
    pub properties: BTreeMap<String, String>,
    pub condition: String,
    pub start_trigger: String,
    pub actions: Vec<Action>,
}

/// A project's deployment process (or a frozen snapshot of one).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeploymentProcess {
    pub id: String,
    pub space_id: String,
    pub project_id: String,
    pub version: i64,
    pub last_snapshot_id: Option<String>,
    pub steps: Vec<Step>,
    #[serde(skip_deserializing)]
    pub links: Links,
}

impl DeploymentProcess {
    /// The package reference named `reference_name` ("" for the primary package) of the action
    /// named `action_name`: what a release's `SelectedPackages` entry points at.
    pub fn package_reference(
        &self,
        action_name: &str,
        reference_name: &str,
    ) -> Option<&PackageReference> {
        self.steps
            .iter()
            .flat_map(|step| &step.actions)
            .filter(|action| action.name == action_name)
            .flat_map(|action| &action.packages)
            .find(|reference| reference.reference_name() == reference_name)
    }
}

impl PackageReference {
    /// The reference's name as releases record it: empty for the primary package.
    pub fn reference_name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// One variable of a variable set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Variable {
    pub id: String,
    pub name: String,
    pub value: Option<String>,
    pub description: Option<String>,
    #[serde(rename = "Type")]
    pub kind: String,
    pub is_sensitive: bool,
    pub is_editable: bool,
    pub prompt: Option<Value>,
    pub scope: BTreeMap<String, Vec<String>>,
}

/// An `{Id, Name}` pair used by `ScopeValues`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReferenceItem {
    pub id: String,
    pub name: String,
}

/// The values a variable may be scoped to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ScopeValues {
    pub environments: Vec<ReferenceItem>,
    pub machines: Vec<ReferenceItem>,
    pub actions: Vec<ReferenceItem>,
    pub roles: Vec<ReferenceItem>,
    pub channels: Vec<ReferenceItem>,
    pub tenant_tags: Vec<ReferenceItem>,
    pub processes: Vec<ReferenceItem>,
}

/// A project's (or library's) variables.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct VariableSet {
    pub id: String,
    pub owner_id: String,
    pub space_id: String,
    pub version: i64,
    pub variables: Vec<Variable>,
    pub scope_values: ScopeValues,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A library variable set: variables projects include by id (`IncludedLibraryVariableSetIds`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct LibraryVariableSet {
    pub id: String,
    pub space_id: String,
    pub name: String,
    pub description: Option<String>,
    /// `variableset-LibraryVariableSets-N`, set by the server.
    pub variable_set_id: String,
    /// `Variables` (script modules are not built).
    pub content_type: String,
    /// Variable templates: values each tenant gives ("common variables").
    pub templates: Vec<VariableTemplate>,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A file a task's script published (`new_octopusartifact`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Artifact {
    pub id: String,
    pub space_id: String,
    pub filename: String,
    /// The worker that collected it.
    pub source: Option<String>,
    pub server_task_id: Option<String>,
    pub created: Option<DateTime<Utc>>,
    pub log_correlation_id: Option<String>,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A package version chosen for a release.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct SelectedPackage {
    pub action_name: String,
    pub step_name: Option<String>,
    pub package_reference_name: String,
    pub version: String,
    /// The package id, when the reference names its package with a variable (`#{PackageId}`):
    /// the id it evaluated to when the release was created. (Cuttle's addition.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_id: Option<String>,
}

/// A release: an immutable snapshot of a project's process and variables.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Release {
    pub id: String,
    pub space_id: String,
    pub project_id: String,
    pub channel_id: String,
    pub version: String,
    pub release_notes: Option<String>,
    #[serde(with = "crate::dates::option")]
    pub assembled: Option<DateTime<Utc>>,
    pub ignore_channel_rules: bool,
    pub project_deployment_process_snapshot_id: String,
    pub project_variable_set_snapshot_id: String,
    pub library_variable_set_snapshot_ids: Vec<String>,
    pub selected_packages: Vec<SelectedPackage>,
    pub selected_git_resources: Vec<Value>,
    pub build_information: Vec<Value>,
    pub custom_fields: BTreeMap<String, String>,
    pub version_control_reference: Option<Value>,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A deployment of a release to an environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Deployment {
    pub id: String,
    pub space_id: String,
    pub project_id: String,
    pub release_id: String,
    pub channel_id: String,
    pub environment_id: String,
    pub tenant_id: Option<String>,
    pub deployment_process_id: String,
    pub task_id: String,
    pub name: String,
    #[serde(with = "crate::dates::option")]
    pub created: Option<DateTime<Utc>>,
    pub deployed_by: String,
    pub deployed_by_id: String,
    pub deployed_to_machine_ids: Vec<String>,
    pub comments: Option<String>,
    pub form_values: BTreeMap<String, Value>,
    pub force_package_download: bool,
    pub force_package_redeployment: bool,
    pub priority: String,
    pub skip_actions: Vec<String>,
    pub specific_machine_ids: Vec<String>,
    pub excluded_machine_ids: Vec<String>,
    pub manifest_variable_set_id: String,
    #[serde(with = "crate::dates::option")]
    pub queue_time: Option<DateTime<Utc>>,
    #[serde(with = "crate::dates::option")]
    pub queue_time_expiry: Option<DateTime<Utc>>,
    pub use_guided_failure: bool,
    pub failure_encountered: bool,
    pub changes: Vec<Value>,
    pub changes_markdown: String,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// How Cuttle reaches a machine (`Endpoint`): a listening agent (`TentaclePassive`, the worker
/// dials `Uri`) or a polling agent (`TentacleActive`, the agent dials in; `Uri` is
/// `poll://<subscription id>/`). Other Octopus styles are refused for now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Endpoint {
    pub id: Option<String>,
    pub communication_style: String,
    pub uri: String,
    pub thumbprint: String,
    pub proxy_id: Option<String>,
    pub tentacle_version_details: Option<Value>,
}

/// A deployment target (`Machines-N`) or a worker (`Workers-N`): the same resource, where a
/// worker has pools instead of environments and roles.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Machine {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub space_id: String,
    pub environment_ids: Vec<String>,
    pub roles: Vec<String>,
    pub worker_pool_ids: Vec<String>,
    pub tenanted_deployment_participation: String,
    pub tenant_ids: Vec<String>,
    pub tenant_tags: Vec<String>,
    pub thumbprint: String,
    pub uri: String,
    pub is_disabled: bool,
    pub machine_policy_id: String,
    pub health_status: String,
    pub status: String,
    pub status_summary: String,
    pub has_latest_calamari: bool,
    pub is_in_process: bool,
    pub operating_system: String,
    pub shell_name: String,
    pub shell_version: String,
    pub architecture: String,
    pub skip_initial_health_check: bool,
    pub endpoint: Endpoint,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A pool of workers (`WorkerPools-N`); every space has a default one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct WorkerPool {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub is_default: bool,
    pub sort_order: i64,
    pub worker_pool_type: String,
    pub can_add_workers: bool,
    pub space_id: String,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// How machines are checked (`MachinePolicies-N`); every space has a default one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MachinePolicy {
    pub id: String,
    pub name: String,
    pub description: String,
    pub is_default: bool,
    pub space_id: String,
    /// `hh:mm:ss`, as Octopus serialises a TimeSpan.
    pub machine_health_check_policy: MachineHealthCheckPolicy,
    pub connection_connect_timeout: String,
    pub polling_request_queue_timeout: String,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// The health-check part of a machine policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MachineHealthCheckPolicy {
    /// `hh:mm:ss` between checks.
    pub health_check_interval: String,
    /// `OnlyConnectivity` or `FullHealthCheck`.
    pub health_check_type: String,
}

/// A package feed; only the built-in one exists for now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Feed {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub feed_type: String,
    pub space_id: String,
    pub delete_unreleased_packages_after_days: i64,
    /// Cuttle's count rule for built-in feed retention: keep the newest N versions of each
    /// package (0 = keep all).
    pub keep_latest_versions_per_package: i64,
    pub is_built_in_repo_sync_enabled: bool,
    pub package_acquisition_location_options: Vec<String>,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A user or service account.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct User {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub email_address: Option<String>,
    pub is_active: bool,
    pub is_service: bool,
    pub is_requestor: bool,
    pub can_password_be_edited: bool,
    pub identities: Vec<Value>,
    /// Write only: a new password.
    #[serde(skip_serializing)]
    pub password: Option<String>,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// Serialised defaults of every input shape, nested collections filled with one element, so
/// [`crate::normalize`] learns every canonical field name without a hand-kept list.
pub fn field_samples() -> Vec<Value> {
    let step = Step {
        actions: vec![Action {
            packages: vec![PackageReference::default()],
            ..Action::default()
        }],
        ..Step::default()
    };
    let values = [
        serde_json::to_value(Space::default()),
        serde_json::to_value(ProjectGroup::default()),
        serde_json::to_value(Lifecycle {
            phases: vec![Phase::default()],
            ..Lifecycle::default()
        }),
        serde_json::to_value(Environment::default()),
        serde_json::to_value(Project::default()),
        serde_json::to_value(Channel::default()),
        serde_json::to_value(DeploymentProcess {
            steps: vec![step],
            ..DeploymentProcess::default()
        }),
        serde_json::to_value(VariableSet {
            variables: vec![Variable::default()],
            scope_values: ScopeValues {
                environments: vec![ReferenceItem::default()],
                ..ScopeValues::default()
            },
            ..VariableSet::default()
        }),
        serde_json::to_value(Release {
            selected_packages: vec![SelectedPackage::default()],
            ..Release::default()
        }),
        serde_json::to_value(Deployment::default()),
        serde_json::to_value(Feed::default()),
        serde_json::to_value(User::default()),
        serde_json::to_value(crate::security::Team {
            external_security_groups: vec![crate::security::ExternalSecurityGroup::default()],
            ..crate::security::Team::default()
        }),
        serde_json::to_value(crate::security::UserRole::default()),
        serde_json::to_value(crate::security::ScopedUserRole::default()),
        serde_json::to_value(crate::security::ApiKey {
            api_key: Some(String::new()),
            ..crate::security::ApiKey::default()
        }),
        serde_json::to_value(crate::security::UserCreate::default()),
        serde_json::to_value(crate::commands::CreateReleaseCommand::default()),
        serde_json::to_value(crate::commands::CreateDeploymentCommand::default()),
        serde_json::to_value(crate::commands::CreateDeploymentClassic::default()),
        serde_json::to_value(crate::commands::CreateReleaseClassic::default()),
    ];
    values.into_iter().filter_map(Result::ok).collect()
}
