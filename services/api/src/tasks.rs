//! Server tasks: list (across spaces or in one), get, the activity-log tree (`details`), the raw
//! log, cancel, and starting a system task (`Retention`).

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Params, PathParams, Principal, SpaceScope};
use crate::links::links;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use cuttle_contracts::{OrchestratorCommand, cancel_marker_key, queues};
use cuttle_domain::task::describe_duration;
use cuttle_domain::{ActivityStatus, LogCategory, SpaceId, TaskState};
use cuttle_store::tasks::{self, Job, LogRow, Task, TaskQuery, job_status};
use cuttle_store::{ConnectionTrait, TransactionTrait};
use cuttle_wire::Collection;
use cuttle_wire::dates;
use cuttle_wire::tasks::{ActivityElement, LogElement, ServerTask, TaskDetails, TaskProgress};
use std::collections::BTreeMap;
use std::time::Duration;

/// `/api/tasks/...`: tasks of every space (the caller's, once permissions exist).
pub fn global_routes() -> Router<AppState> {
    task_routes("/api")
}

/// `/api/{space}/tasks/...`; the default-space prefix is served by [`global_routes`].
pub fn space_routes(prefix: &str) -> Router<AppState> {
    if prefix == "/api" {
        Router::new()
    } else {
        task_routes(prefix)
    }
}

fn task_routes(prefix: &str) -> Router<AppState> {
    let base = format!("{prefix}/tasks");
    Router::new()
        .route(&base, get(list).post(create))
        .route(&format!("{base}/{{id}}"), get(get_one))
        .route(&format!("{base}/{{id}}/details"), get(details))
        .route(&format!("{base}/{{id}}/raw"), get(raw))
        .route(&format!("{base}/{{id}}/cancel"), post(cancel))
}

/// `POST /api/{space}/tasks`: the body a client sends to start a system task.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NewTaskBody {
    name: String,
    description: Option<String>,
    arguments: BTreeMap<String, serde_json::Value>,
}

/// `POST /api/{space}/tasks {"Name": "Retention"}`: applies the space's built-in feed retention
/// now (it also runs periodically in the package-feed service) and answers the finished task,
/// whose log lists what was removed. Other system tasks are not available yet.
async fn create(
    State(state): State<AppState>,
    scope: SpaceScope,
    JsonBody(body): JsonBody<NewTaskBody>,
) -> ApiResult<(axum::http::StatusCode, Json<ServerTask>)> {
    if body.name.eq_ignore_ascii_case("Health") {
        return queue_health_check(&state, &scope, body).await;
    }
    if !body.name.eq_ignore_ascii_case("Retention") {
        return Err(ApiError::invalid_field(
            "Name",
            format!(
                "the task '{}' cannot be started through the API in this version of Cuttle; 'Retention' and 'Health' can",
                body.name
            ),
        ));
    }
    let feed = cuttle_package_feed::PackageFeed {
        store: state.store.clone(),
        blob: state.blob.clone(),
    };
    let run = feed
        .apply_retention(&scope.id)
        .await
        .map_err(|err| ApiError::internal(format!("{err:#}")))?;
    Ok((axum::http::StatusCode::CREATED, Json(present(&run.task))))
}

/// `{"Name": "Health", "Arguments": {"EnvironmentId"?: ..., "WorkerPoolId"?: ...,
/// "MachineIds"?: [...]}}`: queues a health check of those deployment targets and worker agents
/// (all of the space's without arguments); the orchestrator runs one check per machine and
/// records each machine's health.
async fn queue_health_check(
    state: &AppState,
    scope: &SpaceScope,
    body: NewTaskBody,
) -> ApiResult<(axum::http::StatusCode, Json<ServerTask>)> {
    let environment_id = match body.arguments.get("EnvironmentId") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id)) => Some(id.clone()),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "Arguments.EnvironmentId",
                "must be an environment id",
            ));
        }
    };
    let worker_pool_id = match body.arguments.get("WorkerPoolId") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id)) => Some(id.clone()),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "Arguments.WorkerPoolId",
                "must be a worker pool id",
            ));
        }
    };
    let machine_ids: Vec<String> = match body.arguments.get("MachineIds") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(value) => serde_json::from_value(value.clone()).map_err(|_| {
            ApiError::invalid_field("Arguments.MachineIds", "must be a list of machine ids")
        })?,
    };
    let txn = state.store.conn().begin().await?;
    let environment_name = match &environment_id {
        Some(id) => Some(
            cuttle_store::documents::get(&txn, &scope.id, "Environment", id)
                .await?
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "Arguments.EnvironmentId",
                        format!("environment '{id}' was not found in this space"),
                    )
                })?
                .name,
        ),
        None => None,
    };
    if let Some(id) = &worker_pool_id
        && cuttle_store::documents::get(&txn, &scope.id, "WorkerPool", id)
            .await?
            .is_none()
    {
        return Err(ApiError::invalid_field(
            "Arguments.WorkerPoolId",
            format!("worker pool '{id}' was not found in this space"),
        ));
    }
    for (index, id) in machine_ids.iter().enumerate() {
        let (kind, noun) = if id.starts_with("Workers-") {
            ("Worker", "worker")
        } else {
            ("Machine", "deployment target")
        };
        if cuttle_store::documents::get(&txn, &scope.id, kind, id)
            .await?
            .is_none()
        {
            return Err(ApiError::invalid_field(
                &format!("Arguments.MachineIds[{index}]"),
                format!("{noun} '{id}' was not found in this space"),
            ));
        }
    }
    let task_id = cuttle_store::next_id(&txn, "ServerTasks").await?;
    let now = Utc::now();
    let description = body
        .description
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| match &environment_name {
            Some(name) => format!("Check deployment target health in {name}"),
            None => "Check deployment target health".to_owned(),
        });
    let arguments = serde_json::json!({
        "EnvironmentId": environment_id,
        "WorkerPoolId": worker_pool_id,
        "MachineIds": machine_ids,
    });
    let task = tasks::insert_task(
        &txn,
        Task {
            environment_id,
            ..tasks::queued_task(
                task_id.clone(),
                &scope.id,
                "Health",
                description,
                arguments.to_string(),
                now,
            )
        },
    )
    .await?;
    let command = OrchestratorCommand::TaskQueued { task_id };
    cuttle_platform::outbox::enqueue_command(&txn, &command).await?;
    txn.commit().await?;
    state.relay.wake();
    Ok((axum::http::StatusCode::CREATED, Json(present(&task))))
}

/// Renders a stored task in Octopus's shape.
pub fn present(task: &Task) -> ServerTask {
    let state = TaskState::parse(&task.state).unwrap_or(TaskState::Queued);
    let completed = state.is_completed();
    let duration_ms = task
        .start_time
        .map(|start| (task.completed_time.unwrap_or_else(Utc::now) - start).num_milliseconds());
    let arguments: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&task.arguments).unwrap_or_default();
    let base = format!("/api/tasks/{}", task.id);
    ServerTask {
        id: task.id.clone(),
        space_id: Some(task.space_id.clone()),
        name: task.name.clone(),
        description: task.description.clone(),
        arguments,
        state: state.as_str().into(),
        completed: task
            .completed_time
            .map(|at| at.format("%A, %-d %B %Y %-I:%M %p").to_string()),
        queue_time: Some(task.queue_time),
        queue_time_expiry: None,
        start_time: task.start_time,
        last_updated_time: Some(task.last_updated_time),
        completed_time: task.completed_time,
        server_node: task.server_node.clone(),
        duration: duration_ms.map(describe_duration),
        error_message: task.error_message.clone(),
        has_been_picked_up_by_processor: task.start_time.is_some(),
        is_completed: completed,
        finished_successfully: state == TaskState::Success,
        has_pending_interruptions: false,
        has_pending_preconditions: false,
        pending_interruption_types: Vec::new(),
        can_rerun: false,
        has_warnings_or_errors: task.has_warnings_or_errors,
        project_id: task.project_id.clone(),
        estimated_remaining_queue_duration_seconds: 0,
        links: links([
            ("Self", base.clone()),
            ("Web", format!("/app#/{}/tasks/{}", task.space_id, task.id)),
            ("Raw", format!("{base}/raw")),
            ("Details", format!("{base}/details{{?verbose,tail,ranges}}")),
            ("Cancel", format!("{base}/cancel")),
            (
                "Artifacts",
                format!("/api/{}/artifacts?regarding={}", task.space_id, task.id),
            ),
            (
                "Interruptions",
                format!("/api/{}/interruptions?regarding={}", task.space_id, task.id),
            ),
        ]),
    }
}

/// The space of a task route; `None` on `/api/tasks`, which spans the spaces the principal
/// can see.
async fn scoped(
    state: &AppState,
    path: &PathParams,
    principal: &Principal,
) -> ApiResult<Option<SpaceId>> {
    match path.optional("space_id") {
        Some(identifier) => Ok(Some(
            crate::extract::resolve_space(state, principal, identifier)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("space '{identifier}'")))?
                .id,
        )),
        None => Ok(None),
    }
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
    params: Params,
) -> ApiResult<Json<Collection<ServerTask>>> {
    let space = scoped(&state, &path, &principal).await?;
    let (skip, take) = params.paging()?;
    let ids = params.list("ids");
    let mut states = Vec::new();
    for name in params.list("states") {
        // `New` appears in Octopus's filter docs but no task is ever in it.
        if name.eq_ignore_ascii_case("New") {
            continue;
        }
        states.push(TaskState::parse(&name).ok_or_else(|| {
            ApiError::invalid_field("states", format!("'{name}' is not a task state"))
        })?);
    }
    // Across spaces, only those of the caller's organisation where they may view tasks.
    let space_ids = match space {
        Some(space) => vec![space.to_string()],
        None => {
            let wanted = params.list("spaces");
            cuttle_store::organisations::spaces_of(state.store.conn(), &principal.organisation_id)
                .await?
                .into_iter()
                .filter(|s| wanted.is_empty() || wanted.contains(s))
                .filter(|s| {
                    principal
                        .grants
                        .allows_somewhere(cuttle_authz::Permission::TaskView, Some(s))
                })
                .collect()
        }
    };
    let space_ids = Some(space_ids);
    let query = TaskQuery {
        space_ids,
        // The TypeScript client sends skip=i*300 with each batch of ids; with ids, skip is ignored.
        skip: if ids.is_empty() { skip } else { 0 },
        ids,
        states,
        project_id: params.get("project").map(str::to_owned),
        environment_id: params.get("environment").map(str::to_owned),
        tenant_id: params.get("tenant").map(str::to_owned),
        name: params.get("name").map(str::to_owned),
        take,
    };
    let (rows, total) = tasks::list_tasks(state.store.conn(), &query).await?;
    let path = match path.optional("space_id") {
        Some(space) => format!("/api/{space}/tasks"),
        None => "/api/tasks".to_owned(),
    };
    let template = format!(
        "{path}{{/id}}{{?skip,active,environment,tenant,project,name,node,running,states,take,ids,spaces}}"
    );
    Ok(Json(Collection::page(
        "Task",
        rows.iter().map(present).collect(),
        total,
        query.skip,
        take,
        &path,
        &template,
    )))
}

/// A task the principal may act on with `permission`: in the route's space, or on
/// `/api/tasks/{id}` in a space of their organisation they can see (else 404).
async fn load(
    state: &AppState,
    path: &PathParams,
    principal: &Principal,
    permission: cuttle_authz::Permission,
) -> ApiResult<Task> {
    let space = scoped(state, path, principal).await?;
    let id = path.get("id")?;
    let not_found = || ApiError::not_found(format!("task '{id}'"));
    let task = tasks::get_task(state.store.conn(), space.as_ref(), id)
        .await?
        .ok_or_else(not_found)?;
    if space.is_none() {
        let owner =
            cuttle_store::organisations::space_owner(state.store.conn(), &task.space_id).await?;
        if owner.as_deref() != Some(principal.organisation_id.as_str())
            || !principal.grants.can_see_space(&task.space_id)
        {
            return Err(not_found());
        }
    }
    crate::authz::require(
        principal,
        permission,
        &cuttle_authz::Target {
            space: Some(&task.space_id),
            project: task.project_id.as_deref(),
            environment: task.environment_id.as_deref(),
            ..Default::default()
        },
    )?;
    Ok(task)
}

async fn get_one(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<ServerTask>> {
    Ok(Json(present(
        &load(
            &state,
            &path,
            &principal,
            cuttle_authz::Permission::TaskView,
        )
        .await?,
    )))
}

fn job_activity_status(job: &Job) -> ActivityStatus {
    match job.status.as_str() {
        job_status::RUNNING => ActivityStatus::Running,
        job_status::SUCCESS => ActivityStatus::Success,
        job_status::FAILED => ActivityStatus::Failed,
        job_status::SKIPPED => ActivityStatus::Skipped,
        job_status::CANCELED => ActivityStatus::Canceled,
        _ => ActivityStatus::Pending,
    }
}

fn task_activity_status(state: TaskState) -> ActivityStatus {
    match state {
        TaskState::Queued => ActivityStatus::Pending,
        TaskState::Executing | TaskState::Cancelling => ActivityStatus::Running,
        TaskState::Success => ActivityStatus::Success,
        TaskState::Failed | TaskState::TimedOut => ActivityStatus::Failed,
        TaskState::Canceled => ActivityStatus::Canceled,
    }
}

/// The status of a step from its actions: failures and cancels win, then running, pending.
fn combine(statuses: &[ActivityStatus]) -> ActivityStatus {
    for candidate in [
        ActivityStatus::Failed,
        ActivityStatus::Canceled,
        ActivityStatus::Running,
    ] {
        if statuses.contains(&candidate) {
            return candidate;
        }
    }
    if statuses.iter().all(|s| *s == ActivityStatus::Skipped) && !statuses.is_empty() {
        return ActivityStatus::Skipped;
    }
    if statuses.contains(&ActivityStatus::Pending) {
        return ActivityStatus::Pending;
    }
    ActivityStatus::Success
}

fn log_elements(lines: &[&LogRow], verbose: bool, tail: Option<usize>) -> Vec<LogElement> {
    let visible: Vec<&&LogRow> = lines
        .iter()
        .filter(|l| verbose || LogCategory::parse(&l.category) != LogCategory::Verbose)
        .collect();
    let skip = tail.map(|n| visible.len().saturating_sub(n)).unwrap_or(0);
    visible
        .into_iter()
        .enumerate()
        .skip(skip)
        .map(|(index, line)| LogElement {
            category: line.category.clone(),
            occurred_at: dates::format(&line.occurred_at),
            message_text: line.message.clone(),
            detail: None,
            percentage: None,
            number: index as i64 + 1,
        })
        .collect()
}

/// Builds the activity tree: the task, a child per step, a child per action of the step and
/// deployment target.
pub fn activity_tree(
    task: &Task,
    jobs: &[Job],
    log: &[LogRow],
    verbose: bool,
    tail: Option<usize>,
) -> ActivityElement {
    let state = TaskState::parse(&task.state).unwrap_or(TaskState::Queued);
    let lines_of = |node: &str| log.iter().filter(|l| l.node_id == node).collect::<Vec<_>>();
    let mut steps: BTreeMap<i32, Vec<&Job>> = BTreeMap::new();
    for job in jobs {
        steps.entry(job.step_number).or_default().push(job);
    }
    let children = steps
        .into_iter()
        .map(|(number, jobs)| {
            let actions: Vec<ActivityElement> = jobs
                .iter()
                .map(|job| ActivityElement {
                    id: format!("{}_{}", task.id, job.job_id),
                    name: match (
                        cuttle_contracts::StepJob::target_of(&job.payload).map(|t| t.name),
                        &job.worker,
                    ) {
                        (Some(target), _) => format!("{} on {target}", job.action_name),
                        (None, Some(worker)) => format!("{} on {worker}", job.action_name),
                        (None, None) => job.action_name.clone(),
                    },
                    started: job.started_at.as_ref().map(dates::format),
                    ended: job.ended_at.as_ref().map(dates::format),
                    status: job_activity_status(job).as_str().into(),
                    show_at_summary_level: false,
                    progress_percentage: 0,
                    progress_message: String::new(),
                    log_elements: log_elements(&lines_of(&job.job_id), verbose, tail),
                    children: Vec::new(),
                })
                .collect();
            let statuses: Vec<ActivityStatus> =
                jobs.iter().map(|j| job_activity_status(j)).collect();
            ActivityElement {
                id: format!("{}_step_{number}", task.id),
                name: format!(
                    "Step {number}: {}",
                    jobs.first()
                        .map(|j| j.step_name.as_str())
                        .unwrap_or_default()
                ),
                started: jobs
                    .iter()
                    .filter_map(|j| j.started_at)
                    .min()
                    .as_ref()
                    .map(dates::format),
                ended: if statuses.iter().all(|s| s.is_finished()) {
                    jobs.iter()
                        .filter_map(|j| j.ended_at)
                        .max()
                        .as_ref()
                        .map(dates::format)
                } else {
                    None
                },
                status: combine(&statuses).as_str().into(),
                show_at_summary_level: true,
                progress_percentage: 0,
                progress_message: String::new(),
                log_elements: Vec::new(),
                children: actions,
            }
        })
        .collect();
    ActivityElement {
        id: task.id.clone(),
        name: task.description.clone(),
        started: task.start_time.as_ref().map(dates::format),
        ended: task.completed_time.as_ref().map(dates::format),
        status: task_activity_status(state).as_str().into(),
        show_at_summary_level: true,
        progress_percentage: 0,
        progress_message: String::new(),
        log_elements: log_elements(&lines_of(&task.id), verbose, tail),
        children,
    }
}

async fn details(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
    params: Params,
) -> ApiResult<Json<TaskDetails>> {
    let task = load(
        &state,
        &path,
        &principal,
        cuttle_authz::Permission::TaskView,
    )
    .await?;
    let verbose = params.flag("verbose")?.unwrap_or(false);
    let tail = match params.get("tail") {
        Some(_) => Some(params.number("tail", 0)? as usize),
        None => None,
    };
    let conn = state.store.conn();
    let jobs = tasks::jobs_for_task(conn, &task.id).await?;
    let log = tasks::read_log(conn, &task.id).await?;
    let tree = activity_tree(&task, &jobs, &log, verbose, tail);
    let finished = jobs
        .iter()
        .filter(|j| job_activity_status(j).is_finished())
        .count();
    let percentage = if TaskState::parse(&task.state).is_some_and(TaskState::is_completed) {
        100
    } else if jobs.is_empty() {
        0
    } else {
        (finished * 100 / jobs.len()) as i64
    };
    Ok(Json(TaskDetails {
        task: present(&task),
        progress: TaskProgress {
            progress_percentage: percentage,
            estimated_time_remaining: String::new(),
        },
        physical_log_size: log.iter().map(|l| l.message.len() as i64 + 1).sum(),
        activity_logs: vec![tree],
        links: links([("Self", format!("/api/tasks/{}/details", task.id))]),
    }))
}

/// The plain-text log, in the layout of Octopus's raw log.
pub fn render_raw(task: &Task, tree: &ActivityElement) -> String {
    let present = present(task);
    let mut out = String::new();
    let when = |at: Option<chrono::DateTime<Utc>>| {
        at.map(|t| t.format("%A, %-d %B %Y %-I:%M %p").to_string())
            .unwrap_or_default()
    };
    out.push_str(&format!("Task ID:        {}\n", task.id));
    out.push_str(&format!("Task status:    {}\n", present.state));
    out.push_str(&format!(
        "Task queued:    {}\n",
        when(Some(task.queue_time))
    ));
    out.push_str(&format!("Task started:   {}\n", when(task.start_time)));
    out.push_str(&format!(
        "Task duration:  {}\n",
        present.duration.unwrap_or_default()
    ));
    out.push_str(&format!(
        "Server version: Cuttle {}\n\n",
        env!("CARGO_PKG_VERSION")
    ));
    fn walk(node: &ActivityElement, depth: usize, out: &mut String) {
        let indent = "  ".repeat(depth);
        out.push_str(&format!(
            "                    | {indent}== {}: {} ==\n",
            node.status, node.name
        ));
        for line in &node.log_elements {
            let time = chrono::DateTime::parse_from_rfc3339(&line.occurred_at)
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_default();
            out.push_str(&format!(
                "{time:<10} {:<8} | {indent}  {}\n",
                line.category, line.message_text
            ));
        }
        for child in &node.children {
            walk(child, depth + 1, out);
        }
    }
    walk(tree, 0, &mut out);
    out
}

async fn raw(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<impl IntoResponse> {
    let task = load(
        &state,
        &path,
        &principal,
        cuttle_authz::Permission::TaskView,
    )
    .await?;
    let conn = state.store.conn();
    let jobs = tasks::jobs_for_task(conn, &task.id).await?;
    let log = tasks::read_log(conn, &task.id).await?;
    let tree = activity_tree(&task, &jobs, &log, true, None);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        render_raw(&task, &tree),
    ))
}

/// Requests cancellation: a queued task ends Canceled at once; an executing one becomes
/// Cancelling and the orchestrator stops its jobs.
pub async fn request_cancel(conn: &impl ConnectionTrait, task: &mut Task) -> ApiResult<bool> {
    let state = TaskState::parse(&task.state).unwrap_or(TaskState::Queued);
    match state {
        TaskState::Queued => {
            let now = Utc::now();
            task.state = TaskState::Canceled.as_str().into();
            task.cancel_requested = true;
            task.completed_time = Some(now);
            task.error_message = Some("The task was canceled before it started.".into());
            tasks::save_task(conn, task).await?;
            tasks::append_log(
                conn,
                &task.id.clone(),
                vec![tasks::NewLogLine {
                    node_id: task.id.clone(),
                    source_seq: None,
                    occurred_at: now,
                    category: LogCategory::Info,
                    message: "Canceled before it started.".into(),
                }],
            )
            .await?;
            Ok(false)
        }
        TaskState::Executing => {
            task.state = TaskState::Cancelling.as_str().into();
            task.cancel_requested = true;
            tasks::save_task(conn, task).await?;
            let command = OrchestratorCommand::CancelRequested {
                task_id: task.id.clone(),
            };
            cuttle_platform::outbox::enqueue(
                conn,
                queues::ORCHESTRATOR_COMMANDS,
                command.kind(),
                &command,
            )
            .await?;
            Ok(true)
        }
        // Already cancelling or finished: nothing to do, and not an error (Octopus answers the task).
        _ => Ok(false),
    }
}

async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    path: PathParams,
) -> ApiResult<Json<ServerTask>> {
    let task = load(
        &state,
        &path,
        &principal,
        cuttle_authz::Permission::TaskCancel,
    )
    .await?;
    let txn = state.store.conn().begin().await?;
    let mut task = tasks::lock_task(&txn, &task.id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task '{}'", task.id)))?;
    let signalled = request_cancel(&txn, &mut task).await?;
    txn.commit().await?;
    if signalled {
        // Workers check this marker before starting a job, so a job still queued never runs.
        if let Err(err) = state
            .cache
            .set(
                &cancel_marker_key(&task.id),
                b"1",
                Some(Duration::from_secs(86_400)),
            )
            .await
        {
            tracing::warn!(task.id = %task.id, error = %err, "could not set the cancel marker; running jobs are still stopped by broadcast");
        }
        state.relay.wake();
    }
    Ok(Json(present(&task)))
}
