//! Which organisation owns a space.
use sea_orm::entity::prelude::*;

/// One row of `space_owners`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "space_owners")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub space_id: String,
    pub organisation_id: String,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
