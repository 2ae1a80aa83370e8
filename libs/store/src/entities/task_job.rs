//! One planned action of a task, dispatched to a worker as a job.
use sea_orm::entity::prelude::*;

/// One row of `task_jobs`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "task_jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub job_id: String,
    pub task_id: String,
    pub position: i32,
    pub step_number: i32,
    pub step_name: String,
    pub action_name: String,
    pub condition: String,
    pub status: String,
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    pub worker: Option<String>,
    pub dispatched_at: Option<DateTimeUtc>,
    pub started_at: Option<DateTimeUtc>,
    pub heartbeat_at: Option<DateTimeUtc>,
    pub ended_at: Option<DateTimeUtc>,
    pub exit_code: Option<i32>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    /// Output variables the job set, as a JSON object of name to value.
    #[sea_orm(column_type = "Text", nullable)]
    pub output_variables: Option<String>,
    /// Fan-out width: null runs alone, 0 runs beside every other job of the same step and
    /// action, N at most N at a time.
    pub parallel_window: Option<i32>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
