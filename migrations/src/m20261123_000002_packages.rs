//! The built-in package feed: package versions (their files live in the blob store) and the build
//! information pushed for them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Creates `packages` and `build_information`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Packages {
    Table,
    Id,
    SpaceId,
    PackageId,
    PackageIdLower,
    Version,
    VersionNormalized,
    Extension,
    SizeBytes,
    Sha256,
    BlobKey,
    Title,
    Summary,
    Description,
    ReleaseNotes,
    Published,
}

#[derive(DeriveIden)]
enum BuildInformation {
    Table,
    Id,
    SpaceId,
    PackageId,
    PackageIdLower,
    Version,
    VersionNormalized,
    Data,
    Created,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Packages::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Packages::Id))
                    .col(string(Packages::SpaceId))
                    .col(string(Packages::PackageId))
                    .col(string(Packages::PackageIdLower))
                    .col(string(Packages::Version))
                    .col(string(Packages::VersionNormalized))
                    .col(string(Packages::Extension))
                    .col(big_integer(Packages::SizeBytes))
                    .col(string(Packages::Sha256))
                    .col(text(Packages::BlobKey))
                    .col(text(Packages::Title))
                    .col(text(Packages::Summary))
                    .col(text(Packages::Description))
                    .col(text(Packages::ReleaseNotes))
                    .col(timestamp_with_time_zone(Packages::Published))
                    .to_owned(),
            )
            .await?;
        // One row per version of a package in a space: ids compare case-insensitively and
        // versions by their normalized form (`1.0.0.0` is `1.0.0`). The store maps a violation of
        // this index, by name, to "already exists".
        manager
            .create_index(
                Index::create()
                    .name("ux_packages_identity")
                    .table(Packages::Table)
                    .col(Packages::SpaceId)
                    .col(Packages::PackageIdLower)
                    .col(Packages::VersionNormalized)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(BuildInformation::Table)
                    .if_not_exists()
                    .col(string(BuildInformation::Id))
                    .col(string(BuildInformation::SpaceId))
                    .col(string(BuildInformation::PackageId))
                    .col(string(BuildInformation::PackageIdLower))
                    .col(string(BuildInformation::Version))
                    .col(string(BuildInformation::VersionNormalized))
                    .col(text(BuildInformation::Data))
                    .col(timestamp_with_time_zone(BuildInformation::Created))
                    .primary_key(
                        Index::create()
                            .col(BuildInformation::SpaceId)
                            .col(BuildInformation::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_build_information_identity")
                    .table(BuildInformation::Table)
                    .col(BuildInformation::SpaceId)
                    .col(BuildInformation::PackageIdLower)
                    .col(BuildInformation::VersionNormalized)
                    .unique()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            BuildInformation::Table.into_iden(),
            Packages::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
