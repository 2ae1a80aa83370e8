//! The foundation schema: documents, id counters, server tasks, jobs, logs, outbox, users, keys.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Creates the foundation tables.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Documents {
    Table,
    Id,
    SpaceId,
    Kind,
    Name,
    ParentId,
    UniqueKey,
    SortOrder,
    Data,
    Version,
    CreatedAt,
    ModifiedAt,
}

#[derive(DeriveIden)]
enum IdCounters {
    Table,
    Prefix,
    Last,
}

#[derive(DeriveIden)]
enum ServerTasks {
    Table,
    Id,
    SpaceId,
    Name,
    Description,
    State,
    Arguments,
    ProjectId,
    EnvironmentId,
    DeploymentId,
    QueueTime,
    StartTime,
    CompletedTime,
    LastUpdatedTime,
    ErrorMessage,
    HasWarningsOrErrors,
    CancelRequested,
    ServerNode,
}

#[derive(DeriveIden)]
enum TaskJobs {
    Table,
    JobId,
    TaskId,
    Position,
    StepNumber,
    StepName,
    ActionName,
    Condition,
    Status,
    Payload,
    Worker,
    DispatchedAt,
    StartedAt,
    HeartbeatAt,
    EndedAt,
    ExitCode,
    Error,
}

#[derive(DeriveIden)]
enum TaskLog {
    Table,
    Id,
    TaskId,
    NodeId,
    SourceSeq,
    OccurredAt,
    Category,
    Message,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    Queue,
    MessageId,
    Kind,
    Payload,
    Headers,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    DisplayName,
    Email,
    IsService,
    IsActive,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    UserId,
    Purpose,
    KeyHash,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Settings {
    Table,
    Key,
    Value,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Documents::Table)
                    .if_not_exists()
                    .col(string(Documents::Id))
                    .col(string(Documents::SpaceId))
                    .col(string(Documents::Kind))
                    .col(string(Documents::Name))
                    .col(string_null(Documents::ParentId))
                    .col(string_null(Documents::UniqueKey))
                    .col(big_integer(Documents::SortOrder))
                    .col(text(Documents::Data))
                    .col(big_integer(Documents::Version))
                    .col(timestamp_with_time_zone(Documents::CreatedAt))
                    .col(timestamp_with_time_zone(Documents::ModifiedAt))
                    // Octopus reuses a few ids in every space (`feeds-builtin`), so a document
                    // is identified by its space and its id together.
                    .primary_key(Index::create().col(Documents::SpaceId).col(Documents::Id))
                    .to_owned(),
            )
            .await?;
        // Names are unique per kind within a space (and release versions per project): the store
        // maps a violation of this index, by name, to a 409/400 the user can act on.
        manager
            .create_index(
                Index::create()
                    .name("ux_documents_unique_key")
                    .table(Documents::Table)
                    .col(Documents::SpaceId)
                    .col(Documents::Kind)
                    .col(Documents::UniqueKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_documents_space_kind")
                    .table(Documents::Table)
                    .col(Documents::SpaceId)
                    .col(Documents::Kind)
                    .col(Documents::SortOrder)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_documents_parent")
                    .table(Documents::Table)
                    .col(Documents::SpaceId)
                    .col(Documents::ParentId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdCounters::Table)
                    .if_not_exists()
                    .col(string(IdCounters::Prefix).primary_key())
                    .col(big_integer(IdCounters::Last))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ServerTasks::Table)
                    .if_not_exists()
                    .col(string(ServerTasks::Id).primary_key())
                    .col(string(ServerTasks::SpaceId))
                    .col(string(ServerTasks::Name))
                    .col(text(ServerTasks::Description))
                    .col(string(ServerTasks::State))
                    .col(text(ServerTasks::Arguments))
                    .col(string_null(ServerTasks::ProjectId))
                    .col(string_null(ServerTasks::EnvironmentId))
                    .col(string_null(ServerTasks::DeploymentId))
                    .col(timestamp_with_time_zone(ServerTasks::QueueTime))
                    .col(timestamp_with_time_zone_null(ServerTasks::StartTime))
                    .col(timestamp_with_time_zone_null(ServerTasks::CompletedTime))
                    .col(timestamp_with_time_zone(ServerTasks::LastUpdatedTime))
                    .col(text_null(ServerTasks::ErrorMessage))
                    .col(boolean(ServerTasks::HasWarningsOrErrors))
                    .col(boolean(ServerTasks::CancelRequested))
                    .col(string_null(ServerTasks::ServerNode))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_server_tasks_space_state")
                    .table(ServerTasks::Table)
                    .col(ServerTasks::SpaceId)
                    .col(ServerTasks::State)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TaskJobs::Table)
                    .if_not_exists()
                    .col(string(TaskJobs::JobId).primary_key())
                    .col(string(TaskJobs::TaskId))
                    .col(integer(TaskJobs::Position))
                    .col(integer(TaskJobs::StepNumber))
                    .col(string(TaskJobs::StepName))
                    .col(string(TaskJobs::ActionName))
                    .col(string(TaskJobs::Condition))
                    .col(string(TaskJobs::Status))
                    .col(text(TaskJobs::Payload))
                    .col(string_null(TaskJobs::Worker))
                    .col(timestamp_with_time_zone_null(TaskJobs::DispatchedAt))
                    .col(timestamp_with_time_zone_null(TaskJobs::StartedAt))
                    .col(timestamp_with_time_zone_null(TaskJobs::HeartbeatAt))
                    .col(timestamp_with_time_zone_null(TaskJobs::EndedAt))
                    .col(integer_null(TaskJobs::ExitCode))
                    .col(text_null(TaskJobs::Error))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_task_jobs_task")
                    .table(TaskJobs::Table)
                    .col(TaskJobs::TaskId)
                    .col(TaskJobs::Position)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_task_jobs_status")
                    .table(TaskJobs::Table)
                    .col(TaskJobs::Status)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TaskLog::Table)
                    .if_not_exists()
                    .col(big_pk_auto(TaskLog::Id))
                    .col(string(TaskLog::TaskId))
                    .col(string(TaskLog::NodeId))
                    .col(big_integer_null(TaskLog::SourceSeq))
                    .col(timestamp_with_time_zone(TaskLog::OccurredAt))
                    .col(string(TaskLog::Category))
                    .col(text(TaskLog::Message))
                    .to_owned(),
            )
            .await?;
        // Workers number their lines; a redelivered batch then inserts nothing twice.
        manager
            .create_index(
                Index::create()
                    .name("ux_task_log_source_seq")
                    .table(TaskLog::Table)
                    .col(TaskLog::TaskId)
                    .col(TaskLog::NodeId)
                    .col(TaskLog::SourceSeq)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Outbox::Id))
                    .col(string(Outbox::Queue))
                    .col(string(Outbox::MessageId))
                    .col(string(Outbox::Kind))
                    .col(text(Outbox::Payload))
                    .col(text(Outbox::Headers))
                    .col(timestamp_with_time_zone(Outbox::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(string(Users::Id).primary_key())
                    .col(string_uniq(Users::Username))
                    .col(string(Users::DisplayName))
                    .col(string_null(Users::Email))
                    .col(boolean(Users::IsService))
                    .col(boolean(Users::IsActive))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(string(ApiKeys::Id).primary_key())
                    .col(string(ApiKeys::UserId))
                    .col(string(ApiKeys::Purpose))
                    .col(string_uniq(ApiKeys::KeyHash))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Settings::Table)
                    .if_not_exists()
                    .col(string(Settings::Key).primary_key())
                    .col(text(Settings::Value))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Settings::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Users::Table.into_iden(),
            Outbox::Table.into_iden(),
            TaskLog::Table.into_iden(),
            TaskJobs::Table.into_iden(),
            ServerTasks::Table.into_iden(),
            IdCounters::Table.into_iden(),
            Documents::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
