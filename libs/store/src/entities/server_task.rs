//! A server task: a deployment (or later a health check, runbook run...) and its state.
use sea_orm::entity::prelude::*;

/// One row of `server_tasks`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "server_tasks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub space_id: String,
    pub name: String,
    #[sea_orm(column_type = "Text")]
    pub description: String,
    pub state: String,
    #[sea_orm(column_type = "Text")]
    pub arguments: String,
    pub project_id: Option<String>,
    pub environment_id: Option<String>,
    pub deployment_id: Option<String>,
    pub tenant_id: Option<String>,
    pub queue_time: DateTimeUtc,
    pub start_time: Option<DateTimeUtc>,
    pub completed_time: Option<DateTimeUtc>,
    pub last_updated_time: DateTimeUtc,
    #[sea_orm(column_type = "Text", nullable)]
    pub error_message: Option<String>,
    pub has_warnings_or_errors: bool,
    pub cancel_requested: bool,
    pub server_node: Option<String>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
