//! Build information pushed for a package version (which need not be in the feed yet).
use sea_orm::entity::prelude::*;

/// One row of `build_information`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "build_information")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub space_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub package_id: String,
    pub package_id_lower: String,
    pub version: String,
    pub version_normalized: String,
    /// The `OctopusBuildInformation` JSON as pushed.
    #[sea_orm(column_type = "Text")]
    pub data: String,
    pub created: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
