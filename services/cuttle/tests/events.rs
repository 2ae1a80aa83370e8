//! The audit log end to end, in both modes: every change through the API is an event with who,
//! when, what and the differences, never with a secret in it; Octopus's filters select them;
//! reading them takes EventView; and no change is made without its event.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::InProcess;
use cuttle_testkit::{Client, Mode};
use serde_json::{Value, json};

both_modes!(
    changes_are_recorded_with_their_differences_and_without_secrets,
    no_change_is_made_without_a_trace_in_the_audit_log,
);

const SECRET: &str = "audit-s3cret-value-77";

fn id(value: &Value) -> String {
    value["Id"].as_str().unwrap().to_owned()
}

async fn changes_are_recorded_with_their_differences_and_without_secrets(mode: Mode) {
    let app = InProcess::start(mode).await;
    let admin = &app.client;
    let environment = admin
        .post("/api/Spaces-1/environments", json!({"Name": "Audit Test"}))
        .await
        .expect(201);
    let env_id = id(&environment);
    let mut renamed = environment.clone();
    renamed["Name"] = json!("Audit Production");
    admin
        .put(&format!("/api/Spaces-1/environments/{env_id}"), renamed)
        .await
        .expect(200);
    admin
        .delete(&format!("/api/Spaces-1/environments/{env_id}"))
        .await
        .expect(200);

    let events = admin
        .get(&format!("/api/events?regarding={env_id}"))
        .await
        .expect(200);
    let items = events["Items"].as_array().unwrap();
    let categories: Vec<&str> = items
        .iter()
        .map(|e| e["Category"].as_str().unwrap())
        .collect();
    assert_eq!(categories, ["Deleted", "Modified", "Created"], "{events}");
    let modified = &items[1];
    assert_eq!(modified["Username"], "admin");
    assert_eq!(modified["IdentityEstablishedWith"], "API key");
    assert_eq!(modified["SpaceId"], "Spaces-1");
    assert!(
        modified["RelatedDocumentIds"]
            .as_array()
            .unwrap()
            .contains(&json!(env_id))
    );
    let differences = modified["ChangeDetails"]["Differences"].as_array().unwrap();
    assert!(
        differences.contains(
            &json!({"Path": "/Name", "Before": "Audit Test", "After": "Audit Production"})
        ),
        "{modified}"
    );
    assert!(
        modified["Message"].as_str().unwrap().contains("modified"),
        "{modified}"
    );

    // Octopus's document filters: all of `regarding`, any of each of `regardingAny`,
    // `environments` and `projects`, and the main document's type.
    let count = |page: &Value| page["TotalResults"].as_u64().unwrap();
    let both = admin
        .get(&format!("/api/events?regarding={env_id},Spaces-1"))
        .await
        .expect(200);
    assert_eq!(count(&both), 3, "{both}");
    let typed = admin
        .get(&format!(
            "/api/events?environments={env_id},Environments-999&documentTypes=Environments"
        ))
        .await
        .expect(200);
    assert_eq!(count(&typed), 3, "{typed}");
    for filter in [
        format!("regarding={env_id},Environments-999"),
        format!("environments={env_id}&projects=Projects-999"),
        format!("regardingAny={env_id}&documentTypes=Projects"),
        "tenants=Tenants-1".to_owned(),
    ] {
        let none = admin
            .get(&format!("/api/events?{filter}"))
            .await
            .expect(200);
        assert_eq!(count(&none), 0, "{filter}: {none}");
    }
    let lean = admin
        .get(&format!(
            "/api/events?regarding={env_id}&excludeDifference=true"
        ))
        .await
        .expect(200);
    assert!(
        lean["Items"][1]["ChangeDetails"]["Differences"].is_null(),
        "{lean}"
    );
    let unsupported = admin
        .get("/api/events?eventGroups=Deployment")
        .await
        .expect(400);
    assert!(
        unsupported.to_string().contains("eventGroups"),
        "{unsupported}"
    );

    // Secrets never reach the log: a sensitive variable, a password, an SSO client secret.
    let project =
        cuttle_testkit::flow::project_with_script(admin, "Spaces-1", "Dev", "Audited", "echo hi")
            .await;
    let path = format!("/api/Spaces-1/projects/{project}/variables");
    let mut variables = admin.get(&path).await.expect(200);
    variables["Variables"] = json!([{"Name": "Password", "Value": SECRET, "IsSensitive": true}]);
    admin.put(&path, variables).await.expect(200);
    admin
        .post(
            "/api/users",
            json!({"Username": "audited", "Password": SECRET}),
        )
        .await
        .expect(201);
    let all = admin.get("/api/events?take=1000").await.expect(200);
    assert!(
        !all.to_string().contains(SECRET),
        "a secret reached the audit log"
    );
    let stored = cuttle_testkit::stored_in_clear(app.config(), SECRET)
        .await
        .unwrap();
    assert!(stored.is_empty(), "stored in clear: {stored:?}");

    // Sign-ins are recorded too.
    let login = reqwest::Client::new()
        .post(format!("{}/api/users/login", admin.base))
        .json(&json!({"Username": "audited", "Password": "not it at all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 401);
    let failed = admin
        .get("/api/events?eventCategories=LoginFailed")
        .await
        .expect(200);
    assert_eq!(failed["TotalResults"], 1, "{failed}");
    assert_eq!(failed["Items"][0]["Username"], "audited");

    // Filters: by user, by category, by date; an unknown date is a 400 naming it.
    let by_admin = admin
        .get("/api/events?users=Users-1&take=1000")
        .await
        .expect(200);
    assert!(
        by_admin["Items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["UserId"] == "Users-1")
    );
    let future = admin.get("/api/events?from=2999-01-01").await.expect(200);
    assert_eq!(future["TotalResults"], 0);
    let bad = admin.get("/api/events?from=yesterday").await.expect(400);
    assert!(bad.to_string().contains("from"), "{bad}");
    let one = admin
        .get(&format!("/api/events/{}", id(modified)))
        .await
        .expect(200);
    assert_eq!(one["Category"], "Modified");
    let categories = admin.get("/api/events/categories").await.expect(200);
    assert!(
        categories
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["Id"] == "DeploymentQueued")
    );

    // Reading the log takes EventView.
    let user = admin
        .post("/api/users", json!({"Username": "reader"}))
        .await
        .expect(201);
    let key = admin
        .post(
            &format!("/api/users/{}/apikeys", id(&user)),
            json!({"Purpose": "t"}),
        )
        .await
        .expect(201)["ApiKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let reader = Client::new(admin.base.clone(), key);
    let refused = reader.get("/api/events").await.expect(403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("EventView")
    );
    app.stop().await;
}

/// Makes the database refuse `INSERT` or `UPDATE` (`operation`) on `events`, as a database that
/// fails at that moment would, or (for the update) as a server that stops right after the
/// change; `None` lifts the refusal.
async fn refuse_events(store: &cuttle_store::Store, operation: Option<&str>) {
    use cuttle_store::{ConnectionTrait, DbBackend};
    let conn = store.conn();
    let postgres = conn.get_database_backend() == DbBackend::Postgres;
    let statements: Vec<String> = match (operation, postgres) {
        (None, true) => vec!["DROP TRIGGER IF EXISTS test_refuse_events ON events".into()],
        (None, false) => vec!["DROP TRIGGER IF EXISTS test_refuse_events".into()],
        (Some(operation), true) => vec![
            "CREATE OR REPLACE FUNCTION test_refuse_events() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$".into(),
            format!("CREATE TRIGGER test_refuse_events BEFORE {operation} ON events FOR EACH ROW EXECUTE FUNCTION test_refuse_events()"),
        ],
        (Some(operation), false) => vec![format!(
            "CREATE TRIGGER test_refuse_events BEFORE {operation} ON events BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )],
    };
    for statement in statements {
        conn.execute_unprepared(&statement).await.unwrap();
    }
}

async fn no_change_is_made_without_a_trace_in_the_audit_log(mode: Mode) {
    let app = InProcess::start(mode).await;
    let admin = &app.client;
    let store = cuttle_platform::connect_store(app.config()).await.unwrap();
    let named = |name: &str| format!("/api/Spaces-1/environments?name={name}");

    // An event that cannot be stored stops the change.
    refuse_events(&store, Some("INSERT")).await;
    let refused = admin
        .post("/api/Spaces-1/environments", json!({"Name": "Unrecorded"}))
        .await
        .expect(503);
    assert!(refused.to_string().contains("audit log"), "{refused}");
    refuse_events(&store, None).await;
    let found = admin.get(&named("Unrecorded")).await.expect(200);
    assert_eq!(found["TotalResults"], 0, "{found}");

    // The change made, the server stops before recording its outcome (here: the update of the
    // event fails): the event stays, saying so, with what was asked.
    refuse_events(&store, Some("UPDATE")).await;
    admin
        .post(
            "/api/Spaces-1/environments",
            json!({"Name": "Half recorded"}),
        )
        .await
        .expect(201);
    refuse_events(&store, None).await;
    let events = admin
        .get("/api/events?regarding=Spaces-1")
        .await
        .expect(200);
    let latest = &events["Items"][0];
    assert_eq!(latest["Category"], "Created", "{latest}");
    assert!(
        latest["Message"]
            .as_str()
            .unwrap()
            .contains("its outcome was not recorded"),
        "{latest}"
    );
    assert_eq!(
        latest["ChangeDetails"]["DocumentContext"]["Name"], "Half recorded",
        "{latest}"
    );

    // A refused write leaves no event; a made one, a complete event.
    let before = events["TotalResults"].as_u64().unwrap();
    admin
        .post("/api/Spaces-1/environments", json!({"Name": ""}))
        .await
        .expect(400);
    let after = admin
        .get("/api/events?regarding=Spaces-1")
        .await
        .expect(200);
    assert_eq!(after["TotalResults"].as_u64().unwrap(), before, "{after}");
    let made = admin
        .post("/api/Spaces-1/environments", json!({"Name": "Recorded"}))
        .await
        .expect(201);
    let events = admin
        .get(&format!("/api/events?regarding={}", id(&made)))
        .await
        .expect(200);
    assert_eq!(events["TotalResults"], 1, "{events}");
    let message = events["Items"][0]["Message"].as_str().unwrap();
    assert!(message.contains("created"), "{message}");
    assert!(!message.contains("outcome"), "{message}");
    app.stop().await;
}
