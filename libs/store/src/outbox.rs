//! The transactional outbox: messages written with the state change that causes them, then
//! relayed to the bus. A crash between commit and publish loses nothing; the relay retries.

use crate::StoreError;
use crate::entities::outbox::{self, Column, Entity};
use chrono::Utc;
use sea_orm::sea_query::LockBehavior;
use sea_orm::sea_query::LockType;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use std::collections::BTreeMap;

/// A stored message.
pub type OutboxMessage = outbox::Model;

/// Records a message for `queue` in the caller's transaction.
pub async fn enqueue(
    conn: &impl ConnectionTrait,
    queue: &str,
    message_id: &str,
    kind: &str,
    payload: &[u8],
    headers: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    let payload = String::from_utf8_lossy(payload).into_owned();
    let headers = serde_json::to_string(headers).unwrap_or_else(|_| "{}".to_owned());
    Entity::insert(outbox::ActiveModel {
        id: NotSet,
        queue: Set(queue.to_owned()),
        message_id: Set(message_id.to_owned()),
        kind: Set(kind.to_owned()),
        payload: Set(payload),
        headers: Set(headers),
        created_at: Set(Utc::now()),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// The oldest pending messages. On PostgreSQL the rows stay locked (skipping rows another relay
/// holds) until the caller's transaction ends, so two api replicas never publish the same row.
pub async fn claim_batch(
    conn: &impl ConnectionTrait,
    limit: u64,
) -> Result<Vec<OutboxMessage>, StoreError> {
    let mut query = Entity::find().order_by_asc(Column::Id).limit(limit);
    if conn.get_database_backend() == DbBackend::Postgres {
        query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    Ok(query.all(conn).await?)
}

/// Removes relayed messages.
pub async fn remove(conn: &impl ConnectionTrait, ids: Vec<i64>) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    Entity::delete_many()
        .filter(Column::Id.is_in(ids))
        .exec(conn)
        .await?;
    Ok(())
}
