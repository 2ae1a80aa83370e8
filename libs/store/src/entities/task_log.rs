//! One line of a task's log, attached to a node of the activity tree.
use sea_orm::entity::prelude::*;

/// One row of `task_log`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "task_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub task_id: String,
    pub node_id: String,
    pub source_seq: Option<i64>,
    pub occurred_at: DateTimeUtc,
    pub category: String,
    #[sea_orm(column_type = "Text")]
    pub message: String,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
