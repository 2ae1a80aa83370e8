//! One conformance story for the database port, run against both backends we ship.
//!
//! Each story is an async fn taking a [`Store`]; the `conformance!` macro turns every story into
//! a test in `mod sqlite` (a WAL file in a temporary directory, opened the way embedded mode
//! opens it) and one in `mod postgres` (a fresh database per test, dropped afterwards). The
//! PostgreSQL tests need a server (`CUTTLE_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432`) and fail, rather than skip, when it is unreachable.

// The stories are async fns called from the generated tests, so clippy does not see them as
// test code; a panic is exactly how a story should fail.
#![allow(clippy::unwrap_used, reason = "test code: unwrap is how a story fails")]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cuttle_domain::LogCategory;
use cuttle_migrations::{Migrator, MigratorTrait};
use cuttle_store::documents::{self, ListQuery, NewDocument, Replacement};
use cuttle_store::entities::api_key;
use cuttle_store::tasks::{self, Job, NewLogLine, job_status};
use cuttle_store::{SpaceId, Store, StoreError, outbox, settings, users};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Statement};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// A database owned by one test: the store on it, and what must be removed afterwards.
struct TestDatabase {
    url: String,
    /// Holds the SQLite file; removed on drop.
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database to drop.
    postgres_name: Option<String>,
}

impl TestDatabase {
    /// An SQLite file in a fresh temporary directory, with the URL shape embedded mode uses.
    fn sqlite() -> TestDatabase {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("cuttle.db").display()
        );
        TestDatabase {
            url,
            _dir: Some(dir),
            postgres_name: None,
        }
    }

    /// A fresh PostgreSQL database; panics (the test fails) when the server cannot be reached.
    async fn postgres() -> TestDatabase {
        let (url, name) = cuttle_testkit::fresh_postgres_database()
            .await
            .expect("PostgreSQL must be reachable for these tests (run infra/up.sh)");
        TestDatabase {
            url,
            _dir: None,
            postgres_name: Some(name),
        }
    }

    /// Connects without migrating: the database is still empty.
    async fn connect(&self) -> Store {
        Store::connect(&self.url).await.unwrap()
    }

    /// Runs `story` on a store, then removes the database whether or not the story passed.
    async fn run<F, Fut>(self, migrate: bool, story: F)
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let store = self.connect().await;
        if migrate {
            store.migrate().await.unwrap();
        }
        // A spawned task turns a failing story's panic into a `JoinError`, so the cleanup below
        // still runs before the panic is passed on.
        let outcome = tokio::spawn(story(store.clone())).await;
        if let Err(err) = store.conn().clone().close().await {
            eprintln!("could not close the test store: {err}");
        }
        if let Some(name) = &self.postgres_name
            && let Err(err) = cuttle_testkit::drop_postgres_database(name).await
        {
            eprintln!("could not drop test database {name}: {err:#}");
        }
        if let Err(err) = outcome {
            std::panic::resume_unwind(err.into_panic());
        }
    }
}

/// Generates one test per backend for each story. Stories under `empty` receive a store on a
/// database nothing was applied to; stories under `migrated` receive one with the schema in
/// place.
macro_rules! conformance {
    (empty: [$($empty:ident),* $(,)?], migrated: [$($migrated:ident),* $(,)?] $(,)?) => {
        mod sqlite {
            use super::TestDatabase;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $empty() {
                    TestDatabase::sqlite().run(false, super::$empty).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $migrated() {
                    TestDatabase::sqlite().run(true, super::$migrated).await;
                }
            )*
        }

        mod postgres {
            use super::TestDatabase;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $empty() {
                    TestDatabase::postgres().await.run(false, super::$empty).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $migrated() {
                    TestDatabase::postgres().await.run(true, super::$migrated).await;
                }
            )*
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const ENVIRONMENT: &str = "Environment";
const CONFLICT: &str = "An environment with this name already exists in this space.";

fn space(n: u64) -> SpaceId {
    SpaceId::from_number(n)
}

/// An environment document named `name`, unique by its lowercased name as the api stores it.
fn environment(space_id: &SpaceId, id: &str, name: &str, sort_order: i64) -> NewDocument {
    NewDocument {
        id: id.to_owned(),
        space_id: space_id.clone(),
        kind: ENVIRONMENT,
        name: name.to_owned(),
        parent_id: None,
        unique_key: Some(name.to_lowercase()),
        sort_order,
        data: json!({"Id": id, "Name": name, "SpaceId": space_id.as_str()}),
    }
}

fn replacement(name: &str, data: serde_json::Value, expected_version: Option<i64>) -> Replacement {
    Replacement {
        name: name.to_owned(),
        unique_key: Some(name.to_lowercase()),
        sort_order: 0,
        data,
        expected_version,
    }
}

fn ids_of(docs: &[documents::Document]) -> Vec<&str> {
    docs.iter().map(|doc| doc.id.as_str()).collect()
}

fn all() -> ListQuery {
    ListQuery {
        take: 100,
        ..ListQuery::default()
    }
}

async fn list_ids(store: &Store, space_id: &SpaceId, kind: &str, query: ListQuery) -> Vec<String> {
    let (docs, total) = documents::list(store.conn(), space_id, kind, &query)
        .await
        .unwrap();
    assert_eq!(
        total as usize,
        docs.len(),
        "these queries fit in one page, so the total is the page's length"
    );
    docs.into_iter().map(|doc| doc.id).collect()
}

/// A whole-second instant: both backends store it exactly (PostgreSQL keeps microseconds).
fn instant(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, hour, 0, 0).unwrap()
}

fn job(job_id: &str, position: i32, status: &str, heartbeat_at: Option<DateTime<Utc>>) -> Job {
    Job {
        job_id: job_id.to_owned(),
        task_id: "ServerTasks-1".to_owned(),
        position,
        step_number: position + 1,
        step_name: format!("Step {}", position + 1),
        action_name: format!("Step {}", position + 1),
        condition: "Success".to_owned(),
        status: status.to_owned(),
        payload: "{}".to_owned(),
        worker: None,
        dispatched_at: Some(instant(0)),
        started_at: heartbeat_at,
        heartbeat_at,
        ended_at: None,
        exit_code: None,
        error: None,
        output_variables: None,
        parallel_window: None,
    }
}

fn log_line(node: &str, seq: Option<i64>, text: &str) -> NewLogLine {
    NewLogLine {
        node_id: node.to_owned(),
        source_seq: seq,
        occurred_at: instant(1),
        category: LogCategory::Info,
        message: text.to_owned(),
    }
}

fn user(id: &str, active: bool) -> users::User {
    users::User {
        id: id.to_owned(),
        username: id.to_lowercase(),
        display_name: id.to_owned(),
        email: None,
        is_service: false,
        is_active: active,
        created_at: instant(0),
        organisation_id: None,
        password_hash: None,
        external_id: None,
        email_verified: true,
    }
}

/// Every applied migration with its timestamp, as the migrator recorded it.
async fn applied_migrations(store: &Store) -> Vec<(String, i64)> {
    let conn = store.conn();
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT version, applied_at FROM seaql_migrations ORDER BY version",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            (
                row.try_get::<String>("", "version").unwrap(),
                row.try_get::<i64>("", "applied_at").unwrap(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Stories
// ---------------------------------------------------------------------------------------------

async fn migrations_apply_on_an_empty_database_and_applying_them_again_changes_nothing(
    store: Store,
) {
    assert_eq!(
        Migrator::get_pending_migrations(store.conn())
            .await
            .unwrap()
            .len(),
        Migrator::migrations().len(),
        "a new database has every migration pending"
    );

    store.migrate().await.unwrap();
    let applied = applied_migrations(&store).await;
    assert_eq!(applied.len(), Migrator::migrations().len());
    // The schema is usable: a row goes in and comes back.
    let installation_id = settings::get_or_init(store.conn(), "InstallationId", "first")
        .await
        .unwrap();
    assert_eq!(installation_id, "first");
    documents::insert(
        store.conn(),
        environment(&space(1), "Environments-1", "Production", 0),
        CONFLICT,
    )
    .await
    .unwrap();

    store.migrate().await.unwrap();
    assert_eq!(applied_migrations(&store).await, applied);
    assert!(
        Migrator::get_pending_migrations(store.conn())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        settings::get(store.conn(), "InstallationId").await.unwrap(),
        Some("first".to_owned())
    );
    assert!(
        documents::get(store.conn(), &space(1), ENVIRONMENT, "Environments-1")
            .await
            .unwrap()
            .is_some()
    );
}

async fn ids_are_handed_out_without_gaps_or_duplicates_even_under_concurrent_transactions(
    store: Store,
) {
    const N_TASKS: usize = 4;
    const IDS_PER_TASK: usize = 25;
    let mut handles = Vec::new();
    for _ in 0..N_TASKS {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..IDS_PER_TASK {
                let txn = store.begin().await.unwrap();
                ids.push(cuttle_store::next_id(&txn, "Projects").await.unwrap());
                txn.commit().await.unwrap();
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for handle in handles {
        ids.extend(handle.await.unwrap());
    }

    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        N_TASKS * IDS_PER_TASK,
        "duplicates in {ids:?}"
    );
    let numbers: BTreeSet<i64> = ids
        .iter()
        .map(|id| id.strip_prefix("Projects-").unwrap().parse().unwrap())
        .collect();
    let expected: BTreeSet<i64> = (1..=(N_TASKS * IDS_PER_TASK) as i64).collect();
    assert_eq!(numbers, expected);
    // Another prefix has its own sequence.
    assert_eq!(
        cuttle_store::next_id(store.conn(), "Environments")
            .await
            .unwrap(),
        "Environments-1"
    );
}

async fn a_document_name_taken_in_a_space_is_a_conflict_while_the_same_name_in_another_space_is_fine(
    store: Store,
) {
    documents::insert(
        store.conn(),
        environment(&space(1), "Environments-1", "Production", 0),
        CONFLICT,
    )
    .await
    .unwrap();

    // The unique key is the lowercased name, so a change of case is still the same name.
    let taken = documents::insert(
        store.conn(),
        environment(&space(1), "Environments-2", "PRODUCTION", 0),
        CONFLICT,
    )
    .await;
    match taken {
        Err(StoreError::Conflict(message)) => assert_eq!(message, CONFLICT),
        other => panic!("expected a Conflict, got {other:?}"),
    }
    assert!(
        documents::get(store.conn(), &space(1), ENVIRONMENT, "Environments-2")
            .await
            .unwrap()
            .is_none()
    );

    documents::insert(
        store.conn(),
        environment(&space(2), "Environments-2", "Production", 0),
        CONFLICT,
    )
    .await
    .unwrap();
    // Documents without a unique key never clash.
    for id in ["Environments-3", "Environments-4"] {
        documents::insert(
            store.conn(),
            NewDocument {
                unique_key: None,
                ..environment(&space(1), id, "Unkeyed", 0)
            },
            CONFLICT,
        )
        .await
        .unwrap();
    }
}

async fn the_same_id_in_two_spaces_is_two_documents_and_get_with_the_wrong_space_finds_nothing(
    store: Store,
) {
    // Octopus gives every space a built-in feed with the same id.
    let feed = |space_id: &SpaceId| NewDocument {
        id: "feeds-builtin".to_owned(),
        space_id: space_id.clone(),
        kind: "Feed",
        name: "Octopus Server (built-in)".to_owned(),
        parent_id: None,
        unique_key: Some("octopus server (built-in)".to_owned()),
        sort_order: 0,
        data: json!({"Id": "feeds-builtin", "SpaceId": space_id.as_str()}),
    };
    documents::insert(store.conn(), feed(&space(1)), CONFLICT)
        .await
        .unwrap();
    documents::insert(store.conn(), feed(&space(2)), CONFLICT)
        .await
        .unwrap();

    for n in [1, 2] {
        let doc = documents::get(store.conn(), &space(n), "Feed", "feeds-builtin")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(doc.space_id, space(n).as_str());
        let data: serde_json::Value = serde_json::from_str(&doc.data).unwrap();
        assert_eq!(data["SpaceId"], space(n).as_str());
    }
    assert!(
        documents::get(store.conn(), &space(3), "Feed", "feeds-builtin")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        documents::get(store.conn(), &space(1), ENVIRONMENT, "feeds-builtin")
            .await
            .unwrap()
            .is_none(),
        "the kind is part of the lookup too"
    );

    // Changing or deleting one space's copy leaves the other's alone.
    documents::replace(
        store.conn(),
        &space(1),
        "Feed",
        "feeds-builtin",
        replacement("Renamed", json!({"Renamed": true}), None),
        CONFLICT,
    )
    .await
    .unwrap()
    .unwrap();
    let other = documents::get(store.conn(), &space(2), "Feed", "feeds-builtin")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (other.name.as_str(), other.version),
        ("Octopus Server (built-in)", 1)
    );
    assert!(
        documents::delete(store.conn(), &space(1), "Feed", "feeds-builtin")
            .await
            .unwrap()
    );
    assert!(
        documents::get(store.conn(), &space(2), "Feed", "feeds-builtin")
            .await
            .unwrap()
            .is_some()
    );
}

async fn replace_with_a_stale_expected_version_is_a_version_mismatch_and_leaves_the_document_unchanged(
    store: Store,
) {
    let conn = store.conn();
    documents::insert(
        conn,
        environment(&space(1), "Environments-1", "Production", 0),
        CONFLICT,
    )
    .await
    .unwrap();
    let first = documents::replace(
        conn,
        &space(1),
        ENVIRONMENT,
        "Environments-1",
        replacement("Production", json!({"Description": "first"}), Some(1)),
        CONFLICT,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(first.version, 2);

    // A second editor still holds version 1.
    let stale = documents::replace(
        conn,
        &space(1),
        ENVIRONMENT,
        "Environments-1",
        replacement("Live", json!({"Description": "second"}), Some(1)),
        CONFLICT,
    )
    .await;
    assert!(
        matches!(stale, Err(StoreError::VersionMismatch(_))),
        "expected a VersionMismatch, got {stale:?}"
    );

    let stored = documents::get(conn, &space(1), ENVIRONMENT, "Environments-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored, first,
        "the stored row is exactly what the first replace wrote"
    );
    assert!(
        documents::find_by_name(conn, &space(1), ENVIRONMENT, None, "Live")
            .await
            .unwrap()
            .is_none()
    );
    // Replacing a document that does not exist is not an error, just nothing.
    assert!(
        documents::replace(
            conn,
            &space(1),
            ENVIRONMENT,
            "Environments-404",
            replacement("Ghost", json!({}), None),
            CONFLICT,
        )
        .await
        .unwrap()
        .is_none()
    );
}

async fn list_filters_by_ids_partial_name_and_parent_and_pages_with_a_correct_total(store: Store) {
    let conn = store.conn();
    let one = space(1);
    // The `%` and `_` in these names are what a LIKE pattern would treat as wildcards.
    let names = [
        "Production",
        "Pre_Production",
        "PreXProduction",
        "100% Staging",
        "1000 Staging",
        "Test",
    ];
    for (i, name) in names.iter().enumerate() {
        let id = format!("Environments-{}", i + 1);
        documents::insert(conn, environment(&one, &id, name, i as i64), CONFLICT)
            .await
            .unwrap();
    }
    // Same kind in another space, and another kind in this space: never listed below.
    documents::insert(
        conn,
        environment(&space(2), "Environments-7", "Production 2", 0),
        CONFLICT,
    )
    .await
    .unwrap();
    for (id, project) in [
        ("Channels-1", "Projects-1"),
        ("Channels-2", "Projects-2"),
        ("Channels-3", "Projects-1"),
    ] {
        documents::insert(
            conn,
            NewDocument {
                id: id.to_owned(),
                space_id: one.clone(),
                kind: "Channel",
                name: "Default".to_owned(),
                parent_id: Some(project.to_owned()),
                unique_key: Some(format!("{project}/{id}")),
                sort_order: 0,
                data: json!({"Id": id, "ProjectId": project}),
            },
            CONFLICT,
        )
        .await
        .unwrap();
    }

    let by_ids = ListQuery {
        ids: vec![
            "Environments-4".into(),
            "Environments-2".into(),
            "Channels-1".into(),
        ],
        ..all()
    };
    assert_eq!(
        list_ids(&store, &one, ENVIRONMENT, by_ids).await,
        ["Environments-2", "Environments-4"],
        "only the requested ids of this kind, in list order"
    );

    let partial = |text: &str| ListQuery {
        partial_name: Some(text.to_owned()),
        ..all()
    };
    assert_eq!(
        list_ids(&store, &one, ENVIRONMENT, partial("PRODUCTION")).await,
        ["Environments-1", "Environments-2", "Environments-3"],
        "case-insensitive substring"
    );
    assert_eq!(
        list_ids(&store, &one, ENVIRONMENT, partial("pre_")).await,
        ["Environments-2"],
        "`_` matches only an underscore"
    );
    assert_eq!(
        list_ids(&store, &one, ENVIRONMENT, partial("100%")).await,
        ["Environments-4"],
        "`%` matches only a percent sign"
    );
    assert_eq!(
        list_ids(&store, &one, ENVIRONMENT, partial("%")).await,
        ["Environments-4"]
    );
    assert!(
        list_ids(&store, &one, ENVIRONMENT, partial("\\"))
            .await
            .is_empty(),
        "a backslash is literal too"
    );
    assert_eq!(
        list_ids(&store, &one, ENVIRONMENT, partial("")).await.len(),
        names.len(),
        "an empty filter filters nothing"
    );

    let children_of = |project: &str| ListQuery {
        parent_id: Some(project.to_owned()),
        ..all()
    };
    assert_eq!(
        list_ids(&store, &one, "Channel", children_of("Projects-1")).await,
        ["Channels-1", "Channels-3"]
    );
    assert!(
        list_ids(&store, &one, ENVIRONMENT, children_of("Projects-1"))
            .await
            .is_empty()
    );

    let mut paged = Vec::new();
    for skip in (0..8).step_by(2) {
        let page = ListQuery {
            skip,
            take: 2,
            ..ListQuery::default()
        };
        let (docs, total) = documents::list(conn, &one, ENVIRONMENT, &page)
            .await
            .unwrap();
        assert_eq!(
            total,
            names.len() as u64,
            "the total counts every match, not the page"
        );
        assert!(docs.len() <= 2);
        paged.extend(ids_of(&docs).into_iter().map(str::to_owned));
    }
    let expected: Vec<String> = (1..=names.len())
        .map(|i| format!("Environments-{i}"))
        .collect();
    assert_eq!(
        paged, expected,
        "pages follow the sort order without overlap or gaps"
    );

    let filtered_page = ListQuery {
        partial_name: Some("staging".into()),
        skip: 1,
        take: 1,
        ..ListQuery::default()
    };
    let (docs, total) = documents::list(conn, &one, ENVIRONMENT, &filtered_page)
        .await
        .unwrap();
    assert_eq!((ids_of(&docs), total), (vec!["Environments-5"], 2));
}

async fn a_rolled_back_transaction_leaves_neither_the_document_nor_its_outbox_message(
    store: Store,
) {
    let txn = store.begin().await.unwrap();
    documents::insert(
        &txn,
        environment(&space(1), "Environments-1", "Production", 0),
        CONFLICT,
    )
    .await
    .unwrap();
    outbox::enqueue(
        &txn,
        "orchestrator.commands",
        "message-1",
        "EnvironmentCreated",
        br#"{"Id":"Environments-1"}"#,
        &BTreeMap::new(),
    )
    .await
    .unwrap();
    txn.rollback().await.unwrap();

    assert!(
        documents::get(store.conn(), &space(1), ENVIRONMENT, "Environments-1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        outbox::claim_batch(store.conn(), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A transaction dropped without commit (a handler that returned early) rolls back too.
    {
        let txn = store.begin().await.unwrap();
        outbox::enqueue(&txn, "q", "message-2", "Dropped", b"{}", &BTreeMap::new())
            .await
            .unwrap();
    }
    assert!(
        outbox::claim_batch(store.conn(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn outbox_messages_come_back_in_order_and_are_gone_after_remove(store: Store) {
    let headers = |n: usize| {
        BTreeMap::from([
            (
                "traceparent".to_owned(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            ),
            ("n".to_owned(), n.to_string()),
        ])
    };
    // Two transactions, as two requests would write them.
    for batch in [0..3, 3..5] {
        let txn = store.begin().await.unwrap();
        for n in batch {
            outbox::enqueue(
                &txn,
                if n % 2 == 0 {
                    "worker.jobs"
                } else {
                    "orchestrator.commands"
                },
                &format!("message-{n}"),
                "TaskQueued",
                format!(r#"{{"n":{n}}}"#).as_bytes(),
                &headers(n),
            )
            .await
            .unwrap();
        }
        txn.commit().await.unwrap();
    }

    let claimed = outbox::claim_batch(store.conn(), 100).await.unwrap();
    let message_ids: Vec<&str> = claimed.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(
        message_ids,
        [
            "message-0",
            "message-1",
            "message-2",
            "message-3",
            "message-4"
        ]
    );
    for (n, message) in claimed.iter().enumerate() {
        assert_eq!(message.kind, "TaskQueued");
        assert_eq!(message.payload, format!(r#"{{"n":{n}}}"#));
        let stored: BTreeMap<String, String> = serde_json::from_str(&message.headers).unwrap();
        assert_eq!(stored, headers(n));
    }
    assert_eq!(claimed[1].queue, "orchestrator.commands");
    let first_two: Vec<i64> = outbox::claim_batch(store.conn(), 2)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(first_two, [claimed[0].id, claimed[1].id]);

    // The relay removes what it published inside the transaction that claimed it.
    let txn = store.begin().await.unwrap();
    let batch = outbox::claim_batch(&txn, 3).await.unwrap();
    outbox::remove(&txn, batch.iter().map(|m| m.id).collect())
        .await
        .unwrap();
    txn.commit().await.unwrap();
    let rest: Vec<String> = outbox::claim_batch(store.conn(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(rest, ["message-3", "message-4"]);

    outbox::remove(store.conn(), Vec::new()).await.unwrap();
    outbox::remove(store.conn(), claimed.iter().map(|m| m.id).collect())
        .await
        .unwrap();
    assert!(
        outbox::claim_batch(store.conn(), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn appending_the_same_worker_log_lines_twice_stores_them_once_while_lines_without_source_seq_always_append(
    store: Store,
) {
    let conn = store.conn();
    let task = "ServerTasks-1";
    let batch = || {
        vec![
            log_line("job-1", Some(1), "one"),
            log_line("job-1", Some(2), "two"),
        ]
    };
    tasks::append_log(conn, task, batch()).await.unwrap();
    // A redelivered batch, then one that overlaps the stored lines and adds one more.
    tasks::append_log(conn, task, batch()).await.unwrap();
    let mut overlapping = batch();
    overlapping.push(log_line("job-1", Some(3), "three"));
    tasks::append_log(conn, task, overlapping).await.unwrap();
    // The same number on another job, or in another task, is another line.
    tasks::append_log(conn, task, vec![log_line("job-2", Some(1), "other job")])
        .await
        .unwrap();
    tasks::append_log(conn, "ServerTasks-2", batch())
        .await
        .unwrap();
    // Orchestrator lines carry no number and are never deduplicated.
    for _ in 0..2 {
        tasks::append_log(conn, task, vec![log_line(task, None, "Task started")])
            .await
            .unwrap();
    }
    tasks::append_log(conn, task, Vec::new()).await.unwrap();

    let log: Vec<(String, Option<i64>, String)> = tasks::read_log(conn, task)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.node_id, row.source_seq, row.message))
        .collect();
    let expected = [
        ("job-1", Some(1), "one"),
        ("job-1", Some(2), "two"),
        ("job-1", Some(3), "three"),
        ("job-2", Some(1), "other job"),
        (task, None, "Task started"),
        (task, None, "Task started"),
    ]
    .map(|(node, seq, text)| (node.to_owned(), seq, text.to_owned()));
    assert_eq!(log, expected);
    assert_eq!(
        tasks::read_log(conn, "ServerTasks-2").await.unwrap().len(),
        2
    );
}

async fn touch_job_heartbeat_only_moves_the_heartbeat_of_a_running_job(store: Store) {
    let conn = store.conn();
    let earlier = Some(instant(2));
    tasks::insert_jobs(
        conn,
        vec![
            job("job-running", 0, job_status::RUNNING, earlier),
            job("job-dispatched", 1, job_status::DISPATCHED, None),
            job("job-failed", 2, job_status::FAILED, earlier),
            job("job-succeeded", 3, job_status::SUCCESS, earlier),
        ],
    )
    .await
    .unwrap();

    let now = instant(3);
    let mut moved = Vec::new();
    for job_id in [
        "job-running",
        "job-dispatched",
        "job-failed",
        "job-succeeded",
        "job-missing",
    ] {
        moved.push(tasks::touch_job_heartbeat(conn, job_id, now).await.unwrap());
    }
    assert_eq!(moved, [true, false, false, false, false]);

    let heartbeats: Vec<(String, String, Option<DateTime<Utc>>)> =
        tasks::jobs_for_task(conn, "ServerTasks-1")
            .await
            .unwrap()
            .into_iter()
            .map(|job| (job.job_id, job.status, job.heartbeat_at))
            .collect();
    assert_eq!(
        heartbeats,
        [
            (
                "job-running".to_owned(),
                job_status::RUNNING.to_owned(),
                Some(now)
            ),
            (
                "job-dispatched".to_owned(),
                job_status::DISPATCHED.to_owned(),
                None
            ),
            (
                "job-failed".to_owned(),
                job_status::FAILED.to_owned(),
                earlier
            ),
            (
                "job-succeeded".to_owned(),
                job_status::SUCCESS.to_owned(),
                earlier
            ),
        ],
        "a late heartbeat never touches a job that is not running, nor its status"
    );
}

async fn an_api_key_of_an_inactive_user_or_an_expired_key_finds_no_user(store: Store) {
    let conn = store.conn();
    users::insert_user(conn, user("Users-1", true))
        .await
        .unwrap();
    users::insert_user(conn, user("Users-2", false))
        .await
        .unwrap();
    let active_key = users::insert_api_key(conn, "Users-1", "active", "hash-active")
        .await
        .unwrap();
    users::insert_api_key(conn, "Users-2", "inactive", "hash-of-inactive-user")
        .await
        .unwrap();
    let expired_key = users::insert_api_key(conn, "Users-1", "expired", "hash-expired")
        .await
        .unwrap();
    let later_key = users::insert_api_key(conn, "Users-1", "expires later", "hash-later")
        .await
        .unwrap();
    assert_ne!(active_key, expired_key);

    // There is no helper that sets an expiry yet, so the rows are changed directly.
    let expire = |key_id: String, at: DateTime<Utc>| async move {
        let updated = api_key::Entity::update_many()
            .col_expr(api_key::Column::ExpiresAt, Expr::value(Some(at)))
            .filter(api_key::Column::Id.eq(key_id))
            .exec(conn)
            .await
            .unwrap();
        assert_eq!(updated.rows_affected, 1);
    };
    expire(expired_key, Utc::now() - Duration::minutes(1)).await;
    expire(later_key, Utc::now() + Duration::days(1)).await;

    let owner = |hash: &'static str| async move {
        users::user_for_key_hash(conn, hash)
            .await
            .unwrap()
            .map(|user| user.id)
    };
    assert_eq!(owner("hash-active").await.as_deref(), Some("Users-1"));
    assert_eq!(owner("hash-later").await.as_deref(), Some("Users-1"));
    assert_eq!(owner("hash-of-inactive-user").await, None);
    assert_eq!(owner("hash-expired").await, None);
    assert_eq!(owner("hash-unknown").await, None);
}

conformance! {
    empty: [
        migrations_apply_on_an_empty_database_and_applying_them_again_changes_nothing,
    ],
    migrated: [
        ids_are_handed_out_without_gaps_or_duplicates_even_under_concurrent_transactions,
        a_document_name_taken_in_a_space_is_a_conflict_while_the_same_name_in_another_space_is_fine,
        the_same_id_in_two_spaces_is_two_documents_and_get_with_the_wrong_space_finds_nothing,
        replace_with_a_stale_expected_version_is_a_version_mismatch_and_leaves_the_document_unchanged,
        list_filters_by_ids_partial_name_and_parent_and_pages_with_a_correct_total,
        a_rolled_back_transaction_leaves_neither_the_document_nor_its_outbox_message,
        outbox_messages_come_back_in_order_and_are_gone_after_remove,
        appending_the_same_worker_log_lines_twice_stores_them_once_while_lines_without_source_seq_always_append,
        touch_job_heartbeat_only_moves_the_heartbeat_of_a_running_job,
        an_api_key_of_an_inactive_user_or_an_expired_key_finds_no_user,
    ],
}
