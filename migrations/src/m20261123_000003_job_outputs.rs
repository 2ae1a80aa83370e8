//! Output variables of a finished job (`Octopus.Action[Step].Output.*`), kept with the job so
//! later steps of the same task can read them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Adds `task_jobs.output_variables` (JSON object text, null until the job sets one).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TaskJobs {
    Table,
    OutputVariables,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TaskJobs::Table)
                    .add_column(text_null(TaskJobs::OutputVariables))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TaskJobs::Table)
                    .drop_column(TaskJobs::OutputVariables)
                    .to_owned(),
            )
            .await
    }
}
