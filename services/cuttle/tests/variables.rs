//! Variables end to end, in both modes: scoped values reach each environment's deployment,
//! sensitive values are encrypted at rest and never shown by the API or the task log, and
//! scripts read variables and set output variables through Octopus's helpers.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::InProcess;
use cuttle_testkit::{Client, Mode, flow};
use serde_json::{Value, json};
use std::time::Duration;

both_modes!(
    each_environment_gets_its_own_values_and_sensitive_values_never_show,
    an_output_variable_set_in_one_step_is_read_in_the_next,
    fail_step_fails_the_step_with_its_message,
    a_library_variable_set_is_shared_frozen_in_releases_and_refreshed_on_request,
    prompted_variables_must_be_given_and_reach_the_script,
    artifacts_a_script_publishes_are_listed_on_its_task_and_downloaded,
);

const WAIT: Duration = Duration::from_secs(60);
const SECRET: &str = "s3cr3t-Pw-4242";

async fn environment(client: &Client, name: &str) -> String {
    let created = client
        .post("/api/Spaces-1/environments", json!({"Name": name}))
        .await
        .expect(201);
    created["Id"].as_str().unwrap().to_owned()
}

async fn deploy(client: &Client, project: &str, env: &str) -> (Value, Vec<(String, String)>) {
    let task_id = flow::release_and_deploy(client, "Spaces-1", project, env).await;
    finished(client, &task_id).await
}

/// Deploys the project's newest release to `env`.
async fn promote(
    client: &Client,
    project: &str,
    project_id: &str,
    env: &str,
) -> (Value, Vec<(String, String)>) {
    let releases = client
        .get(&format!("/api/Spaces-1/projects/{project_id}/releases"))
        .await
        .expect(200);
    let version = releases["Items"][0]["Version"].clone();
    let deployed = client
        .post(
            "/api/Spaces-1/deployments/create/untenanted/v1",
            json!({"ProjectName": project, "ReleaseVersion": version, "EnvironmentNames": [env]}),
        )
        .await
        .expect(201);
    let task_id = deployed["DeploymentServerTasks"][0]["ServerTaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    finished(client, &task_id).await
}

async fn finished(client: &Client, task_id: &str) -> (Value, Vec<(String, String)>) {
    let task = client.wait_for_task(task_id, WAIT).await;
    let lines = common::log_lines(client, "Spaces-1", task_id).await;
    (task, lines)
}

fn has_line(lines: &[(String, String)], text: &str) -> bool {
    lines.iter().any(|(_, line)| line == text)
}

async fn each_environment_gets_its_own_values_and_sensitive_values_never_show(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let dev = environment(client, "Dev").await;
    let test = environment(client, "Test").await;
    let script = r#"echo "greeting=#{Greeting}"
echo "inline=#{Password}"
echo "helper=$(get_octopusvariable "Greeting")"
echo "helper-secret=$(get_octopusvariable "password")"
echo "composed=#{Connection}"
# The expected value is computed, so the secret is not written in the script itself.
if [ "$(get_octopusvariable Password)" = "s3cr3t-Pw-$((4000 + 242))" ]; then echo "secret-ok"; fi
echo "env=#{Octopus.Environment.Name} project=#{Octopus.Project.Name} space=#{Octopus.Space.Name}"
"#;
    let project = flow::project_with_script(client, "Spaces-1", "Dev", "Vars", script).await;
    let path = format!("/api/Spaces-1/projects/{project}/variables");
    let mut set = client.get(&path).await.expect(200);
    set["Variables"] = json!([
        {"Name": "Greeting", "Value": "hello dev", "Scope": {"Environment": [dev]}},
        {"Name": "Greeting", "Value": "hello test", "Scope": {"Environment": [test]}},
        {"Name": "Password", "Value": SECRET, "IsSensitive": true},
        {"Name": "Connection", "Value": "user:#{Password}@db"},
    ]);
    let saved = client.put(&path, set).await.expect(200);
    let password = saved["Variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["Name"] == "Password")
        .unwrap()
        .clone();
    assert_eq!(password["IsSensitive"], true, "{password}");
    assert_eq!(password["Type"], "Sensitive", "{password}");
    assert!(password["Value"].is_null(), "{password}");

    // The preview evaluates what a deployment to Test would see, secrets masked.
    let preview = client
        .get(&format!(
            "/api/Spaces-1/variables/preview?project={project}&environment=Test"
        ))
        .await
        .expect(200);
    assert!(!preview.to_string().contains(SECRET), "{preview}");
    let previewed = |name: &str| {
        preview["Variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["Name"] == name)
            .map(|v| v["Value"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        previewed("Greeting").as_deref(),
        Some("hello test"),
        "{preview}"
    );
    assert_eq!(
        previewed("Password").as_deref(),
        Some("********"),
        "{preview}"
    );
    assert_eq!(
        previewed("Connection").as_deref(),
        Some("user:********@db"),
        "{preview}"
    );
    assert_eq!(
        previewed("Octopus.Environment.Name").as_deref(),
        Some("Test"),
        "{preview}"
    );
    assert_eq!(
        previewed("Octopus.Space.Name").as_deref(),
        Some("Default"),
        "{preview}"
    );
    let refused = client
        .get(&format!(
            "/api/Spaces-1/variables/preview?project={project}&environment=Nowhere"
        ))
        .await
        .expect(400);
    assert!(refused.to_string().contains("environment"), "{refused}");
    client
        .get("/api/Spaces-1/variables/preview")
        .await
        .expect(400);

    // Sent back as the API shows it (no value), the secret is kept.
    let shown = client.get(&path).await.expect(200);
    assert!(!shown.to_string().contains(SECRET), "{shown}");
    client.put(&path, shown).await.expect(200);

    let (task, lines) = deploy(client, "Vars", "Dev").await;
    assert_eq!(task["State"], "Success", "{task} {lines:?}");
    for expected in [
        "greeting=hello dev",
        "inline=********",
        "helper=hello dev",
        "helper-secret=********",
        "composed=user:********@db",
        "secret-ok",
        "env=Dev project=Vars space=Default",
    ] {
        assert!(has_line(&lines, expected), "{expected} missing: {lines:?}");
    }
    let (task, lines) = promote(client, "Vars", &project, "Test").await;
    assert_eq!(task["State"], "Success", "{task} {lines:?}");
    assert!(has_line(&lines, "greeting=hello test"), "{lines:?}");
    assert!(has_line(&lines, "secret-ok"), "{lines:?}");

    // Nowhere in the API, the log or the database in clear text.
    let raw = client
        .get(&format!(
            "/api/Spaces-1/tasks/{}/raw",
            task["Id"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert!(!raw.to_string().contains(SECRET), "{raw}");
    let release = client
        .get(&format!("/api/Spaces-1/projects/{project}/releases"))
        .await
        .expect(200)["Items"][0]
        .clone();
    let snapshot = client
        .get(&format!(
            "/api/Spaces-1/variables/{}",
            release["ProjectVariableSetSnapshotId"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert!(snapshot.to_string().contains("Password"), "{snapshot}");
    assert!(!snapshot.to_string().contains(SECRET), "{snapshot}");
    let stored = cuttle_testkit::stored_in_clear(app.config(), SECRET)
        .await
        .unwrap();
    assert!(
        stored.is_empty(),
        "the secret is stored in clear in {stored:?}"
    );
    app.stop().await;
}

async fn an_output_variable_set_in_one_step_is_read_in_the_next(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let project = flow::project_with_script(client, "Spaces-1", "Dev", "Outputs", "true").await;
    let steps = vec![
        flow::script_step(
            "Make",
            "Bash",
            "TOKEN=\"tok-$((998000 + 877))\"\nset_octopusvariable \"Colour\" \"blue\"\nset_octopusvariable \"Token\" \"$TOKEN\" -sensitive\necho \"token is $TOKEN\"\nwrite_highlight \"made it\"\nwrite_warning \"careful\"\necho after",
        ),
        flow::script_step(
            "Use",
            "Python",
            "print('colour=' + get_octopusvariable('Octopus.Action[Make].Output.Colour'))\nprint('substituted=#{Octopus.Action[Make].Output.Colour}')\nprint('token=' + get_octopusvariable('Octopus.Action[Make].Output.Token'))\nset_octopusvariable('Done', 'yes')",
        ),
    ];
    flow::set_steps(client, "Spaces-1", &project, steps).await;
    let (task, lines) = deploy(client, "Outputs", "Dev").await;
    assert_eq!(task["State"], "Success", "{task} {lines:?}");
    for expected in [
        "colour=blue",
        "substituted=blue",
        "token=********",
        "token is ********",
    ] {
        assert!(has_line(&lines, expected), "{expected} missing: {lines:?}");
    }
    let category = |text: &str| {
        lines
            .iter()
            .find(|(_, line)| line == text)
            .map(|(category, _)| category.clone())
    };
    assert_eq!(
        category("made it").as_deref(),
        Some("Highlight"),
        "{lines:?}"
    );
    assert_eq!(category("careful").as_deref(), Some("Warning"), "{lines:?}");
    assert_eq!(category("after").as_deref(), Some("Info"), "{lines:?}");
    // The service messages themselves are not in the log.
    assert!(
        !lines.iter().any(|(_, line)| line.contains("##octopus")),
        "{lines:?}"
    );
    let stored = cuttle_testkit::stored_in_clear(app.config(), "tok-998877")
        .await
        .unwrap();
    assert!(
        stored.is_empty(),
        "the sensitive output is stored in clear in {stored:?}"
    );
    app.stop().await;
}

async fn fail_step_fails_the_step_with_its_message(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    flow::project_with_script(
        client,
        "Spaces-1",
        "Dev",
        "Fails",
        "echo before\nfail_step \"the disk is full\"\necho never",
    )
    .await;
    let (task, lines) = deploy(client, "Fails", "Dev").await;
    assert_eq!(task["State"], "Failed", "{task}");
    assert!(
        task["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("the disk is full"),
        "{task}"
    );
    assert!(has_line(&lines, "before"), "{lines:?}");
    assert!(!has_line(&lines, "never"), "{lines:?}");
    app.stop().await;
}

/// Deploys `version` of the project to `env`, optionally re-snapshotting its variables first.
async fn deploy_version(
    client: &Client,
    project: &str,
    version: &str,
    env: &str,
    update_variable_snapshot: bool,
) -> (Value, Vec<(String, String)>) {
    let deployed = client
        .post(
            "/api/Spaces-1/deployments/create/untenanted/v1",
            json!({"ProjectName": project, "ReleaseVersion": version, "EnvironmentNames": [env],
                   "UpdateVariableSnapshot": update_variable_snapshot}),
        )
        .await
        .expect(201);
    let task_id = deployed["DeploymentServerTasks"][0]["ServerTaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    finished(client, &task_id).await
}

async fn set_variables(client: &Client, set_id: &str, variables: Value) {
    let path = format!("/api/Spaces-1/variables/{set_id}");
    let mut set = client.get(&path).await.expect(200);
    set["Variables"] = variables;
    client.put(&path, set).await.expect(200);
}

async fn a_library_variable_set_is_shared_frozen_in_releases_and_refreshed_on_request(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let library = client
        .post(
            "/api/Spaces-1/libraryvariablesets",
            json!({"Name": "Common", "Description": "shared settings"}),
        )
        .await
        .expect(201);
    let library_id = library["Id"].as_str().unwrap().to_owned();
    let set_id = library["VariableSetId"].as_str().unwrap().to_owned();
    assert_eq!(set_id, format!("variableset-{library_id}"), "{library}");
    assert_eq!(library["ContentType"], "Variables", "{library}");
    let refused = client
        .post(
            "/api/Spaces-1/libraryvariablesets",
            json!({"Name": "Module", "ContentType": "ScriptModule"}),
        )
        .await
        .expect(400);
    assert!(refused.to_string().contains("ContentType"), "{refused}");
    let listed = client
        .get("/api/Spaces-1/libraryvariablesets?contentType=Variables")
        .await
        .expect(200);
    assert_eq!(listed["TotalResults"], 1, "{listed}");
    let modules = client
        .get("/api/Spaces-1/libraryvariablesets?contentType=ScriptModule")
        .await
        .expect(200);
    assert_eq!(modules["TotalResults"], 0, "{modules}");

    set_variables(
        client,
        &set_id,
        json!([
            {"Name": "Region", "Value": "eu"},
            {"Name": "Shared", "Value": "from library"},
            {"Name": "ApiKey", "Value": "lib-key-5150", "IsSensitive": true},
        ]),
    )
    .await;
    let project = flow::project_with_script(
        client,
        "Spaces-1",
        "Dev",
        "Shop",
        "echo \"region=#{Region} shared=#{Shared} key=#{ApiKey}\"",
    )
    .await;
    set_variables(
        client,
        &format!("variableset-{project}"),
        json!([{"Name": "Shared", "Value": "from project"}]),
    )
    .await;
    let project_path = format!("/api/Spaces-1/projects/{project}");
    let mut body = client.get(&project_path).await.expect(200);
    body["IncludedLibraryVariableSetIds"] = json!(["LibraryVariableSets-999"]);
    let refused = client.put(&project_path, body.clone()).await.expect(400);
    assert!(
        refused
            .to_string()
            .contains("IncludedLibraryVariableSetIds[0]"),
        "{refused}"
    );
    body["IncludedLibraryVariableSetIds"] = json!([library_id]);
    client.put(&project_path, body).await.expect(200);

    let (task, lines) = deploy(client, "Shop", "Dev").await;
    assert_eq!(task["State"], "Success", "{task} {lines:?}");
    assert!(
        has_line(&lines, "region=eu shared=from project key=********"),
        "{lines:?}"
    );
    let release = client
        .get(&format!("/api/Spaces-1/projects/{project}/releases"))
        .await
        .expect(200)["Items"][0]
        .clone();
    let version = release["Version"].as_str().unwrap().to_owned();
    assert_eq!(
        release["LibraryVariableSetSnapshotIds"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{release}"
    );

    // The release froze the library's values.
    set_variables(
        client,
        &set_id,
        json!([{"Name": "Region", "Value": "us"}, {"Name": "Shared", "Value": "from library"}]),
    )
    .await;
    let (_, lines) = deploy_version(client, "Shop", &version, "Dev", false).await;
    assert!(
        has_line(&lines, "region=eu shared=from project key=********"),
        "{lines:?}"
    );
    // Until it takes a new snapshot on request.
    let refreshed = client
        .post(
            &format!(
                "/api/Spaces-1/releases/{}/snapshot-variables",
                release["Id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await
        .expect(200);
    assert_ne!(
        refreshed["LibraryVariableSetSnapshotIds"], release["LibraryVariableSetSnapshotIds"],
        "{refreshed}"
    );
    let (_, lines) = deploy_version(client, "Shop", &version, "Dev", false).await;
    // The sensitive value was dropped from the library by the last PUT (no id, no value).
    assert!(
        has_line(&lines, "region=us shared=from project key=#{ApiKey}"),
        "{lines:?}"
    );
    // Or as part of a deployment.
    set_variables(client, &set_id, json!([{"Name": "Region", "Value": "ap"}])).await;
    let (_, lines) = deploy_version(client, "Shop", &version, "Dev", true).await;
    assert!(
        has_line(&lines, "region=ap shared=from project key=#{ApiKey}"),
        "{lines:?}"
    );

    // Deleting the set takes it out of the project.
    client
        .delete(&format!("/api/Spaces-1/libraryvariablesets/{library_id}"))
        .await
        .expect(200);
    let body = client.get(&project_path).await.expect(200);
    assert_eq!(body["IncludedLibraryVariableSetIds"], json!([]), "{body}");
    client
        .get(&format!("/api/Spaces-1/variables/{set_id}"))
        .await
        .expect(404);
    app.stop().await;
}

async fn prompted_variables_must_be_given_and_reach_the_script(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let project = flow::project_with_script(
        client,
        "Spaces-1",
        "Dev",
        "Gate",
        "echo \"approver=#{Approver} reason=#{Reason} pin=#{Pin}\"",
    )
    .await;
    set_variables(
        client,
        &format!("variableset-{project}"),
        json!([
            {"Name": "Approver", "Value": "", "Prompt": {"Label": "Who approves?", "Required": true}},
            {"Name": "Reason", "Value": "routine", "Prompt": {"Label": "Reason", "Required": false}},
            {"Name": "Pin", "Value": "", "IsSensitive": true, "Prompt": {"Label": "PIN", "Required": true}},
        ]),
    )
    .await;
    let release = client
        .post(
            "/api/Spaces-1/releases/create/v1",
            json!({"ProjectName": "Gate", "ReleaseVersion": "1.0.0"}),
        )
        .await
        .expect(201);
    assert_eq!(release["ReleaseVersion"], "1.0.0", "{release}");
    let deploy_with = |variables: Value| async move {
        client
            .post(
                "/api/Spaces-1/deployments/create/untenanted/v1",
                json!({"ProjectName": "Gate", "ReleaseVersion": "1.0.0",
                       "EnvironmentNames": ["Dev"], "Variables": variables}),
            )
            .await
    };
    let missing = deploy_with(json!({})).await.expect(400);
    let text = missing.to_string();
    assert!(
        text.contains("Who approves?") && text.contains("PIN") && !text.contains("Reason"),
        "{missing}"
    );
    let unknown = deploy_with(json!({"Who approves?": "ann", "PIN": "1", "Nope": "x"}))
        .await
        .expect(400);
    assert!(unknown.to_string().contains("Variables.Nope"), "{unknown}");

    // The PIN is computed from parts, so it is not written anywhere in this request's JSON
    // the test could confuse with a stored copy.
    let pin = format!("{}-{}", 9876, "xyz");
    let deployed = deploy_with(json!({"who approves?": "ann", "Pin": pin}))
        .await
        .expect(201);
    let task_id = deployed["DeploymentServerTasks"][0]["ServerTaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (task, lines) = finished(client, &task_id).await;
    assert_eq!(task["State"], "Success", "{task} {lines:?}");
    assert!(
        has_line(&lines, "approver=ann reason=routine pin=********"),
        "{lines:?}"
    );
    let stored = cuttle_testkit::stored_in_clear(app.config(), &pin)
        .await
        .unwrap();
    assert!(
        stored.is_empty(),
        "the prompted secret is stored in clear in {stored:?}"
    );
    app.stop().await;
}

async fn artifacts_a_script_publishes_are_listed_on_its_task_and_downloaded(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let project = flow::project_with_script(client, "Spaces-1", "Dev", "Reports", "true").await;
    flow::set_steps(
        client,
        "Spaces-1",
        &project,
        vec![
            flow::script_step(
                "Bash report",
                "Bash",
                "mkdir -p out && echo 'report body' > out/report.txt\nnew_octopusartifact out/report.txt\nnew_octopusartifact /no/such/file.txt missing.txt",
            ),
            flow::script_step(
                "Python report",
                "Python",
                "with open('summary.csv', 'w') as f:\n    f.write('a,b\\n1,2\\n')\nnew_octopusartifact('summary.csv', 'Summary.csv')",
            ),
        ],
    )
    .await;
    let (task, lines) = deploy(client, "Reports", "Dev").await;
    assert_eq!(task["State"], "Success", "{task} {lines:?}");
    assert!(
        lines.iter().any(|(category, line)| category == "Warning"
            && line.contains("'missing.txt' was not collected")),
        "{lines:?}"
    );
    let task_id = task["Id"].as_str().unwrap();
    let listed = client
        .get(&format!("/api/Spaces-1/artifacts?regarding={task_id}"))
        .await
        .expect(200);
    let names: Vec<&str> = listed["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["Filename"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["report.txt", "Summary.csv"], "{listed}");
    assert!(!listed.to_string().contains("BlobKey"), "{listed}");
    let report = &listed["Items"][0];
    assert_eq!(report["ServerTaskId"], task_id, "{report}");
    let content = client
        .get(report["Links"]["Content"].as_str().unwrap())
        .await
        .expect(200);
    assert_eq!(content, json!("report body\n"));
    let summary = listed["Items"][1]["Links"]["Content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(client.get(&summary).await.expect(200), json!("a,b\n1,2\n"));

    // Another task lists nothing; a deleted artifact is gone.
    let other = client
        .get("/api/Spaces-1/artifacts?regarding=ServerTasks-999")
        .await
        .expect(200);
    assert_eq!(other["TotalResults"], 0, "{other}");
    let self_link = report["Links"]["Self"].as_str().unwrap().to_owned();
    client.delete(&self_link).await.expect(200);
    client.get(&self_link).await.expect(404);
    app.stop().await;
}
