//! A person or service account.
use sea_orm::entity::prelude::*;

/// One row of `users`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(unique)]
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub is_service: bool,
    pub is_active: bool,
    pub created_at: DateTimeUtc,
    /// The organisation the user belongs to (null only before bootstrap adopts old rows).
    pub organisation_id: Option<String>,
    /// argon2id PHC string; null for service accounts and SSO-only users.
    pub password_hash: Option<String>,
    /// `<issuer>|<subject>` of a user created by single sign-on.
    #[sea_orm(unique)]
    pub external_id: Option<String>,
    /// Whether the email address is proven (by a link sent to it, or by an SSO provider).
    pub email_verified: bool,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
