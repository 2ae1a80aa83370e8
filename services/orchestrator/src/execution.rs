//! The task state machine. Every function here runs one transaction that starts by locking the
//! task's row, so replicas never advance the same task twice.

use crate::Orchestrator;
use crate::plan::{Plan, PlanInputs, PlannedJob, ResolvedPackages, job_target, plan};
use anyhow::Context;
use chrono::Utc;
use cuttle_contracts::{
    CancelTask, JobOutcome, JobPackage, StepJob, WorkerEvent, cancel_marker_key, queues,
};
use cuttle_domain::package::PackageVersion;
use cuttle_domain::{LogCategory, SpaceId, TaskState};
use cuttle_store::tasks::{self, Job, NewLogLine, Task, job_status};
use cuttle_store::{ConnectionTrait, TransactionTrait};
use cuttle_store::{documents, packages};
use cuttle_wire::resources::{
    Deployment, DeploymentProcess, LibraryVariableSet, Machine, Project, Release, Space,
    StoredTenantVariables, Tenant, Variable, VariableSet, VariableTemplate,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// A log line for the task (`node` = task id) or one of its jobs (`node` = job id).
pub fn line(node: &str, category: LogCategory, message: impl Into<String>) -> NewLogLine {
    NewLogLine {
        node_id: node.to_owned(),
        source_seq: None,
        occurred_at: Utc::now(),
        category,
        message: message.into(),
    }
}

/// Locates the package versions a release pinned in the built-in feed. A version that has left
/// the feed is recorded as the sentence to fail with, so only steps that still run need it.
async fn resolve_packages(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    process: &DeploymentProcess,
    release: &Release,
) -> Result<ResolvedPackages, String> {
    let mut resolved = ResolvedPackages::new();
    for selected in &release.selected_packages {
        let Some(reference) =
            process.package_reference(&selected.action_name, &selected.package_reference_name)
        else {
            continue;
        };
        // A reference naming its package with a variable took the id it evaluated to when
        // the release was created.
        let package_id = selected
            .package_id
            .as_deref()
            .unwrap_or(&reference.package_id);
        let version = PackageVersion::parse(&selected.version).map_err(|err| {
            format!(
                "The release selected package '{package_id}' version '{}': {err}",
                selected.version
            )
        })?;
        let located = match packages::find(
            conn,
            space,
            &package_id.to_ascii_lowercase(),
            &version.normalized(),
        )
        .await
        {
            Ok(Some(row)) => Ok(JobPackage {
                reference_name: selected.package_reference_name.clone(),
                package_id: row.package_id,
                version: row.version,
                extension: row.extension,
                sha256: row.sha256,
                size_bytes: u64::try_from(row.size_bytes).unwrap_or(0),
                blob_key: row.blob_key,
                extract: true,
            }),
            Ok(None) => Err(format!(
                "package '{package_id}' version {} is no longer in the built-in feed.",
                selected.version
            )),
            Err(err) => return Err(format!("The built-in feed could not be read: {err}")),
        };
        resolved.insert(
            (
                selected.action_name.clone(),
                selected.package_reference_name.clone(),
            ),
            located,
        );
    }
    Ok(resolved)
}

/// The name of health-check tasks.
pub const HEALTH_TASK: &str = "Health";

/// A `Health` task's jobs: one check per enabled target or worker agent it names
/// (`MachineIds`), of its environment (`EnvironmentId`, targets only), of its worker pool
/// (`WorkerPoolId`, workers only), or of the whole space.
async fn health_plan(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    task: &Task,
    parallelism: u32,
) -> anyhow::Result<Plan> {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "PascalCase", default)]
    struct Arguments {
        environment_id: Option<String>,
        worker_pool_id: Option<String>,
        machine_ids: Vec<String>,
    }
    let arguments: Arguments = serde_json::from_str(&task.arguments).unwrap_or_default();
    let named = |machine: &Machine| {
        arguments.machine_ids.is_empty() || arguments.machine_ids.contains(&machine.id)
    };
    let mut machines = Vec::new();
    if arguments.worker_pool_id.is_none() {
        machines.extend(
            enabled_targets(conn, space, |machine| {
                named(machine)
                    && arguments
                        .environment_id
                        .as_ref()
                        .is_none_or(|env| machine.environment_ids.contains(env))
            })
            .await?,
        );
    }
    if arguments.environment_id.is_none() {
        machines.extend(
            enabled_machines(conn, space, WORKER_KIND, |worker| {
                named(worker)
                    && arguments
                        .worker_pool_id
                        .as_ref()
                        .is_none_or(|pool| worker.worker_pool_ids.contains(pool))
            })
            .await?,
        );
    }
    let mut jobs = Vec::new();
    for machine in machines {
        jobs.push(PlannedJob {
            step_number: 1,
            step_name: "Check deployment target health".into(),
            action_name: "Check health".into(),
            // Every machine is checked, whatever the others' health.
            condition: "Always".into(),
            work: cuttle_contracts::JobWork::HealthCheck,
            target: Some(job_target(&machine)),
            variables: Vec::new(),
            // Side by side, but bounded: a check waits on the network, not on this machine.
            parallel_window: Some(parallelism.max(1)),
        });
    }
    Ok(Plan {
        jobs,
        notes: Vec::new(),
    })
}

/// Records a health check's result on its machine: Healthy with what the agent runs on, or
/// Unavailable with the reason.
async fn record_health(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    job: &Job,
    healthy: bool,
    reason: Option<&str>,
    outputs: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let message: StepJob = serde_json::from_str(&job.payload)?;
    let Some(target) = message.target else {
        return Ok(());
    };
    let kind = machine_kind(&target.machine_id);
    let Some(doc) = documents::get(conn, space, kind, &target.machine_id).await? else {
        // Deleted while being checked.
        return Ok(());
    };
    let mut machine: Machine = documents::decode(&doc)?;
    if healthy {
        machine.health_status = "Healthy".into();
        machine.status = "Online".into();
        machine.status_summary = "This machine is healthy.".into();
        let get = |key: &str| outputs.get(key).cloned().unwrap_or_default();
        machine.operating_system = get("OperatingSystem");
        machine.architecture = get("Architecture");
        machine.shell_name = get("ShellName");
        // Octopus shows a Tentacle's version under the endpoint.
        machine.endpoint.tentacle_version_details = Some(serde_json::json!({
            "Version": get("AgentVersion"),
            "UpgradeLocked": false,
            "UpgradeSuggested": false,
            "UpgradeRequired": false,
        }));
    } else {
        machine.health_status = "Unavailable".into();
        machine.status = "Offline".into();
        machine.status_summary = reason.unwrap_or("The machine did not answer.").to_owned();
    }
    documents::replace(
        conn,
        space,
        kind,
        &doc.id,
        documents::Replacement {
            name: doc.name.clone(),
            unique_key: doc.unique_key.clone(),
            sort_order: doc.sort_order,
            data: documents::encode(&machine),
            expected_version: None,
        },
        "",
    )
    .await?;
    Ok(())
}

/// Document kind of deployment targets (`Machines-N`).
const TARGET_KIND: &str = "Machine";
/// Document kind of workers (`Workers-N`).
const WORKER_KIND: &str = "Worker";

/// The document kind of a machine id: `Workers-N` are workers, the rest deployment targets.
fn machine_kind(id: &str) -> &'static str {
    if id.starts_with("Workers-") {
        WORKER_KIND
    } else {
        TARGET_KIND
    }
}

/// A tenant's values for the variable templates of the deployment's project and of the library
/// variable sets it includes, read now (tenant variables are not frozen in releases, as in
/// Octopus), as variables scoped to the tenant.
async fn tenant_variables(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    tenant: &Tenant,
    deployment: &Deployment,
) -> anyhow::Result<Vec<Variable>> {
    let stored: StoredTenantVariables = match documents::get(
        conn,
        space,
        "TenantVariables",
        &format!("tenantvariables-{}", tenant.id),
    )
    .await?
    {
        Some(doc) => documents::decode(&doc)?,
        None => StoredTenantVariables::default(),
    };
    let Some(doc) = documents::get(conn, space, "Project", &deployment.project_id).await? else {
        return Ok(Vec::new());
    };
    let project: Project = documents::decode(&doc)?;
    let mut libraries: Vec<LibraryVariableSet> = Vec::new();
    for id in &project.included_library_variable_set_ids {
        if let Some(doc) = documents::get(conn, space, "LibraryVariableSet", id).await? {
            libraries.push(documents::decode(&doc)?);
        }
    }
    let library_templates: Vec<(&str, &[VariableTemplate])> = libraries
        .iter()
        .map(|l| (l.id.as_str(), l.templates.as_slice()))
        .collect();
    Ok(cuttle_variables::tenant_variables(
        &tenant.id,
        (&project.id, &project.templates),
        &deployment.environment_id,
        &library_templates,
        &stored,
    ))
}

/// Whether a deployment target takes part in a deployment for `tenant` (`None`: untenanted), by
/// its `TenantedDeploymentParticipation`: an untenanted deployment uses `Untenanted` and
/// `TenantedOrUntenanted` targets; a tenanted one uses `Tenanted` and `TenantedOrUntenanted`
/// targets that name the tenant or carry tenant tags the tenant matches.
pub(crate) fn takes_part(machine: &Machine, tenant: Option<&Tenant>) -> bool {
    let participation = machine.tenanted_deployment_participation.as_str();
    match tenant {
        None => participation != "Tenanted",
        Some(tenant) => {
            matches!(participation, "Tenanted" | "TenantedOrUntenanted")
                && (machine.tenant_ids.contains(&tenant.id)
                    || (!machine.tenant_tags.is_empty()
                        && cuttle_domain::tenant_tags::matches(
                            &tenant.tenant_tags,
                            &machine.tenant_tags,
                        )))
        }
    }
}

/// The enabled deployment targets of the space that `keep` accepts.
pub(crate) async fn enabled_targets(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    keep: impl Fn(&Machine) -> bool,
) -> anyhow::Result<Vec<Machine>> {
    enabled_machines(conn, space, TARGET_KIND, keep).await
}

/// The enabled machines of one kind (targets or workers) that `keep` accepts.
pub(crate) async fn enabled_machines(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    kind: &str,
    keep: impl Fn(&Machine) -> bool,
) -> anyhow::Result<Vec<Machine>> {
    let (docs, _) = documents::list(conn, space, kind, &documents::ListQuery::everything()).await?;
    let mut targets = Vec::new();
    for doc in &docs {
        let machine: Machine = documents::decode(doc)?;
        if !machine.is_disabled && keep(&machine) {
            targets.push(machine);
        }
    }
    Ok(targets)
}

/// What to do once the transaction has committed.
#[derive(Default)]
#[must_use]
pub struct AfterCommit {
    wake_relay: bool,
    cancel_broadcast: Option<String>,
    cancel_job: Option<(String, String)>,
}

impl Orchestrator {
    async fn after_commit(&self, after: AfterCommit) {
        if after.wake_relay {
            self.relay.wake();
        }
        if let Some(task_id) = after.cancel_broadcast {
            self.broadcast_cancel(&task_id).await;
        }
        if let Some((task_id, job_id)) = after.cancel_job {
            self.publish_cancel(CancelTask {
                task_id,
                job_id: Some(job_id),
            })
            .await;
        }
    }

    /// Tells every worker to stop the task's jobs. Best effort: workers also poll the cancel
    /// marker while they run, and the reaper ends jobs whose worker is gone.
    pub async fn broadcast_cancel(&self, task_id: &str) {
        if let Err(err) = self
            .cache
            .set(
                &cancel_marker_key(task_id),
                b"1",
                Some(Duration::from_secs(86_400)),
            )
            .await
        {
            tracing::warn!(task.id = %task_id, error = %err, "could not set the cancel marker");
        }
        self.publish_cancel(CancelTask {
            task_id: task_id.to_owned(),
            job_id: None,
        })
        .await;
    }

    async fn publish_cancel(&self, cancel: CancelTask) {
        let message = match cuttle_bus::Message::json(CancelTask::KIND, &cancel) {
            Ok(message) => message,
            Err(err) => {
                tracing::error!(task.id = %cancel.task_id, error = %err, "could not encode a cancel broadcast");
                return;
            }
        };
        if let Err(err) = self
            .bus
            .broadcast(queues::WORKER_CANCEL_TOPIC, message)
            .await
        {
            tracing::warn!(task.id = %cancel.task_id, error = %err, "cancel broadcast failed; workers will see a task's cancel marker at their next heartbeat");
        }
    }

    /// Handles `TaskQueued`: plans the deployment and dispatches its first job.
    pub async fn start_task(&self, task_id: &str) -> anyhow::Result<()> {
        let txn = self.store.conn().begin().await?;
        let Some(mut task) = tasks::lock_task(&txn, task_id).await? else {
            // Deleted with its space: nothing to run.
            return Ok(txn.commit().await?);
        };
        if task.state != TaskState::Queued.as_str() {
            // A redelivery, or the reaper's nudge for a task another replica already started.
            return Ok(txn.commit().await?);
        }
        let space_id = SpaceId::parse(&task.space_id).context("task has an invalid space id")?;
        let space: Option<Space> =
            match documents::get(&txn, &space_id, "Space", space_id.as_str()).await? {
                Some(doc) => Some(documents::decode(&doc)?),
                None => None,
            };
        if space.as_ref().is_some_and(|s| s.task_queue_stopped) {
            // The reaper re-queues it once the space's queue runs again.
            return Ok(txn.commit().await?);
        }
        if let Some(blocker) = self.deployment_mutex_holder(&txn, &space_id, &task).await? {
            // Octopus's deployment mutex: one deployment of a project to an environment at a
            // time, in queue order. The finishing task nudges the next one (see `finalize`).
            let waiting = format!(
                "Waiting for {blocker} to finish: deployments of a project to one environment run one at a time."
            );
            let logged = tasks::read_log(&txn, &task.id)
                .await?
                .iter()
                .any(|l| l.message == waiting);
            if !logged {
                tasks::append_log(
                    &txn,
                    &task.id,
                    vec![line(&task.id, LogCategory::Info, waiting)],
                )
                .await?;
            }
            return Ok(txn.commit().await?);
        }
        let now = Utc::now();
        task.state = TaskState::Executing.as_str().into();
        task.start_time = Some(now);
        task.server_node = Some(self.node_name.clone());
        let latency = (now - task.queue_time).num_microseconds().unwrap_or(0) as f64 / 1e6;
        cuttle_telemetry::metrics()
            .dispatch_latency
            .observe(latency.max(0.0));
        let mut log = vec![line(
            &task.id,
            LogCategory::Info,
            format!("{} started on {}", task.description, self.node_name),
        )];
        let after = match self.plan_task(&txn, &space_id, &task).await {
            Ok(Plan {
                jobs: planned,
                notes,
            }) => {
                log.extend(
                    notes
                        .into_iter()
                        .map(|note| line(&task.id, LogCategory::Info, note)),
                );
                let jobs = planned
                    .into_iter()
                    .enumerate()
                    .map(|(position, job)| to_job(&task, &space_id, position, job))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                if jobs.is_empty() {
                    log.push(line(
                        &task.id,
                        LogCategory::Info,
                        if task.name == HEALTH_TASK {
                            "There are no enabled deployment targets to check."
                        } else {
                            "The deployment process has no steps to run for this environment."
                        },
                    ));
                }
                tasks::insert_jobs(&txn, jobs).await?;
                tasks::append_log(&txn, &task.id, log).await?;
                self.advance(&txn, &mut task).await?
            }
            Err(reason) => {
                log.push(line(&task.id, LogCategory::Fatal, reason.clone()));
                tasks::append_log(&txn, &task.id, log).await?;
                finalize(&txn, &mut task, TaskState::Failed, Some(reason)).await?;
                // `finalize` may have queued the next deployment in line.
                AfterCommit {
                    wake_relay: true,
                    ..AfterCommit::default()
                }
            }
        };
        tasks::save_task(&txn, &task).await?;
        txn.commit().await?;
        tracing::info!(task.id = %task.id, dispatch_latency_ms = latency * 1000.0, "task started");
        self.after_commit(after).await;
        Ok(())
    }

    /// The task this one must wait for: one of the same project and environment that is running,
    /// or queued earlier. Locks the project's row first, so two replicas cannot both decide that
    /// nothing runs.
    async fn deployment_mutex_holder(
        &self,
        conn: &impl ConnectionTrait,
        space: &SpaceId,
        task: &Task,
    ) -> anyhow::Result<Option<String>> {
        let (Some(project_id), Some(environment_id)) = (&task.project_id, &task.environment_id)
        else {
            return Ok(None);
        };
        documents::lock(conn, space, "Project", project_id).await?;
        let query = tasks::TaskQuery {
            space_ids: Some(vec![space.to_string()]),
            states: vec![
                TaskState::Executing,
                TaskState::Cancelling,
                TaskState::Queued,
            ],
            project_id: Some(project_id.clone()),
            environment_id: Some(environment_id.clone()),
            take: 1000,
            ..tasks::TaskQuery::default()
        };
        let (others, _) = tasks::list_tasks(conn, &query).await?;
        Ok(others
            .into_iter()
            // Octopus's mutex is per project, environment and tenant: tenants deploy in parallel.
            .filter(|other| other.id != task.id && other.tenant_id == task.tenant_id)
            .find(|other| {
                other.state != TaskState::Queued.as_str()
                    || (other.queue_time, numeric(&other.id)) < (task.queue_time, numeric(&task.id))
            })
            .map(|other| other.id))
    }

    /// Loads the deployment and its frozen process and plans them; `Err` is the sentence the task
    /// fails with.
    async fn plan_task(
        &self,
        conn: &impl ConnectionTrait,
        space: &SpaceId,
        task: &Task,
    ) -> Result<Plan, String> {
        if task.name == HEALTH_TASK {
            return health_plan(conn, space, task, self.config.health_check_parallelism)
                .await
                .map_err(|err| format!("The machines to check could not be read: {err}"));
        }
        let deployment_id = task.deployment_id.clone().ok_or_else(|| {
            format!(
                "Task {} is not a deployment; this orchestrator only runs deployments.",
                task.id
            )
        })?;
        let deployment: Deployment =
            match documents::get(conn, space, "Deployment", &deployment_id).await {
                Ok(Some(doc)) => documents::decode(&doc).map_err(|e| e.to_string())?,
                Ok(None) => return Err(format!("Deployment {deployment_id} no longer exists.")),
                Err(err) => {
                    return Err(format!(
                        "Deployment {deployment_id} could not be read: {err}"
                    ));
                }
            };
        let process: DeploymentProcess = match documents::get(
            conn,
            space,
            "DeploymentProcessSnapshot",
            &deployment.deployment_process_id,
        )
        .await
        {
            Ok(Some(doc)) => documents::decode(&doc).map_err(|e| e.to_string())?,
            Ok(None) => {
                return Err(format!(
                    "The process snapshot {} of this release no longer exists.",
                    deployment.deployment_process_id
                ));
            }
            Err(err) => return Err(format!("The process snapshot could not be read: {err}")),
        };
        let environment_name =
            match documents::get(conn, space, "Environment", &deployment.environment_id).await {
                Ok(Some(doc)) => doc.name,
                Ok(None) => {
                    return Err(format!(
                        "The environment {} no longer exists.",
                        deployment.environment_id
                    ));
                }
                Err(err) => return Err(format!("The environment could not be read: {err}")),
            };
        let release: Release =
            match documents::get(conn, space, "Release", &deployment.release_id).await {
                Ok(Some(doc)) => documents::decode(&doc).map_err(|e| e.to_string())?,
                Ok(None) => {
                    return Err(format!(
                        "Release {} no longer exists.",
                        deployment.release_id
                    ));
                }
                Err(err) => return Err(format!("The release could not be read: {err}")),
            };
        let packages = resolve_packages(conn, space, &process, &release).await?;
        let connectivity =
            match documents::get(conn, space, "Project", &deployment.project_id).await {
                Ok(Some(doc)) => documents::decode::<Project>(&doc)
                    .map(|project| project.project_connectivity_policy)
                    .unwrap_or_default(),
                Ok(None) => {
                    return Err(format!(
                        "Project {} no longer exists.",
                        deployment.project_id
                    ));
                }
                Err(err) => return Err(format!("The project could not be read: {err}")),
            };
        let policy = |name: &str| {
            connectivity
                .get(name)
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
        };
        let exclude_unhealthy = policy("ExcludeUnhealthyTargets");
        let tenant: Option<Tenant> = match deployment.tenant_id.as_deref() {
            None => None,
            Some(id) => match documents::get(conn, space, "Tenant", id).await {
                Ok(Some(doc)) => Some(documents::decode(&doc).map_err(|e| e.to_string())?),
                Ok(None) => return Err(format!("The tenant {id} no longer exists.")),
                Err(err) => return Err(format!("The tenant could not be read: {err}")),
            },
        };
        let targets = enabled_targets(conn, space, |machine| {
            machine.environment_ids.contains(&deployment.environment_id)
                && takes_part(machine, tenant.as_ref())
                && !(exclude_unhealthy
                    && matches!(machine.health_status.as_str(), "Unhealthy" | "Unavailable"))
        })
        .await
        .map_err(|err| format!("The deployment targets could not be read: {err}"))?;
        let mut variables: Vec<Variable> = match documents::get(
            conn,
            space,
            "VariableSetSnapshot",
            &deployment.manifest_variable_set_id,
        )
        .await
        {
            Ok(Some(doc)) => {
                documents::decode::<VariableSet>(&doc)
                    .map_err(|e| e.to_string())?
                    .variables
            }
            Ok(None) => Vec::new(),
            Err(err) => return Err(format!("The release's variables could not be read: {err}")),
        };
        if let Some(tenant) = &tenant {
            variables.extend(
                tenant_variables(conn, space, tenant, &deployment)
                    .await
                    .map_err(|err| format!("The tenant's variables could not be read: {err}"))?,
            );
        }
        let project_name = documents::get(conn, space, "Project", &deployment.project_id)
            .await
            .ok()
            .flatten()
            .map(|doc| doc.name)
            .unwrap_or_default();
        let space_name = documents::get(conn, space, documents::SPACE_KIND, space.as_str())
            .await
            .ok()
            .flatten()
            .map(|doc| doc.name)
            .unwrap_or_default();
        let mut system = BTreeMap::from(
            [
                ("Octopus.Space.Id", space.to_string()),
                ("Octopus.Space.Name", space_name),
                (
                    "Octopus.Release.Notes",
                    release.release_notes.clone().unwrap_or_default(),
                ),
                ("Octopus.Environment.Id", deployment.environment_id.clone()),
                ("Octopus.Environment.Name", environment_name.clone()),
                ("Octopus.Project.Id", deployment.project_id.clone()),
                ("Octopus.Project.Name", project_name),
                ("Octopus.Release.Id", release.id.clone()),
                ("Octopus.Release.Number", release.version.clone()),
                ("Octopus.Release.Channel.Id", deployment.channel_id.clone()),
                ("Octopus.Deployment.Id", deployment.id.clone()),
                ("Octopus.Deployment.Name", deployment.name.clone()),
                ("Octopus.Task.Id", task.id.clone()),
            ]
            .map(|(name, value)| (name.to_owned(), value)),
        );
        if let Some(tenant) = &tenant {
            let tags = tenant.tenant_tags.join(",");
            for prefix in ["Octopus.Deployment.Tenant", "Octopus.Tenant"] {
                system.insert(format!("{prefix}.Id"), tenant.id.clone());
                system.insert(format!("{prefix}.Name"), tenant.name.clone());
                system.insert(format!("{prefix}.Tags"), tags.clone());
            }
        }
        let (worker_agents, default_worker_pool) = worker_agents(conn, space)
            .await
            .map_err(|err| format!("The workers could not be read: {err}"))?;
        plan(
            &process,
            &PlanInputs {
                deployment: &deployment,
                environment_name: &environment_name,
                packages: &packages,
                targets: &targets,
                allow_no_targets: policy("AllowDeploymentsToNoTargets"),
                variables: &variables,
                system: &system,
                worker_agents: &worker_agents,
                default_worker_pool: default_worker_pool.as_deref(),
                tenant_tags: tenant.as_ref().map(|t| t.tenant_tags.as_slice()),
            },
        )
        .map_err(|e| e.0)
    }

    /// Moves the task forward: dispatches the next job (or, for an action fanned out over
    /// targets, as many of its jobs as the window allows), skips jobs whose condition is false,
    /// or finishes the task. Runs inside the caller's transaction, with the task row locked.
    pub async fn advance(
        &self,
        conn: &impl ConnectionTrait,
        task: &mut Task,
    ) -> anyhow::Result<AfterCommit> {
        let mut after = AfterCommit::default();
        // Fast path, taken by every job of a fan-out but the last: counts and a few rows, never
        // the whole task, so a step on N targets costs O(N) rows in all, not O(N^2).
        let active = tasks::count_jobs(conn, &task.id, &ACTIVE).await?;
        if active > 0 {
            self.widen(conn, task, active, &mut after).await?;
            return Ok(after);
        }
        // Nothing runs: between steps (or at the end), read the whole plan once.
        let mut jobs = tasks::jobs_for_task(conn, &task.id).await?;
        loop {
            // A job canceled without a cancel request (its worker shut down) did not complete:
            // it counts as a failure, so later steps see the truth.
            let failed = jobs.iter().any(|j| {
                j.status == job_status::FAILED
                    || (j.status == job_status::CANCELED && !task.cancel_requested)
            });
            let Some(next) = jobs.iter_mut().find(|j| j.status == job_status::PENDING) else {
                let state = if task.cancel_requested {
                    TaskState::Canceled
                } else if failed {
                    TaskState::Failed
                } else {
                    TaskState::Success
                };
                let reason = match state {
                    TaskState::Failed => Some(
                        jobs.iter()
                            .find_map(|j| j.error.clone())
                            .unwrap_or_else(|| "A step failed.".into()),
                    ),
                    TaskState::Canceled => Some("The task was canceled.".to_owned()),
                    _ => None,
                };
                finalize(conn, task, state, reason).await?;
                // `finalize` may have queued the next deployment in line.
                after.wake_relay = true;
                return Ok(after);
            };
            if !runs(task, next, failed) {
                next.status = if task.cancel_requested {
                    job_status::CANCELED
                } else {
                    job_status::SKIPPED
                }
                .into();
                next.ended_at = Some(Utc::now());
                let why = if task.cancel_requested {
                    "the task was canceled"
                } else if failed {
                    "a previous step failed"
                } else {
                    "no previous step failed"
                };
                let subject = match StepJob::target_of(&next.payload).map(|t| t.name) {
                    Some(target) => format!("Step '{}' on {target}", next.step_name),
                    None => format!("Step '{}'", next.step_name),
                };
                tasks::append_log(
                    conn,
                    &task.id,
                    vec![line(
                        &next.job_id,
                        LogCategory::Info,
                        format!("{subject} was skipped because {why}."),
                    )],
                )
                .await?;
                tasks::save_job(conn, next).await?;
                continue;
            }
            self.dispatch(conn, next, None).await?;
            after.wake_relay = true;
            if next.parallel_window.is_some() {
                // The first job of a fan-out is out: open the rest of its window.
                self.widen(conn, task, 1, &mut after).await?;
            }
            return Ok(after);
        }
    }

    /// With `active` jobs running, dispatches more jobs of the running fan-out while its window
    /// has room and nothing failed that would stop it; jobs left pending are skipped, with the
    /// reason, once the running ones end.
    async fn widen(
        &self,
        conn: &impl ConnectionTrait,
        task: &Task,
        active: u64,
        after: &mut AfterCommit,
    ) -> anyhow::Result<()> {
        let Some(first) = tasks::first_job(conn, &task.id, &ACTIVE).await? else {
            return Ok(());
        };
        // Only the jobs of one fan-out run side by side.
        let Some(window) = first.parallel_window else {
            return Ok(());
        };
        let active = usize::try_from(active).unwrap_or(usize::MAX);
        let room = match usize::try_from(window).unwrap_or(0) {
            0 => usize::MAX,
            window => window.saturating_sub(active),
        };
        if room == 0 {
            return Ok(());
        }
        // As in `advance`: a job canceled without a cancel request failed.
        let failures: &[&str] = if task.cancel_requested {
            &[job_status::FAILED]
        } else {
            &[job_status::FAILED, job_status::CANCELED]
        };
        let failed = tasks::count_jobs(conn, &task.id, failures).await? > 0;
        // Bounded per round (a SQL LIMIT is a signed 64-bit number); the next event widens more.
        let limit = u64::try_from(room.min(100_000)).unwrap_or(100_000);
        let more = tasks::pending_jobs_of_action(
            conn,
            &task.id,
            first.step_number,
            &first.action_name,
            limit,
        )
        .await?;
        // Jobs of one action see the same earlier outputs: read them once for the round.
        let mut earlier: Option<Vec<Job>> = None;
        for mut job in more {
            if job.parallel_window.is_none() || !runs(task, &job, failed) {
                break;
            }
            if earlier.is_none() {
                earlier = Some(earlier_outputs(conn, &job).await?);
            }
            self.dispatch(conn, &mut job, earlier.as_deref()).await?;
            after.wake_relay = true;
        }
        Ok(())
    }

    /// Marks `job` dispatched and queues its message (in the caller's transaction) on the
    /// queue of whoever can run it: its polling agent's own queue, or the shared worker queue.
    /// `earlier` is the jobs of other actions before it that set output variables, when the
    /// caller already read them.
    async fn dispatch(
        &self,
        conn: &impl ConnectionTrait,
        job: &mut Job,
        earlier: Option<&[Job]>,
    ) -> anyhow::Result<()> {
        job.status = job_status::DISPATCHED.into();
        job.dispatched_at = Some(Utc::now());
        let mut message: StepJob =
            serde_json::from_str(&job.payload).context("stored job payload is unreadable")?;
        // Output variables exist only once earlier steps ran: add them now.
        let read;
        let earlier = match earlier {
            Some(earlier) => earlier,
            None => {
                read = earlier_outputs(conn, job).await?;
                &read
            }
        };
        if !earlier.is_empty() {
            let machine = message.target.as_ref().map(|t| t.name.as_str());
            message
                .variables
                .extend(crate::variables::output_variables(earlier, machine));
            job.payload = serde_json::to_string(&message)?;
        }
        tasks::save_job(conn, job).await?;
        cuttle_platform::outbox::enqueue(conn, &message.queue(), StepJob::KIND, &message).await?;
        Ok(())
    }

    /// Records one worker event.
    pub async fn apply_event(&self, event: WorkerEvent) -> anyhow::Result<()> {
        let task_id = event.task_id().to_owned();
        self.apply_events(&task_id, vec![event]).await
    }

    /// Records events of one task, in order, in one transaction: a step fanned out over many
    /// targets sends three events per target, and one commit for a batch of them costs what one
    /// commit per event would cost for each. The task row is locked once when any event needs
    /// it, and the task moves forward once after the last job that ended.
    pub async fn apply_events(
        &self,
        task_id: &str,
        events: Vec<WorkerEvent>,
    ) -> anyhow::Result<()> {
        let txn = self.store.conn().begin().await?;
        let needs_lock = events.iter().any(|event| {
            matches!(
                event,
                WorkerEvent::JobStarted { .. } | WorkerEvent::JobFinished { .. }
            )
        });
        let mut task = if needs_lock {
            tasks::lock_task(&txn, task_id).await?
        } else {
            None
        };
        let mut after = Vec::new();
        let mut ended_any = false;
        for event in events {
            match event {
                WorkerEvent::JobHeartbeat { job_id, .. } => {
                    tasks::touch_job_heartbeat(&txn, &job_id, Utc::now()).await?;
                }
                WorkerEvent::JobLog { job_id, lines, .. } => {
                    let warn = lines.iter().any(|l| l.category.is_warning_or_error());
                    let rows = lines
                        .into_iter()
                        .map(|l| NewLogLine {
                            node_id: job_id.clone(),
                            source_seq: Some(l.seq),
                            occurred_at: l.at,
                            category: l.category,
                            message: l.text,
                        })
                        .collect();
                    tasks::append_log(&txn, task_id, rows).await?;
                    if warn {
                        tasks::mark_task_warnings(&txn, task_id).await?;
                        // The locked row is saved again below; it must not lose the mark.
                        if let Some(task) = &mut task {
                            task.has_warnings_or_errors = true;
                        }
                    }
                }
                WorkerEvent::JobStarted { job_id, worker, .. } => {
                    if task.is_some() {
                        after.push(self.job_started(&txn, task_id, &job_id, &worker).await?);
                    }
                }
                WorkerEvent::JobFinished {
                    job_id,
                    outcome,
                    exit_code,
                    output_variables,
                    artifacts,
                    ..
                } => {
                    if let Some(task) = &mut task {
                        ended_any |= self
                            .job_finished(
                                &txn,
                                task,
                                &job_id,
                                outcome,
                                exit_code,
                                output_variables,
                                artifacts,
                            )
                            .await?;
                    }
                }
            }
        }
        if ended_any && let Some(task) = &mut task {
            after.push(self.advance(&txn, task).await?);
            tasks::save_task(&txn, task).await?;
        }
        txn.commit().await?;
        for after in after {
            self.after_commit(after).await;
        }
        Ok(())
    }

    /// `JobStarted`, inside the caller's transaction with the task row locked.
    async fn job_started(
        &self,
        txn: &impl ConnectionTrait,
        task_id: &str,
        job_id: &str,
        worker: &str,
    ) -> anyhow::Result<AfterCommit> {
        let mut after = AfterCommit::default();
        let Some(mut job) = tasks::get_job(txn, job_id).await? else {
            return Ok(after);
        };
        match job.status.as_str() {
            job_status::DISPATCHED => {
                let now = Utc::now();
                job.status = job_status::RUNNING.into();
                job.worker = Some(worker.to_owned());
                job.started_at = Some(now);
                job.heartbeat_at = Some(now);
                tasks::save_job(txn, &job).await?;
                tasks::append_log(
                    txn,
                    task_id,
                    vec![line(
                        job_id,
                        LogCategory::Verbose,
                        format!("Running on worker {worker}"),
                    )],
                )
                .await?;
            }
            job_status::RUNNING => {}
            // Already ended (canceled, or failed by the reaper): that job must not go on, but
            // the rest of the task is unaffected.
            _ => after.cancel_job = Some((task_id.to_owned(), job_id.to_owned())),
        }
        Ok(after)
    }

    /// `JobFinished`, inside the caller's transaction with the task row locked; true when the
    /// job ended now (so the task must move forward), false for a duplicate.
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one JobFinished event, plus where to apply it"
    )]
    async fn job_finished(
        &self,
        txn: &impl ConnectionTrait,
        task: &mut Task,
        job_id: &str,
        outcome: JobOutcome,
        exit_code: Option<i32>,
        output_variables: BTreeMap<String, String>,
        artifacts: Vec<cuttle_contracts::JobArtifact>,
    ) -> anyhow::Result<bool> {
        let task_id = task.id.clone();
        let task_id = task_id.as_str();
        let Some(mut job) = tasks::get_job(txn, job_id).await? else {
            return Ok(false);
        };
        if job.status != job_status::RUNNING && job.status != job_status::DISPATCHED {
            // Duplicate delivery, or the reaper already ended the job.
            return Ok(false);
        }
        let now = Utc::now();
        job.ended_at = Some(now);
        job.exit_code = exit_code;
        if !output_variables.is_empty() {
            job.output_variables = Some(serde_json::to_string(&output_variables)?);
        }
        if !artifacts.is_empty() {
            let space = SpaceId::parse(&task.space_id).context("task has an invalid space id")?;
            let source = job.worker.clone().unwrap_or_default();
            for artifact in artifacts {
                record_artifact(txn, &space, task_id, &source, artifact).await?;
            }
        }
        if let Some(started) = job.started_at {
            cuttle_telemetry::metrics()
                .step_duration
                .observe((now - started).num_milliseconds().max(0) as f64 / 1000.0);
        }
        let (status, message) = match outcome {
            JobOutcome::Succeeded => (job_status::SUCCESS, None),
            JobOutcome::Failed { reason } => (job_status::FAILED, Some(reason)),
            JobOutcome::Canceled => (
                job_status::CANCELED,
                Some("The step was canceled.".to_owned()),
            ),
        };
        job.status = status.into();
        if task.name == HEALTH_TASK && status != job_status::CANCELED {
            let space = SpaceId::parse(&task.space_id).context("task has an invalid space id")?;
            record_health(
                txn,
                &space,
                &job,
                status == job_status::SUCCESS,
                message.as_deref(),
                &output_variables,
            )
            .await?;
        }
        if let Some(message) = &message {
            let category = if status == job_status::FAILED {
                LogCategory::Error
            } else {
                LogCategory::Info
            };
            tasks::append_log(txn, task_id, vec![line(job_id, category, message.clone())]).await?;
            if status == job_status::FAILED {
                job.error = Some(format!("Step '{}' failed: {message}", job.step_name));
                tasks::mark_task_warnings(txn, task_id).await?;
                task.has_warnings_or_errors = true;
            }
        }
        tasks::save_job(txn, &job).await?;
        Ok(true)
    }

    /// Handles `CancelRequested`: nothing new starts, running jobs are told to stop, and the task
    /// ends Canceled once none runs.
    pub async fn cancel_task(&self, task_id: &str) -> anyhow::Result<()> {
        let txn = self.store.conn().begin().await?;
        let Some(mut task) = tasks::lock_task(&txn, task_id).await? else {
            return Ok(txn.commit().await?);
        };
        if TaskState::parse(&task.state).is_some_and(TaskState::is_completed) {
            return Ok(txn.commit().await?);
        }
        task.cancel_requested = true;
        task.state = TaskState::Cancelling.as_str().into();
        let now = Utc::now();
        let mut running = false;
        for mut job in tasks::jobs_for_task(&txn, task_id).await? {
            match job.status.as_str() {
                job_status::PENDING | job_status::DISPATCHED => {
                    job.status = job_status::CANCELED.into();
                    job.ended_at = Some(now);
                    tasks::save_job(&txn, &job).await?;
                }
                job_status::RUNNING => running = true,
                _ => {}
            }
        }
        tasks::append_log(
            &txn,
            task_id,
            vec![line(
                task_id,
                LogCategory::Warning,
                "Cancellation was requested.",
            )],
        )
        .await?;
        let mut after = self.advance(&txn, &mut task).await?;
        if running {
            after.cancel_broadcast = Some(task_id.to_owned());
        }
        tasks::save_task(&txn, &task).await?;
        txn.commit().await?;
        self.after_commit(after).await;
        Ok(())
    }

    /// Fails a job whose worker went silent or that nobody started, then advances its task.
    pub async fn fail_stale_job(
        &self,
        job_id: &str,
        expected_status: &str,
        reason: &str,
    ) -> anyhow::Result<()> {
        let txn = self.store.conn().begin().await?;
        let Some(job) = tasks::get_job(&txn, job_id).await? else {
            return Ok(txn.commit().await?);
        };
        let Some(mut task) = tasks::lock_task(&txn, &job.task_id).await? else {
            return Ok(txn.commit().await?);
        };
        // Re-read under the lock: the job may have finished while we looked.
        let Some(mut job) = tasks::get_job(&txn, job_id).await? else {
            return Ok(txn.commit().await?);
        };
        if job.status != expected_status {
            return Ok(txn.commit().await?);
        }
        job.status = job_status::FAILED.into();
        job.ended_at = Some(Utc::now());
        job.error = Some(format!("Step '{}' failed: {reason}", job.step_name));
        tasks::save_job(&txn, &job).await?;
        if task.name == HEALTH_TASK {
            let space = SpaceId::parse(&task.space_id).context("task has an invalid space id")?;
            record_health(&txn, &space, &job, false, Some(reason), &BTreeMap::new()).await?;
        }
        tasks::append_log(
            &txn,
            &task.id,
            vec![line(job_id, LogCategory::Error, reason)],
        )
        .await?;
        task.has_warnings_or_errors = true;
        let after = self.advance(&txn, &mut task).await?;
        tasks::save_task(&txn, &task).await?;
        txn.commit().await?;
        tracing::warn!(task.id = %task.id, job.id = %job_id, reason, "failed a stale job");
        self.after_commit(after).await;
        Ok(())
    }
}

/// Jobs that hold a place in their fan-out's window.
const ACTIVE: [&str; 2] = [job_status::DISPATCHED, job_status::RUNNING];

/// Whether `job` runs given its condition and what happened before it.
fn runs(task: &Task, job: &Job, failed: bool) -> bool {
    !task.cancel_requested
        && match job.condition.as_str() {
            "Always" => true,
            "Failure" => failed,
            _ => !failed,
        }
}

/// The space's agents registered as workers that may take steps (enabled, and not found
/// Unhealthy or Unavailable), and its default worker pool's id.
async fn worker_agents(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
) -> anyhow::Result<(Vec<Machine>, Option<String>)> {
    let workers = enabled_machines(conn, space, WORKER_KIND, |worker| {
        !matches!(worker.health_status.as_str(), "Unhealthy" | "Unavailable")
    })
    .await?;
    let everything = documents::ListQuery::everything();
    let (pools, _) = documents::list(conn, space, "WorkerPool", &everything).await?;
    let mut default_pool = None;
    for doc in &pools {
        let pool: cuttle_wire::resources::WorkerPool = documents::decode(doc)?;
        if pool.is_default {
            default_pool = Some(pool.id);
        }
    }
    Ok((workers, default_pool))
}

/// Lists a file a job published on its task (`Artifacts-N`, owned by the task).
async fn record_artifact(
    conn: &impl ConnectionTrait,
    space: &SpaceId,
    task_id: &str,
    source: &str,
    artifact: cuttle_contracts::JobArtifact,
) -> anyhow::Result<()> {
    let id = cuttle_store::next_id(conn, "Artifacts").await?;
    let number = cuttle_domain::ids::numeric_suffix(&id, "Artifacts").unwrap_or(0) as i64;
    let data = serde_json::json!({
        "Id": id,
        "SpaceId": space.to_string(),
        "Filename": artifact.name,
        "Source": source,
        "ServerTaskId": task_id,
        "Created": Utc::now(),
        "LogCorrelationId": null,
        "BlobKey": artifact.blob_key,
        "Length": artifact.size_bytes,
    });
    documents::insert(
        conn,
        documents::NewDocument {
            id: id.clone(),
            space_id: space.clone(),
            kind: "Artifact",
            name: artifact.name,
            parent_id: Some(task_id.to_owned()),
            unique_key: None,
            sort_order: number,
            data,
        },
        "",
    )
    .await?;
    Ok(())
}

/// The number of a `ServerTasks-<n>` id, to order tasks queued in the same millisecond.
fn numeric(id: &str) -> u64 {
    cuttle_domain::ids::numeric_suffix(id, "ServerTasks").unwrap_or(u64::MAX)
}

/// Builds the stored job (its payload is the exact message a worker receives).
fn to_job(
    task: &Task,
    space: &SpaceId,
    position: usize,
    planned: PlannedJob,
) -> anyhow::Result<Job> {
    let job_id = uuid::Uuid::new_v4().to_string();
    let message = StepJob {
        task_id: task.id.clone(),
        job_id: job_id.clone(),
        space_id: space.to_string(),
        step_name: planned.step_name.clone(),
        action_name: planned.action_name.clone(),
        work: planned.work,
        target: planned.target,
        variables: planned.variables,
    };
    Ok(Job {
        job_id,
        task_id: task.id.clone(),
        position: position as i32,
        step_number: planned.step_number,
        step_name: planned.step_name,
        action_name: planned.action_name,
        condition: planned.condition,
        status: job_status::PENDING.into(),
        payload: serde_json::to_string(&message)?,
        worker: None,
        dispatched_at: None,
        started_at: None,
        heartbeat_at: None,
        ended_at: None,
        exit_code: None,
        error: None,
        output_variables: None,
        parallel_window: planned
            .parallel_window
            .map(|window| i32::try_from(window).unwrap_or(i32::MAX)),
    })
}

/// Sends `TaskQueued` for the oldest queued deployment of the same project and environment, which
/// was waiting for this one (the relay delivers it after the caller commits).
/// The jobs of other actions before `job` that set output variables.
async fn earlier_outputs(conn: &impl ConnectionTrait, job: &Job) -> anyhow::Result<Vec<Job>> {
    Ok(tasks::jobs_with_outputs_before(
        conn,
        &job.task_id,
        job.position,
        job.step_number,
        &job.action_name,
    )
    .await?)
}

async fn nudge_next_in_line(conn: &impl ConnectionTrait, task: &Task) -> anyhow::Result<()> {
    let (Some(project_id), Some(environment_id)) = (&task.project_id, &task.environment_id) else {
        return Ok(());
    };
    let query = tasks::TaskQuery {
        space_ids: Some(vec![task.space_id.clone()]),
        states: vec![TaskState::Queued],
        project_id: Some(project_id.clone()),
        environment_id: Some(environment_id.clone()),
        take: 1000,
        ..tasks::TaskQuery::default()
    };
    let (queued, _) = tasks::list_tasks(conn, &query).await?;
    if let Some(next) = queued
        .into_iter()
        .filter(|queued| queued.tenant_id == task.tenant_id)
        .min_by_key(|t| (t.queue_time, numeric(&t.id)))
    {
        let command = cuttle_contracts::OrchestratorCommand::TaskQueued { task_id: next.id };
        cuttle_platform::outbox::enqueue_command(conn, &command).await?;
    }
    Ok(())
}

/// Ends a task in a terminal state with its timestamps, log line and metrics.
pub async fn finalize(
    conn: &impl ConnectionTrait,
    task: &mut Task,
    state: TaskState,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let now = Utc::now();
    task.state = state.as_str().into();
    task.completed_time = Some(now);
    if task.start_time.is_none() {
        task.start_time = Some(now);
    }
    task.error_message = match state {
        TaskState::Success => None,
        _ => reason,
    };
    let summary = match state {
        TaskState::Success => format!("{} succeeded.", task.description),
        TaskState::Canceled => format!("{} was canceled.", task.description),
        _ => format!(
            "{} failed: {}",
            task.description,
            task.error_message.clone().unwrap_or_default()
        ),
    };
    let category = if state == TaskState::Success {
        LogCategory::Info
    } else {
        LogCategory::Error
    };
    tasks::append_log(
        conn,
        &task.id.clone(),
        vec![line(&task.id, category, summary)],
    )
    .await?;
    cuttle_telemetry::metrics()
        .tasks_finished
        .with_label_values(&[state.as_str()])
        .inc();
    nudge_next_in_line(conn, task).await?;
    tracing::info!(task.id = %task.id, task.state = state.as_str(), "task finished");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, participation: &str, tenants: &[&str], tags: &[&str]) -> Machine {
        Machine {
            name: name.into(),
            tenanted_deployment_participation: participation.into(),
            tenant_ids: tenants.iter().map(|s| s.to_string()).collect(),
            tenant_tags: tags.iter().map(|s| s.to_string()).collect(),
            ..Machine::default()
        }
    }

    /// Which targets each deployment uses, by participation, tenant ids and tenant tags.
    #[test]
    fn targets_take_part_by_their_tenancy() {
        let targets = [
            target("untenanted", "Untenanted", &[], &[]),
            target("legacy", "", &[], &[]),
            target("either-acme", "TenantedOrUntenanted", &["Tenants-1"], &[]),
            target("acme-only", "Tenanted", &["Tenants-1"], &[]),
            target("gold", "Tenanted", &[], &["Tier/Gold"]),
            target("gold-us", "Tenanted", &[], &["Tier/Gold", "Region/US"]),
            target("tenanted-nobody", "Tenanted", &[], &[]),
        ];
        let acme = Tenant {
            id: "Tenants-1".into(),
            tenant_tags: vec!["Tier/Gold".into(), "Region/EU".into()],
            ..Tenant::default()
        };
        let initech = Tenant {
            id: "Tenants-2".into(),
            tenant_tags: vec!["Tier/Gold".into(), "Region/US".into()],
            ..Tenant::default()
        };
        let chosen = |tenant: Option<&Tenant>| -> Vec<&str> {
            targets
                .iter()
                .filter(|t| takes_part(t, tenant))
                .map(|t| t.name.as_str())
                .collect()
        };
        assert_eq!(chosen(None), ["untenanted", "legacy", "either-acme"]);
        assert_eq!(chosen(Some(&acme)), ["either-acme", "acme-only", "gold"]);
        assert_eq!(chosen(Some(&initech)), ["gold", "gold-us"]);
    }
}
