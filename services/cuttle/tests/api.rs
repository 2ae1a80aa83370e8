//! The Octopus-compatible API, exercised over HTTP against the real services in both modes.
//! Snapshots are shared by the two modes: embedded and distributed must answer the same JSON.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::InProcess;
use cuttle_testkit::{Mode, flow};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

both_modes!(
    root_document_is_public_and_declares_a_supported_version,
    requests_without_a_valid_api_key_are_refused,
    the_default_space_is_found_by_partial_name_and_take_all,
    a_new_space_gets_its_defaults_with_the_builtin_feed_first,
    environments_accept_any_key_case_and_refuse_duplicate_names,
    a_project_gets_a_channel_process_and_variables_and_is_found_by_slug,
    process_updates_assign_ids_and_refuse_a_stale_version,
    releases_number_themselves_and_freeze_the_process,
    the_lifecycle_refuses_a_deployment_that_skips_an_environment,
    a_bash_step_deployment_succeeds_and_its_output_reaches_the_log,
    a_failing_script_fails_the_task_with_its_exit_code,
    a_python_step_runs_and_a_powershell_step_without_pwsh_fails_clearly,
    cancel_stops_a_running_script_and_the_task_ends_canceled,
    unknown_task_ids_are_omitted_from_the_task_list,
    malformed_bodies_get_a_400_that_names_the_problem,
    a_space_is_deleted_only_after_its_task_queue_is_stopped,
    spaces_do_not_see_each_others_resources,
    features_not_built_yet_are_refused_clearly_never_faked,
    deployments_of_one_project_to_one_environment_run_one_at_a_time,
);

async fn root_document_is_public_and_declares_a_supported_version(mode: Mode) {
    let app = InProcess::start(mode).await;
    let anonymous = app.client.anonymous();
    for path in ["/api", "/api/"] {
        let root = anonymous.get(path).await.expect(200);
        assert_eq!(root["ApiVersion"], "3.0.0");
        let version = root["Version"].as_str().unwrap();
        let parts: Vec<u64> = version.split('.').map(|p| p.parse().unwrap()).collect();
        assert!(
            parts.len() == 3 && (parts[0], parts[1], parts[2]) >= (2022, 3, 5512),
            "{version}"
        );
    }
    // Anonymous callers have no organisation, so no default space: its links come with a key.
    let root = anonymous.get("/api").await.expect(200);
    insta::assert_json_snapshot!("root_document", root, {".InstallationId" => "[installation id]"});
    assert!(root["Links"].get("Projects").is_none(), "{root}");
    let root = app.client.get("/api").await.expect(200);
    assert_eq!(
        root["Links"]["Projects"]
            .as_str()
            .unwrap()
            .split('{')
            .next(),
        Some("/api/Spaces-1/projects"),
        "{root}"
    );
    app.stop().await;
}

async fn requests_without_a_valid_api_key_are_refused(mode: Mode) {
    let app = InProcess::start(mode).await;
    let anonymous = app.client.anonymous();
    let refused = anonymous.get("/api/spaces").await.expect(401);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("API key")
    );
    let wrong = cuttle_testkit::Client::new(app.client.base.clone(), "API-WRONGWRONGWRONGWRONG");
    wrong.get("/api/Spaces-1/projects").await.expect(401);
    // The key also works as ?apikey= and as a bearer token.
    anonymous
        .get(&format!("/api/users/me?apikey={}", app.client.api_key))
        .await
        .expect(200);
    let me = app.client.get("/api/users/me").await.expect(200);
    assert_eq!(me["Username"], "admin");
    assert_eq!(me["IsService"], false);
    app.stop().await;
}

async fn the_default_space_is_found_by_partial_name_and_take_all(mode: Mode) {
    let app = InProcess::start(mode).await;
    let page = app
        .client
        .get("/api/spaces?partialName=DEF&skip=0&take=2147483647")
        .await
        .expect(200);
    assert_eq!(page["TotalResults"], 1);
    let space = &page["Items"][0];
    assert_eq!(space["Id"], "Spaces-1");
    assert_eq!(space["Name"], "Default");
    assert_eq!(space["IsDefault"], true);
    let all = app.client.get("/api/spaces/all").await.expect(200);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|s| s["Id"] == "Spaces-1")
    );
    // The three route shapes reach the same space.
    for path in [
        "/api/Spaces-1/environments",
        "/api/spaces/Spaces-1/environments",
        "/api/environments",
        "/api/spaces/default/environments",
    ] {
        app.client.get(path).await.expect(200);
    }
    app.client
        .get("/api/Spaces-999/environments")
        .await
        .expect(404);
    app.stop().await;
}

async fn a_new_space_gets_its_defaults_with_the_builtin_feed_first(mode: Mode) {
    let app = InProcess::start(mode).await;
    let me = app.client.get("/api/users/me").await.expect(200);
    let space = app
        .client
        .post("/api/spaces", json!({"Name": "Team Rocket", "SpaceManagersTeams": [], "SpaceManagersTeamMembers": [me["Id"]], "IsDefault": false}))
        .await
        .expect(201);
    insta::assert_json_snapshot!("new_space", space, {".LastModifiedOn" => "[date]"});
    let id = space["Id"].as_str().unwrap();
    let group = app
        .client
        .get(&format!("/api/{id}/projectgroups?take=1"))
        .await
        .expect(200);
    assert_eq!(group["Items"][0]["Name"], "Default Project Group");
    let lifecycle = app
        .client
        .get(&format!("/api/{id}/lifecycles?take=1"))
        .await
        .expect(200);
    assert_eq!(lifecycle["Items"][0]["Name"], "Default Lifecycle");
    assert_eq!(lifecycle["Items"][0]["Phases"], json!([]));
    let feeds = app
        .client
        .get(&format!("/api/{id}/feeds?take=1"))
        .await
        .expect(200);
    insta::assert_json_snapshot!("builtin_feed_page", feeds);
    let duplicate = app
        .client
        .post("/api/spaces", json!({"Name": "team rocket"}))
        .await
        .expect(400);
    assert!(
        duplicate["Errors"][0]
            .as_str()
            .unwrap()
            .starts_with("Name:"),
        "{duplicate}"
    );
    app.stop().await;
}

async fn environments_accept_any_key_case_and_refuse_duplicate_names(mode: Mode) {
    let app = InProcess::start(mode).await;
    let created = app
        .client
        .post("/api/Spaces-1/environments", json!({"name": "Test", "DESCRIPTION": "for QA", "useGuidedFailure": true, "NotAField": 1}))
        .await
        .expect(201);
    insta::assert_json_snapshot!("environment", created);
    let clash = app
        .client
        .post("/api/Spaces-1/environments", json!({"Name": "TEST"}))
        .await
        .expect(400);
    assert!(
        clash["Errors"][0]
            .as_str()
            .unwrap()
            .contains("already in use"),
        "{clash}"
    );
    let missing = app
        .client
        .post("/api/Spaces-1/environments", json!({"Name": "  "}))
        .await
        .expect(400);
    assert!(missing["Errors"][0].as_str().unwrap().starts_with("Name:"));
    // A PUT echoing the whole resource (Links included) is accepted.
    let id = created["Id"].as_str().unwrap();
    let mut echoed = created.clone();
    echoed["Description"] = json!("changed");
    let updated = app
        .client
        .put(&format!("/api/Spaces-1/environments/{id}"), echoed)
        .await
        .expect(200);
    assert_eq!(updated["Description"], "changed");
    let second = app
        .client
        .post("/api/Spaces-1/environments", json!({"Name": "Prod"}))
        .await
        .expect(201);
    app.client
        .put(
            "/api/Spaces-1/environments/sortorder",
            json!([second["Id"], id]),
        )
        .await
        .expect(200);
    let ordered = app
        .client
        .get("/api/Spaces-1/environments")
        .await
        .expect(200);
    assert_eq!(ordered["Items"][0]["Name"], "Prod");
    app.client
        .delete(&format!("/api/Spaces-1/environments/{id}"))
        .await
        .expect(200);
    app.client
        .get(&format!("/api/Spaces-1/environments/{id}"))
        .await
        .expect(404);
    app.stop().await;
}

async fn a_project_gets_a_channel_process_and_variables_and_is_found_by_slug(mode: Mode) {
    let app = InProcess::start(mode).await;
    let project = app
        .client
        .post("/api/Spaces-1/projects", json!({"Name": "My Web App", "ProjectGroupId": "ProjectGroups-1", "LifecycleId": "Lifecycles-1"}))
        .await
        .expect(201);
    insta::assert_json_snapshot!("project", project);
    let id = project["Id"].as_str().unwrap();
    for key in [id, "my-web-app", "My Web App"] {
        let found = app
            .client
            .get(&format!(
                "/api/Spaces-1/projects/{}",
                key.replace(' ', "%20")
            ))
            .await
            .expect(200);
        assert_eq!(found["Id"], id);
    }
    let channels = app
        .client
        .get(&format!("/api/Spaces-1/projects/{id}/channels"))
        .await
        .expect(200);
    assert_eq!(channels["Items"][0]["Name"], "Default");
    assert_eq!(channels["Items"][0]["IsDefault"], true);
    let process = app
        .client
        .get(&format!("/api/Spaces-1/projects/{id}/deploymentprocesses"))
        .await
        .expect(200);
    assert_eq!(process["Id"], format!("deploymentprocess-{id}"));
    let variables = app
        .client
        .get(&format!("/api/Spaces-1/projects/{id}/variables"))
        .await
        .expect(200);
    assert_eq!(variables["Id"], format!("variableset-{id}"));
    let bad_group = app
        .client
        .post("/api/Spaces-1/projects", json!({"Name": "Orphan", "ProjectGroupId": "ProjectGroups-999", "LifecycleId": "Lifecycles-1"}))
        .await
        .expect(400);
    assert!(
        bad_group["Errors"][0]
            .as_str()
            .unwrap()
            .starts_with("ProjectGroupId:"),
        "{bad_group}"
    );
    app.stop().await;
}

async fn process_updates_assign_ids_and_refuse_a_stale_version(mode: Mode) {
    let app = InProcess::start(mode).await;
    let id =
        flow::project_with_script(&app.client, "Spaces-1", "Dev", "Versioned", "echo one").await;
    let path = format!("/api/Spaces-1/projects/{id}/deploymentprocesses");
    let process = app.client.get(&path).await.expect(200);
    let step = &process["Steps"][0];
    assert!(uuid_like(step["Id"].as_str().unwrap()));
    assert!(uuid_like(step["Actions"][0]["Id"].as_str().unwrap()));
    assert_eq!(step["Condition"], "Success");
    let mut stale = process.clone();
    stale["Version"] = json!(process["Version"].as_i64().unwrap() - 1);
    let refused = app.client.put(&path, stale).await.expect(409);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("modified")
    );
    let mut no_body = process.clone();
    no_body["Steps"][0]["Actions"][0]["Properties"]["Octopus.Action.Script.ScriptBody"] = json!("");
    let refused = app.client.put(&path, no_body).await.expect(400);
    assert!(
        refused["Errors"][0]
            .as_str()
            .unwrap()
            .contains("ScriptBody"),
        "{refused}"
    );
    let mut csharp = process.clone();
    csharp["Steps"][0]["Actions"][0]["Properties"]["Octopus.Action.Script.Syntax"] =
        json!("CSharp");
    app.client.put(&path, csharp).await.expect(400);
    app.stop().await;
}

fn uuid_like(value: &str) -> bool {
    value.len() == 36 && value.chars().filter(|c| *c == '-').count() == 4
}

async fn releases_number_themselves_and_freeze_the_process(mode: Mode) {
    let app = InProcess::start(mode).await;
    let id = flow::project_with_script(
        &app.client,
        "Spaces-1",
        "Dev",
        "Frozen",
        "echo alpha-output",
    )
    .await;
    let first = app
        .client
        .post(
            "/api/Spaces-1/releases/create/v1",
            json!({"ProjectName": "Frozen"}),
        )
        .await
        .expect(201);
    assert_eq!(first["ReleaseVersion"], "0.0.1");
    let second = app
        .client
        .post(
            "/api/Spaces-1/releases/create/v1",
            json!({"projectName": id}),
        )
        .await
        .expect(201);
    assert_eq!(second["ReleaseVersion"], "0.0.2");
    let duplicate = app
        .client
        .post(
            "/api/Spaces-1/releases/create/v1",
            json!({"ProjectName": "Frozen", "ReleaseVersion": "0.0.2"}),
        )
        .await
        .expect(400);
    assert!(
        duplicate["Errors"][0]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{duplicate}"
    );
    let same = app
        .client
        .post("/api/Spaces-1/releases/create/v1", json!({"ProjectName": "Frozen", "ReleaseVersion": "0.0.2", "IgnoreIfAlreadyExists": true}))
        .await
        .expect(201);
    assert_eq!(same["ReleaseId"], second["ReleaseId"]);
    app.client
        .post(
            "/api/Spaces-1/releases/create/v1",
            json!({"ProjectName": "Frozen", "ReleaseVersion": "not a version"}),
        )
        .await
        .expect(400);
    // Editing the project after release never changes what the release deploys.
    flow::set_script(&app.client, "Spaces-1", &id, "echo bravo-output").await;
    let release = app
        .client
        .get(&format!(
            "/api/Spaces-1/releases/{}",
            first["ReleaseId"].as_str().unwrap()
        ))
        .await
        .expect(200);
    let snapshot_id = release["ProjectDeploymentProcessSnapshotId"]
        .as_str()
        .unwrap();
    let snapshot = app
        .client
        .get(&format!("/api/Spaces-1/deploymentprocesses/{snapshot_id}"))
        .await
        .expect(200);
    assert_eq!(
        snapshot["Steps"][0]["Actions"][0]["Properties"]["Octopus.Action.Script.ScriptBody"],
        "echo alpha-output"
    );
    // Notes and version can change; the snapshot cannot.
    let release_path = format!(
        "/api/Spaces-1/releases/{}",
        first["ReleaseId"].as_str().unwrap()
    );
    let mut edited = release.clone();
    edited["ReleaseNotes"] = json!("Fixed the thing");
    edited["ProjectDeploymentProcessSnapshotId"] = json!("deploymentprocess-Projects-1");
    let saved = app.client.put(&release_path, edited).await.expect(200);
    assert_eq!(saved["ReleaseNotes"], "Fixed the thing");
    assert_eq!(saved["ProjectDeploymentProcessSnapshotId"], snapshot_id);
    let mut clash = saved.clone();
    clash["Version"] = json!("0.0.2");
    app.client.put(&release_path, clash).await.expect(400);
    let by_version = app
        .client
        .get(&format!("/api/Spaces-1/projects/{id}/releases/0.0.1"))
        .await
        .expect(200);
    assert_eq!(by_version["Id"], first["ReleaseId"]);
    let listed = app
        .client
        .get(&format!("/api/Spaces-1/projects/{id}/releases"))
        .await
        .expect(200);
    assert_eq!(listed["Items"][0]["Version"], "0.0.2", "newest first");
    let task = flow::release_and_deploy(&app.client, "Spaces-1", "Frozen", "Dev").await;
    app.client.wait_for_task(&task, WAIT).await;
    let old = app
        .client
        .post("/api/Spaces-1/deployments/create/untenanted/v1", json!({"ProjectName": "Frozen", "ReleaseVersion": "0.0.1", "EnvironmentNames": ["Dev"]}))
        .await
        .expect(201);
    let old_task = old["DeploymentServerTasks"][0]["ServerTaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    app.client.wait_for_task(&old_task, WAIT).await;
    let raw = app
        .client
        .get(&format!("/api/Spaces-1/tasks/{old_task}/raw"))
        .await
        .expect(200);
    let raw = raw.as_str().unwrap();
    assert!(
        raw.contains("alpha-output") && !raw.contains("bravo-output"),
        "{raw}"
    );
    app.stop().await;
}

async fn the_lifecycle_refuses_a_deployment_that_skips_an_environment(mode: Mode) {
    let app = InProcess::start(mode).await;
    flow::project_with_script(&app.client, "Spaces-1", "Dev", "Gated", "echo ok").await;
    app.client
        .post("/api/Spaces-1/environments", json!({"Name": "Production"}))
        .await
        .expect(201);
    app.client
        .post(
            "/api/Spaces-1/releases/create/v1",
            json!({"ProjectName": "Gated", "ReleaseVersion": "1.0.0"}),
        )
        .await
        .expect(201);
    let body = |env: &str| json!({"ProjectName": "Gated", "ReleaseVersion": "1.0.0", "EnvironmentNames": [env]});
    let refused = app
        .client
        .post(
            "/api/Spaces-1/deployments/create/untenanted/v1",
            body("Production"),
        )
        .await
        .expect(400);
    assert!(
        refused["ErrorMessage"].as_str().unwrap().contains("Dev"),
        "{refused}"
    );
    let dev = app
        .client
        .post(
            "/api/Spaces-1/deployments/create/untenanted/v1",
            body("Dev"),
        )
        .await
        .expect(201);
    let task = dev["DeploymentServerTasks"][0]["ServerTaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.client.wait_for_task(&task, WAIT).await["State"],
        "Success"
    );
    app.client
        .post(
            "/api/Spaces-1/deployments/create/untenanted/v1",
            body("Production"),
        )
        .await
        .expect(201);
    let unknown = app
        .client
        .post(
            "/api/Spaces-1/deployments/create/untenanted/v1",
            body("Nowhere"),
        )
        .await
        .expect(400);
    assert!(
        unknown["Errors"][0]
            .as_str()
            .unwrap()
            .starts_with("EnvironmentNames:")
    );
    app.stop().await;
}

async fn a_bash_step_deployment_succeeds_and_its_output_reaches_the_log(mode: Mode) {
    let app = InProcess::start(mode).await;
    flow::project_with_script(
        &app.client,
        "Spaces-1",
        "Dev",
        "Hello",
        "echo hello\necho warning-line >&2",
    )
    .await;
    let task_id = flow::release_and_deploy(&app.client, "Spaces-1", "Hello", "Dev").await;
    let task = app.client.wait_for_task(&task_id, WAIT).await;
    assert_eq!(task["State"], "Success", "{task}");
    assert_eq!(task["IsCompleted"], true);
    assert_eq!(task["FinishedSuccessfully"], true);
    assert_eq!(
        task["HasWarningsOrErrors"], true,
        "stderr output counts as an error line"
    );
    assert!(task["StartTime"].is_string() && task["CompletedTime"].is_string());
    let raw = app
        .client
        .get(&format!("/api/Spaces-1/tasks/{task_id}/raw"))
        .await
        .expect(200);
    assert!(raw.as_str().unwrap().contains("hello"), "{raw}");
    let details = app
        .client
        .get(&format!("/api/Spaces-1/tasks/{task_id}/details"))
        .await
        .expect(200);
    let root = &details["ActivityLogs"][0];
    assert_eq!(root["Status"], "Success");
    let step = &root["Children"][0];
    assert_eq!(step["Name"], "Step 1: Run script");
    let lines: Vec<&str> = step["Children"][0]["LogElements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["MessageText"].as_str().unwrap())
        .collect();
    assert!(lines.contains(&"hello"), "{lines:?}");
    let deployments = app
        .client
        .get("/api/Spaces-1/deployments?take=5")
        .await
        .expect(200);
    assert_eq!(deployments["Items"][0]["TaskId"], task_id);
    // Deleting the deployment keeps its task: the task log is the record of what ran.
    let deployment_id = deployments["Items"][0]["Id"].as_str().unwrap().to_owned();
    let path = format!("/api/Spaces-1/deployments/{deployment_id}");
    app.client.delete(&path).await.expect(200);
    app.client.get(&path).await.expect(404);
    app.client.delete(&path).await.expect(404);
    app.client
        .get(&format!("/api/tasks/{task_id}"))
        .await
        .expect(200);
    app.stop().await;
}

async fn a_failing_script_fails_the_task_with_its_exit_code(mode: Mode) {
    let app = InProcess::start(mode).await;
    flow::project_with_script(
        &app.client,
        "Spaces-1",
        "Dev",
        "Broken",
        "echo before\nexit 7",
    )
    .await;
    let task_id = flow::release_and_deploy(&app.client, "Spaces-1", "Broken", "Dev").await;
    let task = app.client.wait_for_task(&task_id, WAIT).await;
    assert_eq!(task["State"], "Failed", "{task}");
    assert_eq!(task["FinishedSuccessfully"], false);
    assert!(
        task["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("exit code 7"),
        "{task}"
    );
    app.stop().await;
}

async fn a_python_step_runs_and_a_powershell_step_without_pwsh_fails_clearly(mode: Mode) {
    let app = InProcess::start(mode).await;
    let id = flow::project_with_script(&app.client, "Spaces-1", "Dev", "Polyglot", "unused").await;
    let path = format!("/api/Spaces-1/projects/{id}/deploymentprocesses");
    let mut process = app.client.get(&path).await.expect(200);
    process["Steps"][0]["Actions"][0]["Properties"]["Octopus.Action.Script.Syntax"] =
        json!("Python");
    process["Steps"][0]["Actions"][0]["Properties"]["Octopus.Action.Script.ScriptBody"] =
        json!("print('from python', 6 * 7)");
    app.client.put(&path, process).await.expect(200);
    let task_id = flow::release_and_deploy(&app.client, "Spaces-1", "Polyglot", "Dev").await;
    assert_eq!(
        app.client.wait_for_task(&task_id, WAIT).await["State"],
        "Success"
    );
    let raw = app
        .client
        .get(&format!("/api/Spaces-1/tasks/{task_id}/raw"))
        .await
        .expect(200);
    assert!(raw.as_str().unwrap().contains("from python 42"));

    let mut process = app.client.get(&path).await.expect(200);
    process["Steps"][0]["Actions"][0]["Properties"]["Octopus.Action.Script.Syntax"] =
        json!("PowerShell");
    process["Steps"][0]["Actions"][0]["Properties"]["Octopus.Action.Script.ScriptBody"] =
        json!("Write-Host 'from pwsh'");
    app.client.put(&path, process).await.expect(200);
    let task_id = flow::release_and_deploy(&app.client, "Spaces-1", "Polyglot", "Dev").await;
    let task = app.client.wait_for_task(&task_id, WAIT).await;
    let raw = app
        .client
        .get(&format!("/api/Spaces-1/tasks/{task_id}/raw"))
        .await
        .expect(200);
    if cuttle_worker_has_pwsh() {
        assert_eq!(task["State"], "Success");
        assert!(raw.as_str().unwrap().contains("from pwsh"));
    } else {
        assert_eq!(task["State"], "Failed");
        assert!(
            task["ErrorMessage"]
                .as_str()
                .unwrap()
                .contains("pwsh is not installed"),
            "{task}"
        );
    }
    app.stop().await;
}

fn cuttle_worker_has_pwsh() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("pwsh").is_file()))
}

async fn cancel_stops_a_running_script_and_the_task_ends_canceled(mode: Mode) {
    let app = InProcess::start(mode).await;
    flow::project_with_script(
        &app.client,
        "Spaces-1",
        "Dev",
        "Sleepy",
        "echo script-started\nsleep 60\necho never",
    )
    .await;
    let task_id = flow::release_and_deploy(&app.client, "Spaces-1", "Sleepy", "Dev").await;
    // Wait until the script is really running (its first line is in the log).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let raw = app
            .client
            .get(&format!("/api/Spaces-1/tasks/{task_id}/raw"))
            .await
            .expect(200);
        if raw.as_str().unwrap().contains("script-started") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "script never started: {raw}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answered = app
        .client
        .post(&format!("/api/tasks/{task_id}/cancel"), json!({}))
        .await
        .expect(200);
    assert!(
        ["Cancelling", "Canceled"].contains(&answered["State"].as_str().unwrap()),
        "{answered}"
    );
    let task = app
        .client
        .wait_for_task(&task_id, Duration::from_secs(20))
        .await;
    assert_eq!(task["State"], "Canceled", "{task}");
    let raw = app
        .client
        .get(&format!("/api/Spaces-1/tasks/{task_id}/raw"))
        .await
        .expect(200);
    assert!(!raw.as_str().unwrap().contains("never"));
    // Cancelling a finished task changes nothing.
    let again = app
        .client
        .post(
            &format!("/api/Spaces/Spaces-1/tasks/{task_id}/cancel")
                .replace("/api/Spaces/", "/api/spaces/"),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(again["State"], "Canceled");
    app.stop().await;
}

async fn unknown_task_ids_are_omitted_from_the_task_list(mode: Mode) {
    let app = InProcess::start(mode).await;
    flow::project_with_script(&app.client, "Spaces-1", "Dev", "Listed", "echo hi").await;
    let task_id = flow::release_and_deploy(&app.client, "Spaces-1", "Listed", "Dev").await;
    app.client.wait_for_task(&task_id, WAIT).await;
    // The TypeScript client sends skip=i*300 with each batch of ids; the ids win.
    let page = app
        .client
        .get(&format!(
            "/api/Spaces-1/tasks?skip=300&take=300&ids={task_id},ServerTasks-99999"
        ))
        .await
        .expect(200);
    assert_eq!(page["TotalResults"], 1);
    assert_eq!(page["Items"][0]["Id"], task_id);
    let repeated = app
        .client
        .get(&format!("/api/tasks?ids={task_id}&ids=ServerTasks-424242"))
        .await
        .expect(200);
    assert_eq!(repeated["Items"].as_array().unwrap().len(), 1);
    let finished = app
        .client
        .get("/api/tasks?states=Success,Failed")
        .await
        .expect(200);
    assert!(
        finished["Items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["IsCompleted"] == true)
    );
    app.client
        .get("/api/tasks?states=Sleeping")
        .await
        .expect(400);
    app.client
        .get("/api/tasks/ServerTasks-99999")
        .await
        .expect(404);
    app.stop().await;
}

async fn malformed_bodies_get_a_400_that_names_the_problem(mode: Mode) {
    let app = InProcess::start(mode).await;
    let not_json = app
        .client
        .send(reqwest::Method::POST, "/api/Spaces-1/environments", None)
        .await;
    // An empty body reads as {} and so fails on the missing name.
    assert_eq!(not_json.status, 400);
    let wrong_type = app
        .client
        .post(
            "/api/Spaces-1/environments",
            json!({"Name": "X", "SortOrder": "first"}),
        )
        .await
        .expect(400);
    assert!(
        wrong_type["Errors"][0]
            .as_str()
            .unwrap()
            .contains("invalid type"),
        "{wrong_type}"
    );
    let bad_paging = app
        .client
        .get("/api/Spaces-1/environments?take=lots")
        .await
        .expect(400);
    assert!(
        bad_paging["Errors"][0]
            .as_str()
            .unwrap()
            .starts_with("take:")
    );
    let no_env = app
        .client
        .post(
            "/api/Spaces-1/deployments/create/untenanted/v1",
            json!({"ProjectName": "x", "ReleaseVersion": "1.0.0", "EnvironmentNames": []}),
        )
        .await
        .expect(400);
    assert!(
        no_env["Errors"][0]
            .as_str()
            .unwrap()
            .starts_with("EnvironmentNames:")
    );
    // Nothing half-written: the refused environment does not exist.
    let list = app
        .client
        .get("/api/Spaces-1/environments?partialName=X")
        .await
        .expect(200);
    assert_eq!(list["TotalResults"], 0);
    app.stop().await;
}

async fn a_space_is_deleted_only_after_its_task_queue_is_stopped(mode: Mode) {
    let app = InProcess::start(mode).await;
    let space = app
        .client
        .post("/api/spaces", json!({"Name": "Short lived"}))
        .await
        .expect(201);
    let id = space["Id"].as_str().unwrap();
    flow::project_with_script(&app.client, id, "Dev", "Temp", "echo temp").await;
    let refused = app
        .client
        .delete(&format!("/api/spaces/{id}"))
        .await
        .expect(400);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("task queue")
    );
    let mut stopped = space.clone();
    stopped["TaskQueueStopped"] = json!(true);
    app.client
        .put(&format!("/api/spaces/{id}"), stopped)
        .await
        .expect(200);
    app.client
        .delete(&format!("/api/spaces/{id}"))
        .await
        .expect(200);
    app.client
        .get(&format!("/api/spaces/{id}"))
        .await
        .expect(404);
    app.client
        .get(&format!("/api/{id}/projects"))
        .await
        .expect(404);
    app.client.delete("/api/spaces/Spaces-1").await.expect(400);
    app.stop().await;
}

async fn spaces_do_not_see_each_others_resources(mode: Mode) {
    let app = InProcess::start(mode).await;
    let other = app
        .client
        .post("/api/spaces", json!({"Name": "Other"}))
        .await
        .expect(201);
    let other_id = other["Id"].as_str().unwrap();
    let project =
        flow::project_with_script(&app.client, other_id, "Dev", "Secret project", "echo x").await;
    app.client
        .get(&format!("/api/Spaces-1/projects/{project}"))
        .await
        .expect(404);
    app.client
        .get("/api/Spaces-1/projects/secret-project")
        .await
        .expect(404);
    let listed: Value = app.client.get("/api/Spaces-1/projects").await.expect(200);
    assert!(
        listed["Items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["Id"] != project)
    );
    let task_id = flow::release_and_deploy(&app.client, other_id, "Secret project", "Dev").await;
    app.client.wait_for_task(&task_id, WAIT).await;
    app.client
        .get(&format!("/api/Spaces-1/tasks/{task_id}"))
        .await
        .expect(404);
    app.client
        .get(&format!("/api/{other_id}/tasks/{task_id}"))
        .await
        .expect(200);
    app.stop().await;
}

async fn deployments_of_one_project_to_one_environment_run_one_at_a_time(mode: Mode) {
    let app = InProcess::start(mode).await;
    flow::project_with_script(&app.client, "Spaces-1", "Dev", "Serial", "sleep 1").await;
    let first = flow::release_and_deploy(&app.client, "Spaces-1", "Serial", "Dev").await;
    let again =
        json!({"ProjectName": "Serial", "ReleaseVersion": "0.0.1", "EnvironmentNames": ["Dev"]});
    let second = app
        .client
        .post("/api/Spaces-1/deployments/create/untenanted/v1", again)
        .await
        .expect(201);
    let second = second["DeploymentServerTasks"][0]["ServerTaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = app.client.wait_for_task(&first, WAIT).await;
    let second_task = app.client.wait_for_task(&second, WAIT).await;
    assert_eq!(first["State"], "Success");
    assert_eq!(second_task["State"], "Success");
    // ISO 8601 UTC timestamps with the same offset compare as strings.
    let first_done = first["CompletedTime"].as_str().unwrap();
    let second_started = second_task["StartTime"].as_str().unwrap();
    assert!(
        second_started >= first_done,
        "the second started at {second_started}, before the first ended at {first_done}"
    );
    let raw = app
        .client
        .get(&format!("/api/Spaces-1/tasks/{second}/raw"))
        .await
        .expect(200);
    assert!(
        raw.as_str()
            .unwrap()
            .contains(&format!("Waiting for {}", first["Id"].as_str().unwrap())),
        "{raw}"
    );
    app.stop().await;
}

async fn features_not_built_yet_are_refused_clearly_never_faked(mode: Mode) {
    let app = InProcess::start(mode).await;
    // Octopus routes Cuttle does not serve yet answer 501 naming the feature.
    for path in [
        "/api/Spaces-1/machines/Machines-1/connection",
        "/api/Spaces-1/runbooks",
        "/api/Spaces-1/tenants/Tenants-1/logo",
    ] {
        let refused = app.client.get(path).await.expect(501);
        assert!(
            refused["ErrorMessage"]
                .as_str()
                .unwrap()
                .contains("not available"),
            "{path}: {refused}"
        );
    }
    app.client
        .get("/api/Spaces-1/no-such-thing")
        .await
        .expect(404);
    // Options that would be silently ignored are refused instead.
    flow::project_with_script(&app.client, "Spaces-1", "Dev", "Plain", "echo #{Greeting}").await;
    app.client
        .post(
            "/api/Spaces-1/releases/create/v1",
            json!({"ProjectName": "Plain", "ReleaseVersion": "1.0.0"}),
        )
        .await
        .expect(201);
    for extra in [
        json!({"UseGuidedFailure": true}),
        json!({"SpecificMachineNames": ["web01"]}),
    ] {
        let mut body =
            json!({"ProjectName": "Plain", "ReleaseVersion": "1.0.0", "EnvironmentNames": ["Dev"]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let refused = app
            .client
            .post("/api/Spaces-1/deployments/create/untenanted/v1", body)
            .await
            .expect(400);
        assert!(
            refused["ErrorMessage"]
                .as_str()
                .unwrap()
                .contains("not available"),
            "{refused}"
        );
    }
    // Project variables are substituted into the script.
    let variables = app
        .client
        .get("/api/Spaces-1/projects/Projects-1/variables")
        .await
        .expect(200);
    let mut updated = variables.clone();
    updated["Variables"] = json!([{"Name": "Greeting", "Value": "hi"}]);
    app.client
        .put("/api/Spaces-1/projects/Projects-1/variables", updated)
        .await
        .expect(200);
    let task = flow::release_and_deploy(&app.client, "Spaces-1", "Plain", "Dev").await;
    app.client.wait_for_task(&task, WAIT).await;
    let raw = app
        .client
        .get(&format!("/api/Spaces-1/tasks/{task}/raw"))
        .await
        .expect(200);
    let raw = raw.as_str().unwrap();
    assert!(
        raw.lines().any(|l| l.trim_end().ends_with(" hi")) && !raw.contains("#{Greeting}"),
        "{raw}"
    );
    app.stop().await;
}

/// Node's HTTP agent reuses idle sockets; Octopus keeps them for minutes. A server that closes
/// idle connections after a few seconds breaks uploads from the TypeScript client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_still_served_and_large_bodies_are_accepted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = InProcess::start(Mode::Embedded).await;
    let address = app.client.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!("GET /api HTTP/1.1\r\nHost: {address}\r\nConnection: keep-alive\r\n\r\n");
    async fn read_response(socket: &mut tokio::net::TcpStream) -> String {
        let mut buffer = vec![0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }
    socket.write_all(request.as_bytes()).await.unwrap();
    assert!(read_response(&mut socket).await.starts_with("HTTP/1.1 200"));
    // Longer than Node's 5 s server default that broke package uploads.
    tokio::time::sleep(Duration::from_secs(7)).await;
    socket.write_all(request.as_bytes()).await.unwrap();
    let second = read_response(&mut socket).await;
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "the idle connection was closed: {second:?}"
    );

    // Axum's default 2 MB body limit is raised: whole packages arrive in one body.
    let description = "x".repeat(5 * 1024 * 1024);
    let created = app
        .client
        .post(
            "/api/Spaces-1/environments",
            json!({"Name": "Big", "Description": description}),
        )
        .await
        .expect(201);
    assert_eq!(
        created["Description"].as_str().unwrap().len(),
        5 * 1024 * 1024
    );
    app.stop().await;
}
