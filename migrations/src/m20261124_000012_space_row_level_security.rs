//! Row-level security per space, not only per organisation.
//!
//! The api now also sets `cuttle.spaces` for each request (see `cuttle_store::rls`): `*` when
//! the caller sees every space of its organisation, otherwise the comma-separated ids of those it
//! can see. For the role `cuttle_app`, a row of a space-owned table exists only when its space
//! belongs to the caller's organisation and is one of those spaces. Space documents
//! (`documents.kind = 'Space'`) stay visible across the organisation: space names and slugs are
//! unique in it, and making a space the default clears the flag on the others. A missing setting
//! hides everything.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Replaces the organisation-only policies of `000010_row_level_security`.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The tables whose rows belong to a space (as in `000010_row_level_security`).
const SPACE_TABLES: &[&str] = &["documents", "server_tasks", "packages", "build_information"];

const OWNED: &str = "space_id IN (SELECT o.space_id FROM space_owners o
    WHERE o.organisation_id = current_setting('cuttle.organisation', true))";

const VISIBLE: &str = "(current_setting('cuttle.spaces', true) = '*'
    OR space_id = ANY (string_to_array(current_setting('cuttle.spaces', true), ',')))";

fn policy(table: &str, condition: &str) -> String {
    format!(
        "DROP POLICY IF EXISTS cuttle_app_spaces ON {table};
         CREATE POLICY cuttle_app_spaces ON {table} TO cuttle_app
             USING ({condition}) WITH CHECK ({condition});"
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        for table in SPACE_TABLES {
            let visible = if *table == "documents" {
                format!("(kind = 'Space' OR {VISIBLE})")
            } else {
                VISIBLE.to_owned()
            };
            db.execute_unprepared(&policy(table, &format!("{OWNED} AND {visible}")))
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
            db.execute_unprepared(&policy(table, OWNED)).await?;
        }
        Ok(())
    }
}
