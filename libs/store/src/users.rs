//! Users and their API keys (stored as SHA-256 hashes; the key itself is shown once).

use crate::StoreError;
use crate::entities::{api_key, user};
use chrono::Utc;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

/// A stored user.
pub type User = user::Model;

/// Creates a user.
pub async fn insert_user(conn: &impl ConnectionTrait, user: User) -> Result<User, StoreError> {
    user::Entity::insert(user::ActiveModel::from(user.clone()))
        .exec_without_returning(conn)
        .await?;
    Ok(user)
}

/// Reads a user by id.
pub async fn get_user(conn: &impl ConnectionTrait, id: &str) -> Result<Option<User>, StoreError> {
    Ok(user::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

/// Reads a user by username.
pub async fn find_user_by_name(
    conn: &impl ConnectionTrait,
    username: &str,
) -> Result<Option<User>, StoreError> {
    Ok(user::Entity::find()
        .filter(user::Column::Username.eq(username))
        .one(conn)
        .await?)
}

/// Stores a new API key hash for a user.
pub async fn insert_api_key(
    conn: &impl ConnectionTrait,
    user_id: &str,
    purpose: &str,
    key_hash: &str,
) -> Result<String, StoreError> {
    let id = crate::next_id(conn, "APIKeys").await?;
    api_key::Entity::insert(api_key::ActiveModel {
        id: Set(id.clone()),
        user_id: Set(user_id.to_owned()),
        purpose: Set(purpose.to_owned()),
        key_hash: Set(key_hash.to_owned()),
        created_at: Set(Utc::now()),
        expires_at: Set(None),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(id)
}

/// Finds the active user owning an unexpired key with this hash.
pub async fn user_for_key_hash(
    conn: &impl ConnectionTrait,
    key_hash: &str,
) -> Result<Option<User>, StoreError> {
    let Some(key) = api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(key_hash))
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    if key.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Ok(None);
    }
    Ok(get_user(conn, &key.user_id).await?.filter(|u| u.is_active))
}
