//! Installation-wide key/value settings.

use crate::StoreError;
use crate::entities::setting::{self, Entity};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};

/// Reads a setting.
pub async fn get(conn: &impl ConnectionTrait, key: &str) -> Result<Option<String>, StoreError> {
    Ok(Entity::find_by_id(key.to_owned())
        .one(conn)
        .await?
        .map(|row| row.value))
}

/// Writes a setting only if it is not set yet; returns the value that is stored afterwards.
pub async fn get_or_init(
    conn: &impl ConnectionTrait,
    key: &str,
    value: &str,
) -> Result<String, StoreError> {
    Entity::insert(setting::ActiveModel {
        key: Set(key.to_owned()),
        value: Set(value.to_owned()),
    })
    .on_conflict_do_nothing_on([setting::Column::Key])
    .exec(conn)
    .await?;
    Ok(get(conn, key).await?.unwrap_or_else(|| value.to_owned()))
}
