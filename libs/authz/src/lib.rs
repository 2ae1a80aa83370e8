//! Octopus's permission model.
//!
//! A *permission* (`DeploymentCreate`, `ProjectView`, ...) is either system level (users, spaces,
//! server configuration), space level (projects, environments, ...), or both (teams, tasks,
//! events). A *user role* is a named set of permissions; Octopus ships built-in ones
//! ([`built_in_roles`]). A team holds *scoped user roles*: a role granted in one space (or, for a
//! role with only system permissions, at the system level), optionally restricted to lists of
//! environments, projects, project groups and tenants. Each scoped role becomes one [`Grant`].
//!
//! A request is allowed ([`Grants::allows`]) when some grant in the request's space holds the
//! permission and every restriction that grant sets, *and the permission supports*, is met by the
//! [`Target`]. Restrictions a permission does not support are ignored: an environment-restricted
//! grant still allows `ProjectView`, which cannot be restricted by environment. System-level
//! permissions are never restricted, and a role's system permissions count wherever the role was
//! granted (Octopus applies them "implicitly at the system level").

mod catalog;

use std::collections::{BTreeMap, BTreeSet};

pub use catalog::{
    BuiltInRole, Permission, Restriction, UnknownPermission, built_in_role, built_in_roles,
};

/// What one scoped user role grants: a set of permissions, in one space (or, for system
/// permissions, `space: None`), restricted by the listed ids (an empty list = unrestricted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub permissions: BTreeSet<Permission>,
    /// The space the grant applies in; `None` applies in every space.
    pub space: Option<String>,
    pub environments: Vec<String>,
    pub projects: Vec<String>,
    pub project_groups: Vec<String>,
    pub tenants: Vec<String>,
}

impl Grant {
    /// An unrestricted grant of a built-in role's space and system permissions in `space`.
    pub fn for_role(role: &BuiltInRole, space: Option<String>) -> Grant {
        Grant {
            permissions: role
                .space_permissions
                .iter()
                .chain(role.system_permissions)
                .copied()
                .collect(),
            space,
            ..Grant::default()
        }
    }

    fn applies_in(&self, space: Option<&str>) -> bool {
        match (&self.space, space) {
            (None, _) => true,
            (Some(own), Some(space)) => own == space,
            (Some(_), None) => false,
        }
    }

    /// Whether this grant sets none of the restrictions `permission` supports.
    fn unrestricted_for(&self, permission: Permission) -> bool {
        let restricts = |restriction: Restriction, list: &[String]| {
            permission.supports(restriction) && !list.is_empty()
        };
        // A project restriction is met by a listed project or group, so groups restrict it too.
        let groups_restrict = restricts(Restriction::Projects, &self.project_groups)
            || restricts(Restriction::ProjectGroups, &self.project_groups);
        let restricted = restricts(Restriction::Environments, &self.environments)
            || restricts(Restriction::Projects, &self.projects)
            || groups_restrict
            || restricts(Restriction::Tenants, &self.tenants);
        !restricted
    }

    /// Whether the target meets every restriction this grant sets that `permission` supports.
    fn admits(&self, permission: Permission, target: &Target<'_>) -> bool {
        self.admits_apart_from_environment(permission, target)
            && self.admits_environment(permission, target)
    }

    fn admits_environment(&self, permission: Permission, target: &Target<'_>) -> bool {
        !(permission.supports(Restriction::Environments)
            && !self.environments.is_empty()
            && !target
                .environment
                .is_some_and(|value| self.environments.iter().any(|id| id == value)))
    }

    /// Whether the target meets this grant's restrictions other than environments.
    fn admits_apart_from_environment(&self, permission: Permission, target: &Target<'_>) -> bool {
        let listed = |list: &[String], value: Option<&str>| {
            value.is_some_and(|value| list.iter().any(|id| id == value))
        };
        if permission.supports(Restriction::Projects) {
            if (!self.projects.is_empty() || !self.project_groups.is_empty())
                && !listed(&self.projects, target.project)
                && !listed(&self.project_groups, target.project_group)
            {
                return false;
            }
        } else if permission.supports(Restriction::ProjectGroups)
            && !self.project_groups.is_empty()
            && !listed(&self.project_groups, target.project_group)
        {
            return false;
        }
        // An untenanted target passes a tenant restriction.
        if permission.supports(Restriction::Tenants)
            && !self.tenants.is_empty()
            && target.tenant.is_some()
            && !listed(&self.tenants, target.tenant)
        {
            return false;
        }
        true
    }
}

/// The thing a request acts on. `None` in a dimension = the request does not concern one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    pub space: Option<&'a str>,
    pub project: Option<&'a str>,
    /// The project group of `project`, or the group the request acts on.
    pub project_group: Option<&'a str>,
    pub environment: Option<&'a str>,
    pub tenant: Option<&'a str>,
}

/// Where a principal holds one space permission, as listed by [`Grants::space_permissions`]: the
/// space (`None` = every space) and the restriction ids of the granting scoped role. Lists of
/// dimensions the permission does not support are empty, as in Octopus's
/// `/api/users/{id}/permissions` (`RestrictedToEnvironmentIds` and so on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldScope<'a> {
    pub space: Option<&'a str>,
    pub environments: &'a [String],
    pub projects: &'a [String],
    pub project_groups: &'a [String],
    pub tenants: &'a [String],
}

/// Everything a principal has been granted: the grants of all its teams' scoped roles, or the
/// `administrator` flag that allows everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    grants: Vec<Grant>,
    administrator: bool,
}

impl Grants {
    pub fn new(grants: Vec<Grant>) -> Grants {
        Grants {
            grants,
            administrator: false,
        }
    }

    /// Everything everywhere (the organisation's administrators team).
    pub fn administrator() -> Grants {
        Grants {
            grants: Vec::new(),
            administrator: true,
        }
    }

    pub fn is_administrator(&self) -> bool {
        self.administrator
    }

    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    fn holding(&self, permission: Permission) -> impl Iterator<Item = &Grant> {
        self.grants
            .iter()
            .filter(move |grant| grant.permissions.contains(&permission))
    }

    /// Whether the principal holds a system-level permission. Any grant whose permission set
    /// contains it counts, whatever its space; permissions that cannot be granted at the system
    /// level are never allowed here (except to an administrator).
    pub fn allows_system(&self, permission: Permission) -> bool {
        self.administrator || (permission.is_system() && self.holding(permission).next().is_some())
    }

    /// The exact check: some grant applying in `target.space` holds `permission`, and for every
    /// restriction the permission supports and the grant sets (a non-empty list), the target
    /// supplies a listed value. A project passes when its id is in `projects` or its group's id is
    /// in `project_groups`. A restricted dimension the target does not supply denies, except
    /// tenants: an untenanted target (`tenant: None`) passes a tenant restriction, so a
    /// tenant-scoped team keeps its untenanted work. (Octopus is stricter for deployments, which
    /// it allows tenant-restricted teams only for the listed tenants.)
    ///
    /// Permissions that cannot be granted in a space, and system-capable ones (teams, tasks,
    /// events) checked with `target.space: None`, are answered by [`Grants::allows_system`].
    pub fn allows(&self, permission: Permission, target: &Target<'_>) -> bool {
        if self.administrator {
            return true;
        }
        if !permission.is_space() || (target.space.is_none() && permission.is_system()) {
            return self.allows_system(permission);
        }
        self.holding(permission)
            .any(|grant| grant.applies_in(target.space) && grant.admits(permission, target))
    }

    /// Like [`Grants::allows`], but a grant restricted to some environments also counts,
    /// whatever `target.environment`: whether the principal holds `permission` on the target in
    /// at least one environment (who may open a project's variables, and then see the values of
    /// those environments only).
    pub fn allows_in_some_environment(&self, permission: Permission, target: &Target<'_>) -> bool {
        if self.administrator {
            return true;
        }
        if !permission.is_space() || (target.space.is_none() && permission.is_system()) {
            return self.allows_system(permission);
        }
        self.holding(permission).any(|grant| {
            grant.applies_in(target.space)
                && grant.admits_apart_from_environment(permission, target)
        })
    }

    /// Whether the principal holds `permission` in `space` without any restriction, so it sees
    /// every resource the permission covers there and a list needs no filtering. Unlike
    /// `allows` with a bare target, a tenant restriction counts.
    pub fn allows_unrestricted(&self, permission: Permission, space: Option<&str>) -> bool {
        if self.administrator {
            return true;
        }
        if !permission.is_space() || (space.is_none() && permission.is_system()) {
            return self.allows_system(permission);
        }
        self.holding(permission)
            .any(|grant| grant.applies_in(space) && grant.unrestricted_for(permission))
    }

    /// The loose check for collection routes and route-level gates: some grant applying in
    /// `space` holds the permission, whatever its restrictions. `space: None` behaves as in
    /// [`Grants::allows`].
    pub fn allows_somewhere(&self, permission: Permission, space: Option<&str>) -> bool {
        if self.administrator {
            return true;
        }
        if !permission.is_space() || (space.is_none() && permission.is_system()) {
            return self.allows_system(permission);
        }
        self.holding(permission)
            .any(|grant| grant.applies_in(space))
    }

    /// Whether the principal can see the space at all: an administrator, a grant in the space
    /// holding any space permission, or a grant for every space (`space: None`) holding a
    /// space-only permission. (The team, task and event permissions of a system role, granted
    /// without a space, do not open the spaces.)
    pub fn can_see_space(&self, space: &str) -> bool {
        self.administrator
            || self.grants.iter().any(|grant| match &grant.space {
                Some(own) => own == space && grant.permissions.iter().any(|p| p.is_space()),
                None => grant
                    .permissions
                    .iter()
                    .any(|p| p.is_space() && !p.is_system()),
            })
    }

    /// The spaces the principal can see (as [`Grants::can_see_space`] answers), for row-level
    /// security: `None` when it sees every space of its organisation (an administrator, or a
    /// grant for every space holding a space-only permission).
    pub fn visible_spaces(&self) -> Option<BTreeSet<String>> {
        let everywhere = self.administrator
            || self.grants.iter().any(|grant| {
                grant.space.is_none()
                    && grant
                        .permissions
                        .iter()
                        .any(|p| p.is_space() && !p.is_system())
            });
        if everywhere {
            return None;
        }
        Some(
            self.grants
                .iter()
                .filter(|grant| grant.permissions.iter().any(|p| p.is_space()))
                .filter_map(|grant| grant.space.clone())
                .collect(),
        )
    }

    /// The system-level permissions held (all of them for an administrator).
    pub fn system_permissions(&self) -> BTreeSet<Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(|permission| self.allows_system(*permission))
            .collect()
    }

    /// The space permissions held, each with the scopes that grant it (one per granting scoped
    /// role; the permission is held wherever any of them admits). `space: Some(id)` lists what
    /// applies in that space; `None` lists every grant. An administrator holds every space
    /// permission once, unrestricted, in `space`.
    pub fn space_permissions<'a>(
        &'a self,
        space: Option<&'a str>,
    ) -> BTreeMap<Permission, Vec<HeldScope<'a>>> {
        let mut held: BTreeMap<Permission, Vec<HeldScope<'a>>> = BTreeMap::new();
        if self.administrator {
            for permission in Permission::ALL.iter().filter(|p| p.is_space()) {
                held.entry(*permission).or_default().push(HeldScope {
                    space,
                    environments: &[],
                    projects: &[],
                    project_groups: &[],
                    tenants: &[],
                });
            }
            return held;
        }
        for grant in &self.grants {
            if space.is_some() && !grant.applies_in(space) {
                continue;
            }
            for permission in grant.permissions.iter().filter(|p| p.is_space()) {
                let only = |restriction: Restriction, list: &'a [String]| -> &'a [String] {
                    if permission.supports(restriction) {
                        list
                    } else {
                        &[]
                    }
                };
                held.entry(*permission).or_default().push(HeldScope {
                    space: grant.space.as_deref(),
                    environments: only(Restriction::Environments, &grant.environments),
                    projects: only(Restriction::Projects, &grant.projects),
                    project_groups: only(Restriction::ProjectGroups, &grant.project_groups),
                    tenants: only(Restriction::Tenants, &grant.tenants),
                });
            }
        }
        held
    }
}

/// Octopus's 403 message for a missing permission.
pub fn missing_permission_message(permission: Permission) -> String {
    format!(
        "You do not have permission to perform this action. Please contact your Octopus \
         administrator. Missing permission: {permission}"
    )
}

#[cfg(test)]
mod tests;
