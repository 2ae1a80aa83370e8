//! Teams, user roles, scoped user roles, API keys and permission sets (spec D.12).

use crate::Links;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A team: users (and SSO groups) that scoped user roles are given to. `SpaceId` null is a
/// system team, which may hold roles in any space of its organisation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub description: String,
    pub member_user_ids: Vec<String>,
    pub external_security_groups: Vec<ExternalSecurityGroup>,
    pub space_id: Option<String>,
    pub can_be_deleted: bool,
    pub can_be_renamed: bool,
    pub can_change_members: bool,
    pub can_change_roles: bool,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A group of an external identity provider (the SSO groups claim) whose members join a team.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExternalSecurityGroup {
    pub id: String,
    pub display_name: String,
    pub display_id_and_name: bool,
}

/// A user role: a named set of space and system permissions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct UserRole {
    pub id: String,
    pub name: String,
    pub description: String,
    pub supported_restrictions: Vec<String>,
    pub space_permission_descriptions: Vec<String>,
    pub system_permission_descriptions: Vec<String>,
    pub granted_space_permissions: Vec<String>,
    pub granted_system_permissions: Vec<String>,
    pub can_be_deleted: bool,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// A team's user role, in one space (or system-wide when `SpaceId` is null), restricted to the
/// listed environments, projects, project groups and tenants (empty = unrestricted).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ScopedUserRole {
    pub id: String,
    pub team_id: String,
    pub user_role_id: String,
    pub space_id: Option<String>,
    pub environment_ids: Vec<String>,
    pub project_ids: Vec<String>,
    pub project_group_ids: Vec<String>,
    pub tenant_ids: Vec<String>,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// An API key as listed: never the key itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ApiKey {
    pub id: String,
    pub purpose: String,
    pub user_id: String,
    /// Only in the answer to the create request, the one time the key is shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    pub created: Option<DateTime<Utc>>,
    pub expires: Option<DateTime<Utc>>,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// The body of `POST /api/users`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct UserCreate {
    pub username: String,
    pub display_name: String,
    pub email_address: Option<String>,
    pub is_active: Option<bool>,
    pub is_service: bool,
    pub password: Option<String>,
}

/// One place a permission is held: a space and the restrictions of the role that grants it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PermissionScope {
    pub space_id: Option<String>,
    pub restricted_to_environment_ids: Vec<String>,
    pub restricted_to_project_ids: Vec<String>,
    pub restricted_to_project_group_ids: Vec<String>,
    pub restricted_to_tenant_ids: Vec<String>,
}

/// A team as a permission set names it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct TeamReference {
    pub id: String,
    pub name: String,
    pub space_id: Option<String>,
}

/// `GET /api/users/{id}/permissions`: what a user holds and through which teams.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct UserPermissionSet {
    pub id: String,
    pub space_permissions: BTreeMap<String, Vec<PermissionScope>>,
    pub system_permissions: Vec<String>,
    pub teams: Vec<TeamReference>,
    pub is_permissions_complete: bool,
    pub is_teams_complete: bool,
    #[serde(skip_deserializing)]
    pub links: Links,
}

/// One entry of `GET /api/permissions/all`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PermissionDescription {
    pub description: String,
    pub supported_restrictions: Vec<String>,
    pub can_apply_at_system_level: bool,
    pub can_apply_at_space_level: bool,
}
