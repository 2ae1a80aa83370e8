//! First start: the installation id, the first organisation, its `Default` space (`Spaces-1`)
//! and its administrator with an API key. Idempotent: later starts find everything in place and
//! change nothing, except that users and spaces from before organisations existed are given to
//! the first organisation.

use crate::error::ApiError;
use crate::extract::hash_api_key;
use chrono::Utc;
use cuttle_store::users::{self, User};
use cuttle_store::{Store, TransactionTrait, documents, organisations, settings};
use cuttle_wire::resources::Space;
use rand::Rng;

/// Username of the first administrator.
pub const ADMIN_USERNAME: &str = "admin";

/// Name of the organisation created at first start.
pub const FIRST_ORGANISATION_NAME: &str = "Default Organisation";

/// Slug of the organisation created at first start.
pub const FIRST_ORGANISATION_SLUG: &str = "default";

/// What bootstrap did.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// The installation id for the root document.
    pub installation_id: String,
    /// The administrator's generated API key, when this start generated one (first start without
    /// `CUTTLE_ADMIN_API_KEY`).
    pub new_admin_api_key: Option<String>,
}

/// Generates an API key in Octopus's shape: `API-` and 26 upper-case letters or digits.
pub fn generate_api_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..26)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("API-{tail}")
}

/// Ensures the installation's first objects exist. `fixed_admin_key` comes from
/// `CUTTLE_ADMIN_API_KEY` and is used instead of a generated key when the admin is created.
pub async fn ensure(store: &Store, fixed_admin_key: Option<&str>) -> Result<Bootstrap, ApiError> {
    let txn = store.conn().begin().await?;
    let installation_id =
        settings::get_or_init(&txn, "installation_id", &uuid::Uuid::new_v4().to_string()).await?;
    let default_space = cuttle_domain::SpaceId::default_space();
    let organisation = match organisations::first_organisation(&txn).await? {
        Some(organisation) => organisation,
        None => {
            organisations::insert_organisation(
                &txn,
                FIRST_ORGANISATION_NAME,
                FIRST_ORGANISATION_SLUG,
            )
            .await?
        }
    };
    users::adopt_users(&txn, &organisation.id).await?;
    let admin = match users::find_user_by_name(&txn, ADMIN_USERNAME).await? {
        Some(user) => user,
        None => {
            users::insert_user(
                &txn,
                User {
                    id: cuttle_store::next_id(&txn, "Users").await?,
                    username: ADMIN_USERNAME.into(),
                    display_name: "Administrator".into(),
                    email: None,
                    is_service: false,
                    is_active: true,
                    created_at: Utc::now(),
                    organisation_id: Some(organisation.id.clone()),
                    password_hash: None,
                    external_id: None,
                    email_verified: true,
                },
            )
            .await?
        }
    };
    if documents::get(
        &txn,
        &default_space,
        crate::spaces::KIND,
        default_space.as_str(),
    )
    .await?
    .is_none()
    {
        let space = Space {
            name: "Default".into(),
            slug: "default".into(),
            description: "The default space.".into(),
            is_default: true,
            space_managers_teams: vec![
                "teams-administrators".into(),
                "teams-managers".into(),
                "teams-spacemanagers-Spaces-1".into(),
            ],
            ..Space::default()
        };
        let created =
            crate::spaces::insert_space(&txn, space, &organisation.id, Some(&admin.id)).await?;
        if created.id != default_space.as_str() {
            return Err(ApiError::internal(format!(
                "the default space was created as {} instead of Spaces-1; the database already had spaces",
                created.id
            )));
        }
    }
    // Spaces from before organisations existed belong to the first one (an owned space keeps
    // its owner).
    let (spaces, _) = documents::list_spaces(&txn, &documents::ListQuery::everything()).await?;
    for space in spaces {
        organisations::set_space_owner(&txn, &space.id, &organisation.id).await?;
    }
    crate::authz::ensure_builtin_teams(&txn, &organisation.id, std::slice::from_ref(&admin.id))
        .await?;
    // A fixed key (CUTTLE_ADMIN_API_KEY) is made valid whenever it is not yet; otherwise the
    // admin gets a generated key only once: a restart never mints a second one.
    let new_admin_api_key = match fixed_admin_key {
        Some(key) => {
            if users::user_for_key_hash(&txn, &hash_api_key(key))
                .await?
                .is_none()
            {
                users::insert_api_key(&txn, &admin.id, "CUTTLE_ADMIN_API_KEY", &hash_api_key(key))
                    .await?;
            }
            settings::get_or_init(&txn, "admin_api_key_issued", "true").await?;
            None
        }
        None if settings::get(&txn, "admin_api_key_issued").await?.is_some() => None,
        None => {
            let key = generate_api_key();
            users::insert_api_key(
                &txn,
                &admin.id,
                "Created at first start",
                &hash_api_key(&key),
            )
            .await?;
            settings::get_or_init(&txn, "admin_api_key_issued", "true").await?;
            Some(key)
        }
    };
    txn.commit().await?;
    Ok(Bootstrap {
        installation_id,
        new_admin_api_key,
    })
}

/// Issues a new API key for the administrator (`cuttle admin new-api-key`).
pub async fn new_admin_api_key(store: &Store, purpose: &str) -> Result<String, ApiError> {
    let txn = store.conn().begin().await?;
    let admin = users::find_user_by_name(&txn, ADMIN_USERNAME)
        .await?
        .ok_or_else(|| ApiError::not_found("the administrator (start the server once first)"))?;
    let key = generate_api_key();
    users::insert_api_key(&txn, &admin.id, purpose, &hash_api_key(&key)).await?;
    txn.commit().await?;
    Ok(key)
}
