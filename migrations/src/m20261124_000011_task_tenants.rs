//! Tenanted deployments: a task remembers its tenant, so the deployment mutex and the task list
//! can tell one tenant's deployment from another's.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Adds `server_tasks.tenant_id` (null: untenanted).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ServerTasks {
    Table,
    TenantId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ServerTasks::Table)
                    .add_column(string_null(ServerTasks::TenantId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ServerTasks::Table)
                    .drop_column(ServerTasks::TenantId)
                    .to_owned(),
            )
            .await
    }
}
