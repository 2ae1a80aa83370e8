//! Rolling windows: the jobs of one action fanned out over deployment targets run side by side,
//! at most `parallel_window` at a time.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Adds `task_jobs.parallel_window`: null for a job that runs alone (the default), 0 for a job of
/// a fan-out with no limit, N for a fan-out at most N jobs wide (`Octopus.Action.MaxParallelism`).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TaskJobs {
    Table,
    ParallelWindow,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TaskJobs::Table)
                    .add_column(integer_null(TaskJobs::ParallelWindow))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TaskJobs::Table)
                    .drop_column(TaskJobs::ParallelWindow)
                    .to_owned(),
            )
            .await
    }
}
