//! The audit log.

use crate::StoreError;
use crate::entities::event;
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

/// A stored event.
pub type Event = event::Model;

/// Stores an event; its id and time are filled in.
pub async fn insert_event(
    conn: &impl ConnectionTrait,
    mut event: Event,
) -> Result<Event, StoreError> {
    event.id = crate::next_id(conn, "Events").await?;
    event.occurred = Utc::now().trunc_subsecs(6);
    event::Entity::insert(event::ActiveModel::from(event.clone()))
        .exec_without_returning(conn)
        .await?;
    Ok(event)
}

/// Rewrites a stored event whole (the event of a write, once its outcome is known).
pub async fn update_event(conn: &impl ConnectionTrait, event: Event) -> Result<(), StoreError> {
    let mut event = event;
    event.occurred = Utc::now().trunc_subsecs(6);
    let active = event::ActiveModel::from(event).reset_all();
    event::Entity::update(active).exec(conn).await?;
    Ok(())
}

/// Deletes an event (the event of a write that did not happen).
pub async fn delete_event(conn: &impl ConnectionTrait, id: &str) -> Result<(), StoreError> {
    event::Entity::delete_by_id(id.to_owned())
        .exec(conn)
        .await?;
    Ok(())
}

/// Which events to list: always one organisation's.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// The organisation.
    pub organisation_id: String,
    /// Only these spaces (and, with `include_system`, events of no space).
    pub spaces: Option<Vec<String>>,
    /// Also events of no space.
    pub include_system: bool,
    /// Only these categories.
    pub categories: Vec<String>,
    /// Only by these users.
    pub users: Vec<String>,
    /// Only events naming every one of these documents.
    pub regarding_all: Vec<String>,
    /// Only events naming at least one document of each group (`regardingAny`, `projects`,
    /// `environments`, `tenants`: one group each).
    pub regarding_any: Vec<Vec<String>>,
    /// Only events whose main document is of one of these types (`Projects`, `Environments`:
    /// the prefix of its id).
    pub document_types: Vec<String>,
    /// From this time (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Until this time (inclusive).
    pub to: Option<DateTime<Utc>>,
    /// Paging.
    pub skip: u64,
    /// Paging.
    pub take: u64,
}

/// A page of events, newest first, and the total.
pub async fn list_events(
    conn: &impl ConnectionTrait,
    query: &EventQuery,
) -> Result<(Vec<Event>, u64), StoreError> {
    use sea_orm::Condition;
    let mut select =
        event::Entity::find().filter(event::Column::OrganisationId.eq(&query.organisation_id));
    if let Some(spaces) = &query.spaces {
        let mut scope = Condition::any().add(event::Column::SpaceId.is_in(spaces.iter().cloned()));
        if query.include_system {
            scope = scope.add(event::Column::SpaceId.is_null());
        }
        select = select.filter(scope);
    }
    if !query.categories.is_empty() {
        select = select.filter(event::Column::Category.is_in(query.categories.iter().cloned()));
    }
    if !query.users.is_empty() {
        select = select.filter(event::Column::UserId.is_in(query.users.iter().cloned()));
    }
    // Ids are stored as a JSON array of strings, so a quoted id matches only itself.
    let naming = |id: &String| event::Column::RelatedDocumentIds.contains(format!("\"{id}\""));
    for id in &query.regarding_all {
        select = select.filter(naming(id));
    }
    for group in query.regarding_any.iter().filter(|group| !group.is_empty()) {
        select = select.filter(
            group
                .iter()
                .fold(Condition::any(), |any, id| any.add(naming(id))),
        );
    }
    if !query.document_types.is_empty() {
        let types = query
            .document_types
            .iter()
            .fold(Condition::any(), |any, kind| {
                any.add(event::Column::DocumentId.starts_with(format!("{kind}-")))
            });
        select = select.filter(types);
    }
    if let Some(from) = query.from {
        select = select.filter(event::Column::Occurred.gte(from));
    }
    if let Some(to) = query.to {
        select = select.filter(event::Column::Occurred.lte(to));
    }
    let total = select.clone().count(conn).await?;
    let rows = select
        .order_by_desc(event::Column::Occurred)
        .order_by_desc(event::Column::Id)
        .offset(query.skip)
        .limit(query.take)
        .all(conn)
        .await?;
    Ok((rows, total))
}

/// One event of an organisation.
pub async fn get_event(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    id: &str,
) -> Result<Option<Event>, StoreError> {
    Ok(event::Entity::find_by_id(id.to_owned())
        .one(conn)
        .await?
        .filter(|e| e.organisation_id == organisation_id))
}

/// The latest event about `document_id` (whose details hold the document's last known state).
pub async fn latest_regarding(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
    document_id: &str,
) -> Result<Option<Event>, StoreError> {
    Ok(event::Entity::find()
        .filter(event::Column::OrganisationId.eq(organisation_id))
        .filter(event::Column::DocumentId.eq(document_id))
        .order_by_desc(event::Column::Occurred)
        .one(conn)
        .await?)
}
