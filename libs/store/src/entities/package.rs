//! One version of a package in the built-in feed; its file is the blob at `blob_key`.
use sea_orm::entity::prelude::*;

/// One row of `packages`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "packages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub space_id: String,
    pub package_id: String,
    pub package_id_lower: String,
    pub version: String,
    pub version_normalized: String,
    pub extension: String,
    pub size_bytes: i64,
    pub sha256: String,
    #[sea_orm(column_type = "Text")]
    pub blob_key: String,
    #[sea_orm(column_type = "Text")]
    pub title: String,
    #[sea_orm(column_type = "Text")]
    pub summary: String,
    #[sea_orm(column_type = "Text")]
    pub description: String,
    #[sea_orm(column_type = "Text")]
    pub release_notes: String,
    pub published: DateTimeUtc,
}

/// No relations: build information is matched by package id and version, not by key.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
