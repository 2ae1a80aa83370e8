//! The request's organisation, for PostgreSQL's row-level security (migration
//! `000010_row_level_security`).
//!
//! The api runs each authenticated request inside [`scoped`] with the caller's organisation.
//! Every connection the request takes from the pool then runs as the role `cuttle_app` with
//! `cuttle.organisation` set, and the policies hide every row of a space another organisation
//! owns: a query that forgot its space filter still cannot read across organisations. Work
//! outside [`scoped`] (background services, sign-in, sign-up) runs as the migrating user, which
//! the policies do not restrict.

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static ORGANISATION: Arc<str>;
}

/// Runs `work` with only `organisation_id`'s spaces visible to its queries (on PostgreSQL).
pub async fn scoped<F: Future>(organisation_id: &str, work: F) -> F::Output {
    // Organisation ids are `Organisations-<n>`; anything else matches no row.
    let id: String = if organisation_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        organisation_id.to_owned()
    } else {
        String::new()
    };
    ORGANISATION.scope(Arc::from(id.as_str()), work).await
}

/// The SQL that prepares a connection for the current task: the restricted role and its
/// organisation inside [`scoped`], the connection's own user outside it.
pub(crate) fn session_sql() -> String {
    match ORGANISATION.try_with(Arc::clone) {
        Ok(id) => {
            format!("SET ROLE cuttle_app; SELECT set_config('cuttle.organisation', '{id}', false)")
        }
        Err(_) => "RESET ROLE; SELECT set_config('cuttle.organisation', '', false)".to_owned(),
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
    async fn inside_a_scope_the_role_is_restricted_to_the_organisation() {
        assert!(session_sql().starts_with("RESET ROLE"));
        let inside = scoped("Organisations-2", async { session_sql() }).await;
        assert_eq!(
            inside,
            "SET ROLE cuttle_app; SELECT set_config('cuttle.organisation', 'Organisations-2', false)"
        );
        let hostile = scoped("x'; DROP TABLE users; --", async { session_sql() }).await;
        assert!(
            hostile.ends_with("'cuttle.organisation', '', false)"),
            "{hostile}"
        );
    }
}
