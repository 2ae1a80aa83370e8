//! Organisations and what they own outside spaces: which spaces are theirs, and their teams, user
//! roles and scoped user roles (stored as Octopus JSON in `org_documents`).
//!
//! Every function here takes the organisation id: one organisation's rows are never read on
//! another's behalf.

use crate::StoreError;
use crate::entities::{org_document, organisation, space_owner};
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    SqlErr,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A stored organisation.
pub type Organisation = organisation::Model;

/// A stored organisation-owned document.
pub type OrgDocument = org_document::Model;

fn stored_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn conflict_or(err: DbErr, what: &str) -> StoreError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict(what.to_owned()),
        _ => StoreError::Database(err),
    }
}

/// Creates an organisation; a taken slug is [`StoreError::Conflict`].
pub async fn insert_organisation(
    conn: &impl ConnectionTrait,
    name: &str,
    slug: &str,
) -> Result<Organisation, StoreError> {
    let model = Organisation {
        id: crate::next_id(conn, "Organisations").await?,
        name: name.to_owned(),
        slug: slug.to_owned(),
        created_at: stored_now(),
    };
    organisation::Entity::insert(organisation::ActiveModel::from(model.clone()))
        .exec_without_returning(conn)
        .await
        .map_err(|err| conflict_or(err, &format!("The slug '{slug}' is already taken.")))?;
    Ok(model)
}

/// Reads an organisation.
pub async fn get_organisation(
    conn: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<Organisation>, StoreError> {
    Ok(organisation::Entity::find_by_id(id.to_owned())
        .one(conn)
        .await?)
}

/// Finds an organisation by its slug.
pub async fn find_organisation_by_slug(
    conn: &impl ConnectionTrait,
    slug: &str,
) -> Result<Option<Organisation>, StoreError> {
    Ok(organisation::Entity::find()
        .filter(organisation::Column::Slug.eq(slug))
        .one(conn)
        .await?)
}

/// The first organisation (the one that existed before organisations did), if any.
pub async fn first_organisation(
    conn: &impl ConnectionTrait,
) -> Result<Option<Organisation>, StoreError> {
    Ok(organisation::Entity::find()
        .order_by_asc(organisation::Column::CreatedAt)
        .one(conn)
        .await?)
}

/// Records that `organisation_id` owns `space_id`.
pub async fn set_space_owner(
    conn: &impl ConnectionTrait,
    space_id: &str,
    organisation_id: &str,
) -> Result<(), StoreError> {
    space_owner::Entity::insert(space_owner::ActiveModel {
        space_id: Set(space_id.to_owned()),
        organisation_id: Set(organisation_id.to_owned()),
    })
    .on_conflict_do_nothing_on([space_owner::Column::SpaceId])
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// The organisation owning a space, if the space has an owner.
pub async fn space_owner(
    conn: &impl ConnectionTrait,
    space_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(space_owner::Entity::find_by_id(space_id.to_owned())
        .one(conn)
        .await?
        .map(|row| row.organisation_id))
}

/// The ids of the spaces an organisation owns.
pub async fn spaces_of(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
) -> Result<Vec<String>, StoreError> {
    Ok(space_owner::Entity::find()
        .filter(space_owner::Column::OrganisationId.eq(organisation_id))
        .all(conn)
        .await?
        .into_iter()
        .map(|row| row.space_id)
        .collect())
}

/// Forgets a deleted space's owner.
pub async fn delete_space_owner(
    conn: &impl ConnectionTrait,
    space_id: &str,
) -> Result<(), StoreError> {
    space_owner::Entity::delete_by_id(space_id.to_owned())
        .exec(conn)
        .await?;
    Ok(())
}

/// Stores a new organisation document; a taken (kind, name) is [`StoreError::Conflict`] with
/// `conflict_message`.
pub async fn insert_document<T: Serialize>(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    kind: &str,
    id: &str,
    name: &str,
    value: &T,
    conflict_message: &str,
) -> Result<(), StoreError> {
    let now = stored_now();
    org_document::Entity::insert(org_document::ActiveModel {
        organisation_id: Set(organisation_id.to_owned()),
        id: Set(id.to_owned()),
        kind: Set(kind.to_owned()),
        name: Set(name.to_owned()),
        data: Set(crate::documents::encode(value).to_string()),
        created_at: Set(now),
        modified_at: Set(now),
    })
    .exec_without_returning(conn)
    .await
    .map_err(|err| conflict_or(err, conflict_message))?;
    Ok(())
}

/// Replaces an organisation document's name and body; false when it does not exist.
pub async fn replace_document<T: Serialize>(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    kind: &str,
    id: &str,
    name: &str,
    value: &T,
    conflict_message: &str,
) -> Result<bool, StoreError> {
    use sea_orm::sea_query::Expr;
    let result = org_document::Entity::update_many()
        .col_expr(org_document::Column::Name, Expr::value(name.to_owned()))
        .col_expr(
            org_document::Column::Data,
            Expr::value(crate::documents::encode(value).to_string()),
        )
        .col_expr(org_document::Column::ModifiedAt, Expr::value(stored_now()))
        .filter(org_document::Column::OrganisationId.eq(organisation_id))
        .filter(org_document::Column::Kind.eq(kind))
        .filter(org_document::Column::Id.eq(id))
        .exec(conn)
        .await
        .map_err(|err| conflict_or(err, conflict_message))?;
    Ok(result.rows_affected > 0)
}

/// Reads one organisation document of a kind.
pub async fn get_document(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    kind: &str,
    id: &str,
) -> Result<Option<OrgDocument>, StoreError> {
    Ok(org_document::Entity::find()
        .filter(org_document::Column::OrganisationId.eq(organisation_id))
        .filter(org_document::Column::Kind.eq(kind))
        .filter(org_document::Column::Id.eq(id))
        .one(conn)
        .await?)
}

/// Every document of the given kinds in an organisation, by name.
pub async fn list_documents(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    kinds: &[&str],
) -> Result<Vec<OrgDocument>, StoreError> {
    Ok(org_document::Entity::find()
        .filter(org_document::Column::OrganisationId.eq(organisation_id))
        .filter(org_document::Column::Kind.is_in(kinds.iter().copied()))
        .order_by_asc(org_document::Column::Name)
        .all(conn)
        .await?)
}

/// Deletes one organisation document; false when it did not exist.
pub async fn delete_document(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    kind: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let result = org_document::Entity::delete_many()
        .filter(org_document::Column::OrganisationId.eq(organisation_id))
        .filter(org_document::Column::Kind.eq(kind))
        .filter(org_document::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Decodes an organisation document's JSON.
pub fn decode<T: DeserializeOwned>(doc: &OrgDocument) -> Result<T, StoreError> {
    serde_json::from_str(&doc.data).map_err(|err| StoreError::Corrupt {
        id: doc.id.clone(),
        reason: err.to_string(),
    })
}

/// Every organisation's documents of one kind (to find the organisation an email domain signs
/// in to); each row names its organisation.
pub async fn documents_of_kind(
    conn: &impl ConnectionTrait,
    kind: &str,
) -> Result<Vec<OrgDocument>, StoreError> {
    Ok(org_document::Entity::find()
        .filter(org_document::Column::Kind.eq(kind))
        .order_by_asc(org_document::Column::OrganisationId)
        .all(conn)
        .await?)
}
