//! The database port: one schema (see `migrations/`) on SQLite (embedded) or PostgreSQL
//! (distributed), through sea-orm. Space-owned rows are only ever queried with a [`SpaceId`].
//!
//! Every function takes `&impl ConnectionTrait`, so callers compose them inside one transaction
//! (the state change and its outbox message commit together or not at all).

pub mod documents;
pub mod entities;
pub mod events;
pub mod organisations;
pub mod outbox;
pub mod packages;
pub mod rls;
pub mod sessions;
pub mod settings;
pub mod tasks;
pub mod users;

pub use cuttle_domain::SpaceId;
pub mod sea_orm_err {
    //! Re-export so callers can convert database errors without depending on sea-orm.
    pub use sea_orm::DbErr;
}
pub use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, TransactionTrait,
};

use cuttle_migrations::MigratorTrait;
use sea_orm::{ConnectOptions, Database, DbErr};
use std::time::Duration;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique name or version is taken.
    #[error("{0}")]
    Conflict(String),
    /// An optimistic-concurrency check failed.
    #[error("{0}")]
    VersionMismatch(String),
    /// A stored document could not be read back.
    #[error("stored document {id} is corrupt: {reason}")]
    Corrupt {
        /// The document.
        id: String,
        /// Why.
        reason: String,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] DbErr),
}

/// A connection pool plus the facts about its backend that queries need.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Connects to `sqlite://path?mode=rwc` or `postgres://...`.
    ///
    /// SQLite gets one connection in WAL mode: SQLite has a single writer anyway, and one
    /// connection turns "database is locked" races into an orderly queue.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .sqlx_logging(false)
            .acquire_timeout(Duration::from_secs(30));
        if url.starts_with("sqlite:") {
            options
                .max_connections(1)
                .min_connections(1)
                .map_sqlx_sqlite_opts(|o| {
                    o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                        .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(10))
                        .create_if_missing(true)
                });
        } else {
            options.max_connections(16).min_connections(1);
            // Every connection a task takes (new or from the pool) gets that task's role and
            // organisation (row-level security, see `rls`).
            options.map_sqlx_postgres_pool_opts(|pool| {
                pool.after_connect(|conn, _meta| Box::pin(rls::prepare(conn)))
                    .before_acquire(|conn, _meta| {
                        Box::pin(async move { rls::prepare(conn).await.map(|()| true) })
                    })
            });
        }
        let db = Database::connect(options).await?;
        Ok(Store { db })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        cuttle_migrations::Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// The pool, for reads outside a transaction.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<DatabaseTransaction, StoreError> {
        Ok(self.db.begin().await?)
    }

    /// True on PostgreSQL, where row locks (`FOR UPDATE`) are needed between processes.
    pub fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Postgres
    }

    /// A cheap round trip for readiness checks.
    pub async fn health(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }
}

/// Hands out the next `<prefix>-<n>` id, inside the caller's transaction.
pub async fn next_id(conn: &impl ConnectionTrait, prefix: &str) -> Result<String, StoreError> {
    Ok(format!("{prefix}-{}", next_number(conn, prefix).await?))
}

/// Hands out the next number for `prefix`.
pub async fn next_number(conn: &impl ConnectionTrait, prefix: &str) -> Result<i64, StoreError> {
    use entities::id_counter;
    use sea_orm::sea_query::{Expr, ExprTrait};
    use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
    // Insert-or-ignore, then increment: both backends serialise the UPDATE on the row, so two
    // transactions never receive the same number.
    id_counter::Entity::insert(id_counter::ActiveModel {
        prefix: Set(prefix.to_owned()),
        last: Set(0),
    })
    .on_conflict_do_nothing_on([id_counter::Column::Prefix])
    .exec(conn)
    .await?;
    id_counter::Entity::update_many()
        .col_expr(
            id_counter::Column::Last,
            Expr::col(id_counter::Column::Last).add(1),
        )
        .filter(id_counter::Column::Prefix.eq(prefix))
        .exec(conn)
        .await?;
    let row = id_counter::Entity::find_by_id(prefix.to_owned())
        .one(conn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("id counter {prefix}")))?;
    Ok(row.last)
}
