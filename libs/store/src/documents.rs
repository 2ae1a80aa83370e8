//! Space-owned resources (project groups, lifecycles, environments, projects, channels,
//! processes, variable sets, releases, deployments, feeds) stored as their Octopus JSON.

use crate::entities::document::{self, Column, Entity};
use crate::{SpaceId, StoreError};
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, SqlErr,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A stored document.
pub type Document = document::Model;

/// What a new document needs.
#[derive(Debug, Clone)]
pub struct NewDocument {
    /// Octopus id.
    pub id: String,
    /// Owning space (a space document owns itself).
    pub space_id: SpaceId,
    /// Resource kind, e.g. `Environment`.
    pub kind: &'static str,
    /// Display name, for filters.
    pub name: String,
    /// Owning resource (a project for its channels, releases...).
    pub parent_id: Option<String>,
    /// Unique within (space, kind) when present: lowercased names, `<project>/<version>`.
    pub unique_key: Option<String>,
    /// List order.
    pub sort_order: i64,
    /// The resource JSON.
    pub data: serde_json::Value,
}

/// Filters of a list call.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only these ids (empty: all).
    pub ids: Vec<String>,
    /// Case-insensitive substring of the name.
    pub partial_name: Option<String>,
    /// Exact name, case-insensitive.
    pub name: Option<String>,
    /// Only children of this resource.
    pub parent_id: Option<String>,
    /// Rows to skip.
    pub skip: u64,
    /// Rows to return.
    pub take: u64,
}

impl ListQuery {
    /// Every row: no filter, no paging (`take` of `u32::MAX`, which both backends accept).
    pub fn everything() -> ListQuery {
        ListQuery {
            take: u64::from(u32::MAX),
            ..ListQuery::default()
        }
    }
}

fn conflict_or(err: DbErr, what: &str) -> StoreError {
    // The only unique index on documents besides the primary key (whose values come from
    // id counters) is ux_documents_unique_key, so a unique violation here is always a name clash.
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict(what.to_owned()),
        _ => StoreError::Database(err),
    }
}

/// The current time at the precision both backends store (PostgreSQL keeps microseconds), so
/// the document `insert` and `replace` return is the one a later `get` reads back.
fn stored_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Inserts a document; a taken unique key is [`StoreError::Conflict`] with `conflict_message`.
pub async fn insert(
    conn: &impl ConnectionTrait,
    doc: NewDocument,
    conflict_message: &str,
) -> Result<Document, StoreError> {
    let now = stored_now();
    let model = document::Model {
        id: doc.id,
        space_id: doc.space_id.as_str().to_owned(),
        kind: doc.kind.to_owned(),
        name: doc.name,
        parent_id: doc.parent_id,
        unique_key: doc.unique_key,
        sort_order: doc.sort_order,
        data: doc.data.to_string(),
        version: 1,
        created_at: now,
        modified_at: now,
    };
    Entity::insert(document::ActiveModel::from(model.clone()))
        .exec_without_returning(conn)
        .await
        .map_err(|err| conflict_or(err, conflict_message))?;
    Ok(model)
}

/// What an update changes.
#[derive(Debug, Clone)]
pub struct Replacement {
    /// New display name.
    pub name: String,
    /// New unique key.
    pub unique_key: Option<String>,
    /// New order.
    pub sort_order: i64,
    /// New JSON.
    pub data: serde_json::Value,
    /// When set, the update only happens if the stored version still equals it.
    pub expected_version: Option<i64>,
}

/// Replaces a document's content and bumps its version. `Ok(None)` when it does not exist.
pub async fn replace(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    kind: &str,
    id: &str,
    replacement: Replacement,
    conflict_message: &str,
) -> Result<Option<Document>, StoreError> {
    let Some(current) = get(conn, space_id, kind, id).await? else {
        return Ok(None);
    };
    if let Some(expected) = replacement.expected_version
        && expected != current.version
    {
        return Err(StoreError::VersionMismatch(format!(
            "{kind} {id} was modified by someone else (version {expected} was sent, the current version is {}); reload it and try again",
            current.version
        )));
    }
    let now = stored_now();
    let result = Entity::update_many()
        .col_expr(Column::Name, Expr::value(replacement.name.clone()))
        .col_expr(
            Column::UniqueKey,
            Expr::value(replacement.unique_key.clone()),
        )
        .col_expr(Column::SortOrder, Expr::value(replacement.sort_order))
        .col_expr(Column::Data, Expr::value(replacement.data.to_string()))
        .col_expr(Column::Version, Expr::value(current.version + 1))
        .col_expr(Column::ModifiedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::SpaceId.eq(space_id.as_str()))
        .filter(Column::Version.eq(current.version))
        .exec(conn)
        .await
        .map_err(|err| conflict_or(err, conflict_message))?;
    if result.rows_affected == 0 {
        return Err(StoreError::VersionMismatch(format!(
            "{kind} {id} was modified by someone else at the same time; reload it and try again"
        )));
    }
    Ok(Some(document::Model {
        name: replacement.name,
        unique_key: replacement.unique_key,
        sort_order: replacement.sort_order,
        data: replacement.data.to_string(),
        version: current.version + 1,
        modified_at: now,
        ..current
    }))
}

/// Reads one document of a space.
pub async fn get(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    kind: &str,
    id: &str,
) -> Result<Option<Document>, StoreError> {
    Ok(Entity::find()
        .filter(Column::SpaceId.eq(space_id.as_str()))
        .filter(Column::Kind.eq(kind))
        .filter(Column::Id.eq(id))
        .one(conn)
        .await?)
}

/// Reads one document and, on PostgreSQL, locks its row until the transaction ends: a mutex
/// across processes keyed by a resource (SQLite runs one writer at a time already).
pub async fn lock(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    kind: &str,
    id: &str,
) -> Result<Option<Document>, StoreError> {
    let mut query = Entity::find()
        .filter(Column::SpaceId.eq(space_id.as_str()))
        .filter(Column::Kind.eq(kind))
        .filter(Column::Id.eq(id));
    if conn.get_database_backend() == sea_orm::DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    Ok(query.one(conn).await?)
}

/// Reads one document by case-insensitive exact name (optionally under a parent).
pub async fn find_by_name(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    kind: &str,
    parent_id: Option<&str>,
    name: &str,
) -> Result<Option<Document>, StoreError> {
    let mut query = Entity::find()
        .filter(Column::SpaceId.eq(space_id.as_str()))
        .filter(Column::Kind.eq(kind))
        .filter(
            Expr::expr(Func::lower(Expr::col(Column::Name))).eq(Expr::val(name.to_lowercase())),
        );
    if let Some(parent) = parent_id {
        query = query.filter(Column::ParentId.eq(parent));
    }
    Ok(query.order_by_asc(Column::SortOrder).one(conn).await?)
}

/// Lists documents of one kind in a space, ordered by sort order then creation.
pub async fn list(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    kind: &str,
    query: &ListQuery,
) -> Result<(Vec<Document>, u64), StoreError> {
    let mut select = Entity::find()
        .filter(Column::SpaceId.eq(space_id.as_str()))
        .filter(Column::Kind.eq(kind));
    if !query.ids.is_empty() {
        select = select.filter(Column::Id.is_in(query.ids.clone()));
    }
    if let Some(parent) = &query.parent_id {
        select = select.filter(Column::ParentId.eq(parent.as_str()));
    }
    if let Some(name) = &query.name {
        select = select.filter(
            Expr::expr(Func::lower(Expr::col(Column::Name))).eq(Expr::val(name.to_lowercase())),
        );
    }
    if let Some(partial) = query.partial_name.as_deref().filter(|p| !p.is_empty()) {
        select = select.filter(name_contains(partial));
    }
    let total = select.clone().count(conn).await?;
    let rows = select
        .order_by_asc(Column::SortOrder)
        .order_by_asc(Column::CreatedAt)
        // A unique last key: equal sort orders and timestamps never make pages overlap.
        .order_by_asc(Column::Id)
        .offset(query.skip)
        .limit(query.take)
        .all(conn)
        .await?;
    Ok((rows, total))
}

/// Every document of `kind` in every space, in creation order: for the few server-wide views
/// (the polling agents a worker may accept).
pub async fn list_in_all_spaces(
    conn: &impl ConnectionTrait,
    kind: &str,
) -> Result<Vec<Document>, StoreError> {
    Ok(Entity::find()
        .filter(Column::Kind.eq(kind))
        .order_by_asc(Column::CreatedAt)
        .order_by_asc(Column::Id)
        .all(conn)
        .await?)
}

/// Lists spaces (documents of kind `Space`, each owned by itself), in creation order.
pub async fn list_spaces(
    conn: &impl ConnectionTrait,
    query: &ListQuery,
) -> Result<(Vec<Document>, u64), StoreError> {
    let mut select = Entity::find().filter(Column::Kind.eq(SPACE_KIND));
    if !query.ids.is_empty() {
        select = select.filter(Column::Id.is_in(query.ids.clone()));
    }
    if let Some(partial) = query.partial_name.as_deref().filter(|p| !p.is_empty()) {
        select = select.filter(name_contains(partial));
    }
    let total = select.clone().count(conn).await?;
    let rows = select
        .order_by_asc(Column::SortOrder)
        .offset(query.skip)
        .limit(query.take)
        .all(conn)
        .await?;
    Ok((rows, total))
}

/// The document kind of spaces.
pub const SPACE_KIND: &str = "Space";

/// Deletes one document; true when it existed.
pub async fn delete(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    kind: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let result = Entity::delete_many()
        .filter(Column::SpaceId.eq(space_id.as_str()))
        .filter(Column::Kind.eq(kind))
        .filter(Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Deletes every document owned by `parent_id` (a project's channels, releases...).
pub async fn delete_children(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    parent_id: &str,
) -> Result<u64, StoreError> {
    let result = Entity::delete_many()
        .filter(Column::SpaceId.eq(space_id.as_str()))
        .filter(Column::ParentId.eq(parent_id))
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}

/// Deletes every document of a space, the space's own included.
pub async fn delete_space(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
) -> Result<u64, StoreError> {
    let result = Entity::delete_many()
        .filter(Column::SpaceId.eq(space_id.as_str()))
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}

/// `lower(name) LIKE '%partial%'`, with `%`, `_` and `\` in `partial` matched literally (the
/// TypeScript client resolves spaces by `partialName`, and names may contain them).
fn name_contains(partial: &str) -> sea_orm::sea_query::SimpleExpr {
    let escaped = partial
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    Expr::expr(Func::lower(Expr::col(Column::Name)))
        .like(LikeExpr::new(format!("%{escaped}%")).escape('\\'))
}

/// Parses a document's JSON into its wire type.
pub fn decode<T: DeserializeOwned>(doc: &Document) -> Result<T, StoreError> {
    serde_json::from_str(&doc.data).map_err(|err| StoreError::Corrupt {
        id: doc.id.clone(),
        reason: err.to_string(),
    })
}

/// Serialises a wire type for storage; `Links` are dropped since they are computed on output.
pub fn encode<T: Serialize>(value: &T) -> serde_json::Value {
    let mut json = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    if let Some(map) = json.as_object_mut() {
        map.remove("Links");
    }
    json
}
