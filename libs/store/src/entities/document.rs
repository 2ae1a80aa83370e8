//! A space-owned resource stored as its Octopus JSON, with the columns queries need.
use sea_orm::entity::prelude::*;

/// One row of `documents`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "documents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub space_id: String,
    pub kind: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub unique_key: Option<String>,
    pub sort_order: i64,
    #[sea_orm(column_type = "Text")]
    pub data: String,
    pub version: i64,
    pub created_at: DateTimeUtc,
    pub modified_at: DateTimeUtc,
}

/// No relations: documents refer to each other by Octopus id inside their JSON.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
