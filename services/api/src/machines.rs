//! Infrastructure: deployment targets (`/machines`), workers (`/workers`), worker pools and
//! machine policies, and the server's certificate that agents pin
//! (`/api/certificates/certificate-global`).
//!
//! Targets and workers are Octopus `MachineResource`s that Cuttle agents reach over
//! `libs/agent-link`: listening agents (`TentaclePassive`, a worker dials the endpoint's `Uri`)
//! and polling agents (`TentacleActive`, `Uri` = `poll://<subscription>/`). Both are pinned by
//! the SHA-1 thumbprint the agent registered with.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathParams, Principal, SpaceScope};
use crate::links::{links, space_prefix};
use crate::resources::{self, Resource, load, resource_accessors, resource_assign};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cuttle_domain::SpaceId;
use cuttle_domain::ids::slugify;
use cuttle_store::documents::{self, ListQuery};
use cuttle_store::{ConnectionTrait, TransactionTrait};
use cuttle_wire::resources::{Environment, Machine, MachinePolicy, WorkerPool};
use cuttle_wire::{Collection, Links};
use serde::{Deserialize, Serialize};

/// Listening agent: a worker dials it.
pub const LISTENING: &str = "TentaclePassive";
/// Polling agent: it dials a worker.
pub const POLLING: &str = "TentacleActive";

/// Routes of this module under a space prefix.
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(
            &format!("{prefix}/machines"),
            get(list_machines::<Target>).post(create_machine::<Target>),
        )
        .route(&format!("{prefix}/machines/discover"), get(discover))
        .route(
            &format!("{prefix}/machines/{{id}}"),
            get(resources::get_one::<Target>)
                .put(update_machine::<Target>)
                .delete(delete_machine::<Target>),
        )
        .route(
            &format!("{prefix}/machines/all"),
            get(resources::all::<Target>),
        )
        .route(
            &format!("{prefix}/environments/{{id}}/machines"),
            get(environment_machines),
        )
        .route(
            &format!("{prefix}/workers"),
            get(list_machines::<WorkerMachine>).post(create_machine::<WorkerMachine>),
        )
        .route(&format!("{prefix}/workers/discover"), get(discover))
        .route(
            &format!("{prefix}/workers/all"),
            get(resources::all::<WorkerMachine>),
        )
        .route(
            &format!("{prefix}/workers/{{id}}"),
            get(resources::get_one::<WorkerMachine>)
                .put(update_machine::<WorkerMachine>)
                .delete(delete_machine::<WorkerMachine>),
        )
        .route(
            &format!("{prefix}/workerpools/{{id}}/workers"),
            get(pool_workers),
        )
        .merge(resources::crud::<WorkerPool>(prefix))
        .merge(resources::crud::<MachinePolicy>(prefix))
}

/// `/api/certificates/certificate-global`: the certificate every worker presents to agents.
pub fn global_routes() -> Router<AppState> {
    Router::new().route(
        "/api/certificates/certificate-global",
        get(global_certificate),
    )
}

/// The server certificate as Octopus's `CertificateResource` shows it (the parts agents use).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServerCertificate {
    id: &'static str,
    name: &'static str,
    thumbprint: String,
    signature_algorithm_name: &'static str,
}

async fn global_certificate(
    State(state): State<AppState>,
    _caller: Principal,
) -> Json<ServerCertificate> {
    Json(ServerCertificate {
        id: "certificate-global",
        name: "Cuttle Server",
        thumbprint: state.server_thumbprint.clone(),
        signature_algorithm_name: "ecdsa-with-SHA256",
    })
}

/// How long discovery waits for an agent's TLS handshake.
const DISCOVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET .../machines/discover?host=web-01&port=10933&type=TentaclePassive`: connects to the
/// listening agent there only far enough to read its certificate, and answers a new machine
/// with its endpoint filled in (`Uri`, `Thumbprint`), ready to be completed and posted.
async fn discover(scope: SpaceScope, params: Params) -> ApiResult<Json<Machine>> {
    let host = params
        .get("host")
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_field("host", "the host name or address of the agent is required")
        })?;
    if host.contains(|c: char| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '@')) {
        return Err(ApiError::invalid_field(
            "host",
            format!("'{host}' is not a host name or address"),
        ));
    }
    let port: u16 = match params.get("port").map(str::trim).filter(|p| !p.is_empty()) {
        None => 10933,
        Some(text) => text.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
            ApiError::invalid_field("port", format!("'{text}' is not a port number"))
        })?,
    };
    let style = params.get("type").unwrap_or("TentaclePassive");
    if !style.eq_ignore_ascii_case("TentaclePassive") {
        return Err(ApiError::invalid_field(
            "type",
            format!(
                "'{style}' cannot be discovered: discovery reads a listening agent's certificate (TentaclePassive); a polling agent registers itself"
            ),
        ));
    }
    // An IPv6 literal needs brackets in an address and a URI.
    let bracketed = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let address = format!("{bracketed}:{port}");
    let thumbprint = cuttle_agent_link::discover_thumbprint(&address, DISCOVER_TIMEOUT)
        .await
        .map_err(|err| {
            ApiError::bad_request(
                format!("No agent could be discovered at {address}: {err}."),
                vec![format!(
                    "host: nothing answered as an agent at {address} ({err})"
                )],
            )
        })?;
    let uri = format!("https://{bracketed}:{port}/");
    Ok(Json(Machine {
        name: host.to_owned(),
        space_id: scope.id.to_string(),
        thumbprint: thumbprint.to_string(),
        uri: uri.clone(),
        endpoint: cuttle_wire::resources::Endpoint {
            communication_style: "TentaclePassive".into(),
            uri,
            thumbprint: thumbprint.to_string(),
            ..Default::default()
        },
        ..Machine::default()
    }))
}

/// A deployment target, stored as kind `Machine`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Target(pub Machine);

/// A worker, stored as kind `Worker`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct WorkerMachine(pub Machine);

/// What differs between targets and workers.
pub trait MachineKind: Resource {
    /// The wrapped machine.
    fn machine(&self) -> &Machine;
    /// The wrapped machine, to change.
    fn machine_mut(&mut self) -> &mut Machine;
    /// True for workers.
    const IS_WORKER: bool;
}

macro_rules! machine_resource {
    ($type:ty, $kind:literal, $prefix:literal, $collection:literal, $noun:literal, $worker:literal) => {
        impl Resource for $type {
            const KIND: &'static str = $kind;
            const PREFIX: &'static str = $prefix;
            const COLLECTION: &'static str = $collection;
            const NOUN: &'static str = $noun;

            fn id(&self) -> &str {
                &self.0.id
            }
            fn name(&self) -> &str {
                &self.0.name
            }
            fn set_links(&mut self, links: Links) {
                self.0.links = links;
            }
            fn assign(&mut self, id: String, space: &SpaceId) {
                self.0.id = id;
                self.0.space_id = space.to_string();
            }
            fn links(&self, space: &SpaceId) -> Links {
                machine_links(&self.0, space, $collection)
            }
            fn prepare(&mut self) -> ApiResult<()> {
                prepare_machine(&mut self.0, $worker)
            }
        }

        impl MachineKind for $type {
            fn machine(&self) -> &Machine {
                &self.0
            }
            fn machine_mut(&mut self) -> &mut Machine {
                &mut self.0
            }
            const IS_WORKER: bool = $worker;
        }
    };
}

machine_resource!(
    Target,
    "Machine",
    "Machines",
    "machines",
    "deployment target",
    false
);
machine_resource!(
    WorkerMachine,
    "Worker",
    "Workers",
    "workers",
    "worker",
    true
);

fn machine_links(machine: &Machine, space: &SpaceId, collection: &str) -> Links {
    let base = format!(
        "{}/{collection}/{}",
        space_prefix(space.as_str()),
        machine.id
    );
    links([
        ("Self", base.clone()),
        ("Connection", format!("{base}/connection")),
        ("TasksTemplate", format!("{base}/tasks{{?skip,take,type}}")),
        (
            "Web",
            format!("/app#/{space}/infrastructure/{collection}/{}", machine.id),
        ),
    ])
}

/// Checks what can be checked without the database, and fills server-set fields.
fn prepare_machine(machine: &mut Machine, is_worker: bool) -> ApiResult<()> {
    machine.slug = slugify(&machine.name);
    let endpoint = &mut machine.endpoint;
    let style = endpoint.communication_style.trim().to_owned();
    let thumbprint = endpoint.thumbprint.trim().to_ascii_uppercase();
    match style.as_str() {
        LISTENING => {
            let uri: axum::http::Uri = endpoint.uri.trim().parse().map_err(|_| {
                ApiError::invalid_field(
                    "Endpoint.Uri",
                    format!(
                        "'{}' is not a URL; a listening agent's is https://host:10933/",
                        endpoint.uri
                    ),
                )
            })?;
            if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) {
                return Err(ApiError::invalid_field(
                    "Endpoint.Uri",
                    format!(
                        "'{}' must be https://host:port/ for a listening agent",
                        endpoint.uri
                    ),
                ));
            }
        }
        POLLING => {
            let subscription = endpoint
                .uri
                .trim()
                .strip_prefix("poll://")
                .map(|rest| rest.trim_end_matches('/'))
                .unwrap_or("");
            if subscription.is_empty()
                || !subscription
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(ApiError::invalid_field(
                    "Endpoint.Uri",
                    format!(
                        "'{}' must be poll://<subscription id>/ for a polling agent",
                        endpoint.uri
                    ),
                ));
            }
            endpoint.uri = format!("poll://{}/", subscription.to_ascii_lowercase());
        }
        "" => {
            return Err(ApiError::invalid_field(
                "Endpoint.CommunicationStyle",
                format!("is required: {LISTENING} (listening agent) or {POLLING} (polling agent)"),
            ));
        }
        other => {
            return Err(ApiError::invalid_field(
                "Endpoint.CommunicationStyle",
                format!(
                    "'{other}' is not available in this version of Cuttle; use {LISTENING} (listening agent) or {POLLING} (polling agent)"
                ),
            ));
        }
    }
    if thumbprint.len() != 40 || !thumbprint.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::invalid_field(
            "Endpoint.Thumbprint",
            "must be the agent certificate's SHA-1 thumbprint: 40 hexadecimal digits",
        ));
    }
    endpoint.communication_style = style;
    endpoint.thumbprint = thumbprint.clone();
    endpoint.uri = endpoint.uri.trim().to_owned();
    machine.thumbprint = thumbprint;
    machine.uri = endpoint.uri.clone();
    let mut roles: Vec<String> = Vec::new();
    for role in &machine.roles {
        let role = role.trim();
        if !role.is_empty() && !roles.iter().any(|r| r.eq_ignore_ascii_case(role)) {
            roles.push(role.to_owned());
        }
    }
    machine.roles = roles;
    if is_worker {
        machine.environment_ids.clear();
        machine.roles.clear();
        machine.tenant_ids.clear();
        machine.tenant_tags.clear();
    } else {
        machine.worker_pool_ids.clear();
        if machine.environment_ids.is_empty() {
            return Err(ApiError::invalid_field(
                "EnvironmentIds",
                "a deployment target needs at least one environment",
            ));
        }
        if machine.roles.is_empty() {
            return Err(ApiError::invalid_field(
                "Roles",
                "a deployment target needs at least one target tag (role)",
            ));
        }
    }
    if machine.tenanted_deployment_participation.is_empty() {
        machine.tenanted_deployment_participation = "Untenanted".into();
    }
    if machine.health_status.is_empty() {
        machine.health_status = "Unknown".into();
        machine.status = "Unknown".into();
        machine.status_summary = "This machine has not been health checked yet.".into();
    }
    Ok(())
}

/// Checks how a deployment target takes part in tenanted deployments: `Untenanted` targets
/// name no tenants; the tenants and tags others name exist (tags kept by canonical name).
async fn check_tenancy(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    machine: &mut Machine,
) -> ApiResult<()> {
    let participation = machine.tenanted_deployment_participation.as_str();
    if !["Untenanted", "TenantedOrUntenanted", "Tenanted"].contains(&participation) {
        return Err(ApiError::invalid_field(
            "TenantedDeploymentParticipation",
            "must be Untenanted, TenantedOrUntenanted or Tenanted",
        ));
    }
    if participation == "Untenanted"
        && (!machine.tenant_ids.is_empty() || !machine.tenant_tags.is_empty())
    {
        let field = if machine.tenant_ids.is_empty() {
            "TenantTags"
        } else {
            "TenantIds"
        };
        return Err(ApiError::invalid_field(
            field,
            "an Untenanted deployment target takes no tenants; set TenantedDeploymentParticipation to Tenanted or TenantedOrUntenanted",
        ));
    }
    let mut tenants: Vec<String> = Vec::new();
    for (index, id) in machine.tenant_ids.iter().enumerate() {
        if documents::get(conn, space, "Tenant", id).await?.is_none() {
            return Err(ApiError::invalid_field(
                &format!("TenantIds[{index}]"),
                format!("tenant '{id}' was not found in this space"),
            ));
        }
        if !tenants.contains(id) {
            tenants.push(id.clone());
        }
    }
    machine.tenant_ids = tenants;
    let known = crate::tenants::known_tags(conn, space).await?;
    machine.tenant_tags =
        crate::tenants::canonical_tags(&known, &machine.tenant_tags, "TenantTags")?;
    Ok(())
}

/// Checks the references a machine makes, and fills the default pool and policy.
async fn resolve_references(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    machine: &mut Machine,
    is_worker: bool,
) -> ApiResult<()> {
    for (index, id) in machine.environment_ids.iter().enumerate() {
        if documents::get(conn, space, Environment::KIND, id)
            .await?
            .is_none()
        {
            return Err(ApiError::invalid_field(
                &format!("EnvironmentIds[{index}]"),
                format!("environment '{id}' was not found in this space"),
            ));
        }
    }
    if !is_worker {
        check_tenancy(conn, space, machine).await?;
    }
    if is_worker {
        if machine.worker_pool_ids.is_empty() {
            machine.worker_pool_ids = vec![default_of::<WorkerPool>(conn, space).await?];
        }
        for (index, id) in machine.worker_pool_ids.iter().enumerate() {
            if documents::get(conn, space, WorkerPool::KIND, id)
                .await?
                .is_none()
            {
                return Err(ApiError::invalid_field(
                    &format!("WorkerPoolIds[{index}]"),
                    format!("worker pool '{id}' was not found in this space"),
                ));
            }
        }
    }
    if machine.machine_policy_id.trim().is_empty() {
        machine.machine_policy_id = default_of::<MachinePolicy>(conn, space).await?;
    } else if documents::get(conn, space, MachinePolicy::KIND, &machine.machine_policy_id)
        .await?
        .is_none()
    {
        return Err(ApiError::invalid_field(
            "MachinePolicyId",
            format!(
                "machine policy '{}' was not found in this space",
                machine.machine_policy_id
            ),
        ));
    }
    Ok(())
}

/// Resources with a default per space (worker pools, machine policies).
trait HasDefault: Resource {
    fn is_default(&self) -> bool;
}

impl HasDefault for WorkerPool {
    fn is_default(&self) -> bool {
        self.is_default
    }
}

impl HasDefault for MachinePolicy {
    fn is_default(&self) -> bool {
        self.is_default
    }
}

async fn default_of<T: HasDefault>(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
) -> ApiResult<String> {
    let (docs, _) = documents::list(conn, space, T::KIND, &ListQuery::everything()).await?;
    for doc in &docs {
        let value: T = documents::decode(doc)?;
        if value.is_default() {
            return Ok(value.id().to_owned());
        }
    }
    Err(ApiError::internal(format!(
        "space {space} has no default {}",
        T::NOUN
    )))
}

async fn create_machine<T: MachineKind>(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    JsonBody(mut value): JsonBody<T>,
) -> ApiResult<(StatusCode, Json<T>)> {
    let txn = state.store.conn().begin().await?;
    value.prepare()?;
    resolve_references(&txn, &scope.id, value.machine_mut(), T::IS_WORKER).await?;
    let create = cuttle_authz::Permission::MachineCreate;
    require_everywhere::<T>(&principal, &scope.id, value.machine(), create)?;
    let created = resources::insert(&txn, &scope.id, value).await?;
    txn.commit().await?;
    state.agent_trust.request();
    Ok((StatusCode::CREATED, Json(created)))
}

async fn delete_machine<T: MachineKind>(
    state: State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
) -> ApiResult<StatusCode> {
    let (_, stored) = load::<T>(state.store.conn(), &scope.id, path.get("id")?).await?;
    let delete = cuttle_authz::Permission::MachineDelete;
    check_target::<T>(&principal, &scope.id, stored.machine(), delete)?;
    let trust = state.agent_trust.clone();
    let bus = state.bus.clone();
    let endpoint = stored.machine().endpoint.clone();
    let status = resources::delete::<T>(state, scope, path).await?;
    // Workers learn which polling agents they may accept from this list, and drop the
    // connection of one that is no longer on it.
    trust.request();
    // A polling agent's queue goes with it: nothing will read the jobs left there.
    if endpoint.communication_style == POLLING
        && let Some(queue) = cuttle_contracts::queues::polling_agent(&endpoint.uri)
        && let Err(err) = bus
            .delete_queue(&cuttle_bus::QueueSpec::new(queue.clone()))
            .await
    {
        tracing::warn!(queue = %queue, error = %err, "could not delete a deleted polling agent's queue; it is left on the broker");
    }
    Ok(status)
}

async fn update_machine<T: MachineKind>(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    JsonBody(mut value): JsonBody<T>,
) -> ApiResult<Json<T>> {
    let id = path.get("id")?;
    let txn = state.store.conn().begin().await?;
    let (_, stored) = load::<T>(&txn, &scope.id, id).await?;
    let edit = cuttle_authz::Permission::MachineEdit;
    check_target::<T>(&principal, &scope.id, stored.machine(), edit)?;
    // Health is the server's to say, not the client's.
    let machine = value.machine_mut();
    machine.health_status = stored.machine().health_status.clone();
    machine.status = stored.machine().status.clone();
    machine.status_summary = stored.machine().status_summary.clone();
    machine.operating_system = stored.machine().operating_system.clone();
    machine.shell_name = stored.machine().shell_name.clone();
    machine.shell_version = stored.machine().shell_version.clone();
    machine.architecture = stored.machine().architecture.clone();
    machine.endpoint.tentacle_version_details =
        stored.machine().endpoint.tentacle_version_details.clone();
    value.prepare()?;
    resolve_references(&txn, &scope.id, value.machine_mut(), T::IS_WORKER).await?;
    // Moving a target into an environment needs the permission there too.
    require_everywhere::<T>(&principal, &scope.id, value.machine(), edit)?;
    let updated = resources::replace(&txn, &scope.id, id, value).await?;
    txn.commit().await?;
    state.agent_trust.request();
    Ok(Json(updated))
}

/// The filters of Octopus's machine and worker lists, each a comma-separated any-of list.
struct MachineFilter {
    ids: Vec<String>,
    name: Option<String>,
    partial_name: Option<String>,
    roles: Vec<String>,
    environment_ids: Vec<String>,
    worker_pool_ids: Vec<String>,
    health_statuses: Vec<String>,
    comm_styles: Vec<String>,
    tenant_ids: Vec<String>,
    tenant_tags: Vec<String>,
    thumbprint: Option<String>,
    is_disabled: Option<bool>,
}

impl MachineFilter {
    fn from_params(params: &Params) -> ApiResult<MachineFilter> {
        Ok(MachineFilter {
            ids: params.list("ids"),
            name: params.get("name").map(str::to_owned),
            partial_name: params.get("partialName").map(str::to_owned),
            roles: params.list("roles"),
            environment_ids: params.list("environmentIds"),
            worker_pool_ids: params.list("workerPoolIds"),
            health_statuses: params.list("healthStatuses"),
            comm_styles: params.list("commStyles"),
            tenant_ids: params.list("tenantIds"),
            tenant_tags: params.list("tenantTags"),
            thumbprint: params.get("thumbprint").map(str::to_owned),
            is_disabled: params.flag("isDisabled")?,
        })
    }

    fn matches(&self, machine: &Machine) -> bool {
        let any_of = |wanted: &[String], have: &[String]| {
            wanted.is_empty()
                || wanted
                    .iter()
                    .any(|w| have.iter().any(|h| h.eq_ignore_ascii_case(w)))
        };
        let one_of = |wanted: &[String], have: &str| {
            wanted.is_empty() || wanted.iter().any(|w| w.eq_ignore_ascii_case(have))
        };
        one_of(&self.ids, &machine.id)
            && self
                .name
                .as_deref()
                .is_none_or(|n| n.eq_ignore_ascii_case(&machine.name))
            && self
                .partial_name
                .as_deref()
                .is_none_or(|p| machine.name.to_lowercase().contains(&p.to_lowercase()))
            && any_of(&self.roles, &machine.roles)
            && any_of(&self.environment_ids, &machine.environment_ids)
            && any_of(&self.worker_pool_ids, &machine.worker_pool_ids)
            && one_of(&self.health_statuses, &machine.health_status)
            && one_of(&self.comm_styles, &machine.endpoint.communication_style)
            && any_of(&self.tenant_ids, &machine.tenant_ids)
            && any_of(&self.tenant_tags, &machine.tenant_tags)
            && self
                .thumbprint
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case(&machine.thumbprint))
            && self.is_disabled.is_none_or(|d| d == machine.is_disabled)
    }
}

/// How many of a target's environments a permission must be held in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    /// Seeing a target needs one of them.
    Any,
    /// Creating, changing or deleting it needs all of them.
    Every,
}

/// Whether the principal holds `permission` for a deployment target in `environments` (as
/// `needs` says; a target in none needs an unrestricted grant). Octopus restricts the machine
/// permissions by environment, so a team scoped to Test sees and manages Test's targets only.
pub(crate) fn allowed_in(
    principal: &Principal,
    space: &SpaceId,
    permission: cuttle_authz::Permission,
    environments: &[String],
    needs: Needs,
) -> bool {
    let on = |environment: Option<&str>| {
        principal.grants.allows(
            permission,
            &cuttle_authz::Target {
                space: Some(space.as_str()),
                environment,
                ..Default::default()
            },
        )
    };
    match needs {
        _ if environments.is_empty() => on(None),
        Needs::Any => environments.iter().any(|e| on(Some(e))),
        Needs::Every => environments.iter().all(|e| on(Some(e))),
    }
}

/// The `EnvironmentIds` of a stored machine document (read alone, not the whole machine).
pub(crate) fn environments_of(data: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Environments {
        #[serde(rename = "EnvironmentIds", default)]
        environment_ids: Vec<String>,
    }
    serde_json::from_str::<Environments>(data)
        .map(|found| found.environment_ids)
        .unwrap_or_default()
}

/// For deployment targets: 404 unless the principal sees `machine`, 403 unless it may act on
/// it with `permission`. Workers are not restricted by environment.
fn check_target<T: MachineKind>(
    principal: &Principal,
    space: &SpaceId,
    machine: &Machine,
    permission: cuttle_authz::Permission,
) -> ApiResult<()> {
    if T::IS_WORKER {
        return Ok(());
    }
    let environments = &machine.environment_ids;
    let view = cuttle_authz::Permission::MachineView;
    if !allowed_in(principal, space, view, environments, Needs::Any) {
        return Err(ApiError::not_found(format!("{} '{}'", T::NOUN, machine.id)));
    }
    require_everywhere::<T>(principal, space, machine, permission)
}

/// For deployment targets: 403 unless the principal holds `permission` in every environment of
/// `machine`.
fn require_everywhere<T: MachineKind>(
    principal: &Principal,
    space: &SpaceId,
    machine: &Machine,
    permission: cuttle_authz::Permission,
) -> ApiResult<()> {
    let environments = &machine.environment_ids;
    if T::IS_WORKER || allowed_in(principal, space, permission, environments, Needs::Every) {
        Ok(())
    } else {
        Err(ApiError::forbidden(permission))
    }
}

/// A filtered page of targets or workers (filtered in memory: a space has few machines
/// compared with what one query returns).
async fn machine_page<T: MachineKind>(
    conn: &impl ConnectionTrait,
    scope: &SpaceScope,
    principal: &Principal,
    params: &Params,
    filter: MachineFilter,
    path: String,
) -> ApiResult<Collection<T>> {
    let (skip, take) = params.paging()?;
    let (docs, _) = documents::list(conn, &scope.id, T::KIND, &ListQuery::everything()).await?;
    let mut matching = Vec::new();
    for doc in &docs {
        let value: T = resources::present(doc, &scope.id)?;
        let machine = value.machine();
        let seen = T::IS_WORKER
            || allowed_in(
                principal,
                &scope.id,
                cuttle_authz::Permission::MachineView,
                &machine.environment_ids,
                Needs::Any,
            );
        if seen && filter.matches(machine) {
            matching.push(value);
        }
    }
    let total = matching.len() as u64;
    let items: Vec<T> = matching
        .into_iter()
        .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        .take(usize::try_from(take).unwrap_or(usize::MAX))
        .collect();
    let template = format!(
        "{path}{{/id}}{{?skip,take,name,ids,partialName,roles,isDisabled,healthStatuses,commStyles,tenantIds,tenantTags,environmentIds,workerPoolIds,thumbprint}}"
    );
    Ok(Collection::page(
        T::KIND,
        items,
        total,
        skip,
        take,
        &path,
        &template,
    ))
}

async fn list_machines<T: MachineKind>(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Collection<T>>> {
    let filter = MachineFilter::from_params(&params)?;
    let path = format!("{}/{}", space_prefix(scope.id.as_str()), T::COLLECTION);
    Ok(Json(
        machine_page(
            state.store.conn(),
            &scope,
            &principal,
            &params,
            filter,
            path,
        )
        .await?,
    ))
}

/// `GET /environments/{id}/machines`: the environment's targets.
async fn environment_machines(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    params: Params,
) -> ApiResult<Json<Collection<Target>>> {
    let id = path.get("id")?;
    load::<Environment>(state.store.conn(), &scope.id, id).await?;
    let view = cuttle_authz::Permission::EnvironmentView;
    if !allowed_in(&principal, &scope.id, view, &[id.to_owned()], Needs::Any) {
        return Err(ApiError::not_found(format!("environment '{id}'")));
    }
    let mut filter = MachineFilter::from_params(&params)?;
    filter.environment_ids = vec![id.to_owned()];
    let route = format!(
        "{}/environments/{id}/machines",
        space_prefix(scope.id.as_str())
    );
    Ok(Json(
        machine_page(
            state.store.conn(),
            &scope,
            &principal,
            &params,
            filter,
            route,
        )
        .await?,
    ))
}

/// `GET /workerpools/{id}/workers`: the pool's workers.
async fn pool_workers(
    State(state): State<AppState>,
    scope: SpaceScope,
    principal: Principal,
    path: PathParams,
    params: Params,
) -> ApiResult<Json<Collection<WorkerMachine>>> {
    let id = path.get("id")?;
    load::<WorkerPool>(state.store.conn(), &scope.id, id).await?;
    let mut filter = MachineFilter::from_params(&params)?;
    filter.worker_pool_ids = vec![id.to_owned()];
    let route = format!(
        "{}/workerpools/{id}/workers",
        space_prefix(scope.id.as_str())
    );
    Ok(Json(
        machine_page(
            state.store.conn(),
            &scope,
            &principal,
            &params,
            filter,
            route,
        )
        .await?,
    ))
}

impl Resource for WorkerPool {
    const KIND: &'static str = "WorkerPool";
    const PREFIX: &'static str = "WorkerPools";
    const COLLECTION: &'static str = "workerpools";
    const NOUN: &'static str = "worker pool";

    resource_accessors!();

    resource_assign!();
    fn links(&self, space: &SpaceId) -> Links {
        let base = format!("{}/workerpools/{}", space_prefix(space.as_str()), self.id);
        links([
            ("Self", base.clone()),
            ("Workers", format!("{base}/workers{{?skip,take}}")),
        ])
    }
    fn prepare(&mut self) -> ApiResult<()> {
        self.slug = slugify(&self.name);
        match self.worker_pool_type.as_str() {
            "" | "StaticWorkerPool" => self.worker_pool_type = "StaticWorkerPool".into(),
            other => {
                return Err(ApiError::invalid_field(
                    "WorkerPoolType",
                    format!("'{other}' is not available; use StaticWorkerPool"),
                ));
            }
        }
        self.can_add_workers = true;
        Ok(())
    }
}

impl Resource for MachinePolicy {
    const KIND: &'static str = "MachinePolicy";
    const PREFIX: &'static str = "MachinePolicies";
    const COLLECTION: &'static str = "machinepolicies";
    const NOUN: &'static str = "machine policy";

    resource_accessors!();

    resource_assign!();
    fn links(&self, space: &SpaceId) -> Links {
        let base = format!(
            "{}/machinepolicies/{}",
            space_prefix(space.as_str()),
            self.id
        );
        links([("Self", base)])
    }
    fn prepare(&mut self) -> ApiResult<()> {
        let check = &mut self.machine_health_check_policy;
        if check.health_check_interval.trim().is_empty() {
            check.health_check_interval = "01:00:00".into();
        }
        cuttle_domain::time_span::parse_seconds(&check.health_check_interval).ok_or_else(|| {
            ApiError::invalid_field(
                "MachineHealthCheckPolicy.HealthCheckInterval",
                format!(
                    "'{}' is not a time span like 01:00:00 (hh:mm:ss) or 1.00:00:00",
                    check.health_check_interval
                ),
            )
        })?;
        match check.health_check_type.as_str() {
            "" => check.health_check_type = "RunScript".into(),
            "RunScript" | "OnlyConnectivity" => {}
            other => {
                return Err(ApiError::invalid_field(
                    "MachineHealthCheckPolicy.HealthCheckType",
                    format!("'{other}' is not RunScript or OnlyConnectivity"),
                ));
            }
        }
        if self.connection_connect_timeout.is_empty() {
            self.connection_connect_timeout = "00:01:00".into();
        }
        if self.polling_request_queue_timeout.is_empty() {
            self.polling_request_queue_timeout = "00:02:00".into();
        }
        Ok(())
    }
}

/// Creates a space's default worker pool and machine policy.
pub async fn create_defaults(conn: &impl ConnectionTrait, space: &SpaceId) -> ApiResult<()> {
    resources::insert(
        conn,
        space,
        WorkerPool {
            name: "Default Worker Pool".into(),
            is_default: true,
            description: "Workers of this pool run steps that run on a worker.".into(),
            ..WorkerPool::default()
        },
    )
    .await?;
    resources::insert(
        conn,
        space,
        MachinePolicy {
            name: "Default Machine Policy".into(),
            is_default: true,
            description: "The machine policy that new machines get.".into(),
            ..MachinePolicy::default()
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listening(uri: &str, thumbprint: &str) -> Machine {
        Machine {
            name: "web-01".into(),
            environment_ids: vec!["Environments-1".into()],
            roles: vec![" web ".into(), "WEB".into(), "db".into()],
            endpoint: cuttle_wire::resources::Endpoint {
                communication_style: LISTENING.into(),
                uri: uri.into(),
                thumbprint: thumbprint.into(),
                ..Default::default()
            },
            ..Machine::default()
        }
    }

    #[test]
    fn a_listening_target_needs_an_https_uri_and_a_thumbprint() {
        let thumbprint = "ab".repeat(20);
        let mut good = listening("https://10.0.0.5:10933/", &thumbprint);
        prepare_machine(&mut good, false).unwrap();
        assert_eq!(good.thumbprint, "AB".repeat(20));
        assert_eq!(good.roles, ["web", "db"]);
        assert_eq!(good.health_status, "Unknown");
        for (uri, thumb, field) in [
            (
                "http://10.0.0.5:10933/",
                thumbprint.as_str(),
                "Endpoint.Uri",
            ),
            ("nonsense", thumbprint.as_str(), "Endpoint.Uri"),
            ("https://10.0.0.5:10933/", "1234", "Endpoint.Thumbprint"),
        ] {
            let err = prepare_machine(&mut listening(uri, thumb), false).unwrap_err();
            assert!(format!("{err:?}").contains(field), "{uri} {thumb}: {err:?}");
        }
    }

    #[test]
    fn a_polling_uri_is_normalised_and_other_styles_are_refused() {
        let mut polling = listening("poll://ABCdef123/", &"0".repeat(40));
        polling.endpoint.communication_style = POLLING.into();
        prepare_machine(&mut polling, false).unwrap();
        assert_eq!(polling.uri, "poll://abcdef123/");
        let mut ssh = listening("ssh://x", &"0".repeat(40));
        ssh.endpoint.communication_style = "Ssh".into();
        let err = prepare_machine(&mut ssh, false).unwrap_err();
        assert!(format!("{err:?}").contains("Endpoint.CommunicationStyle"));
    }

    #[test]
    fn a_target_needs_an_environment_and_a_role_but_a_worker_needs_neither() {
        let mut no_roles = listening("https://h:1/", &"0".repeat(40));
        no_roles.roles.clear();
        assert!(format!("{:?}", prepare_machine(&mut no_roles.clone(), false)).contains("Roles"));
        no_roles.environment_ids.clear();
        prepare_machine(&mut no_roles, true).unwrap();
    }
}
