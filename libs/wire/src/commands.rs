//! Bodies of the "executions" commands and classic create calls.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `POST /api/{space}/releases/create/v1`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateReleaseCommand {
    pub space_id: Option<String>,
    pub space_id_or_name: Option<String>,
    pub space_name: Option<String>,
    pub project_name: String,
    pub package_version: Option<String>,
    pub git_commit: Option<String>,
    pub git_ref: Option<String>,
    pub release_version: Option<String>,
    pub channel_name: Option<String>,
    pub packages: Vec<String>,
    pub git_resources: Vec<String>,
    pub release_notes: Option<String>,
    pub ignore_if_already_exists: bool,
    pub ignore_channel_rules: bool,
    pub package_prerelease: Option<String>,
    pub custom_fields: BTreeMap<String, String>,
}

/// `POST /api/{space}/deployments/create/untenanted/v1`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateDeploymentCommand {
    pub space_id: Option<String>,
    pub space_id_or_name: Option<String>,
    pub space_name: Option<String>,
    pub project_name: String,
    pub release_version: String,
    pub environment_names: Vec<String>,
    pub force_package_redeployment: bool,
    pub update_variable_snapshot: bool,
    pub force_package_download: bool,
    pub specific_machine_names: Vec<String>,
    pub excluded_machine_names: Vec<String>,
    pub skip_step_names: Vec<String>,
    pub use_guided_failure: Option<bool>,
    pub run_at: Option<String>,
    pub no_run_after: Option<String>,
    pub variables: BTreeMap<String, Value>,
    pub priority: Option<String>,
}

/// `POST /api/{space}/deployments/create/tenanted/v1`: one environment, many tenants, chosen by
/// name or id (`Tenants`) or by tag (`TenantTags`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateTenantedDeploymentCommand {
    pub space_id: Option<String>,
    pub space_id_or_name: Option<String>,
    pub space_name: Option<String>,
    pub project_name: String,
    pub release_version: String,
    pub environment_name: String,
    pub tenants: Vec<String>,
    pub tenant_tags: Vec<String>,
    pub force_package_redeployment: bool,
    pub update_variable_snapshot: bool,
    pub force_package_download: bool,
    pub specific_machine_names: Vec<String>,
    pub excluded_machine_names: Vec<String>,
    pub skip_step_names: Vec<String>,
    pub use_guided_failure: Option<bool>,
    pub run_at: Option<String>,
    pub no_run_after: Option<String>,
    pub variables: BTreeMap<String, Value>,
    pub priority: Option<String>,
}

/// `POST /api/{space}/deployments`, the classic create.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateDeploymentClassic {
    pub release_id: String,
    pub environment_id: String,
    pub tenant_id: Option<String>,
    pub comments: Option<String>,
    pub force_package_download: bool,
    pub force_package_redeployment: bool,
    pub use_guided_failure: bool,
    pub specific_machine_ids: Vec<String>,
    pub excluded_machine_ids: Vec<String>,
    pub skip_actions: Vec<String>,
    pub form_values: BTreeMap<String, Value>,
}

/// `POST /api/{space}/releases`, the classic create.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateReleaseClassic {
    pub project_id: String,
    pub channel_id: Option<String>,
    pub version: Option<String>,
    pub release_notes: Option<String>,
    pub selected_packages: Vec<crate::resources::SelectedPackage>,
    pub ignore_channel_rules: bool,
}

/// Answer of `releases/create/v1`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateReleaseResponse {
    pub release_id: String,
    pub release_version: String,
}

/// One deployment and its task, in the `deployments/create/*/v1` answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeploymentServerTask {
    pub deployment_id: String,
    pub server_task_id: String,
}

/// Answer of `deployments/create/untenanted/v1`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateDeploymentResponse {
    pub deployment_server_tasks: Vec<DeploymentServerTask>,
}
