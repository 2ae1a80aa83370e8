//! PostgreSQL row-level security on `space_id`: the second lock behind the code's own checks.
//!
//! The api runs each authenticated request as the role `cuttle_app`, with the caller's
//! organisation in the setting `cuttle.organisation` (see `cuttle_store::rls`). For that role,
//! rows of the space-owned tables whose space another organisation owns do not exist: reads,
//! updates and deletes never see them. Inserts are checked the same way once the space has an
//! owner (a new space is owned before its rows are written). The
//! migrating user owns the tables and is not subject to the policies, so background services
//! (orchestrator, workers, feed, relays) are unaffected. SQLite has no row-level security.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Creates `cuttle_app` (once per cluster), grants it the tables, and enables the policies.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The tables whose rows belong to a space.
const SPACE_TABLES: &[&str] = &["documents", "server_tasks", "packages", "build_information"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        // Roles are shared by every database of the cluster, and test databases migrate side by
        // side: a concurrent creation is not an error.
        db.execute_unprepared(
            "DO $$ BEGIN
                CREATE ROLE cuttle_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$",
        )
        .await?;
        db.execute_unprepared(
            "DO $$ BEGIN
                EXECUTE format('GRANT cuttle_app TO %I', current_user);
             EXCEPTION WHEN duplicate_object OR unique_violation OR invalid_grant_operation THEN NULL;
             END $$",
        )
        .await?;
        db.execute_unprepared(
            "GRANT USAGE ON SCHEMA public TO cuttle_app;
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO cuttle_app;
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO cuttle_app;
             ALTER DEFAULT PRIVILEGES IN SCHEMA public
                 GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO cuttle_app;
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO cuttle_app;",
        )
        .await?;
        for table in SPACE_TABLES {
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
                 CREATE POLICY cuttle_app_spaces ON {table} TO cuttle_app
                     USING (space_id IN (SELECT o.space_id FROM space_owners o
                         WHERE o.organisation_id = current_setting('cuttle.organisation', true)))
                     WITH CHECK (space_id IN (SELECT o.space_id FROM space_owners o
                         WHERE o.organisation_id = current_setting('cuttle.organisation', true)));"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for table in SPACE_TABLES {
            db.execute_unprepared(&format!(
                "DROP POLICY IF EXISTS cuttle_app_spaces ON {table};
                 ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;"
            ))
            .await?;
        }
        Ok(())
    }
}
