//! One audit event.
use sea_orm::entity::prelude::*;

/// One row of `events`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub organisation_id: String,
    pub space_id: Option<String>,
    pub category: String,
    pub user_id: Option<String>,
    pub username: String,
    pub is_service: bool,
    pub identity_established_with: String,
    pub user_agent: String,
    pub ip_address: String,
    pub occurred: DateTimeUtc,
    #[sea_orm(column_type = "Text")]
    pub message: String,
    /// JSON array of ids.
    #[sea_orm(column_type = "Text")]
    pub related_document_ids: String,
    /// The document the event is about (the first of `related_document_ids`), if any.
    pub document_id: Option<String>,
    /// JSON: `ChangeDetails` (the request's document, sensitive values removed, and its
    /// differences from the document's previous event).
    #[sea_orm(column_type = "Text")]
    pub details: String,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
