//! The catalogue: every Octopus permission (its wire name, level and supported restrictions) and
//! Octopus's built-in user roles.
//!
//! Sources: the permission identifiers of Octopus's REST API (`GrantedSpacePermissions` /
//! `GrantedSystemPermissions` on a user role, the keys of `/api/permissions/all`), Octopus's
//! "Default permissions for built-in user roles" and "System and space permissions" pages, and the
//! restriction suffixes ("restrictable to Environments, Projects, Tenants") a server prints in a
//! role's permission descriptions. Descriptions are our own words.

use std::fmt;
use std::str::FromStr;

/// A dimension a scoped user role can be restricted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Restriction {
    Environments,
    Projects,
    ProjectGroups,
    Tenants,
}

impl Restriction {
    pub const ALL: &'static [Restriction] = &[
        Restriction::Environments,
        Restriction::Projects,
        Restriction::ProjectGroups,
        Restriction::Tenants,
    ];

    /// The Octopus name of the dimension, as in "restrictable to Environments".
    pub fn as_str(self) -> &'static str {
        match self {
            Restriction::Environments => "Environments",
            Restriction::Projects => "Projects",
            Restriction::ProjectGroups => "ProjectGroups",
            Restriction::Tenants => "Tenants",
        }
    }
}

impl fmt::Display for Restriction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a permission can be granted: in a user role's `GrantedSystemPermissions`, its
/// `GrantedSpacePermissions`, or (teams, tasks, events) either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    System,
    Space,
    Both,
}

use Restriction::{Environments, ProjectGroups, Projects, Tenants};

const NONE: &[Restriction] = &[];
const ENV: &[Restriction] = &[Environments];
const ENV_TEN: &[Restriction] = &[Environments, Tenants];
const GROUPS: &[Restriction] = &[ProjectGroups];
const TEN: &[Restriction] = &[Tenants];
// A project restriction is always paired with project groups: a project is in scope when its id
// or its group's id is listed.
const PROJ: &[Restriction] = &[Projects, ProjectGroups];
// Octopus prints these as "Projects, ProjectsViaTenants": a tenant restriction limits them to the
// projects of the listed tenants. We keep it as a plain tenant restriction that an untenanted
// target passes (see `Grants::allows`).
const PROJ_TEN: &[Restriction] = &[Projects, ProjectGroups, Tenants];
const ENV_PROJ_TEN: &[Restriction] = &[Environments, Projects, ProjectGroups, Tenants];

macro_rules! permissions {
    ($($name:ident: $level:ident, $restrictions:expr, $description:literal;)+) => {
        /// One Octopus permission; `as_str` is the exact Octopus wire name (e.g. "DeploymentCreate").
        /// Variants are declared in Octopus's own order, which is also their `Ord`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission {
            $(#[doc = $description] $name,)+
        }

        impl Permission {
            /// Every permission, in Octopus's order.
            pub const ALL: &'static [Permission] = &[$(Permission::$name,)+];

            /// The exact Octopus wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$name => stringify!($name),)+
                }
            }

            /// One short sentence saying what the permission allows.
            pub fn description(self) -> &'static str {
                match self {
                    $(Permission::$name => $description,)+
                }
            }

            fn level(self) -> Level {
                match self {
                    $(Permission::$name => Level::$level,)+
                }
            }

            /// The scoped-role restrictions that narrow this permission. Restrictions a permission
            /// does not support are ignored when it is checked. Anything restrictable to
            /// `Projects` is also restrictable to `ProjectGroups`.
            pub fn restrictions(self) -> &'static [Restriction] {
                match self {
                    $(Permission::$name => $restrictions,)+
                }
            }
        }
    };
}

permissions! {
    AdministerSystem: System, NONE, "Run instance-wide administration: web hosting, public URL, nodes, maintenance mode and diagnostics.";
    ProjectEdit: Space, PROJ_TEN, "Change a project's settings.";
    ProjectView: Space, PROJ_TEN, "See projects and their settings.";
    ProjectCreate: Space, GROUPS, "Add new projects.";
    ProjectDelete: Space, PROJ_TEN, "Remove projects.";
    ProcessView: Space, PROJ_TEN, "See a project's deployment process and channels.";
    ProcessEdit: Space, PROJ_TEN, "Change a project's deployment process and channels.";
    VariableEdit: Space, ENV_PROJ_TEN, "Change project variables.";
    VariableEditUnscoped: Space, PROJ, "Change variables that carry no environment scope, in projects or library sets.";
    VariableView: Space, ENV_PROJ_TEN, "See project and library set variables.";
    VariableViewUnscoped: Space, PROJ, "See variables that carry no environment scope, in projects or library sets.";
    ReleaseCreate: Space, PROJ_TEN, "Create releases of a project.";
    ReleaseView: Space, PROJ_TEN, "See a project's releases.";
    ReleaseEdit: Space, PROJ_TEN, "Change a project's releases.";
    ReleaseDelete: Space, PROJ_TEN, "Remove a project's releases.";
    DefectReport: Space, PROJ, "Stop a release from moving on to the next lifecycle phase.";
    DefectResolve: Space, PROJ, "Let a blocked release move on through its lifecycle again.";
    DeploymentCreate: Space, ENV_PROJ_TEN, "Deploy releases to environments.";
    DeploymentDelete: Space, ENV_PROJ_TEN, "Remove deployments.";
    DeploymentView: Space, ENV_PROJ_TEN, "See deployments.";
    EnvironmentView: Space, ENV, "See environments.";
    EnvironmentCreate: Space, NONE, "Add environments.";
    EnvironmentEdit: Space, ENV, "Change environments.";
    EnvironmentDelete: Space, ENV, "Remove environments.";
    MachineCreate: Space, ENV_TEN, "Register deployment targets.";
    MachineEdit: Space, ENV_TEN, "Change deployment targets.";
    MachineView: Space, ENV_TEN, "See deployment targets.";
    MachineDelete: Space, ENV_TEN, "Remove deployment targets.";
    ArtifactView: Space, ENV_PROJ_TEN, "See artifacts collected by deployments or added by hand.";
    ArtifactCreate: Space, ENV_PROJ_TEN, "Add artifacts by hand.";
    ArtifactEdit: Space, ENV_PROJ_TEN, "Change artifact details.";
    ArtifactDelete: Space, ENV_PROJ_TEN, "Remove artifacts.";
    FeedView: Space, NONE, "See package feeds and their packages.";
    EventView: Both, ENV_PROJ_TEN, "See audit events.";
    LibraryVariableSetView: Space, ENV_TEN, "See library variable sets.";
    LibraryVariableSetCreate: Space, NONE, "Add library variable sets.";
    LibraryVariableSetEdit: Space, ENV_TEN, "Change library variable sets.";
    LibraryVariableSetDelete: Space, NONE, "Remove library variable sets.";
    ProjectGroupView: Space, GROUPS, "See project groups.";
    ProjectGroupCreate: Space, NONE, "Add project groups.";
    ProjectGroupEdit: Space, GROUPS, "Change project groups.";
    ProjectGroupDelete: Space, GROUPS, "Remove project groups.";
    TeamCreate: Both, NONE, "Add teams.";
    TeamView: Both, NONE, "See teams.";
    TeamEdit: Both, NONE, "Change teams and their members and roles.";
    TeamDelete: Both, NONE, "Remove teams.";
    UserView: System, NONE, "See users.";
    UserInvite: System, NONE, "Invite people to register as users.";
    UserRoleView: System, NONE, "See user roles and what other users hold.";
    UserRoleEdit: System, NONE, "Change user role definitions.";
    TaskView: Both, ENV_PROJ_TEN, "See server tasks and their logs.";
    TaskCreate: Both, ENV_PROJ_TEN, "Start server tasks explicitly.";
    TaskCancel: Both, ENV_PROJ_TEN, "Cancel server tasks.";
    TaskEdit: Both, ENV_PROJ_TEN, "Change server tasks, e.g. their state.";
    TaskPrioritize: Space, NONE, "Queue deployments ahead of other tasks.";
    InterruptionView: Space, ENV_PROJ_TEN, "See manual interventions and guided failures raised by deployments.";
    InterruptionSubmit: Space, ENV_PROJ_TEN, "Take and answer manual interventions and guided failures.";
    InterruptionViewSubmitResponsible: Space, ENV_PROJ_TEN, "Take and answer interruptions assigned to one of the user's teams.";
    BuiltInFeedPush: Space, PROJ, "Upload new packages to the built-in feed.";
    BuiltInFeedAdminister: Space, PROJ, "Replace or remove packages in the built-in feed.";
    BuiltInFeedDownload: Space, PROJ, "Download packages from the built-in feed.";
    ActionTemplateView: Space, NONE, "See step templates.";
    ActionTemplateCreate: Space, NONE, "Add step templates.";
    ActionTemplateEdit: Space, NONE, "Change step templates.";
    ActionTemplateDelete: Space, NONE, "Remove step templates.";
    LifecycleCreate: Space, NONE, "Add lifecycles.";
    LifecycleView: Space, NONE, "See lifecycles.";
    LifecycleEdit: Space, NONE, "Change lifecycles.";
    LifecycleDelete: Space, NONE, "Remove lifecycles.";
    AccountView: Space, ENV_TEN, "See accounts.";
    AccountEdit: Space, ENV_TEN, "Change accounts.";
    AccountCreate: Space, ENV_TEN, "Add accounts.";
    AccountDelete: Space, ENV_TEN, "Remove accounts.";
    TenantCreate: Space, NONE, "Add tenants.";
    TenantEdit: Space, TEN, "Change tenants.";
    TenantView: Space, TEN, "See tenants.";
    TenantDelete: Space, TEN, "Remove tenants.";
    TagSetCreate: Space, NONE, "Add tenant tag sets.";
    TagSetEdit: Space, NONE, "Change tenant tag sets.";
    TagSetDelete: Space, NONE, "Remove tenant tag sets.";
    TelemetryView: System, NONE, "See telemetry the instance collects.";
    MachinePolicyCreate: Space, NONE, "Add machine (health check) policies.";
    MachinePolicyView: Space, NONE, "See machine (health check) policies.";
    MachinePolicyEdit: Space, NONE, "Change machine (health check) policies.";
    MachinePolicyDelete: Space, NONE, "Remove machine (health check) policies.";
    ProxyCreate: Space, NONE, "Add proxies.";
    ProxyView: Space, NONE, "See proxies.";
    ProxyEdit: Space, NONE, "Change proxies.";
    ProxyDelete: Space, NONE, "Remove proxies.";
    SubscriptionCreate: Space, NONE, "Add event subscriptions.";
    SubscriptionView: Space, NONE, "See event subscriptions.";
    SubscriptionEdit: Space, NONE, "Change event subscriptions.";
    SubscriptionDelete: Space, NONE, "Remove event subscriptions.";
    TriggerCreate: Space, PROJ, "Add project triggers.";
    TriggerView: Space, PROJ, "See project triggers.";
    TriggerEdit: Space, PROJ, "Change project triggers.";
    TriggerDelete: Space, PROJ, "Remove project triggers.";
    CertificateView: Space, ENV_TEN, "See certificates.";
    CertificateCreate: Space, ENV_TEN, "Add certificates.";
    CertificateEdit: Space, ENV_TEN, "Change certificates.";
    CertificateDelete: Space, ENV_TEN, "Remove certificates.";
    CertificateExportPrivateKey: Space, ENV_TEN, "Export a certificate together with its private key.";
    UserEdit: System, NONE, "Change users.";
    ConfigureServer: System, NONE, "Change server settings such as authentication, SMTP and security headers.";
    FeedEdit: Space, NONE, "Add, change and remove package feeds.";
    WorkerView: Space, NONE, "See workers and worker pools.";
    WorkerEdit: Space, NONE, "Add, change and remove workers and worker pools.";
    SpaceEdit: System, NONE, "Change spaces.";
    SpaceView: System, NONE, "See spaces.";
    SpaceDelete: System, NONE, "Remove spaces.";
    SpaceCreate: System, NONE, "Add spaces.";
    BuildInformationPush: Space, NONE, "Upload or update build information.";
    BuildInformationAdminister: Space, NONE, "Replace or remove build information.";
    RunbookView: Space, PROJ_TEN, "See runbooks.";
    RunbookEdit: Space, PROJ_TEN, "Change runbooks.";
    RunbookSnapshotCreate: Space, PROJ_TEN, "Take snapshots of runbooks.";
    RunbookRunView: Space, ENV_PROJ_TEN, "See runbook runs.";
    RunbookRunDelete: Space, ENV_PROJ_TEN, "Remove runbook runs.";
    RunbookRunCreate: Space, ENV_PROJ_TEN, "Run runbooks.";
    GitCredentialView: Space, NONE, "See Git credentials.";
    GitCredentialEdit: Space, NONE, "Add, change and remove Git credentials.";
    EventRetentionDelete: System, NONE, "Remove archived audit event files.";
    EventRetentionView: System, NONE, "List and read archived audit event files.";
    InsightsReportView: Space, NONE, "See Insights reports.";
    InsightsReportCreate: Space, NONE, "Add Insights reports.";
    InsightsReportEdit: Space, NONE, "Change Insights reports.";
    InsightsReportDelete: Space, NONE, "Remove Insights reports.";
    DeploymentFreezeAdminister: System, NONE, "Add, change, remove and override deployment freezes.";
    TargetTagView: Space, NONE, "See deployment target tags.";
    TargetTagAdminister: Space, NONE, "Add, change and remove deployment target tags.";
    PlatformHubView: System, NONE, "See Platform Hub settings and resources.";
    PlatformHubEdit: System, NONE, "Change Platform Hub settings and resources.";
    RetentionAdminister: Space, NONE, "Manage retention policies.";
    FeatureToggleEdit: Space, NONE, "Add, change and remove feature toggles.";
    ApprovalRuleAdminister: Space, NONE, "Add, change and remove approval rules.";
    SshKnownHostsAdminister: System, NONE, "Add, change and remove SSH known hosts.";
    SshKnownHostsView: System, NONE, "See SSH known hosts.";
    AiAgentTranscriptView: Space, NONE, "See AI agent transcripts.";
    DeployedResourceAdminister: Space, NONE, "Manage resources that deployments created and Octopus tracks.";
}

impl Permission {
    /// Whether the permission can be granted at the system level (a role's
    /// `GrantedSystemPermissions`). Teams, tasks and events are both system and space level.
    pub fn is_system(self) -> bool {
        matches!(self.level(), Level::System | Level::Both)
    }

    /// Whether the permission can be granted within a space (a role's `GrantedSpacePermissions`).
    pub fn is_space(self) -> bool {
        matches!(self.level(), Level::Space | Level::Both)
    }

    /// Whether the permission supports `restriction`.
    pub fn supports(self, restriction: Restriction) -> bool {
        self.restrictions().contains(&restriction)
    }

    /// The permission with this Octopus name, ignoring ASCII case. Also accepts
    /// `ApprovalPolicyAdminister`, the name Octopus's published API schema gives
    /// `ApprovalRuleAdminister`.
    pub fn parse(name: &str) -> Option<Permission> {
        if name.eq_ignore_ascii_case("ApprovalPolicyAdminister") {
            return Some(Permission::ApprovalRuleAdminister);
        }
        Permission::ALL
            .iter()
            .copied()
            .find(|permission| permission.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an Octopus permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPermission(pub String);

impl fmt::Display for UnknownPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not a known Octopus permission", self.0)
    }
}

impl std::error::Error for UnknownPermission {}

impl FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(name: &str) -> Result<Permission, UnknownPermission> {
        Permission::parse(name).ok_or_else(|| UnknownPermission(name.to_owned()))
    }
}

/// A built-in user role (Octopus ids such as "userroles-systemadministrator",
/// "userroles-spacemanager", "userroles-projectdeployer", ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltInRole {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub space_permissions: &'static [Permission],
    pub system_permissions: &'static [Permission],
}

impl BuiltInRole {
    /// The restrictions any of the role's space permissions support (a role's
    /// `SupportedRestrictions`), in `Restriction::ALL` order.
    pub fn supported_restrictions(&self) -> Vec<Restriction> {
        Restriction::ALL
            .iter()
            .copied()
            .filter(|r| self.space_permissions.iter().any(|p| p.supports(*r)))
            .collect()
    }

    /// Whether the role holds `permission` at either level.
    pub fn holds(&self, permission: Permission) -> bool {
        self.space_permissions.contains(&permission)
            || self.system_permissions.contains(&permission)
    }
}

/// Every built-in user role, ordered by name as Octopus lists them.
pub fn built_in_roles() -> &'static [BuiltInRole] {
    BUILT_IN_ROLES
}

/// The built-in role with this id, ignoring ASCII case.
pub fn built_in_role(id: &str) -> Option<&'static BuiltInRole> {
    BUILT_IN_ROLES
        .iter()
        .find(|role| role.id.eq_ignore_ascii_case(id))
}

use Permission::*;

// System permissions shared by most project roles.
#[rustfmt::skip]
const PROJECT_SYSTEM: &[Permission] = &[SshKnownHostsView, TeamView, UserRoleView, UserView];

#[rustfmt::skip]
const BUILD_SERVER: &[Permission] = &[
    BuildInformationAdminister, BuildInformationPush, BuiltInFeedAdminister, BuiltInFeedDownload,
    BuiltInFeedPush, DeploymentCreate, DeploymentView, EnvironmentView, FeedView,
    InsightsReportView, LibraryVariableSetView, LifecycleView, ProcessView, ProjectView,
    ReleaseCreate, ReleaseView, RunbookRunCreate, RunbookRunView, RunbookSnapshotCreate,
    RunbookView, TargetTagView, TaskPrioritize, TaskView, TenantView,
];

#[rustfmt::skip]
const DEPLOYMENT_CREATOR: &[Permission] = &[
    DeploymentCreate, DeploymentView, EnvironmentView, InsightsReportView, LibraryVariableSetView,
    LifecycleView, ProcessView, ProjectView, ReleaseView, RunbookRunCreate, RunbookRunView,
    RunbookView, TargetTagView, TaskView, TenantView,
];

#[rustfmt::skip]
const ENVIRONMENT_MANAGER: &[Permission] = &[
    AccountCreate, AccountDelete, AccountEdit, AccountView, ApprovalRuleAdminister,
    CertificateView, EnvironmentCreate, EnvironmentDelete, EnvironmentEdit, EnvironmentView,
    MachineCreate, MachineDelete, MachineEdit, MachinePolicyCreate, MachinePolicyDelete,
    MachinePolicyEdit, MachinePolicyView, MachineView, ProxyCreate, ProxyDelete, ProxyEdit,
    ProxyView, TargetTagAdminister, TargetTagView, TaskCancel, TaskCreate, TaskView, TeamView,
    WorkerEdit, WorkerView,
];

#[rustfmt::skip]
const ENVIRONMENT_VIEWER: &[Permission] = &[
    AccountView, CertificateView, EnvironmentView, MachinePolicyView, MachineView, ProxyView,
    TargetTagView, TaskView, TeamView, WorkerView,
];

#[rustfmt::skip]
const PROJECT_CONTRIBUTOR: &[Permission] = &[
    AccountView, ActionTemplateCreate, ActionTemplateDelete, ActionTemplateEdit,
    ActionTemplateView, ArtifactCreate, ArtifactView, CertificateView, DefectReport, DefectResolve,
    DeployedResourceAdminister, DeploymentView, EnvironmentView, EventView, FeatureToggleEdit,
    FeedView, GitCredentialView, InsightsReportEdit, InsightsReportView, InterruptionView,
    InterruptionViewSubmitResponsible, LibraryVariableSetCreate, LibraryVariableSetDelete,
    LibraryVariableSetEdit, LibraryVariableSetView, LifecycleView, MachinePolicyView, MachineView,
    ProcessEdit, ProcessView, ProjectEdit, ProjectGroupView, ProjectView, ReleaseView, RunbookEdit,
    RunbookRunView, RunbookSnapshotCreate, RunbookView, TargetTagAdminister, TargetTagView,
    TaskCreate, TaskView, TeamView, TenantView, TriggerCreate, TriggerDelete, TriggerEdit,
    TriggerView, VariableEdit, VariableView,
];

// Project contributor plus DeploymentCreate, InterruptionSubmit, RunbookRunCreate, TaskCancel.
#[rustfmt::skip]
const PROJECT_DEPLOYER: &[Permission] = &[
    AccountView, ActionTemplateCreate, ActionTemplateDelete, ActionTemplateEdit,
    ActionTemplateView, ArtifactCreate, ArtifactView, CertificateView, DefectReport, DefectResolve,
    DeployedResourceAdminister, DeploymentCreate, DeploymentView, EnvironmentView, EventView,
    FeatureToggleEdit, FeedView, GitCredentialView, InsightsReportEdit, InsightsReportView,
    InterruptionSubmit, InterruptionView, InterruptionViewSubmitResponsible,
    LibraryVariableSetCreate, LibraryVariableSetDelete, LibraryVariableSetEdit,
    LibraryVariableSetView, LifecycleView, MachinePolicyView, MachineView, ProcessEdit,
    ProcessView, ProjectEdit, ProjectGroupView, ProjectView, ReleaseView, RunbookEdit,
    RunbookRunCreate, RunbookRunView, RunbookSnapshotCreate, RunbookView, TargetTagAdminister,
    TargetTagView, TaskCancel, TaskCreate, TaskView, TeamView, TenantView, TriggerCreate,
    TriggerDelete, TriggerEdit, TriggerView, VariableEdit, VariableView,
];

// Project contributor plus ArtifactDelete, ArtifactEdit and the release permissions.
#[rustfmt::skip]
const PROJECT_LEAD: &[Permission] = &[
    AccountView, ActionTemplateCreate, ActionTemplateDelete, ActionTemplateEdit,
    ActionTemplateView, ArtifactCreate, ArtifactDelete, ArtifactEdit, ArtifactView,
    CertificateView, DefectReport, DefectResolve, DeployedResourceAdminister, DeploymentView,
    EnvironmentView, EventView, FeatureToggleEdit, FeedView, GitCredentialView,
    InsightsReportEdit, InsightsReportView, InterruptionView, InterruptionViewSubmitResponsible,
    LibraryVariableSetCreate, LibraryVariableSetDelete, LibraryVariableSetEdit,
    LibraryVariableSetView, LifecycleView, MachinePolicyView, MachineView, ProcessEdit,
    ProcessView, ProjectEdit, ProjectGroupView, ProjectView, ReleaseCreate, ReleaseDelete,
    ReleaseEdit, ReleaseView, RunbookEdit, RunbookRunView, RunbookSnapshotCreate, RunbookView,
    TargetTagAdminister, TargetTagView, TaskCreate, TaskView, TeamView, TenantView, TriggerCreate,
    TriggerDelete, TriggerEdit, TriggerView, VariableEdit, VariableView,
];

#[rustfmt::skip]
const PROJECT_INITIATOR: &[Permission] = &[
    AccountView, ActionTemplateView, ArtifactView, CertificateView, DefectReport, DefectResolve,
    DeploymentView, EnvironmentView, EventView, FeedView, GitCredentialView, InsightsReportCreate,
    InsightsReportDelete, InsightsReportEdit, InsightsReportView, InterruptionView,
    LibraryVariableSetView, LifecycleView, MachinePolicyView, ProcessView, ProjectCreate,
    ProjectDelete, ProjectEdit, ProjectGroupView, ProjectView, ReleaseView, RunbookRunView,
    RunbookView, TargetTagView, TaskView, TeamView, TenantView, TriggerView,
];

#[rustfmt::skip]
const PROJECT_VIEWER: &[Permission] = &[
    AccountView, ActionTemplateView, ArtifactView, CertificateView, DeploymentView,
    EnvironmentView, EventView, FeedView, InsightsReportView, InterruptionView,
    LibraryVariableSetView, LifecycleView, MachinePolicyView, ProcessView, ProjectGroupView,
    ProjectView, ReleaseView, RunbookRunView, RunbookView, TargetTagView, TaskView, TeamView,
    TenantView, TriggerView,
];

// Read only and Space viewer share these.
#[rustfmt::skip]
const SPACE_VIEWER: &[Permission] = &[
    AccountView, ActionTemplateView, ArtifactView, CertificateView, DeploymentView,
    EnvironmentView, EventView, FeedView, GitCredentialView, InsightsReportView, InterruptionView,
    LibraryVariableSetView, LifecycleView, MachinePolicyView, MachineView, ProcessView,
    ProjectGroupView, ProjectView, ProxyView, ReleaseView, RunbookRunView, RunbookView,
    SubscriptionView, TargetTagView, TaskView, TeamView, TenantView, TriggerView, VariableView,
    VariableViewUnscoped, WorkerView,
];

#[rustfmt::skip]
const RUNBOOK_CONSUMER: &[Permission] = &[
    ActionTemplateView, ArtifactView, CertificateView, EnvironmentView, EventView, FeedView,
    InterruptionView, LibraryVariableSetView, MachinePolicyView, MachineView, ProjectGroupView,
    ProjectView, RunbookRunCreate, RunbookRunView, RunbookView, TargetTagView, TaskView, TeamView,
    TenantView, TriggerView, VariableView,
];

#[rustfmt::skip]
const RUNBOOK_PRODUCER: &[Permission] = &[
    ActionTemplateCreate, ActionTemplateDelete, ActionTemplateEdit, ActionTemplateView,
    ArtifactCreate, ArtifactDelete, ArtifactEdit, ArtifactView, CertificateView, EnvironmentView,
    EventView, FeedView, InterruptionSubmit, InterruptionView, InterruptionViewSubmitResponsible,
    LibraryVariableSetCreate, LibraryVariableSetDelete, LibraryVariableSetEdit,
    LibraryVariableSetView, LifecycleView, MachinePolicyView, MachineView, ProjectCreate,
    ProjectDelete, ProjectEdit, ProjectGroupView, ProjectView, RunbookEdit, RunbookRunCreate,
    RunbookRunDelete, RunbookRunView, RunbookSnapshotCreate, RunbookView, TargetTagView,
    TaskCancel, TaskCreate, TaskView, TeamView, TenantView, TriggerCreate, TriggerDelete,
    TriggerEdit, TriggerView, VariableEdit, VariableView,
];

// Every space-level permission (checked by a test against `Permission::is_space`).
#[rustfmt::skip]
const SPACE_MANAGER: &[Permission] = &[
    ProjectEdit, ProjectView, ProjectCreate, ProjectDelete, ProcessView, ProcessEdit, VariableEdit,
    VariableEditUnscoped, VariableView, VariableViewUnscoped, ReleaseCreate, ReleaseView,
    ReleaseEdit, ReleaseDelete, DefectReport, DefectResolve, DeploymentCreate, DeploymentDelete,
    DeploymentView, EnvironmentView, EnvironmentCreate, EnvironmentEdit, EnvironmentDelete,
    MachineCreate, MachineEdit, MachineView, MachineDelete, ArtifactView, ArtifactCreate,
    ArtifactEdit, ArtifactDelete, FeedView, EventView, LibraryVariableSetView,
    LibraryVariableSetCreate, LibraryVariableSetEdit, LibraryVariableSetDelete, ProjectGroupView,
    ProjectGroupCreate, ProjectGroupEdit, ProjectGroupDelete, TeamCreate, TeamView, TeamEdit,
    TeamDelete, TaskView, TaskCreate, TaskCancel, TaskEdit, TaskPrioritize, InterruptionView,
    InterruptionSubmit, InterruptionViewSubmitResponsible, BuiltInFeedPush, BuiltInFeedAdminister,
    BuiltInFeedDownload, ActionTemplateView, ActionTemplateCreate, ActionTemplateEdit,
    ActionTemplateDelete, LifecycleCreate, LifecycleView, LifecycleEdit, LifecycleDelete,
    AccountView, AccountEdit, AccountCreate, AccountDelete, TenantCreate, TenantEdit, TenantView,
    TenantDelete, TagSetCreate, TagSetEdit, TagSetDelete, MachinePolicyCreate, MachinePolicyView,
    MachinePolicyEdit, MachinePolicyDelete, ProxyCreate, ProxyView, ProxyEdit, ProxyDelete,
    SubscriptionCreate, SubscriptionView, SubscriptionEdit, SubscriptionDelete, TriggerCreate,
    TriggerView, TriggerEdit, TriggerDelete, CertificateView, CertificateCreate, CertificateEdit,
    CertificateDelete, CertificateExportPrivateKey, FeedEdit, WorkerView, WorkerEdit,
    BuildInformationPush, BuildInformationAdminister, RunbookView, RunbookEdit,
    RunbookSnapshotCreate, RunbookRunView, RunbookRunDelete, RunbookRunCreate, GitCredentialView,
    GitCredentialEdit, InsightsReportView, InsightsReportCreate, InsightsReportEdit,
    InsightsReportDelete, TargetTagView, TargetTagAdminister, RetentionAdminister,
    FeatureToggleEdit, ApprovalRuleAdminister, AiAgentTranscriptView, DeployedResourceAdminister,
];

// Every system-level permission.
#[rustfmt::skip]
const SYSTEM_ADMINISTRATOR: &[Permission] = &[
    AdministerSystem, ConfigureServer, DeploymentFreezeAdminister, EventRetentionDelete,
    EventRetentionView, EventView, PlatformHubEdit, PlatformHubView, SpaceCreate, SpaceDelete,
    SpaceEdit, SpaceView, SshKnownHostsAdminister, SshKnownHostsView, TaskCancel, TaskCreate,
    TaskEdit, TaskView, TeamCreate, TeamDelete, TeamEdit, TeamView, TelemetryView, UserEdit,
    UserInvite, UserRoleEdit, UserRoleView, UserView,
];

// Everything a system administrator holds except AdministerSystem.
#[rustfmt::skip]
const SYSTEM_MANAGER: &[Permission] = &[
    ConfigureServer, DeploymentFreezeAdminister, EventRetentionDelete, EventRetentionView,
    EventView, PlatformHubEdit, PlatformHubView, SpaceCreate, SpaceDelete, SpaceEdit, SpaceView,
    SshKnownHostsAdminister, SshKnownHostsView, TaskCancel, TaskCreate, TaskEdit, TaskView,
    TeamCreate, TeamDelete, TeamEdit, TeamView, TelemetryView, UserEdit, UserInvite, UserRoleEdit,
    UserRoleView, UserView,
];

const fn role(
    id: &'static str,
    name: &'static str,
    description: &'static str,
    space_permissions: &'static [Permission],
    system_permissions: &'static [Permission],
) -> BuiltInRole {
    BuiltInRole {
        id,
        name,
        description,
        space_permissions,
        system_permissions,
    }
}

#[rustfmt::skip]
static BUILT_IN_ROLES: &[BuiltInRole] = &[
    role(
        "userroles-buildserver",
        "Build server",
        "For CI servers: push packages and build information, create releases and deployments, take runbook snapshots and run runbooks.",
        BUILD_SERVER,
        &[],
    ),
    role(
        "userroles-certificatemanager",
        "Certificate manager",
        "Manage certificates, including exporting their private keys.",
        &[
            CertificateCreate, CertificateDelete, CertificateEdit, CertificateExportPrivateKey,
            CertificateView, EnvironmentView, TenantView,
        ],
        &[],
    ),
    role(
        "userroles-deploymentcreator",
        "Deployment creator",
        "Deploy existing releases and run runbooks.",
        DEPLOYMENT_CREATOR,
        &[],
    ),
    role(
        "userroles-environmentmanager",
        "Environment manager",
        "Manage environments, deployment targets, workers and the infrastructure around them.",
        ENVIRONMENT_MANAGER,
        &[TeamView],
    ),
    role(
        "userroles-environmentviewer",
        "Environment viewer",
        "See environments, deployment targets and workers without changing them.",
        ENVIRONMENT_VIEWER,
        &[TeamView],
    ),
    role(
        "userroles-featuretoggleeditor",
        "Feature toggle editor",
        "Manage feature toggles of projects.",
        &[EnvironmentView, FeatureToggleEdit, ProcessView, ProjectGroupView, ProjectView, TenantView],
        &[],
    ),
    role(
        "userroles-insightsreportmanager",
        "Insights report manager",
        "Manage Insights reports.",
        &[
            EnvironmentView, InsightsReportCreate, InsightsReportDelete, InsightsReportEdit,
            InsightsReportView, ProcessView, ProjectGroupView, ProjectView, TargetTagView,
            TenantView,
        ],
        &[],
    ),
    role(
        "userroles-packagepublisher",
        "Package publisher",
        "Push packages and build information to the built-in feed.",
        &[
            BuildInformationAdminister, BuildInformationPush, BuiltInFeedAdminister,
            BuiltInFeedDownload, BuiltInFeedPush, FeedView,
        ],
        &[],
    ),
    role(
        "userroles-projectcontributor",
        "Project contributor",
        "Everything a project viewer can do, plus editing deployment processes and variables; cannot create or deploy releases.",
        PROJECT_CONTRIBUTOR,
        PROJECT_SYSTEM,
    ),
    role(
        "userroles-projectdeployer",
        "Project deployer",
        "Everything a project contributor can do, plus deploying releases (but not creating them).",
        PROJECT_DEPLOYER,
        PROJECT_SYSTEM,
    ),
    role(
        "userroles-projectinitiator",
        "Project initiator",
        "Everything a project viewer can do, plus creating and removing projects.",
        PROJECT_INITIATOR,
        PROJECT_SYSTEM,
    ),
    role(
        "userroles-projectlead",
        "Project lead",
        "Everything a project contributor can do, plus creating releases (but not deploying them).",
        PROJECT_LEAD,
        PROJECT_SYSTEM,
    ),
    role(
        "userroles-projectviewer",
        "Project viewer",
        "Read-only access to projects, their releases and deployments.",
        PROJECT_VIEWER,
        &[TeamView, UserRoleView, UserView],
    ),
    role(
        "userroles-readonly",
        "Read only",
        "Read-only access to everything in a space and to the instance's system-level settings.",
        SPACE_VIEWER,
        &[
            EventRetentionView, EventView, PlatformHubView, SpaceView, SshKnownHostsView, TaskView,
            TeamView, TelemetryView, UserRoleView, UserView,
        ],
    ),
    role(
        "userroles-releasecreator",
        "Release creator",
        "Create releases and runbook snapshots.",
        &[
            EnvironmentView, FeedView, InsightsReportView, ProcessView, ProjectView, ReleaseCreate,
            ReleaseView, RunbookEdit, RunbookSnapshotCreate, RunbookView, TargetTagView,
        ],
        &[],
    ),
    role(
        "userroles-runbookconsumer",
        "Runbook consumer",
        "See and run runbooks.",
        RUNBOOK_CONSUMER,
        &[],
    ),
    role(
        "userroles-runbookproducer",
        "Runbook producer",
        "Write, edit and run runbooks.",
        RUNBOOK_PRODUCER,
        &[],
    ),
    role(
        "userroles-spacemanager",
        "Space manager",
        "Everything within the space the role is granted in.",
        SPACE_MANAGER,
        &[DeploymentFreezeAdminister, SshKnownHostsAdminister, SshKnownHostsView, TeamView, UserRoleView, UserView],
    ),
    role(
        "userroles-spaceviewer",
        "Space viewer",
        "Read-only access to everything within a space.",
        SPACE_VIEWER,
        PROJECT_SYSTEM,
    ),
    role(
        "userroles-systemadministrator",
        "System administrator",
        "Everything at the system level.",
        &[],
        SYSTEM_ADMINISTRATOR,
    ),
    role(
        "userroles-systemmanager",
        "System manager",
        "Everything at the system level except the functions reserved for system administrators.",
        &[],
        SYSTEM_MANAGER,
    ),
    role(
        "userroles-tenantmanager",
        "Tenant manager",
        "Manage tenants.",
        &[TenantCreate, TenantDelete, TenantEdit, TenantView],
        &[],
    ),
];
