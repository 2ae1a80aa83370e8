//! The request's organisation and spaces, for PostgreSQL's row-level security (migrations
//! `000010_row_level_security` and `000012_space_row_level_security`).
//!
//! The api runs each authenticated request inside [`scoped_to`] with the caller's organisation
//! and the spaces the caller can see. Every connection the request takes from the pool then runs
//! as the role `cuttle_app` with `cuttle.organisation` and `cuttle.spaces` set, and the policies
//! hide every row of a space another organisation owns or the caller cannot see: a query that
//! forgot its space filter, or its permission check, still cannot read across them. Space
//! documents themselves stay visible across the organisation (names and slugs are unique in
//! it). Work outside a scope (background services, sign-in, sign-up) runs as the migrating user,
//! which the policies do not restrict.

use sea_orm::{ConnectionTrait, DbBackend, DbErr};
use std::future::Future;
use std::sync::{Arc, Mutex};

/// What the current task may see.
struct Scope {
    organisation: String,
    /// `None`: every space of the organisation.
    spaces: Mutex<Option<Vec<String>>>,
}

tokio::task_local! {
    static SCOPE: Arc<Scope>;
}

/// Ids are `Organisations-<n>`, `Spaces-<n>`; anything else matches no row.
fn clean(id: &str) -> String {
    if id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        id.to_owned()
    } else {
        String::new()
    }
}

/// Runs `work` with only `organisation_id`'s spaces visible to its queries (on PostgreSQL).
pub async fn scoped<F: Future>(organisation_id: &str, work: F) -> F::Output {
    scoped_to(organisation_id, None, work).await
}

/// Runs `work` with only the listed spaces of `organisation_id` visible to its queries (on
/// PostgreSQL); `spaces: None` means all of the organisation's spaces.
pub async fn scoped_to<F: Future>(
    organisation_id: &str,
    spaces: Option<Vec<String>>,
    work: F,
) -> F::Output {
    let scope = Scope {
        organisation: clean(organisation_id),
        spaces: Mutex::new(spaces.map(|list| {
            list.iter()
                .map(|s| clean(s))
                .filter(|s| !s.is_empty())
                .collect()
        })),
    };
    SCOPE.scope(Arc::new(scope), work).await
}

/// Lets the current task see `space_id`, a space it has just created: on `conn` at once (so the
/// rest of its transaction may write the space's rows) and on every connection it takes later.
/// Nothing to do outside a scope, on SQLite, or when the task sees every space already.
pub async fn admit_space(conn: &impl ConnectionTrait, space_id: &str) -> Result<(), DbErr> {
    let Ok(scope) = SCOPE.try_with(Arc::clone) else {
        return Ok(());
    };
    let spaces = {
        let mut spaces = scope
            .spaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(list) = spaces.as_mut() else {
            return Ok(());
        };
        let id = clean(space_id);
        if !id.is_empty() && !list.contains(&id) {
            list.push(id);
        }
        list.join(",")
    };
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_unprepared(&format!(
            "SELECT set_config('cuttle.spaces', '{spaces}', false)"
        ))
        .await?;
    }
    Ok(())
}

/// The SQL that prepares a connection for the current task: the restricted role, its
/// organisation and its spaces (`*` for all of them) inside a scope, the connection's own user
/// outside it.
pub(crate) fn session_sql() -> String {
    match SCOPE.try_with(Arc::clone) {
        Ok(scope) => {
            let spaces = scope
                .spaces
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .map_or_else(|| "*".to_owned(), |list| list.join(","));
            format!(
                "SET ROLE cuttle_app; SELECT set_config('cuttle.organisation', '{}', false), set_config('cuttle.spaces', '{spaces}', false)",
                scope.organisation
            )
        }
        Err(_) => "RESET ROLE; SELECT set_config('cuttle.organisation', '', false), set_config('cuttle.spaces', '', false)".to_owned(),
    }
}

/// Sets the current task's role and organisation on a PostgreSQL connection.
pub(crate) async fn prepare(
    conn: &mut sea_orm::sqlx::PgConnection,
) -> Result<(), sea_orm::sqlx::Error> {
    let sql = session_sql();
    sea_orm::sqlx::Executor::execute(
        conn,
        sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(sql)),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inside_a_scope_the_role_is_restricted_to_the_organisation_and_its_spaces() {
        assert!(session_sql().starts_with("RESET ROLE"));
        let inside = scoped("Organisations-2", async { session_sql() }).await;
        assert_eq!(
            inside,
            "SET ROLE cuttle_app; SELECT set_config('cuttle.organisation', 'Organisations-2', false), set_config('cuttle.spaces', '*', false)"
        );
        let hostile = scoped("x'; DROP TABLE users; --", async { session_sql() }).await;
        assert!(
            hostile.contains("'cuttle.organisation', '', false)"),
            "{hostile}"
        );
        let spaces = vec!["Spaces-1".to_owned(), "Spaces-2'; --".to_owned()];
        let listed = scoped_to("Organisations-2", Some(spaces), async { session_sql() }).await;
        assert!(
            listed.ends_with("set_config('cuttle.spaces', 'Spaces-1', false)"),
            "{listed}"
        );
        let none = scoped_to("Organisations-2", Some(Vec::new()), async { session_sql() }).await;
        assert!(
            none.ends_with("set_config('cuttle.spaces', '', false)"),
            "{none}"
        );
    }
}
