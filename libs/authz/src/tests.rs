use super::*;
use std::collections::HashSet;

fn role(id: &str) -> &'static BuiltInRole {
    built_in_role(id).expect("built-in role")
}

fn grant(role_id: &str, space: &str) -> Grant {
    Grant::for_role(role(role_id), Some(space.to_owned()))
}

fn ids(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| (*value).to_owned()).collect()
}

fn target<'a>(space: &'a str, project: &'a str, environment: &'a str) -> Target<'a> {
    Target {
        space: Some(space),
        project: Some(project),
        project_group: Some("ProjectGroups-1"),
        environment: Some(environment),
        tenant: None,
    }
}

#[test]
fn names_are_unique_and_round_trip() {
    let names: HashSet<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(names.len(), Permission::ALL.len());
    let lowercase: HashSet<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    assert_eq!(lowercase.len(), Permission::ALL.len());
    for permission in Permission::ALL {
        assert_eq!(Permission::parse(permission.as_str()), Some(*permission));
        assert_eq!(
            permission.to_string().parse::<Permission>(),
            Ok(*permission)
        );
        assert_eq!(
            Permission::parse(&permission.as_str().to_ascii_uppercase()),
            Some(*permission)
        );
        assert!(!permission.description().is_empty(), "{permission}");
    }
    // The enum's order is Octopus's declaration order, and `ALL` follows it.
    assert!(Permission::ALL.windows(2).all(|pair| pair[0] < pair[1]));
}

#[test]
fn unknown_names_are_rejected_with_the_name() {
    assert_eq!(Permission::parse("DeployEverything"), None);
    assert_eq!(Permission::parse(""), None);
    let error = "DeployEverything"
        .parse::<Permission>()
        .expect_err("unknown");
    assert!(error.to_string().contains("DeployEverything"));
    assert_eq!(
        Permission::parse("ApprovalPolicyAdminister"),
        Some(Permission::ApprovalRuleAdminister)
    );
}

#[test]
fn every_permission_has_a_level_and_project_restrictions_include_groups() {
    for permission in Permission::ALL {
        assert!(
            permission.is_system() || permission.is_space(),
            "{permission}"
        );
        if permission.supports(Restriction::Projects) {
            assert!(
                permission.supports(Restriction::ProjectGroups),
                "{permission}"
            );
        }
        if !permission.is_space() {
            assert!(permission.restrictions().is_empty(), "{permission}");
        }
    }
    assert!(Permission::AdministerSystem.is_system() && !Permission::AdministerSystem.is_space());
    assert!(Permission::UserView.is_system() && !Permission::UserView.is_space());
    assert!(Permission::TeamEdit.is_system() && Permission::TeamEdit.is_space());
    assert!(!Permission::DeploymentCreate.is_system() && Permission::DeploymentCreate.is_space());
    assert_eq!(Restriction::ProjectGroups.as_str(), "ProjectGroups");
}

#[test]
fn built_in_roles_are_consistent() {
    let ids: HashSet<&str> = built_in_roles().iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), built_in_roles().len());
    for role in built_in_roles() {
        assert!(role.id.starts_with("userroles-"), "{}", role.id);
        assert_eq!(role.id, role.id.to_ascii_lowercase());
        assert!(!role.name.is_empty() && !role.description.is_empty());
        assert!(!role.space_permissions.is_empty() || !role.system_permissions.is_empty());
        let unique: HashSet<_> = role.space_permissions.iter().collect();
        assert_eq!(unique.len(), role.space_permissions.len(), "{}", role.id);
        let unique: HashSet<_> = role.system_permissions.iter().collect();
        assert_eq!(unique.len(), role.system_permissions.len(), "{}", role.id);
        for permission in role.space_permissions {
            assert!(permission.is_space(), "{} {permission}", role.id);
            assert_eq!(Permission::parse(permission.as_str()), Some(*permission));
        }
        for permission in role.system_permissions {
            assert!(permission.is_system(), "{} {permission}", role.id);
            assert_eq!(Permission::parse(permission.as_str()), Some(*permission));
        }
    }
    assert_eq!(
        built_in_role("UserRoles-ProjectDeployer").map(|r| r.name),
        Some("Project deployer")
    );
    assert!(built_in_role("userroles-nobody").is_none());
}

#[test]
fn administrators_and_managers_hold_their_whole_level() {
    let system_admin = role("userroles-systemadministrator");
    let space_manager = role("userroles-spacemanager");
    let system_manager = role("userroles-systemmanager");
    for permission in Permission::ALL {
        assert_eq!(
            system_admin.system_permissions.contains(permission),
            permission.is_system(),
            "{permission}"
        );
        assert_eq!(
            space_manager.space_permissions.contains(permission),
            permission.is_space(),
            "{permission}"
        );
        assert_eq!(
            system_manager.system_permissions.contains(permission),
            permission.is_system() && *permission != Permission::AdministerSystem,
            "{permission}"
        );
    }
}

#[test]
fn role_hierarchy_follows_octopus() {
    let contributor = role("userroles-projectcontributor");
    for derived in ["userroles-projectdeployer", "userroles-projectlead"] {
        let derived = role(derived);
        assert!(
            contributor
                .space_permissions
                .iter()
                .all(|p| derived.holds(*p))
        );
    }
    assert!(role("userroles-projectdeployer").holds(Permission::DeploymentCreate));
    assert!(!role("userroles-projectdeployer").holds(Permission::ReleaseCreate));
    assert!(role("userroles-projectlead").holds(Permission::ReleaseCreate));
    assert!(!role("userroles-projectlead").holds(Permission::DeploymentCreate));
    assert_eq!(
        role("userroles-projectdeployer").supported_restrictions(),
        Restriction::ALL.to_vec()
    );
    assert_eq!(
        role("userroles-tenantmanager").supported_restrictions(),
        [Restriction::Tenants]
    );
}

#[test]
fn qa_team_deploys_to_test_only() {
    let mut qa = grant("userroles-projectdeployer", "Spaces-1");
    qa.environments = ids(&["Environments-Test"]);
    let grants = Grants::new(vec![qa]);
    let deploy = Permission::DeploymentCreate;
    assert!(grants.allows(
        deploy,
        &target("Spaces-1", "Projects-1", "Environments-Test")
    ));
    assert!(!grants.allows(
        deploy,
        &target("Spaces-1", "Projects-1", "Environments-Production")
    ));
    // A restricted dimension the target leaves out denies.
    let no_environment = Target {
        environment: None,
        ..target("Spaces-1", "Projects-1", "")
    };
    assert!(!grants.allows(deploy, &no_environment));
    // ProjectView is not environment-restrictable: the environment scope does not narrow it.
    assert!(grants.allows(Permission::ProjectView, &no_environment));
    // The role cannot create releases anywhere.
    assert!(!grants.allows(
        Permission::ReleaseCreate,
        &target("Spaces-1", "Projects-1", "Environments-Test")
    ));
    // Loose check ignores the restriction.
    assert!(grants.allows_somewhere(deploy, Some("Spaces-1")));
    assert!(!grants.allows_somewhere(deploy, Some("Spaces-2")));
    assert!(!grants.allows_somewhere(Permission::ReleaseCreate, Some("Spaces-1")));
}

#[test]
fn project_restriction_accepts_the_project_or_its_group() {
    let mut by_project = grant("userroles-projectviewer", "Spaces-1");
    by_project.projects = ids(&["Projects-1"]);
    let mut by_group = grant("userroles-projectviewer", "Spaces-1");
    by_group.project_groups = ids(&["ProjectGroups-7"]);

    let in_group = |project| Target {
        space: Some("Spaces-1"),
        project: Some(project),
        project_group: Some("ProjectGroups-7"),
        ..Target::default()
    };
    let elsewhere = |project| Target {
        project_group: Some("ProjectGroups-1"),
        ..in_group(project)
    };

    let projects = Grants::new(vec![by_project]);
    assert!(projects.allows(Permission::ProjectView, &elsewhere("Projects-1")));
    assert!(!projects.allows(Permission::ProjectView, &elsewhere("Projects-2")));

    let groups = Grants::new(vec![by_group]);
    assert!(groups.allows(Permission::ProjectView, &in_group("Projects-9")));
    assert!(!groups.allows(Permission::ProjectView, &elsewhere("Projects-9")));
    // A project-group-only permission checks the group.
    let group_only = Target {
        project: None,
        ..in_group("")
    };
    assert!(groups.allows(Permission::ProjectGroupView, &group_only));
    assert!(!groups.allows(
        Permission::ProjectGroupView,
        &Target {
            project_group: None,
            ..group_only
        }
    ));
    // Restrictions on dimensions a permission lacks are ignored: environments are not restricted.
    assert!(groups.allows(Permission::EnvironmentView, &Target::default_in("Spaces-1")));
}

impl<'a> Target<'a> {
    fn default_in(space: &'a str) -> Target<'a> {
        Target {
            space: Some(space),
            ..Target::default()
        }
    }
}

#[test]
fn grants_stay_in_their_space() {
    let grants = Grants::new(vec![grant("userroles-spacemanager", "Spaces-A")]);
    let in_a = target("Spaces-A", "Projects-1", "Environments-1");
    let in_b = target("Spaces-B", "Projects-1", "Environments-1");
    assert!(grants.allows(Permission::DeploymentCreate, &in_a));
    assert!(!grants.allows(Permission::DeploymentCreate, &in_b));
    assert!(grants.can_see_space("Spaces-A"));
    assert!(!grants.can_see_space("Spaces-B"));
    // The role's system permissions apply at the system level, wherever it was granted.
    assert!(grants.allows_system(Permission::UserView));
    assert!(grants.allows(Permission::UserView, &in_b));
    assert!(!grants.allows_system(Permission::SpaceCreate));
    // Space-level-only permissions are never system grants.
    assert!(!grants.allows_system(Permission::DeploymentCreate));

    // A grant without a space applies in every space.
    let everywhere = Grants::new(vec![Grant::for_role(role("userroles-projectviewer"), None)]);
    assert!(everywhere.allows(Permission::ProjectView, &in_b));
    assert!(everywhere.can_see_space("Spaces-Z"));
}

#[test]
fn untenanted_targets_pass_tenant_restrictions() {
    let mut tenanted = grant("userroles-projectdeployer", "Spaces-1");
    tenanted.tenants = ids(&["Tenants-1"]);
    let grants = Grants::new(vec![tenanted]);
    let untenanted = target("Spaces-1", "Projects-1", "Environments-1");
    let for_tenant = |tenant| Target {
        tenant: Some(tenant),
        ..untenanted
    };
    assert!(grants.allows(Permission::DeploymentCreate, &untenanted));
    assert!(grants.allows(Permission::DeploymentCreate, &for_tenant("Tenants-1")));
    assert!(!grants.allows(Permission::DeploymentCreate, &for_tenant("Tenants-2")));
    // A tenant-scoped grant is not an unrestricted one, though a bare target passes it.
    assert!(!grants.allows_unrestricted(Permission::DeploymentView, Some("Spaces-1")));
    assert!(grants.allows_unrestricted(Permission::TeamView, Some("Spaces-1")));
    let open = Grants::new(vec![grant("userroles-projectdeployer", "Spaces-1")]);
    assert!(open.allows_unrestricted(Permission::DeploymentView, Some("Spaces-1")));
    assert!(!open.allows_unrestricted(Permission::DeploymentView, Some("Spaces-2")));
    // TenantView is tenant-restrictable; TeamView is not.
    assert!(!grants.allows(Permission::TenantView, &for_tenant("Tenants-2")));
    assert!(grants.allows(Permission::TeamView, &for_tenant("Tenants-2")));
}

#[test]
fn administrator_allows_everything() {
    let admin = Grants::administrator();
    assert!(admin.is_administrator());
    let anywhere = target("Spaces-9", "Projects-9", "Environments-9");
    for permission in Permission::ALL {
        assert!(admin.allows(*permission, &anywhere), "{permission}");
        assert!(
            admin.allows(*permission, &Target::default()),
            "{permission}"
        );
        assert!(admin.allows_system(*permission), "{permission}");
        assert!(
            admin.allows_somewhere(*permission, Some("Spaces-9")),
            "{permission}"
        );
    }
    assert!(admin.can_see_space("Spaces-9"));
    let listed = admin.space_permissions(Some("Spaces-9"));
    assert_eq!(
        listed.len(),
        Permission::ALL.iter().filter(|p| p.is_space()).count()
    );
    assert_eq!(listed[&Permission::ProjectView][0].space, Some("Spaces-9"));

    let nobody = Grants::default();
    assert!(!nobody.is_administrator());
    assert!(!nobody.allows(Permission::ProjectView, &anywhere));
    assert!(!nobody.allows_somewhere(Permission::ProjectView, Some("Spaces-9")));
    assert!(!nobody.allows_system(Permission::UserView));
    assert!(!nobody.can_see_space("Spaces-9"));
}

#[test]
fn system_grants_and_spaceless_targets() {
    let admins = Grants::new(vec![Grant::for_role(
        role("userroles-systemadministrator"),
        None,
    )]);
    assert!(admins.allows_system(Permission::AdministerSystem));
    assert!(admins.allows(Permission::TeamEdit, &Target::default()));
    assert!(admins.allows_somewhere(Permission::TaskView, None));
    // System administrators hold no space permissions: they cannot see inside spaces.
    assert!(!admins.can_see_space("Spaces-1"));
    assert!(!admins.allows(Permission::ProjectView, &Target::default_in("Spaces-1")));
    assert_eq!(
        admins.system_permissions().len(),
        Permission::ALL.iter().filter(|p| p.is_system()).count()
    );
}

#[test]
fn space_permissions_lists_supported_restrictions_only() {
    let mut qa = grant("userroles-projectdeployer", "Spaces-1");
    qa.environments = ids(&["Environments-Test"]);
    qa.projects = ids(&["Projects-1"]);
    let other = grant("userroles-projectviewer", "Spaces-2");
    let grants = Grants::new(vec![qa, other]);

    let in_one = grants.space_permissions(Some("Spaces-1"));
    let deploy = &in_one[&Permission::DeploymentCreate];
    assert_eq!(deploy.len(), 1);
    assert_eq!(deploy[0].space, Some("Spaces-1"));
    assert_eq!(
        deploy[0].environments,
        ids(&["Environments-Test"]).as_slice()
    );
    assert_eq!(deploy[0].projects, ids(&["Projects-1"]).as_slice());
    // ProjectView does not support environment restrictions, so none are listed.
    assert!(in_one[&Permission::ProjectView][0].environments.is_empty());
    assert_eq!(
        in_one[&Permission::ProjectView][0].projects,
        ids(&["Projects-1"]).as_slice()
    );
    // System-only permissions are not space permissions.
    assert!(!in_one.contains_key(&Permission::UserView));

    let everywhere = grants.space_permissions(None);
    assert_eq!(everywhere[&Permission::ProjectView].len(), 2);
    assert!(grants.system_permissions().contains(&Permission::UserView));
}

#[test]
fn forbidden_message_matches_octopus() {
    assert_eq!(
        missing_permission_message(Permission::DeploymentCreate),
        "You do not have permission to perform this action. Please contact your Octopus \
         administrator. Missing permission: DeploymentCreate"
    );
}

#[test]
fn visible_spaces_are_those_some_grant_opens() {
    let two = Grants::new(vec![
        grant("userroles-projectviewer", "Spaces-1"),
        grant("userroles-projectdeployer", "Spaces-3"),
    ]);
    let seen = two.visible_spaces().expect("a list, not every space");
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["Spaces-1", "Spaces-3"]
    );
    for space in ["Spaces-1", "Spaces-2", "Spaces-3"] {
        let listed = two.visible_spaces().is_some_and(|s| s.contains(space));
        assert_eq!(listed, two.can_see_space(space), "{space}");
    }
    assert_eq!(Grants::administrator().visible_spaces(), None);
    let everywhere = Grants::new(vec![Grant::for_role(role("userroles-projectviewer"), None)]);
    assert_eq!(everywhere.visible_spaces(), None);
    // A system role granted without a space (teams, tasks, events) opens no space.
    let system = Grants::new(vec![Grant::for_role(role("userroles-systemmanager"), None)]);
    assert_eq!(system.visible_spaces(), Some(Default::default()));
    assert!(!system.can_see_space("Spaces-1"));
    assert_eq!(Grants::default().visible_spaces(), Some(Default::default()));
}

#[test]
fn a_grant_in_some_environments_opens_a_project_but_not_every_environment() {
    let mut qa = grant("userroles-projectdeployer", "Spaces-1");
    qa.environments = ids(&["Environments-1"]);
    let grants = Grants::new(vec![qa]);
    let project = Target {
        space: Some("Spaces-1"),
        project: Some("Projects-1"),
        ..Target::default()
    };
    assert!(!grants.allows(Permission::VariableView, &project));
    assert!(grants.allows_in_some_environment(Permission::VariableView, &project));
    let in_test = Target {
        environment: Some("Environments-1"),
        ..project
    };
    let in_production = Target {
        environment: Some("Environments-2"),
        ..project
    };
    assert!(grants.allows(Permission::VariableView, &in_test));
    assert!(!grants.allows(Permission::VariableView, &in_production));
    // Other restrictions still hold, and another space is still closed.
    let mut alpha_only = grant("userroles-projectdeployer", "Spaces-1");
    alpha_only.projects = ids(&["Projects-1"]);
    alpha_only.environments = ids(&["Environments-1"]);
    let alpha_only = Grants::new(vec![alpha_only]);
    let beta = Target {
        project: Some("Projects-2"),
        ..project
    };
    assert!(!alpha_only.allows_in_some_environment(Permission::VariableView, &beta));
    let elsewhere = Target {
        space: Some("Spaces-2"),
        ..project
    };
    assert!(!grants.allows_in_some_environment(Permission::VariableView, &elsewhere));
}
