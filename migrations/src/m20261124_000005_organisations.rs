//! Organisations: the customers of an installation. Each owns its spaces, users, teams, custom
//! user roles and scoped user roles; users may now hold a password.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Creates `organisations`, `org_documents` (teams, user roles, scoped user roles as Octopus
/// JSON, keyed by organisation and id) and `space_owners`, and gives `users` an organisation and
/// a password hash. Existing users and spaces are given to the first organisation by the api's
/// bootstrap, not here, so that this migration stays pure schema.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Organisations {
    Table,
    Id,
    Name,
    Slug,
    CreatedAt,
}

#[derive(DeriveIden)]
enum OrgDocuments {
    Table,
    OrganisationId,
    Id,
    Kind,
    Name,
    Data,
    CreatedAt,
    ModifiedAt,
}

#[derive(DeriveIden)]
enum SpaceOwners {
    Table,
    SpaceId,
    OrganisationId,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    OrganisationId,
    PasswordHash,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Organisations::Table)
                    .if_not_exists()
                    .col(string(Organisations::Id).primary_key())
                    .col(string(Organisations::Name))
                    .col(string_uniq(Organisations::Slug))
                    .col(timestamp_with_time_zone(Organisations::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrgDocuments::Table)
                    .if_not_exists()
                    .col(string(OrgDocuments::OrganisationId))
                    .col(string(OrgDocuments::Id))
                    .col(string(OrgDocuments::Kind))
                    .col(string(OrgDocuments::Name))
                    .col(text(OrgDocuments::Data))
                    .col(timestamp_with_time_zone(OrgDocuments::CreatedAt))
                    .col(timestamp_with_time_zone(OrgDocuments::ModifiedAt))
                    // Built-in teams have the same id in every organisation (`teams-everyone`).
                    .primary_key(
                        Index::create()
                            .col(OrgDocuments::OrganisationId)
                            .col(OrgDocuments::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_org_documents_name")
                    .table(OrgDocuments::Table)
                    .col(OrgDocuments::OrganisationId)
                    .col(OrgDocuments::Kind)
                    .col(OrgDocuments::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SpaceOwners::Table)
                    .if_not_exists()
                    .col(string(SpaceOwners::SpaceId).primary_key())
                    .col(string(SpaceOwners::OrganisationId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_space_owners_organisation")
                    .table(SpaceOwners::Table)
                    .col(SpaceOwners::OrganisationId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(string_null(Users::OrganisationId))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(string_null(Users::PasswordHash))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Users::PasswordHash, Users::OrganisationId] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        for table in [
            SpaceOwners::Table.into_iden(),
            OrgDocuments::Table.into_iden(),
            Organisations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
