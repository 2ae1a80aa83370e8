//! The audit log: one row per change made through the API, and per sign-in.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Creates `events`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    OrganisationId,
    SpaceId,
    Category,
    UserId,
    Username,
    IsService,
    IdentityEstablishedWith,
    UserAgent,
    IpAddress,
    Occurred,
    Message,
    RelatedDocumentIds,
    DocumentId,
    Details,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .if_not_exists()
                    .col(string(Events::Id).primary_key())
                    .col(string(Events::OrganisationId))
                    .col(string_null(Events::SpaceId))
                    .col(string(Events::Category))
                    .col(string_null(Events::UserId))
                    .col(string(Events::Username))
                    .col(boolean(Events::IsService))
                    .col(string(Events::IdentityEstablishedWith))
                    .col(string(Events::UserAgent))
                    .col(string(Events::IpAddress))
                    .col(timestamp_with_time_zone(Events::Occurred))
                    .col(text(Events::Message))
                    .col(text(Events::RelatedDocumentIds))
                    .col(string_null(Events::DocumentId))
                    .col(text(Events::Details))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_events_organisation_occurred")
                    .table(Events::Table)
                    .col(Events::OrganisationId)
                    .col(Events::Occurred)
                    .to_owned(),
            )
            .await?;
        // A write's differences are taken from its document's previous event: found by index.
        manager
            .create_index(
                Index::create()
                    .name("ix_events_document")
                    .table(Events::Table)
                    .col(Events::OrganisationId)
                    .col(Events::DocumentId)
                    .col(Events::Occurred)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Events::Table).to_owned())
            .await
    }
}
