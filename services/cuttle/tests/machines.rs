//! Infrastructure over HTTP, in both modes: deployment targets (listening and polling agents),
//! workers, worker pools, machine policies, their filters and validation, and the server
//! certificate agents pin.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::InProcess;
use cuttle_testkit::{Client, Mode};
use serde_json::{Value, json};

both_modes!(
    targets_register_with_listening_or_polling_endpoints_and_filter_by_role_and_environment,
    bad_target_registrations_are_refused_naming_the_field,
    workers_join_the_default_pool_and_pools_list_their_workers,
    machine_policies_check_their_health_check_interval,
    the_server_certificate_has_a_stable_thumbprint,
);

fn thumbprint(seed: u8) -> String {
    format!("{seed:02X}").repeat(20)
}

async fn environment(client: &Client, name: &str) -> String {
    client
        .post("/api/Spaces-1/environments", json!({"Name": name}))
        .await
        .expect(201)["Id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn target(name: &str, environments: &[&str], roles: &[&str], endpoint: Value) -> Value {
    json!({"Name": name, "EnvironmentIds": environments, "Roles": roles, "Endpoint": endpoint})
}

fn listening(port: u16, seed: u8) -> Value {
    json!({"CommunicationStyle": "TentaclePassive",
           "Uri": format!("https://127.0.0.1:{port}/"), "Thumbprint": thumbprint(seed)})
}

fn polling(subscription: &str, seed: u8) -> Value {
    json!({"CommunicationStyle": "TentacleActive",
           "Uri": format!("poll://{subscription}/"), "Thumbprint": thumbprint(seed).to_lowercase()})
}

fn names(page: &Value) -> Vec<String> {
    let mut names: Vec<String> = page["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

async fn targets_register_with_listening_or_polling_endpoints_and_filter_by_role_and_environment(
    mode: Mode,
) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let test = environment(client, "Test").await;
    let prod = environment(client, "Production").await;
    let web = client
        .post(
            "/api/Spaces-1/machines",
            target("web-01", &[&test], &["web-server"], listening(10933, 1)),
        )
        .await
        .expect(201);
    assert!(web["Id"].as_str().unwrap().starts_with("Machines-"));
    assert_eq!(web["HealthStatus"], "Unknown");
    assert_eq!(web["Thumbprint"], thumbprint(1));
    assert_eq!(web["Uri"], "https://127.0.0.1:10933/");
    assert!(
        web["MachinePolicyId"]
            .as_str()
            .unwrap()
            .starts_with("MachinePolicies-")
    );
    let poller = client
        .post(
            "/api/Spaces-1/machines",
            target(
                "db-01",
                &[&test, &prod],
                &["db", "web-server"],
                polling("AbC123", 2),
            ),
        )
        .await
        .expect(201);
    assert_eq!(poller["Endpoint"]["Uri"], "poll://abc123/");
    assert_eq!(poller["Endpoint"]["Thumbprint"], thumbprint(2));

    let by_role = client
        .get("/api/Spaces-1/machines?roles=db")
        .await
        .expect(200);
    assert_eq!(names(&by_role), ["db-01"]);
    let by_env = client
        .get(&format!("/api/Spaces-1/machines?environmentIds={prod}"))
        .await
        .expect(200);
    assert_eq!(names(&by_env), ["db-01"]);
    let by_style = client
        .get("/api/Spaces-1/machines?commStyles=TentaclePassive")
        .await
        .expect(200);
    assert_eq!(names(&by_style), ["web-01"]);
    let in_env = client
        .get(&format!("/api/Spaces-1/environments/{test}/machines"))
        .await
        .expect(200);
    assert_eq!(names(&in_env), ["db-01", "web-01"]);
    let unknown = client
        .get("/api/Spaces-1/machines?healthStatuses=Unknown&partialName=WEB")
        .await
        .expect(200);
    assert_eq!(names(&unknown), ["web-01"]);

    // A client cannot declare a machine healthy; everything else it may change.
    let id = web["Id"].as_str().unwrap();
    let mut changed = web.clone();
    changed["HealthStatus"] = json!("Healthy");
    changed["Roles"] = json!(["web-server", "api"]);
    changed["IsDisabled"] = json!(true);
    let updated = client
        .put(&format!("/api/Spaces-1/machines/{id}"), changed)
        .await
        .expect(200);
    assert_eq!(updated["HealthStatus"], "Unknown");
    assert_eq!(updated["Roles"], json!(["web-server", "api"]));
    let disabled = client
        .get("/api/Spaces-1/machines?isDisabled=true")
        .await
        .expect(200);
    assert_eq!(names(&disabled), ["web-01"]);
    client
        .delete(&format!("/api/Spaces-1/machines/{id}"))
        .await
        .expect(200);
    client
        .get(&format!("/api/Spaces-1/machines/{id}"))
        .await
        .expect(404);
    app.stop().await;
}

async fn bad_target_registrations_are_refused_naming_the_field(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let test = environment(client, "Test").await;
    for (body, field) in [
        (target("a", &[&test], &[], listening(1, 1)), "Roles"),
        (
            target("a", &[], &["web"], listening(1, 1)),
            "EnvironmentIds",
        ),
        (
            target("a", &["Environments-999"], &["web"], listening(1, 1)),
            "EnvironmentIds[0]",
        ),
        (
            target(
                "a",
                &[&test],
                &["web"],
                json!({"CommunicationStyle": "TentaclePassive", "Uri": "https://h:1/", "Thumbprint": "XYZ"}),
            ),
            "Endpoint.Thumbprint",
        ),
        (
            target(
                "a",
                &[&test],
                &["web"],
                json!({"CommunicationStyle": "TentaclePassive", "Uri": "http://h:1/", "Thumbprint": thumbprint(1)}),
            ),
            "Endpoint.Uri",
        ),
        (
            target(
                "a",
                &[&test],
                &["web"],
                json!({"CommunicationStyle": "Ssh", "Host": "h", "Thumbprint": thumbprint(1)}),
            ),
            "Endpoint.CommunicationStyle",
        ),
        (target("", &[&test], &["web"], listening(1, 1)), "Name"),
    ] {
        let reply = client.post("/api/Spaces-1/machines", body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert!(
            reply.body["Errors"].to_string().contains(field),
            "{body}: {}",
            reply.body
        );
    }
    // Nothing half-written.
    let all = client.get("/api/Spaces-1/machines").await.expect(200);
    assert_eq!(all["TotalResults"], 0);
    client
        .post(
            "/api/Spaces-1/machines",
            target("web-01", &[&test], &["web"], listening(1, 1)),
        )
        .await
        .expect(201);
    let duplicate = client
        .post(
            "/api/Spaces-1/machines",
            target("WEB-01", &[&test], &["web"], listening(2, 2)),
        )
        .await;
    assert_eq!(duplicate.status, 400, "{}", duplicate.body);
    app.stop().await;
}

async fn workers_join_the_default_pool_and_pools_list_their_workers(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let pools = client.get("/api/Spaces-1/workerpools").await.expect(200);
    assert_eq!(pools["Items"][0]["Name"], "Default Worker Pool");
    assert_eq!(pools["Items"][0]["IsDefault"], true);
    let default_pool = pools["Items"][0]["Id"].as_str().unwrap().to_owned();
    let linux = client
        .post(
            "/api/Spaces-1/workerpools",
            json!({"Name": "Linux", "Description": "bash only"}),
        )
        .await
        .expect(201);
    let linux_id = linux["Id"].as_str().unwrap();
    let worker = client
        .post(
            "/api/Spaces-1/workers",
            json!({"Name": "worker-a", "Endpoint": listening(10933, 3)}),
        )
        .await
        .expect(201);
    assert!(worker["Id"].as_str().unwrap().starts_with("Workers-"));
    assert_eq!(worker["WorkerPoolIds"], json!([default_pool]));
    client
        .post(
            "/api/Spaces-1/workers",
            json!({"Name": "worker-b", "WorkerPoolIds": [linux_id], "Endpoint": polling("wb", 4)}),
        )
        .await
        .expect(201);
    let in_linux = client
        .get(&format!("/api/Spaces-1/workerpools/{linux_id}/workers"))
        .await
        .expect(200);
    assert_eq!(names(&in_linux), ["worker-b"]);
    let filtered = client
        .get(&format!(
            "/api/Spaces-1/workers?workerPoolIds={default_pool}"
        ))
        .await
        .expect(200);
    assert_eq!(names(&filtered), ["worker-a"]);
    let reply = client
        .post(
            "/api/Spaces-1/workers",
            json!({"Name": "worker-c", "WorkerPoolIds": ["WorkerPools-999"], "Endpoint": listening(1, 5)}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.to_string().contains("WorkerPoolIds[0]"));
    // Workers are not deployment targets.
    let targets = client.get("/api/Spaces-1/machines").await.expect(200);
    assert_eq!(targets["TotalResults"], 0);
    app.stop().await;
}

async fn machine_policies_check_their_health_check_interval(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let policies = client
        .get("/api/Spaces-1/machinepolicies")
        .await
        .expect(200);
    assert_eq!(policies["Items"][0]["IsDefault"], true);
    assert_eq!(
        policies["Items"][0]["MachineHealthCheckPolicy"]["HealthCheckInterval"],
        "01:00:00"
    );
    let created = client
        .post(
            "/api/Spaces-1/machinepolicies",
            json!({"Name": "Fast", "MachineHealthCheckPolicy": {"HealthCheckInterval": "00:05:00"}}),
        )
        .await
        .expect(201);
    assert_eq!(
        created["MachineHealthCheckPolicy"]["HealthCheckInterval"],
        "00:05:00"
    );
    let reply = client
        .post(
            "/api/Spaces-1/machinepolicies",
            json!({"Name": "Bad", "MachineHealthCheckPolicy": {"HealthCheckInterval": "often"}}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply
            .body
            .to_string()
            .contains("MachineHealthCheckPolicy.HealthCheckInterval")
    );
    app.stop().await;
}

async fn the_server_certificate_has_a_stable_thumbprint(mode: Mode) {
    let app = InProcess::start(mode).await;
    let first = app
        .client
        .get("/api/certificates/certificate-global")
        .await
        .expect(200);
    let thumbprint = first["Thumbprint"].as_str().unwrap();
    assert_eq!(thumbprint.len(), 40);
    assert!(
        thumbprint
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
    );
    let again = app
        .client
        .get("/api/certificates/certificate-global")
        .await
        .expect(200);
    assert_eq!(again["Thumbprint"], first["Thumbprint"]);
    app.client
        .anonymous()
        .get("/api/certificates/certificate-global")
        .await
        .expect(401);
    app.stop().await;
}
