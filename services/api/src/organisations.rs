//! Creating an organisation: the organisation, its owner (a member of its administrators
//! team), its `Default` space and the owner's first API key, in one transaction. The operator
//! command `cuttle admin new-organisation` calls it; portal signup will too.

use crate::error::{ApiError, ApiResult};
use crate::extract::hash_api_key;
use chrono::Utc;
use cuttle_store::organisations::{self, Organisation};
use cuttle_store::users::{self, User};
use cuttle_store::{Store, TransactionTrait};
use cuttle_wire::resources::Space;

/// What [`create`] made.
#[derive(Debug, Clone)]
pub struct NewOrganisation {
    /// The organisation.
    pub organisation: Organisation,
    /// Its owner.
    pub owner: User,
    /// Its `Default` space's id.
    pub space_id: String,
    /// The owner's first API key, shown once.
    pub api_key: String,
}

/// Who is signing up.
#[derive(Debug, Clone)]
pub struct Signup<'a> {
    /// The organisation's name.
    pub name: &'a str,
    /// Its unique slug (SSO sign-in finds the organisation by it).
    pub slug: &'a str,
    /// The owner's username (unique in the installation).
    pub username: &'a str,
    /// The owner's email address.
    pub email: Option<&'a str>,
    /// The argon2id hash of the owner's password (portal signup), if any.
    pub password_hash: Option<String>,
    /// Whether the owner's email address counts as verified.
    pub email_verified: bool,
}

/// Checks a slug: 2 to 40 lower-case letters, digits and inner hyphens.
pub fn check_slug(slug: &str) -> ApiResult<String> {
    let slug = slug.trim();
    let valid = (2..=40).contains(&slug.len())
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if valid {
        Ok(slug.to_owned())
    } else {
        Err(ApiError::invalid_field(
            "Slug",
            "a slug has 2 to 40 lower-case letters, digits and hyphens, and does not start or end with a hyphen",
        ))
    }
}

/// Creates an organisation with its owner, `Default` space and the owner's first API key.
pub async fn create(store: &Store, signup: Signup<'_>) -> ApiResult<NewOrganisation> {
    let name = crate::resources::require_name(signup.name, "organisation")?;
    let slug = check_slug(signup.slug)?;
    let username = signup.username.trim();
    if username.is_empty() || username.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid_field(
            "Username",
            "a username is required and has no spaces",
        ));
    }
    let txn = store.conn().begin().await?;
    if organisations::find_organisation_by_slug(&txn, &slug)
        .await?
        .is_some()
    {
        return Err(ApiError::invalid_field(
            "Slug",
            format!("the slug '{slug}' is already taken"),
        ));
    }
    if users::find_user_by_name(&txn, username).await?.is_some() {
        return Err(ApiError::invalid_field(
            "Username",
            format!("the username '{username}' is already in use"),
        ));
    }
    let organisation = organisations::insert_organisation(&txn, &name, &slug).await?;
    let owner = users::insert_user(
        &txn,
        User {
            id: cuttle_store::next_id(&txn, "Users").await?,
            username: username.to_owned(),
            display_name: username.to_owned(),
            email: signup.email.map(str::to_owned),
            is_service: false,
            is_active: true,
            created_at: Utc::now(),
            organisation_id: Some(organisation.id.clone()),
            password_hash: signup.password_hash.clone(),
            external_id: None,
            email_verified: signup.email_verified,
        },
    )
    .await?;
    crate::authz::ensure_builtin_teams(&txn, &organisation.id, std::slice::from_ref(&owner.id))
        .await?;
    let space = crate::spaces::insert_space(
        &txn,
        Space {
            name: "Default".into(),
            description: format!("The default space of {name}."),
            is_default: true,
            ..Space::default()
        },
        &organisation.id,
        Some(&owner.id),
    )
    .await?;
    let api_key = crate::bootstrap::generate_api_key();
    users::insert_api_key(
        &txn,
        &owner.id,
        "Created with the organisation",
        &hash_api_key(&api_key),
    )
    .await?;
    txn.commit().await?;
    Ok(NewOrganisation {
        organisation,
        owner,
        space_id: space.id,
        api_key,
    })
}
