//! Sign-in sessions and their refresh tokens (stored as SHA-256 hashes).

use crate::StoreError;
use crate::entities::session;
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

/// A stored session.
pub type Session = session::Model;

/// Starts a session for `user_id` whose refresh token hashes to `refresh_hash`.
pub async fn insert_session(
    conn: &impl ConnectionTrait,
    id: &str,
    user_id: &str,
    refresh_hash: &str,
    expires_at: DateTime<Utc>,
) -> Result<Session, StoreError> {
    let model = Session {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        refresh_hash: refresh_hash.to_owned(),
        created_at: Utc::now().trunc_subsecs(6),
        expires_at: expires_at.trunc_subsecs(6),
        revoked_at: None,
    };
    session::Entity::insert(session::ActiveModel::from(model.clone()))
        .exec_without_returning(conn)
        .await?;
    Ok(model)
}

/// The live (unrevoked, unexpired) session whose refresh token hashes to `refresh_hash`.
pub async fn live_session_by_refresh(
    conn: &impl ConnectionTrait,
    refresh_hash: &str,
) -> Result<Option<Session>, StoreError> {
    Ok(session::Entity::find()
        .filter(session::Column::RefreshHash.eq(refresh_hash))
        .one(conn)
        .await?
        .filter(|s| s.revoked_at.is_none() && s.expires_at > Utc::now()))
}

/// Whether a session is live.
pub async fn is_live(conn: &impl ConnectionTrait, id: &str) -> Result<bool, StoreError> {
    Ok(session::Entity::find_by_id(id.to_owned())
        .one(conn)
        .await?
        .is_some_and(|s| s.revoked_at.is_none() && s.expires_at > Utc::now()))
}

/// Replaces a live session's refresh token (rotation); false when the old one was already used.
pub async fn rotate_refresh(
    conn: &impl ConnectionTrait,
    id: &str,
    old_hash: &str,
    new_hash: &str,
) -> Result<bool, StoreError> {
    let result = session::Entity::update_many()
        .col_expr(
            session::Column::RefreshHash,
            Expr::value(new_hash.to_owned()),
        )
        .filter(session::Column::Id.eq(id))
        .filter(session::Column::RefreshHash.eq(old_hash))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Ends a session.
pub async fn revoke(conn: &impl ConnectionTrait, id: &str) -> Result<(), StoreError> {
    session::Entity::update_many()
        .col_expr(
            session::Column::RevokedAt,
            Expr::value(Some(Utc::now().trunc_subsecs(6))),
        )
        .filter(session::Column::Id.eq(id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// Ends every session of a user (password change, deactivation, deletion); returns their ids.
pub async fn revoke_all(
    conn: &impl ConnectionTrait,
    user_id: &str,
) -> Result<Vec<String>, StoreError> {
    let live: Vec<String> = session::Entity::find()
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .all(conn)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    for id in &live {
        revoke(conn, id).await?;
    }
    Ok(live)
}
