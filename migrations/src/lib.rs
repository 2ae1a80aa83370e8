//! Database migrations, one set for SQLite and PostgreSQL.
//!
//! Migrations are timestamped and forward-compatible with the code that runs beside them; they run
//! through `cuttle migrate` in distributed mode and automatically at start in embedded mode.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_foundation;
mod m20261123_000002_packages;
mod m20261123_000003_job_outputs;
mod m20261123_000004_job_windows;
mod m20261124_000005_organisations;
mod m20261124_000006_sessions;
mod m20261124_000007_external_identities;
mod m20261124_000008_events;
mod m20261124_000009_email_verification;
mod m20261124_000010_row_level_security;
mod m20261124_000011_task_tenants;
mod m20261124_000012_space_row_level_security;

/// The ordered list of migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_foundation::Migration),
            Box::new(m20261123_000002_packages::Migration),
            Box::new(m20261123_000003_job_outputs::Migration),
            Box::new(m20261123_000004_job_windows::Migration),
            Box::new(m20261124_000005_organisations::Migration),
            Box::new(m20261124_000006_sessions::Migration),
            Box::new(m20261124_000007_external_identities::Migration),
            Box::new(m20261124_000008_events::Migration),
            Box::new(m20261124_000009_email_verification::Migration),
            Box::new(m20261124_000010_row_level_security::Migration),
            Box::new(m20261124_000011_task_tenants::Migration),
            Box::new(m20261124_000012_space_row_level_security::Migration),
        ]
    }
}
