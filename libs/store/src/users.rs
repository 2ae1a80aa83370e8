//! Users and their API keys (stored as SHA-256 hashes; the key itself is shown once).

use crate::StoreError;
use crate::entities::{api_key, user};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

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

/// Stores a new API key hash for a user; returns the key's id.
pub async fn insert_api_key(
    conn: &impl ConnectionTrait,
    user_id: &str,
    purpose: &str,
    key_hash: &str,
) -> Result<String, StoreError> {
    Ok(
        insert_api_key_expiring(conn, user_id, purpose, key_hash, None)
            .await?
            .id,
    )
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

/// A stored API key (its hash only).
pub type ApiKey = api_key::Model;

/// The users of an organisation, by username.
pub async fn list_users(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
) -> Result<Vec<User>, StoreError> {
    use sea_orm::QueryOrder;
    Ok(user::Entity::find()
        .filter(user::Column::OrganisationId.eq(organisation_id))
        .order_by_asc(user::Column::Username)
        .all(conn)
        .await?)
}

/// Replaces a user's row; a taken username is [`StoreError::Conflict`].
pub async fn update_user(conn: &impl ConnectionTrait, user: User) -> Result<User, StoreError> {
    let username = user.username.clone();
    user::Entity::update(user::ActiveModel::from(user.clone()).reset_all())
        .exec(conn)
        .await
        .map_err(|err| match err.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
                StoreError::Conflict(format!("The username '{username}' is already in use."))
            }
            _ => StoreError::Database(err),
        })?;
    Ok(user)
}

/// Deletes a user and their API keys.
pub async fn delete_user(conn: &impl ConnectionTrait, id: &str) -> Result<(), StoreError> {
    api_key::Entity::delete_many()
        .filter(api_key::Column::UserId.eq(id))
        .exec(conn)
        .await?;
    user::Entity::delete_by_id(id.to_owned()).exec(conn).await?;
    Ok(())
}

/// Gives every user without an organisation to `organisation_id` (users created before
/// organisations existed).
pub async fn adopt_users(
    conn: &impl ConnectionTrait,
    organisation_id: &str,
) -> Result<u64, StoreError> {
    use sea_orm::sea_query::Expr;
    let result = user::Entity::update_many()
        .col_expr(
            user::Column::OrganisationId,
            Expr::value(organisation_id.to_owned()),
        )
        .filter(user::Column::OrganisationId.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}

/// Stores a new API key hash for a user, with an optional expiry; returns the stored key.
pub async fn insert_api_key_expiring(
    conn: &impl ConnectionTrait,
    user_id: &str,
    purpose: &str,
    key_hash: &str,
    expires_at: Option<chrono::DateTime<Utc>>,
) -> Result<ApiKey, StoreError> {
    use chrono::SubsecRound;
    let model = ApiKey {
        id: crate::next_id(conn, "APIKeys").await?,
        user_id: user_id.to_owned(),
        purpose: purpose.to_owned(),
        key_hash: key_hash.to_owned(),
        created_at: Utc::now().trunc_subsecs(6),
        expires_at: expires_at.map(|at| at.trunc_subsecs(6)),
    };
    api_key::Entity::insert(api_key::ActiveModel::from(model.clone()))
        .exec_without_returning(conn)
        .await?;
    Ok(model)
}

/// A user's API keys, oldest first.
pub async fn list_api_keys(
    conn: &impl ConnectionTrait,
    user_id: &str,
) -> Result<Vec<ApiKey>, StoreError> {
    use sea_orm::QueryOrder;
    Ok(api_key::Entity::find()
        .filter(api_key::Column::UserId.eq(user_id))
        .order_by_asc(api_key::Column::CreatedAt)
        .all(conn)
        .await?)
}

/// Revokes one of a user's API keys; false when the user has no such key.
pub async fn delete_api_key(
    conn: &impl ConnectionTrait,
    user_id: &str,
    key_id: &str,
) -> Result<bool, StoreError> {
    let result = api_key::Entity::delete_many()
        .filter(api_key::Column::UserId.eq(user_id))
        .filter(api_key::Column::Id.eq(key_id))
        .exec(conn)
        .await?;
    Ok(result.rows_affected > 0)
}

/// Sets (or clears) a user's password hash.
pub async fn set_password_hash(
    conn: &impl ConnectionTrait,
    user_id: &str,
    hash: Option<&str>,
) -> Result<(), StoreError> {
    use sea_orm::sea_query::Expr;
    user::Entity::update_many()
        .col_expr(
            user::Column::PasswordHash,
            Expr::value(hash.map(str::to_owned)),
        )
        .filter(user::Column::Id.eq(user_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// The user created by single sign-on for `<issuer>|<subject>`.
pub async fn find_user_by_external_id(
    conn: &impl ConnectionTrait,
    external_id: &str,
) -> Result<Option<User>, StoreError> {
    Ok(user::Entity::find()
        .filter(user::Column::ExternalId.eq(external_id))
        .one(conn)
        .await?)
}

/// Marks a user's email address as verified.
pub async fn set_email_verified(
    conn: &impl ConnectionTrait,
    user_id: &str,
) -> Result<(), StoreError> {
    use sea_orm::sea_query::Expr;
    user::Entity::update_many()
        .col_expr(user::Column::EmailVerified, Expr::value(true))
        .filter(user::Column::Id.eq(user_id))
        .exec(conn)
        .await?;
    Ok(())
}
