//! The built-in package feed's rows: package versions (`packages`, whose files are blobs) and
//! build information (`build_information`). Every query starts from a [`SpaceId`]: the same id
//! and version in two spaces are two unrelated packages.
//!
//! Ids are matched by their lower-case form and versions by their normalized form (see
//! `cuttle_domain::package::PackageVersion::normalized`); callers pass both already computed.

use crate::entities::{build_information, package};
use crate::{SpaceId, StoreError};
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, LikeExpr};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, SqlErr,
};

/// A stored package version.
pub type PackageRow = package::Model;

/// Stored build information.
pub type BuildInformationRow = build_information::Model;

/// The message of a duplicate package push, which clients match on.
pub const PACKAGE_EXISTS: &str = "A package with the same name and version already exists";

/// The message of a duplicate build information push, which clients match on.
pub const BUILD_INFORMATION_EXISTS: &str =
    "Metadata for the specified Package ID and version already exists.";

/// What a new (or replacing) package version needs.
#[derive(Debug, Clone)]
pub struct NewPackage {
    /// The id as spelled in the file name.
    pub package_id: String,
    /// The version as spelled in the file name.
    pub version: String,
    /// The normalized version (the uniqueness key with the lower-case id).
    pub version_normalized: String,
    /// `.zip`, `.tar.gz`, ...
    pub extension: String,
    /// File size.
    pub size_bytes: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Where the file is in the blob store.
    pub blob_key: String,
    /// Metadata (from a nupkg's nuspec; empty otherwise).
    pub title: String,
    /// Metadata.
    pub summary: String,
    /// Metadata.
    pub description: String,
    /// Metadata.
    pub release_notes: String,
}

/// The current time at the precision both backends store.
fn stored_now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn conflict_or(err: DbErr, message: &str) -> StoreError {
    // The only unique index besides the primary key is the identity index
    // (ux_packages_identity / ux_build_information_identity).
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict(message.to_owned()),
        _ => StoreError::Database(err),
    }
}

/// Escapes `%`, `_` and `\` for a LIKE pattern.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reads one package version of a space.
pub async fn find(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    package_id_lower: &str,
    version_normalized: &str,
) -> Result<Option<PackageRow>, StoreError> {
    Ok(package::Entity::find()
        .filter(package::Column::SpaceId.eq(space_id.as_str()))
        .filter(package::Column::PackageIdLower.eq(package_id_lower))
        .filter(package::Column::VersionNormalized.eq(version_normalized))
        .one(conn)
        .await?)
}

/// Inserts a package version; an existing one is [`StoreError::Conflict`] with
/// [`PACKAGE_EXISTS`].
pub async fn insert(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    new: NewPackage,
) -> Result<PackageRow, StoreError> {
    let model = package::ActiveModel {
        space_id: Set(space_id.as_str().to_owned()),
        package_id_lower: Set(new.package_id.to_ascii_lowercase()),
        package_id: Set(new.package_id),
        version: Set(new.version),
        version_normalized: Set(new.version_normalized),
        extension: Set(new.extension),
        size_bytes: Set(i64::try_from(new.size_bytes).unwrap_or(i64::MAX)),
        sha256: Set(new.sha256),
        blob_key: Set(new.blob_key),
        title: Set(new.title),
        summary: Set(new.summary),
        description: Set(new.description),
        release_notes: Set(new.release_notes),
        published: Set(stored_now()),
        ..Default::default()
    };
    let result = package::Entity::insert(model)
        .exec(conn)
        .await
        .map_err(|err| conflict_or(err, PACKAGE_EXISTS))?;
    package::Entity::find_by_id(result.last_insert_id)
        .one(conn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("package row {}", result.last_insert_id)))
        .map_err(StoreError::from)
}

/// Replaces the file and metadata of an existing package version (OverwriteExisting) and
/// returns the row as it was, so the caller can delete the old blob once this commits.
pub async fn replace(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    new: NewPackage,
) -> Result<Option<(PackageRow, PackageRow)>, StoreError> {
    let lower = new.package_id.to_ascii_lowercase();
    let Some(old) = find(conn, space_id, &lower, &new.version_normalized).await? else {
        return Ok(None);
    };
    let mut active: package::ActiveModel = old.clone().into();
    active.package_id = Set(new.package_id);
    active.version = Set(new.version);
    active.extension = Set(new.extension);
    active.size_bytes = Set(i64::try_from(new.size_bytes).unwrap_or(i64::MAX));
    active.sha256 = Set(new.sha256);
    active.blob_key = Set(new.blob_key);
    active.title = Set(new.title);
    active.summary = Set(new.summary);
    active.description = Set(new.description);
    active.release_notes = Set(new.release_notes);
    active.published = Set(stored_now());
    let updated = package::Entity::update(active).exec(conn).await?;
    Ok(Some((old, updated)))
}

/// Every version of the space's packages whose id contains `filter` (case-insensitive), or
/// whose id is exactly `package_id_lower`. Unordered: callers sort by version precedence,
/// which SQL cannot express portably.
pub async fn list(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    filter: Option<&str>,
    package_id_lower: Option<&str>,
) -> Result<Vec<PackageRow>, StoreError> {
    let mut query = package::Entity::find().filter(package::Column::SpaceId.eq(space_id.as_str()));
    if let Some(filter) = filter {
        let pattern = format!("%{}%", like_escape(&filter.to_ascii_lowercase()));
        query = query.filter(
            Expr::col(package::Column::PackageIdLower).like(LikeExpr::new(pattern).escape('\\')),
        );
    }
    if let Some(exact) = package_id_lower {
        query = query.filter(package::Column::PackageIdLower.eq(exact));
    }
    Ok(query.all(conn).await?)
}

/// Deletes one package version; returns the row (for its blob key) when it existed.
pub async fn delete(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    package_id_lower: &str,
    version_normalized: &str,
) -> Result<Option<PackageRow>, StoreError> {
    let Some(row) = find(conn, space_id, package_id_lower, version_normalized).await? else {
        return Ok(None);
    };
    package::Entity::delete_many()
        .filter(package::Column::SpaceId.eq(space_id.as_str()))
        .filter(package::Column::Id.eq(row.id))
        .exec(conn)
        .await?;
    Ok(Some(row))
}

/// Deletes every package and all build information of a space (the space is being deleted);
/// returns the blob keys to delete once the transaction commits.
pub async fn delete_space(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
) -> Result<Vec<String>, StoreError> {
    let rows = list(conn, space_id, None, None).await?;
    package::Entity::delete_many()
        .filter(package::Column::SpaceId.eq(space_id.as_str()))
        .exec(conn)
        .await?;
    build_information::Entity::delete_many()
        .filter(build_information::Column::SpaceId.eq(space_id.as_str()))
        .exec(conn)
        .await?;
    Ok(rows.into_iter().map(|row| row.blob_key).collect())
}

/// What new build information needs.
#[derive(Debug, Clone)]
pub struct NewBuildInformation {
    /// The package id as pushed.
    pub package_id: String,
    /// The version as pushed.
    pub version: String,
    /// Its normalized form.
    pub version_normalized: String,
    /// The `OctopusBuildInformation` JSON.
    pub data: serde_json::Value,
}

/// Reads the build information of one package version.
pub async fn find_build_information(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    package_id_lower: &str,
    version_normalized: &str,
) -> Result<Option<BuildInformationRow>, StoreError> {
    Ok(build_information::Entity::find()
        .filter(build_information::Column::SpaceId.eq(space_id.as_str()))
        .filter(build_information::Column::PackageIdLower.eq(package_id_lower))
        .filter(build_information::Column::VersionNormalized.eq(version_normalized))
        .one(conn)
        .await?)
}

/// Reads build information by its id (`BuildInformation-1`).
pub async fn get_build_information(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    id: &str,
) -> Result<Option<BuildInformationRow>, StoreError> {
    Ok(build_information::Entity::find()
        .filter(build_information::Column::SpaceId.eq(space_id.as_str()))
        .filter(build_information::Column::Id.eq(id))
        .one(conn)
        .await?)
}

/// Inserts build information; existing information for the version is
/// [`StoreError::Conflict`] with [`BUILD_INFORMATION_EXISTS`].
pub async fn insert_build_information(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    new: NewBuildInformation,
) -> Result<BuildInformationRow, StoreError> {
    let id = crate::next_id(conn, "BuildInformation").await?;
    let model = build_information::Model {
        space_id: space_id.as_str().to_owned(),
        id,
        package_id_lower: new.package_id.to_ascii_lowercase(),
        package_id: new.package_id,
        version: new.version,
        version_normalized: new.version_normalized,
        data: new.data.to_string(),
        created: stored_now(),
    };
    build_information::Entity::insert(build_information::ActiveModel::from(model.clone()))
        .exec_without_returning(conn)
        .await
        .map_err(|err| conflict_or(err, BUILD_INFORMATION_EXISTS))?;
    Ok(model)
}

/// Replaces the data of existing build information (OverwriteExisting); `None` when absent.
pub async fn replace_build_information(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    new: NewBuildInformation,
) -> Result<Option<BuildInformationRow>, StoreError> {
    let lower = new.package_id.to_ascii_lowercase();
    let Some(old) = find_build_information(conn, space_id, &lower, &new.version_normalized).await?
    else {
        return Ok(None);
    };
    let updated = build_information::Model {
        package_id: new.package_id,
        version: new.version,
        data: new.data.to_string(),
        created: stored_now(),
        ..old
    };
    build_information::Entity::update_many()
        .col_expr(
            build_information::Column::PackageId,
            Expr::value(updated.package_id.clone()),
        )
        .col_expr(
            build_information::Column::Version,
            Expr::value(updated.version.clone()),
        )
        .col_expr(
            build_information::Column::Data,
            Expr::value(updated.data.clone()),
        )
        .col_expr(
            build_information::Column::Created,
            Expr::value(updated.created),
        )
        .filter(build_information::Column::SpaceId.eq(space_id.as_str()))
        .filter(build_information::Column::Id.eq(updated.id.clone()))
        .exec(conn)
        .await?;
    Ok(Some(updated))
}

/// Build information of the space whose package id contains `filter` or equals
/// `package_id_lower` (both case-insensitive). Unordered, like [`list`].
pub async fn list_build_information(
    conn: &impl ConnectionTrait,
    space_id: &SpaceId,
    filter: Option<&str>,
    package_id_lower: Option<&str>,
) -> Result<Vec<BuildInformationRow>, StoreError> {
    let mut query = build_information::Entity::find()
        .filter(build_information::Column::SpaceId.eq(space_id.as_str()));
    if let Some(filter) = filter {
        let pattern = format!("%{}%", like_escape(&filter.to_ascii_lowercase()));
        query = query.filter(
            Expr::col(build_information::Column::PackageIdLower)
                .like(LikeExpr::new(pattern).escape('\\')),
        );
    }
    if let Some(exact) = package_id_lower {
        query = query.filter(build_information::Column::PackageIdLower.eq(exact));
    }
    Ok(query.all(conn).await?)
}
