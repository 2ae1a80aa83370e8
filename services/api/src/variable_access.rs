//! Who may see and change which variables of a set, variable by variable, as in Octopus.
//!
//! A project's variables need VariableView (to read) and VariableEdit (to change) on the project;
//! a library variable set's need LibraryVariableSetView and LibraryVariableSetEdit. A team whose
//! permission is restricted to some environments opens the set, but:
//! - it sees the variables scoped to at least one of its environments, and the unscoped ones
//!   (they apply in its environments too), but not those of other environments only;
//! - it changes, adds or removes only variables all of whose environments are its own, before
//!   and after the change; an unscoped variable applies everywhere, so changing one needs the
//!   permission in every environment (`IsEditable` says which it may change);
//! - the variables it cannot see are kept as stored when it saves.
//!
//! Reading a set the principal may read nothing of is a 404; changing one it may change nothing
//! of, a 403 naming the permission.
//!
//! A tenant's values for variable templates follow the same permissions, per project and
//! environment ([`TenantValueAccess`]).

use crate::error::{ApiError, ApiResult};
use crate::extract::{Principal, SpaceScope};
use cuttle_authz::{Permission, Target};
use cuttle_store::ConnectionTrait;
use cuttle_store::documents::{self, Document};
use cuttle_wire::resources::{Project, Tenant, Variable, VariableSet};
use std::collections::BTreeSet;

/// The variables of one set as one principal may use them.
pub struct VariableAccess<'p> {
    principal: &'p Principal,
    view: Permission,
    edit: Permission,
    space: String,
    /// The owning project and its group; `None` for a library variable set.
    project: Option<(String, String)>,
}

impl<'p> VariableAccess<'p> {
    /// The access `principal` has to the set (or snapshot) `doc`; 404 when it may read none of
    /// it, 403 (naming the permission) when `edit` is asked and it may change none of it.
    pub async fn check(
        conn: &impl ConnectionTrait,
        principal: &'p Principal,
        scope: &SpaceScope,
        doc: &Document,
        edit: bool,
    ) -> ApiResult<VariableAccess<'p>> {
        let set: VariableSet = documents::decode(doc)?;
        let hidden = || ApiError::not_found(format!("variable set '{}'", doc.id));
        if set.owner_id.starts_with("LibraryVariableSets-") {
            let access = VariableAccess {
                principal,
                view: Permission::LibraryVariableSetView,
                edit: Permission::LibraryVariableSetEdit,
                space: scope.id.to_string(),
                project: None,
            };
            return access.open(edit, hidden);
        }
        match crate::projects::find_project(conn, &scope.id, &set.owner_id).await? {
            Some((_, project)) => Self::for_project(principal, scope, &project, edit, hidden),
            None => Err(hidden()),
        }
    }

    /// The access `principal` has to the variables of `project`, already loaded; `hidden` is
    /// the 404 when it may read none of them.
    pub fn for_project(
        principal: &'p Principal,
        scope: &SpaceScope,
        project: &Project,
        edit: bool,
        hidden: impl FnOnce() -> ApiError,
    ) -> ApiResult<VariableAccess<'p>> {
        VariableAccess {
            principal,
            view: Permission::VariableView,
            edit: Permission::VariableEdit,
            space: scope.id.to_string(),
            project: Some((project.id.clone(), project.project_group_id.clone())),
        }
        .open(edit, hidden)
    }

    /// This access if the principal may read (and, for `edit`, change) some of the variables.
    /// A write without the permission is a 403, as for a project's other parts.
    fn open(self, edit: bool, hidden: impl FnOnce() -> ApiError) -> ApiResult<Self> {
        let grants = &self.principal.grants;
        if edit && !grants.allows_in_some_environment(self.edit, &self.target(None)) {
            return Err(ApiError::forbidden(self.edit));
        }
        if !grants.allows_in_some_environment(self.view, &self.target(None)) {
            return Err(if edit {
                ApiError::forbidden(self.view)
            } else {
                hidden()
            });
        }
        Ok(self)
    }

    /// 403 unless the principal may read variables in `environment` (`None`: in every one).
    pub fn require_view_in(&self, environment: Option<&str>) -> ApiResult<()> {
        crate::authz::require(self.principal, self.view, &self.target(environment))
    }

    fn target<'a>(&'a self, environment: Option<&'a str>) -> Target<'a> {
        Target {
            space: Some(&self.space),
            project: self.project.as_ref().map(|(id, _)| id.as_str()),
            project_group: self.project.as_ref().map(|(_, group)| group.as_str()),
            environment,
            ..Target::default()
        }
    }

    /// Whether the permission holds where `variable` applies: in any (`every`: all) of its
    /// environments, or everywhere when it names none.
    fn holds(&self, permission: Permission, variable: &Variable, every: bool) -> bool {
        let allowed = |environment| {
            self.principal
                .grants
                .allows(permission, &self.target(environment))
        };
        let environments = environments(variable);
        if environments.is_empty() && every {
            allowed(None)
        } else if environments.is_empty() {
            self.principal
                .grants
                .allows_in_some_environment(permission, &self.target(None))
        } else if every {
            environments.iter().all(|e| allowed(Some(e.as_str())))
        } else {
            environments.iter().any(|e| allowed(Some(e.as_str())))
        }
    }

    pub fn can_see(&self, variable: &Variable) -> bool {
        self.holds(self.view, variable, false)
    }

    pub fn can_change(&self, variable: &Variable) -> bool {
        self.can_see(variable) && self.holds(self.edit, variable, true)
    }

    /// The set as the principal sees it: only the variables it may see, each marked with
    /// whether it may change it.
    pub fn present(&self, mut set: VariableSet) -> VariableSet {
        set.variables.retain(|v| self.can_see(v));
        for variable in &mut set.variables {
            variable.is_editable = self.can_change(variable);
        }
        set
    }

    /// Checks a save of `incoming` over `current`: every variable added, changed or removed must
    /// be one the principal may change (as it was and as it becomes). Returns the stored
    /// variables it cannot see, which the save keeps.
    pub fn check_save(
        &self,
        current: &VariableSet,
        incoming: &VariableSet,
    ) -> ApiResult<Vec<Variable>> {
        let refuse = |variable: &Variable, index: Option<usize>| {
            let place = index
                .map(|i| format!(" (Variables[{i}])"))
                .unwrap_or_default();
            ApiError::with_status(
                axum::http::StatusCode::FORBIDDEN,
                format!(
                    "{} The variable '{}'{place} applies in environments where you may not change variables.",
                    cuttle_authz::missing_permission_message(self.edit),
                    variable.name
                ),
            )
        };
        for (index, variable) in incoming.variables.iter().enumerate() {
            let before = current
                .variables
                .iter()
                .find(|v| !variable.id.is_empty() && v.id == variable.id);
            match before {
                Some(before) if unchanged(before, variable) => {}
                Some(before) if !self.can_change(before) => {
                    return Err(refuse(before, Some(index)));
                }
                _ if !self.can_change(variable) => return Err(refuse(variable, Some(index))),
                _ => {}
            }
        }
        let mut kept = Vec::new();
        for before in &current.variables {
            if incoming.variables.iter().any(|v| v.id == before.id) {
                continue;
            }
            if !self.can_see(before) {
                kept.push(before.clone());
            } else if !self.can_change(before) {
                return Err(refuse(before, None));
            }
        }
        Ok(kept)
    }
}

/// Who may see and change which of a tenant's values for variable templates (Octopus's rules,
/// after its permission fixes for tenant variables). The routes check TenantView or TenantEdit
/// on the tenant first; then:
/// - the values for a project's templates in one environment need VariableView (to see) and
///   VariableEdit (to change) on that project, environment and tenant;
/// - the values for library set templates ("common variables") apply in every project and
///   environment the tenant is connected to: seeing them needs VariableView in one of those
///   connections, changing them VariableEdit in all of them.
pub struct TenantValueAccess<'p> {
    principal: &'p Principal,
    space: String,
    tenant: String,
    /// (project, its group, environment) for each connection of the tenant.
    connections: Vec<(String, String, String)>,
}

impl<'p> TenantValueAccess<'p> {
    /// The access `principal` has to the values of `tenant`, whose connected projects are
    /// `projects`.
    pub fn new(
        principal: &'p Principal,
        scope: &SpaceScope,
        tenant: &Tenant,
        projects: &[Project],
    ) -> TenantValueAccess<'p> {
        let connections = projects
            .iter()
            .flat_map(|project| {
                tenant
                    .project_environments
                    .get(&project.id)
                    .into_iter()
                    .flatten()
                    .map(|environment| {
                        (
                            project.id.clone(),
                            project.project_group_id.clone(),
                            environment.clone(),
                        )
                    })
            })
            .collect();
        TenantValueAccess {
            principal,
            space: scope.id.to_string(),
            tenant: tenant.id.clone(),
            connections,
        }
    }

    fn allows(&self, permission: Permission, connection: &(String, String, String)) -> bool {
        let (project, group, environment) = connection;
        self.principal.grants.allows(
            permission,
            &Target {
                space: Some(&self.space),
                project: Some(project),
                project_group: Some(group),
                environment: Some(environment),
                tenant: Some(&self.tenant),
            },
        )
    }

    fn connection(&self, project: &str, environment: &str) -> Option<&(String, String, String)> {
        self.connections
            .iter()
            .find(|(p, _, e)| p == project && e == environment)
    }

    /// The environments the tenant is connected to `project` in.
    pub fn environments_of<'a>(&'a self, project: &'a str) -> impl Iterator<Item = &'a str> {
        self.connections
            .iter()
            .filter(move |(p, _, _)| p == project)
            .map(|(_, _, environment)| environment.as_str())
    }

    /// Whether the principal may see the project's values for `environment`.
    pub fn can_see(&self, project: &str, environment: &str) -> bool {
        self.connection(project, environment)
            .is_some_and(|c| self.allows(Permission::VariableView, c))
    }

    /// Whether the principal may change the project's values for `environment`.
    pub fn can_change(&self, project: &str, environment: &str) -> bool {
        self.can_see(project, environment)
            && self
                .connection(project, environment)
                .is_some_and(|c| self.allows(Permission::VariableEdit, c))
    }

    /// Whether the principal may see the tenant's values for library set templates that apply
    /// in every environment.
    pub fn can_see_common(&self) -> bool {
        self.can_see_common_in(&[])
    }

    /// Whether the principal may change the tenant's values for library set templates that
    /// apply in every environment.
    pub fn can_change_common(&self) -> bool {
        self.can_change_common_in(&[])
    }

    /// The tenant's connections a library set value scoped to `environments` applies in (none
    /// given: every connection).
    fn common_connections<'a>(
        &'a self,
        environments: &'a [String],
    ) -> impl Iterator<Item = &'a (String, String, String)> {
        self.connections
            .iter()
            .filter(move |(_, _, e)| environments.is_empty() || environments.contains(e))
    }

    /// Whether the principal may see a library set value scoped to `environments` (none: a
    /// value for every environment): VariableView in one connection it applies in.
    pub fn can_see_common_in(&self, environments: &[String]) -> bool {
        self.common_connections(environments)
            .any(|c| self.allows(Permission::VariableView, c))
    }

    /// Whether the principal may change a library set value scoped to `environments` (none: a
    /// value for every environment): VariableEdit in every connection it applies in.
    pub fn can_change_common_in(&self, environments: &[String]) -> bool {
        self.can_see_common_in(environments)
            && self
                .common_connections(environments)
                .all(|c| self.allows(Permission::VariableEdit, c))
    }

    /// The 403 for a change to values the principal may not change, saying which (`what`).
    pub fn refuse(&self, what: &str) -> ApiError {
        ApiError::with_status(
            axum::http::StatusCode::FORBIDDEN,
            format!(
                "{} You may not change {what}.",
                cuttle_authz::missing_permission_message(Permission::VariableEdit)
            ),
        )
    }
}

/// The environments a variable is scoped to.
fn environments(variable: &Variable) -> &[String] {
    variable
        .scope
        .iter()
        .find(|(kind, _)| kind.eq_ignore_ascii_case("Environment"))
        .map_or(&[], |(_, values)| values.as_slice())
}

/// Whether a variable came back as it was stored (a sensitive one without a new value keeps
/// its value).
fn unchanged(before: &Variable, after: &Variable) -> bool {
    let scope = |v: &Variable| -> BTreeSet<(String, BTreeSet<String>)> {
        v.scope
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(kind, values)| (kind.to_lowercase(), values.iter().cloned().collect()))
            .collect()
    };
    let same_value = if before.is_sensitive {
        after.is_sensitive && after.value.is_none()
    } else {
        before.value == after.value
    };
    same_value
        && before.name == after.name.trim()
        && before.description == after.description
        && before.prompt == after.prompt
        && (after.kind.is_empty() || before.kind == after.kind)
        && scope(before) == scope(after)
}
