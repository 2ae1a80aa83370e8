//! Server tasks, their jobs (one per planned action) and their logs.

use crate::entities::{server_task, task_job, task_log};
use crate::{SpaceId, StoreError};
use chrono::{DateTime, Utc};
use cuttle_domain::TaskState;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

/// A stored task.
pub type Task = server_task::Model;

/// A Queued task of `space_id` with nothing run yet; callers set the project, environment or
/// deployment it belongs to.
pub fn queued_task(
    id: String,
    space_id: &SpaceId,
    name: &str,
    description: String,
    arguments: String,
    now: DateTime<Utc>,
) -> Task {
    Task {
        id,
        space_id: space_id.to_string(),
        name: name.to_owned(),
        description,
        state: TaskState::Queued.as_str().into(),
        arguments,
        project_id: None,
        environment_id: None,
        deployment_id: None,
        tenant_id: None,
        queue_time: now,
        start_time: None,
        completed_time: None,
        last_updated_time: now,
        error_message: None,
        has_warnings_or_errors: false,
        cancel_requested: false,
        server_node: None,
    }
}
/// A stored job.
pub type Job = task_job::Model;
/// A stored log line.
pub type LogRow = task_log::Model;

/// Job statuses, as stored.
pub mod job_status {
    /// Planned, waiting for earlier steps.
    pub const PENDING: &str = "Pending";
    /// Sent to the worker queue.
    pub const DISPATCHED: &str = "Dispatched";
    /// A worker claimed it.
    pub const RUNNING: &str = "Running";
    /// Ended well.
    pub const SUCCESS: &str = "Success";
    /// Ended badly.
    pub const FAILED: &str = "Failed";
    /// Not run because of its condition.
    pub const SKIPPED: &str = "Skipped";
    /// Stopped or never started because of a cancel.
    pub const CANCELED: &str = "Canceled";
}

/// Inserts a new task.
pub async fn insert_task(conn: &impl ConnectionTrait, task: Task) -> Result<Task, StoreError> {
    server_task::Entity::insert(server_task::ActiveModel::from(task.clone()))
        .exec_without_returning(conn)
        .await?;
    Ok(task)
}

/// Reads a task, scoped to a space when one is given (None: a cross-space route such as `/api/tasks`
/// that the caller has already authorised).
pub async fn get_task(
    conn: &impl ConnectionTrait,
    space_id: Option<&SpaceId>,
    id: &str,
) -> Result<Option<Task>, StoreError> {
    let mut query = server_task::Entity::find().filter(server_task::Column::Id.eq(id));
    if let Some(space) = space_id {
        query = query.filter(server_task::Column::SpaceId.eq(space.as_str()));
    }
    Ok(query.one(conn).await?)
}

/// Reads a task and, on PostgreSQL, locks its row until the transaction ends, so two processes
/// never advance the same task at once. SQLite runs one writer at a time already.
pub async fn lock_task(conn: &impl ConnectionTrait, id: &str) -> Result<Option<Task>, StoreError> {
    let mut query = server_task::Entity::find().filter(server_task::Column::Id.eq(id));
    if conn.get_database_backend() == DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    Ok(query.one(conn).await?)
}

/// Saves every column of a task.
pub async fn save_task(conn: &impl ConnectionTrait, task: &Task) -> Result<(), StoreError> {
    let mut task = task.clone();
    task.last_updated_time = Utc::now();
    // Every column is written: callers hold the task's row lock and own its whole state.
    server_task::Entity::update(server_task::ActiveModel::from(task).reset_all())
        .exec(conn)
        .await?;
    Ok(())
}

/// Filters of the task list.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    /// Spaces to include (None: all).
    pub space_ids: Option<Vec<String>>,
    /// Only these ids.
    pub ids: Vec<String>,
    /// Only these states.
    pub states: Vec<TaskState>,
    /// Only tasks of this project.
    pub project_id: Option<String>,
    /// Only tasks for this environment.
    pub environment_id: Option<String>,
    /// Only tasks for this tenant.
    pub tenant_id: Option<String>,
    /// Only tasks with this name ("Deploy").
    pub name: Option<String>,
    /// Rows to skip.
    pub skip: u64,
    /// Rows to return.
    pub take: u64,
}

/// Lists tasks, newest first, as Octopus does.
pub async fn list_tasks(
    conn: &impl ConnectionTrait,
    query: &TaskQuery,
) -> Result<(Vec<Task>, u64), StoreError> {
    let mut select = server_task::Entity::find();
    if let Some(spaces) = &query.space_ids {
        select = select.filter(server_task::Column::SpaceId.is_in(spaces.clone()));
    }
    if !query.ids.is_empty() {
        select = select.filter(server_task::Column::Id.is_in(query.ids.clone()));
    }
    if !query.states.is_empty() {
        select = select
            .filter(server_task::Column::State.is_in(query.states.iter().map(|s| s.as_str())));
    }
    if let Some(project) = &query.project_id {
        select = select.filter(server_task::Column::ProjectId.eq(project.as_str()));
    }
    if let Some(environment) = &query.environment_id {
        select = select.filter(server_task::Column::EnvironmentId.eq(environment.as_str()));
    }
    if let Some(tenant) = &query.tenant_id {
        select = select.filter(server_task::Column::TenantId.eq(tenant.as_str()));
    }
    if let Some(name) = &query.name {
        select = select.filter(server_task::Column::Name.eq(name.as_str()));
    }
    let total = select.clone().count(conn).await?;
    let rows = select
        .order_by_desc(server_task::Column::QueueTime)
        .order_by_desc(server_task::Column::Id)
        .offset(query.skip)
        .limit(query.take)
        .all(conn)
        .await?;
    Ok((rows, total))
}

/// Counts tasks in a state (for the queued/executing gauges).
pub async fn count_in_state(
    conn: &impl ConnectionTrait,
    state: TaskState,
) -> Result<u64, StoreError> {
    Ok(server_task::Entity::find()
        .filter(server_task::Column::State.eq(state.as_str()))
        .count(conn)
        .await?)
}

/// Tasks in a state whose last update is older than `before` (the reaper's candidates).
pub async fn tasks_in_state_since(
    conn: &impl ConnectionTrait,
    state: TaskState,
    before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Task>, StoreError> {
    Ok(server_task::Entity::find()
        .filter(server_task::Column::State.eq(state.as_str()))
        .filter(server_task::Column::LastUpdatedTime.lt(before))
        .order_by_asc(server_task::Column::LastUpdatedTime)
        .limit(limit)
        .all(conn)
        .await?)
}

/// Deletes every task of a space with its jobs and logs.
pub async fn delete_space_tasks(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
) -> Result<(), StoreError> {
    let ids: Vec<String> = server_task::Entity::find()
        .filter(server_task::Column::SpaceId.eq(space_id.as_str()))
        .all(conn)
        .await?
        .into_iter()
        .map(|t| t.id)
        .collect();
    for chunk in ids.chunks(500) {
        task_log::Entity::delete_many()
            .filter(task_log::Column::TaskId.is_in(chunk.to_vec()))
            .exec(conn)
            .await?;
        task_job::Entity::delete_many()
            .filter(task_job::Column::TaskId.is_in(chunk.to_vec()))
            .exec(conn)
            .await?;
        server_task::Entity::delete_many()
            .filter(server_task::Column::Id.is_in(chunk.to_vec()))
            .exec(conn)
            .await?;
    }
    Ok(())
}

/// Inserts planned jobs.
pub async fn insert_jobs(conn: &impl ConnectionTrait, jobs: Vec<Job>) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return Ok(());
    }
    task_job::Entity::insert_many(jobs.into_iter().map(task_job::ActiveModel::from))
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Jobs of a task in plan order.
pub async fn jobs_for_task(
    conn: &impl ConnectionTrait,
    task_id: &str,
) -> Result<Vec<Job>, StoreError> {
    Ok(task_job::Entity::find()
        .filter(task_job::Column::TaskId.eq(task_id))
        .order_by_asc(task_job::Column::Position)
        .all(conn)
        .await?)
}

/// How many of a task's jobs are in one of `statuses`, without reading them.
pub async fn count_jobs(
    conn: &impl ConnectionTrait,
    task_id: &str,
    statuses: &[&str],
) -> Result<u64, StoreError> {
    Ok(task_job::Entity::find()
        .filter(task_job::Column::TaskId.eq(task_id))
        .filter(task_job::Column::Status.is_in(statuses.iter().copied()))
        .count(conn)
        .await?)
}

/// The first of a task's jobs, in plan order, that is in one of `statuses`.
pub async fn first_job(
    conn: &impl ConnectionTrait,
    task_id: &str,
    statuses: &[&str],
) -> Result<Option<Job>, StoreError> {
    Ok(task_job::Entity::find()
        .filter(task_job::Column::TaskId.eq(task_id))
        .filter(task_job::Column::Status.is_in(statuses.iter().copied()))
        .order_by_asc(task_job::Column::Position)
        .one(conn)
        .await?)
}

/// Up to `limit` pending jobs of one action of one step, in plan order: the next targets of a
/// fan-out.
pub async fn pending_jobs_of_action(
    conn: &impl ConnectionTrait,
    task_id: &str,
    step_number: i32,
    action_name: &str,
    limit: u64,
) -> Result<Vec<Job>, StoreError> {
    Ok(task_job::Entity::find()
        .filter(task_job::Column::TaskId.eq(task_id))
        .filter(task_job::Column::Status.eq(job_status::PENDING))
        .filter(task_job::Column::StepNumber.eq(step_number))
        .filter(task_job::Column::ActionName.eq(action_name))
        .order_by_asc(task_job::Column::Position)
        .limit(limit)
        .all(conn)
        .await?)
}

/// The jobs before `position` that set output variables, other than the jobs of the same action
/// (the siblings of a fan-out): what a job about to be dispatched can read.
pub async fn jobs_with_outputs_before(
    conn: &impl ConnectionTrait,
    task_id: &str,
    position: i32,
    step_number: i32,
    action_name: &str,
) -> Result<Vec<Job>, StoreError> {
    Ok(task_job::Entity::find()
        .filter(task_job::Column::TaskId.eq(task_id))
        .filter(task_job::Column::Position.lt(position))
        .filter(task_job::Column::OutputVariables.is_not_null())
        .filter(
            Condition::any()
                .add(task_job::Column::StepNumber.ne(step_number))
                .add(task_job::Column::ActionName.ne(action_name)),
        )
        .order_by_asc(task_job::Column::Position)
        .all(conn)
        .await?)
}

/// Reads one job.
pub async fn get_job(conn: &impl ConnectionTrait, job_id: &str) -> Result<Option<Job>, StoreError> {
    Ok(task_job::Entity::find_by_id(job_id.to_owned())
        .one(conn)
        .await?)
}

/// Saves every column of a job.
pub async fn save_job(conn: &impl ConnectionTrait, job: &Job) -> Result<(), StoreError> {
    task_job::Entity::update(task_job::ActiveModel::from(job.clone()).reset_all())
        .exec(conn)
        .await?;
    Ok(())
}

/// Jobs in `status` whose `column` time is older than `before`: running jobs without a recent
/// heartbeat, dispatched jobs nobody picked up.
pub async fn stale_jobs(
    conn: &impl ConnectionTrait,
    status: &str,
    column: task_job::Column,
    before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<Job>, StoreError> {
    Ok(task_job::Entity::find()
        .filter(task_job::Column::Status.eq(status))
        .filter(column.lt(before))
        .limit(limit)
        .all(conn)
        .await?)
}

/// One log line to append.
#[derive(Debug, Clone)]
pub struct NewLogLine {
    /// Activity node: the task id for task-level lines, the job id for a job's output.
    pub node_id: String,
    /// The worker's line number, for idempotent redelivery; None for orchestrator lines.
    pub source_seq: Option<i64>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Log category.
    pub category: cuttle_domain::LogCategory,
    /// Text.
    pub message: String,
}

/// Appends lines to a task's log; lines already stored (same node and seq) are skipped.
pub async fn append_log(
    conn: &impl ConnectionTrait,
    task_id: &str,
    lines: Vec<NewLogLine>,
) -> Result<(), StoreError> {
    if lines.is_empty() {
        return Ok(());
    }
    let rows = lines.into_iter().map(|line| task_log::ActiveModel {
        id: sea_orm::ActiveValue::NotSet,
        task_id: sea_orm::ActiveValue::Set(task_id.to_owned()),
        node_id: sea_orm::ActiveValue::Set(line.node_id),
        source_seq: sea_orm::ActiveValue::Set(line.source_seq),
        occurred_at: sea_orm::ActiveValue::Set(line.occurred_at),
        category: sea_orm::ActiveValue::Set(line.category.as_str().to_owned()),
        message: sea_orm::ActiveValue::Set(line.message),
    });
    let result = task_log::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([
                task_log::Column::TaskId,
                task_log::Column::NodeId,
                task_log::Column::SourceSeq,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(conn)
        .await;
    match result {
        Ok(_) | Err(DbErr::RecordNotInserted) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// A task's whole log, in order.
pub async fn read_log(
    conn: &impl ConnectionTrait,
    task_id: &str,
) -> Result<Vec<LogRow>, StoreError> {
    Ok(task_log::Entity::find()
        .filter(task_log::Column::TaskId.eq(task_id))
        .order_by_asc(task_log::Column::Id)
        .all(conn)
        .await?)
}

/// Records a heartbeat, only while the job is still running (a late heartbeat must never
/// resurrect a job the reaper or a finish already ended).
pub async fn touch_job_heartbeat(
    conn: &impl ConnectionTrait,
    job_id: &str,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    use sea_orm::sea_query::Expr;
    let result = task_job::Entity::update_many()
        .col_expr(task_job::Column::HeartbeatAt, Expr::value(at))
        .filter(task_job::Column::JobId.eq(job_id))
        .filter(task_job::Column::Status.eq(job_status::RUNNING))
        .exec(conn)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Sets `HasWarningsOrErrors` without touching any other column.
pub async fn mark_task_warnings(
    conn: &impl ConnectionTrait,
    task_id: &str,
) -> Result<(), StoreError> {
    use sea_orm::sea_query::Expr;
    server_task::Entity::update_many()
        .col_expr(server_task::Column::HasWarningsOrErrors, Expr::value(true))
        .filter(server_task::Column::Id.eq(task_id))
        .exec(conn)
        .await?;
    Ok(())
}
