//! Tenants end to end, in both modes: tag sets and tenants are validated, filtered and renamed
//! as Octopus does; a tenanted deployment runs once per tenant with that tenant's variables and
//! steps; and a team restricted to one tenant sees and deploys only that tenant.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::InProcess;
use cuttle_testkit::flow::{scoped_team, user_with_key};
use cuttle_testkit::{Client, Mode, flow};
use serde_json::{Value, json};
use std::time::Duration;

both_modes!(
    tag_sets_and_tenants_are_validated_filtered_and_renamed,
    a_tenanted_deployment_runs_once_per_tenant_with_its_own_variables_and_steps,
    a_team_restricted_to_one_tenant_sees_and_deploys_only_that_tenant,
    tenant_variables_give_each_tenant_its_own_values_and_keep_secrets,
    deployment_targets_take_tenants_by_id_or_tag,
    a_channel_with_tenant_tags_releases_only_to_matching_tenants,
    a_team_scoped_to_test_sees_and_changes_only_the_tenant_values_of_test,
    values_set_one_at_a_time_apply_in_their_environments,
);

const WAIT: Duration = Duration::from_secs(60);
const SPACE: &str = "/api/Spaces-1";

fn id(value: &Value) -> String {
    value["Id"].as_str().unwrap().to_owned()
}

fn names(list: &Value) -> Vec<String> {
    let items = list["Items"].as_array().or(list.as_array()).unwrap();
    let mut out: Vec<String> = items
        .iter()
        .map(|t| t["Name"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

/// The error message of a 4xx reply, whole.
fn problem(reply: &Value) -> String {
    format!("{} {}", reply["ErrorMessage"], reply["Errors"])
}

/// Tag sets `Tier` (Gold, Silver) and `Region` (EU, US); returns the Tier set.
async fn tag_sets(client: &Client) -> Value {
    let tier = client
        .post(
            &format!("{SPACE}/tagsets"),
            json!({"Name": "Tier", "Tags": [{"Name": "Gold", "Color": "#FFD700"}, {"Name": "Silver"}]}),
        )
        .await
        .expect(201);
    client
        .post(
            &format!("{SPACE}/tagsets"),
            json!({"Name": "Region", "Tags": [{"Name": "EU"}, {"Name": "US"}]}),
        )
        .await
        .expect(201);
    tier
}

async fn tenant(client: &Client, name: &str, tags: &[&str], connect: Value) -> String {
    id(&client
        .post(
            &format!("{SPACE}/tenants"),
            json!({"Name": name, "TenantTags": tags, "ProjectEnvironments": connect}),
        )
        .await
        .expect(201))
}

/// Sets the project's TenantedDeploymentMode.
async fn tenanted(client: &Client, project: &str, mode: &str) {
    let path = format!("{SPACE}/projects/{project}");
    let mut body = client.get(&path).await.expect(200);
    body["TenantedDeploymentMode"] = json!(mode);
    client.put(&path, body).await.expect(200);
}

async fn environment_id(client: &Client, name: &str) -> String {
    let found = client
        .get(&format!("{SPACE}/environments?name={name}"))
        .await
        .expect(200);
    id(&found["Items"][0])
}

async fn tag_sets_and_tenants_are_validated_filtered_and_renamed(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let tier = tag_sets(client).await;
    let tier_id = id(&tier);
    assert_eq!(tier["Tags"][0]["CanonicalTagName"], "Tier/Gold");
    assert_eq!(tier["Tags"][0]["Id"], format!("{tier_id}-1"));
    assert_eq!(tier["Tags"][1]["Color"], "#333333");

    // Bad tag sets name the field at fault and leave nothing behind.
    for (body, field) in [
        (json!({"Name": "A/B", "Tags": []}), "Name"),
        (
            json!({"Name": "Size", "Tags": [{"Name": "L"}, {"Name": "l"}]}),
            "Tags[1].Name",
        ),
        (
            json!({"Name": "Size", "Tags": [{"Name": "L", "Color": "red"}]}),
            "Tags[0].Color",
        ),
        (json!({"Name": "Tier", "Tags": []}), "Name"),
    ] {
        let refused = client
            .post(&format!("{SPACE}/tagsets"), body.clone())
            .await
            .expect(400);
        assert!(problem(&refused).contains(field), "{body}: {refused}");
    }
    let all = client
        .get(&format!("{SPACE}/tagsets/all"))
        .await
        .expect(200);
    assert_eq!(names(&all), ["Region", "Tier"]);

    // Tenants: tags must exist and are kept by canonical name; projects must take tenants.
    let project =
        flow::project_with_script(client, "Spaces-1", "Test", "Portal", "echo portal").await;
    let test = environment_id(client, "Test").await;
    let refused = client
        .post(
            &format!("{SPACE}/tenants"),
            json!({"Name": "Acme", "TenantTags": ["Tier/Platinum"]}),
        )
        .await
        .expect(400);
    assert!(problem(&refused).contains("TenantTags[0]"), "{refused}");
    let refused = client
        .post(
            &format!("{SPACE}/tenants"),
            json!({"Name": "Acme", "ProjectEnvironments": {project.clone(): [test.clone()]}}),
        )
        .await
        .expect(400);
    assert!(
        problem(&refused).contains(&format!("ProjectEnvironments.{project}"))
            && problem(&refused).contains("does not take tenanted deployments"),
        "{refused}"
    );
    tenanted(client, &project, "TenantedOrUntenanted").await;
    let refused = client
        .post(
            &format!("{SPACE}/tenants"),
            json!({"Name": "Acme", "ProjectEnvironments": {project.clone(): ["Environments-999"]}}),
        )
        .await
        .expect(400);
    assert!(problem(&refused).contains("Environments-999"), "{refused}");
    let listed = client.get(&format!("{SPACE}/tenants")).await.expect(200);
    assert_eq!(listed["TotalResults"], 0, "refused tenants left nothing");

    let acme = tenant(
        client,
        "Acme",
        &["tier/gold", "Region/EU"],
        json!({project.clone(): [test.clone()]}),
    )
    .await;
    let globex = tenant(client, "Globex", &["Tier/Silver", "Region/US"], json!({})).await;
    tenant(client, "Initech", &["Tier/Gold", "Region/US"], json!({})).await;
    let stored = client
        .get(&format!("{SPACE}/tenants/{acme}"))
        .await
        .expect(200);
    assert_eq!(stored["TenantTags"], json!(["Tier/Gold", "Region/EU"]));
    let duplicate = client
        .post(&format!("{SPACE}/tenants"), json!({"Name": "acme"}))
        .await
        .expect(400);
    assert!(
        problem(&duplicate).contains("already in use"),
        "{duplicate}"
    );

    // Filters: tags of one set OR'ed, sets AND'ed; by project; by name.
    let by_tags = |tags: &str| format!("{SPACE}/tenants?tags={tags}");
    let gold = client.get(&by_tags("Tier/Gold")).await.expect(200);
    assert_eq!(names(&gold), ["Acme", "Initech"]);
    let gold_or_silver_in_us = client
        .get(&by_tags("Tier/Gold,Tier/Silver,Region/US"))
        .await
        .expect(200);
    assert_eq!(names(&gold_or_silver_in_us), ["Globex", "Initech"]);
    let connected = client
        .get(&format!("{SPACE}/tenants?projectId={project}"))
        .await
        .expect(200);
    assert_eq!(names(&connected), ["Acme"]);
    let partial = client
        .get(&format!("{SPACE}/tenants?partialName=glo"))
        .await
        .expect(200);
    assert_eq!(names(&partial), ["Globex"]);
    let tested = client
        .get(&format!(
            "{SPACE}/tenants/tag-test?tenantIds={acme},{globex}&tags=Tier/Gold,Region/EU"
        ))
        .await
        .expect(200);
    assert_eq!(tested[&acme]["IsMatched"], true, "{tested}");
    assert_eq!(tested[&globex]["IsMatched"], false, "{tested}");
    assert_eq!(
        tested[&globex]["MissingTags"],
        json!(["Region/EU", "Tier/Gold"]),
        "{tested}"
    );

    // A variable scoped to a tag, and a step filtered by one, refer to it by canonical name.
    let variables_path = format!("{SPACE}/projects/{project}/variables");
    let mut variables = client.get(&variables_path).await.expect(200);
    assert!(
        variables["ScopeValues"]["TenantTags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["Id"] == "Tier/Gold"),
        "{}",
        variables["ScopeValues"]
    );
    variables["Variables"] = json!([
        {"Name": "Plan", "Value": "gold", "Scope": {"TenantTag": ["TIER/GOLD"]}}
    ]);
    let saved = client
        .put(&variables_path, variables.clone())
        .await
        .expect(200);
    assert_eq!(
        saved["Variables"][0]["Scope"]["TenantTag"],
        json!(["Tier/Gold"])
    );
    variables["Variables"] = json!([
        {"Name": "Plan", "Value": "x", "Scope": {"TenantTag": ["Tier/Bronze"]}}
    ]);
    variables["Version"] = saved["Version"].clone();
    let refused = client.put(&variables_path, variables).await.expect(400);
    assert!(
        problem(&refused).contains("Variables[0].Scope.TenantTag"),
        "{refused}"
    );

    // Renaming a tag renames it everywhere; removing a tag in use is refused, naming the users.
    let mut renamed = tier.clone();
    renamed["Tags"][0]["Name"] = json!("Platinum");
    let renamed = client
        .put(&format!("{SPACE}/tagsets/{tier_id}"), renamed)
        .await
        .expect(200);
    assert_eq!(renamed["Tags"][0]["CanonicalTagName"], "Tier/Platinum");
    assert_eq!(renamed["Tags"][0]["Id"], format!("{tier_id}-1"));
    let acme_now = client
        .get(&format!("{SPACE}/tenants/{acme}"))
        .await
        .expect(200);
    assert_eq!(
        acme_now["TenantTags"],
        json!(["Tier/Platinum", "Region/EU"])
    );
    let variables = client.get(&variables_path).await.expect(200);
    assert_eq!(
        variables["Variables"][0]["Scope"]["TenantTag"],
        json!(["Tier/Platinum"])
    );
    let mut without_platinum = renamed.clone();
    without_platinum["Tags"] = json!([renamed["Tags"][1].clone()]);
    let refused = client
        .put(&format!("{SPACE}/tagsets/{tier_id}"), without_platinum)
        .await
        .expect(400);
    let message = problem(&refused);
    assert!(
        message.contains("Tier/Platinum")
            && message.contains("tenant 'Acme'")
            && message.contains("tenant 'Initech'")
            && message.contains("variable set"),
        "{refused}"
    );
    client
        .delete(&format!("{SPACE}/tagsets/{tier_id}"))
        .await
        .expect(400);
    // Once nobody uses a tag set, it goes.
    let region = client
        .get(&format!("{SPACE}/tagsets?partialName=Region"))
        .await
        .expect(200);
    let region_id = id(&region["Items"][0]);
    for tenant_id in [&acme, &globex] {
        let path = format!("{SPACE}/tenants/{tenant_id}");
        let mut body = client.get(&path).await.expect(200);
        body["TenantTags"] = json!([]);
        client.put(&path, body).await.expect(200);
    }
    let initech = client
        .get(&format!("{SPACE}/tenants?name=Initech"))
        .await
        .expect(200)["Items"][0]
        .clone();
    client
        .delete(&format!("{SPACE}/tenants/{}", id(&initech)))
        .await
        .expect(200);
    client
        .delete(&format!("{SPACE}/tagsets/{region_id}"))
        .await
        .expect(200);
    client
        .get(&format!("{SPACE}/tenants/{}", id(&initech)))
        .await
        .expect(404);

    // Deleting an environment or a project disconnects tenants from it.
    let other = client
        .post(&format!("{SPACE}/environments"), json!({"Name": "Other"}))
        .await
        .expect(201);
    let acme_path = format!("{SPACE}/tenants/{acme}");
    let mut body = client.get(&acme_path).await.expect(200);
    body["ProjectEnvironments"] = json!({project.clone(): [test.clone(), id(&other)]});
    client.put(&acme_path, body).await.expect(200);
    client
        .delete(&format!("{SPACE}/environments/{}", id(&other)))
        .await
        .expect(200);
    let acme_now = client.get(&acme_path).await.expect(200);
    assert_eq!(
        acme_now["ProjectEnvironments"],
        json!({project.clone(): [test.clone()]})
    );
    client
        .delete(&format!("{SPACE}/projects/{project}"))
        .await
        .expect(200);
    let acme_now = client.get(&acme_path).await.expect(200);
    assert_eq!(acme_now["ProjectEnvironments"], json!({}));
    // And the tenant can still be saved as it is.
    client.put(&acme_path, acme_now).await.expect(200);
    app.stop().await;
}

/// Every log line of a task, joined.
async fn log_text(client: &Client, task: &str) -> String {
    let lines = common::log_lines(client, "Spaces-1", task).await;
    let texts: Vec<String> = lines.into_iter().map(|(_, text)| text).collect();
    texts.join("\n")
}

/// Creates release 1.0.0 of Shop; returns its id.
async fn release(client: &Client) -> String {
    let release = client
        .post(
            &format!("{SPACE}/releases/create/v1"),
            json!({"ProjectName": "Shop", "ReleaseVersion": "1.0.0"}),
        )
        .await
        .expect(201);
    release["ReleaseId"].as_str().unwrap().to_owned()
}

/// A Tenanted project "Shop" deployed to Test: Acme (Gold, EU) and Globex (Silver, US) are
/// connected in Test. Returns (project id, Test's id, Acme's id, Globex's id).
async fn shop(client: &Client) -> (String, String, String, String) {
    tag_sets(client).await;
    let project = flow::project_with_script(client, "Spaces-1", "Test", "Shop", "echo").await;
    tenanted(client, &project, "Tenanted").await;
    let test = environment_id(client, "Test").await;
    let mut step = flow::script_step(
        "Greet",
        "Bash",
        "echo \"tenant=#{Octopus.Tenant.Name} id=#{Octopus.Deployment.Tenant.Id} tags=#{Octopus.Tenant.Tags} plan=#{Plan}\"",
    );
    step["Name"] = json!("Greet");
    let mut eu_only = flow::script_step(
        "EU notice",
        "Bash",
        "echo \"eu-only for #{Octopus.Tenant.Name}\"",
    );
    eu_only["Actions"][0]["TenantTags"] = json!(["Region/EU"]);
    flow::set_steps(client, "Spaces-1", &project, vec![step, eu_only]).await;
    let variables_path = format!("{SPACE}/projects/{project}/variables");
    let mut variables = client.get(&variables_path).await.expect(200);
    variables["Variables"] = json!([
        {"Name": "Plan", "Value": "standard"},
        {"Name": "Plan", "Value": "premium", "Scope": {"TenantTag": ["Tier/Gold"]}},
        {"Name": "Plan", "Value": "test-only", "Scope": {"Environment": ["Environments-999"]}}
    ]);
    client.put(&variables_path, variables).await.expect(200);
    let connect = json!({project.clone(): [test.clone()]});
    let acme = tenant(client, "Acme", &["Tier/Gold", "Region/EU"], connect.clone()).await;
    let globex = tenant(client, "Globex", &["Tier/Silver", "Region/US"], connect).await;
    (project, test, acme, globex)
}

async fn a_tenanted_deployment_runs_once_per_tenant_with_its_own_variables_and_steps(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let (project, test, acme, globex) = shop(client).await;
    // A tenant not connected to the project.
    let stranger = tenant(client, "Stranger", &["Tier/Gold"], json!({})).await;
    let release_id = release(client).await;

    // A Tenanted project takes no untenanted deployment, and an unconnected tenant none either.
    let refused = client
        .post(
            &format!("{SPACE}/deployments/create/untenanted/v1"),
            json!({"ProjectName": "Shop", "ReleaseVersion": "1.0.0", "EnvironmentNames": ["Test"]}),
        )
        .await
        .expect(400);
    assert!(
        problem(&refused).contains("deploys only to tenants"),
        "{refused}"
    );
    let refused = client
        .post(
            &format!("{SPACE}/deployments"),
            json!({"ReleaseId": release_id, "EnvironmentId": test, "TenantId": stranger}),
        )
        .await
        .expect(400);
    assert!(
        problem(&refused).contains("TenantId") && problem(&refused).contains("not connected"),
        "{refused}"
    );
    let refused = client
        .post(
            &format!("{SPACE}/deployments/create/tenanted/v1"),
            json!({"ProjectName": "Shop", "ReleaseVersion": "1.0.0", "EnvironmentName": "Test"}),
        )
        .await
        .expect(400);
    assert!(problem(&refused).contains("Tenants"), "{refused}");
    let refused = client
        .post(
            &format!("{SPACE}/deployments/create/tenanted/v1"),
            json!({"ProjectName": "Shop", "ReleaseVersion": "1.0.0", "EnvironmentName": "Test", "Tenants": ["Acme", "Stranger"]}),
        )
        .await
        .expect(400);
    assert!(problem(&refused).contains("Tenants[1]"), "{refused}");
    let none = client
        .get(&format!("{SPACE}/deployments"))
        .await
        .expect(200);
    assert_eq!(none["TotalResults"], 0, "refused requests deployed nothing");

    // By tag: Gold or Silver picks both connected tenants (not the unconnected Stranger).
    let created = client
        .post(
            &format!("{SPACE}/deployments/create/tenanted/v1"),
            json!({"ProjectName": "Shop", "ReleaseVersion": "1.0.0", "EnvironmentName": "Test", "TenantTags": ["Tier/Gold", "Tier/Silver"]}),
        )
        .await
        .expect(201);
    let tasks = created["DeploymentServerTasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{created}");
    let mut by_tenant = std::collections::BTreeMap::new();
    for entry in tasks {
        let deployment = client
            .get(&format!(
                "{SPACE}/deployments/{}",
                entry["DeploymentId"].as_str().unwrap()
            ))
            .await
            .expect(200);
        let tenant_id = deployment["TenantId"].as_str().unwrap().to_owned();
        let task_id = entry["ServerTaskId"].as_str().unwrap().to_owned();
        by_tenant.insert(tenant_id, (deployment, task_id));
    }
    let (acme_deployment, acme_task) = by_tenant[&acme].clone();
    let (globex_deployment, globex_task) = by_tenant[&globex].clone();
    assert_eq!(acme_deployment["Name"], "Deploy to Test for Acme");
    assert_eq!(globex_deployment["Name"], "Deploy to Test for Globex");
    for task in [&acme_task, &globex_task] {
        let done = client.wait_for_task(task, WAIT).await;
        assert_eq!(done["State"], "Success", "{done}");
    }
    let acme_task_json = client
        .get(&format!("{SPACE}/tasks/{acme_task}"))
        .await
        .expect(200);
    assert_eq!(
        acme_task_json["Description"],
        "Deploy Shop release 1.0.0 to Test for Acme"
    );

    let acme_log = log_text(client, &acme_task).await;
    assert!(
        acme_log.contains(&format!(
            "tenant=Acme id={acme} tags=Tier/Gold,Region/EU plan=premium"
        )),
        "{acme_log}"
    );
    assert!(acme_log.contains("eu-only for Acme"), "{acme_log}");
    let globex_log = log_text(client, &globex_task).await;
    assert!(
        globex_log.contains(&format!(
            "tenant=Globex id={globex} tags=Tier/Silver,Region/US plan=standard"
        )),
        "{globex_log}"
    );
    assert!(!globex_log.contains("eu-only"), "{globex_log}");

    // The deployment and task lists filter by tenant.
    let acme_only = client
        .get(&format!("{SPACE}/deployments?tenants={acme}"))
        .await
        .expect(200);
    assert_eq!(acme_only["TotalResults"], 1, "{acme_only}");
    assert_eq!(acme_only["Items"][0]["TenantId"], acme);
    let acme_tasks = client
        .get(&format!("{SPACE}/tasks?tenant={acme}"))
        .await
        .expect(200);
    assert_eq!(acme_tasks["TotalResults"], 1, "{acme_tasks}");
    assert_eq!(acme_tasks["Items"][0]["Id"], acme_task);

    // The preview shows what a tenant's deployment would see.
    let preview = client
        .get(&format!(
            "{SPACE}/variables/preview?project={project}&environment=Test&tenant=Acme"
        ))
        .await
        .expect(200);
    let value_of = |name: &str| {
        preview["Variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["Name"] == name)
            .map(|v| v["Value"].clone())
    };
    assert_eq!(value_of("Plan"), Some(json!("premium")), "{preview}");
    assert_eq!(value_of("Octopus.Tenant.Name"), Some(json!("Acme")));

    // Renamed tags reach the release's snapshots: Acme's redeployment of 1.0.0 still runs the
    // EU step and gets the Gold value, under the new names.
    let sets = client
        .get(&format!("{SPACE}/tagsets/all"))
        .await
        .expect(200);
    for (set, tag, new) in [("Region", "EU", "Europe"), ("Tier", "Gold", "Platinum")] {
        let mut body = sets
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Name"] == set)
            .unwrap()
            .clone();
        for item in body["Tags"].as_array_mut().unwrap() {
            if item["Name"] == tag {
                item["Name"] = json!(new);
            }
        }
        client
            .put(&format!("{SPACE}/tagsets/{}", id(&body)), body)
            .await
            .expect(200);
    }
    let again = client
        .post(
            &format!("{SPACE}/deployments"),
            json!({"ReleaseId": release_id, "EnvironmentId": test, "TenantId": acme}),
        )
        .await
        .expect(201);
    let task = again["TaskId"].as_str().unwrap().to_owned();
    let done = client.wait_for_task(&task, WAIT).await;
    assert_eq!(done["State"], "Success", "{done}");
    let log = log_text(client, &task).await;
    assert!(
        log.contains("tags=Tier/Platinum,Region/Europe plan=premium"),
        "{log}"
    );
    assert!(log.contains("eu-only for Acme"), "{log}");
    app.stop().await;
}

async fn a_team_restricted_to_one_tenant_sees_and_deploys_only_that_tenant(mode: Mode) {
    let app = InProcess::start(mode).await;
    let admin = &app.client;
    let (_, test, acme, globex) = shop(admin).await;
    let release_id = release(admin).await;
    // Globex's deployment, made by the administrator, which Acme's team must not see.
    let globex_deployment = admin
        .post(
            &format!("{SPACE}/deployments"),
            json!({"ReleaseId": release_id, "EnvironmentId": test, "TenantId": globex}),
        )
        .await
        .expect(201);

    let user = admin
        .post(
            "/api/users",
            json!({"Username": "acme-ops", "EmailAddress": "ops@acme.example"}),
        )
        .await
        .expect(201);
    let key = admin
        .post(
            &format!("/api/users/{}/apikeys", id(&user)),
            json!({"Purpose": "tests"}),
        )
        .await
        .expect(201);
    let acme_ops = Client::new(admin.base.clone(), key["ApiKey"].as_str().unwrap());
    let team = admin
        .post(
            "/api/teams",
            json!({"Name": "Acme operators", "MemberUserIds": [id(&user)], "SpaceId": "Spaces-1"}),
        )
        .await
        .expect(201);
    let refused = admin
        .post(
            "/api/scopeduserroles",
            json!({"TeamId": id(&team), "UserRoleId": "userroles-projectdeployer", "SpaceId": "Spaces-1", "TenantIds": ["Tenants-999"]}),
        )
        .await
        .expect(400);
    assert!(problem(&refused).contains("TenantIds"), "{refused}");
    admin
        .post(
            "/api/scopeduserroles",
            json!({"TeamId": id(&team), "UserRoleId": "userroles-projectdeployer", "SpaceId": "Spaces-1", "TenantIds": [acme]}),
        )
        .await
        .expect(201);

    let seen = acme_ops.get(&format!("{SPACE}/tenants")).await.expect(200);
    assert_eq!(names(&seen), ["Acme"]);
    let seen_all = acme_ops
        .get(&format!("{SPACE}/tenants/all"))
        .await
        .expect(200);
    assert_eq!(names(&seen_all), ["Acme"]);
    acme_ops
        .get(&format!("{SPACE}/tenants/{globex}"))
        .await
        .expect(404);
    acme_ops
        .get(&format!("{SPACE}/tenants/{acme}"))
        .await
        .expect(200);
    // Project deployers may view tenants but not change them.
    let mut edited = acme_ops
        .get(&format!("{SPACE}/tenants/{acme}"))
        .await
        .expect(200);
    edited["Description"] = json!("changed");
    let refused = acme_ops
        .put(&format!("{SPACE}/tenants/{acme}"), edited)
        .await
        .expect(403);
    assert!(problem(&refused).contains("TenantEdit"), "{refused}");

    let refused = acme_ops
        .post(
            &format!("{SPACE}/deployments/create/tenanted/v1"),
            json!({"ProjectName": "Shop", "ReleaseVersion": "1.0.0", "EnvironmentName": "Test", "Tenants": ["Globex"]}),
        )
        .await
        .expect(403);
    assert!(problem(&refused).contains("DeploymentCreate"), "{refused}");
    let created = acme_ops
        .post(
            &format!("{SPACE}/deployments/create/tenanted/v1"),
            json!({"ProjectName": "Shop", "ReleaseVersion": "1.0.0", "EnvironmentName": "Test", "Tenants": ["Acme"]}),
        )
        .await
        .expect(201);
    let task = created["DeploymentServerTasks"][0]["ServerTaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = acme_ops.wait_for_task(&task, WAIT).await;
    assert_eq!(done["State"], "Success", "{done}");

    // Deployments for Globex are hidden from the team.
    let listed = acme_ops
        .get(&format!("{SPACE}/deployments"))
        .await
        .expect(200);
    assert_eq!(listed["TotalResults"], 1, "{listed}");
    assert_eq!(listed["Items"][0]["TenantId"], acme);
    acme_ops
        .get(&format!("{SPACE}/deployments/{}", id(&globex_deployment)))
        .await
        .expect(404);
    app.stop().await;
}

async fn tenant_variables_give_each_tenant_its_own_values_and_keep_secrets(mode: Mode) {
    const SECRET: &str = "acme-k3y-9931";
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let (project, test, acme, globex) = shop(client).await;
    // Templates: on the project (per environment) and on an included library set (once).
    let path = format!("{SPACE}/projects/{project}");
    let mut body = client.get(&path).await.expect(200);
    body["Templates"] = json!([
        {"Name": "Database", "Label": "Database name", "DefaultValue": "shop"},
        {"Name": "ApiKey", "DisplaySettings": {"Octopus.ControlType": "Sensitive"}}
    ]);
    let refused = client
        .put(&path, {
            let mut bad = body.clone();
            bad["Templates"][1]["DefaultValue"] = json!("in the clear");
            bad
        })
        .await
        .expect(400);
    assert!(
        problem(&refused).contains("Templates[1].DefaultValue"),
        "{refused}"
    );
    let saved = client.put(&path, body).await.expect(200);
    let database = saved["Templates"][0]["Id"].as_str().unwrap().to_owned();
    let api_key = saved["Templates"][1]["Id"].as_str().unwrap().to_owned();
    let library = client
        .post(
            &format!("{SPACE}/libraryvariablesets"),
            json!({"Name": "Support", "Templates": [{"Name": "SupportEmail", "DefaultValue": "help@shop.example"}]}),
        )
        .await
        .expect(201);
    let library_id = id(&library);
    let support = library["Templates"][0]["Id"].as_str().unwrap().to_owned();
    let mut body = client.get(&path).await.expect(200);
    body["IncludedLibraryVariableSetIds"] = json!([library_id]);
    client.put(&path, body).await.expect(200);
    // A project variable scoped to Test: a tenant's own value beats it.
    let variables_path = format!("{SPACE}/projects/{project}/variables");
    let mut variables = client.get(&variables_path).await.expect(200);
    let mut list = variables["Variables"].as_array().unwrap().clone();
    list.push(json!({"Name": "Database", "Value": "test_db", "Scope": {"Environment": [test]}}));
    variables["Variables"] = json!(list);
    client.put(&variables_path, variables).await.expect(200);
    let mut step = flow::script_step(
        "Greet",
        "Bash",
        "echo \"tenant=#{Octopus.Tenant.Name} db=#{Database} key=#{ApiKey} support=#{SupportEmail}\"",
    );
    step["Name"] = json!("Greet");
    flow::set_steps(client, "Spaces-1", &project, vec![step]).await;

    // Both tenants lack only the key: the other templates have defaults.
    let missing_path = format!("{SPACE}/tenants/variables-missing?includeDetails=true");
    let missing = client.get(&missing_path).await.expect(200);
    let named = |report: &Value| -> Vec<(String, String)> {
        report
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| {
                t["MissingVariables"].as_array().unwrap().iter().map(|m| {
                    (
                        t["TenantId"].as_str().unwrap().to_owned(),
                        m["VariableTemplateName"].as_str().unwrap().to_owned(),
                    )
                })
            })
            .collect()
    };
    assert_eq!(
        named(&missing),
        [
            (acme.clone(), "ApiKey".to_owned()),
            (globex.clone(), "ApiKey".to_owned())
        ],
        "{missing}"
    );
    assert_eq!(
        missing[0]["MissingVariables"][0]["EnvironmentId"],
        json!(test)
    );
    let brief = client
        .get(&format!(
            "{SPACE}/tenants/variables-missing?tenantId={globex}"
        ))
        .await
        .expect(200);
    assert_eq!(brief.as_array().unwrap().len(), 1, "{brief}");
    assert_eq!(brief[0]["TenantId"], json!(globex));
    assert_eq!(brief[0]["MissingVariables"], json!([]));
    let elsewhere = client
        .get(&format!(
            "{SPACE}/tenants/variables-missing?environmentId=Environments-999"
        ))
        .await
        .expect(200);
    assert_eq!(elsewhere, json!([]));

    // Acme's values: a database for Test, a secret key, its own support address.
    let acme_path = format!("{SPACE}/tenants/{acme}/variables");
    let mut values = client.get(&acme_path).await.expect(200);
    assert_eq!(values["TenantName"], "Acme");
    assert_eq!(
        values["ProjectVariables"][&project]["Variables"][&test][&api_key],
        json!({"HasValue": false, "NewValue": null}),
        "{values}"
    );
    values["ProjectVariables"][&project]["Variables"][&test] = json!({database.clone(): "acme_db", api_key.clone(): {"HasValue": true, "NewValue": SECRET}});
    values["LibraryVariables"][&library_id]["Variables"] =
        json!({support.clone(): "ops@acme.example"});
    let saved = client.put(&acme_path, values.clone()).await.expect(200);
    assert_eq!(
        saved["ProjectVariables"][&project]["Variables"][&test][&database],
        "acme_db"
    );
    assert_eq!(
        saved["ProjectVariables"][&project]["Variables"][&test][&api_key],
        json!({"HasValue": true, "NewValue": null})
    );
    assert!(!saved.to_string().contains(SECRET), "{saved}");
    let config = app.config();
    assert!(
        cuttle_testkit::stored_in_clear(config, SECRET)
            .await
            .unwrap()
            .is_empty(),
        "the tenant's secret is stored in the clear"
    );
    // Sent back as shown, the secret stays.
    client.put(&acme_path, saved.clone()).await.expect(200);
    // Mistakes name the field and change nothing.
    let mut bad = saved.clone();
    bad["ProjectVariables"][&project]["Variables"][&test]["no-such-template"] = json!("x");
    let refused = client.put(&acme_path, bad).await.expect(400);
    assert!(problem(&refused).contains("no-such-template"), "{refused}");
    let mut bad = saved.clone();
    bad["ProjectVariables"][&project]["Variables"]["Environments-999"] = json!({});
    let refused = client.put(&acme_path, bad).await.expect(400);
    assert!(problem(&refused).contains("Environments-999"), "{refused}");

    // Now only Globex lacks a value.
    let missing = client.get(&missing_path).await.expect(200);
    assert_eq!(
        named(&missing),
        [(globex.clone(), "ApiKey".to_owned())],
        "{missing}"
    );

    // A clone takes the tags, connections and values (the secret still sealed, still set).
    let cloned = client
        .post(
            &format!("{SPACE}/tenants?clone={acme}"),
            json!({"Name": "Acme EU", "Description": "Acme's European arm"}),
        )
        .await
        .expect(201);
    let clone_id = id(&cloned);
    assert_eq!(cloned["ClonedFromTenantId"], json!(acme));
    assert_eq!(cloned["Description"], "Acme's European arm");
    assert_eq!(cloned["ProjectEnvironments"][&project], json!([test]));
    assert_eq!(cloned["TenantTags"], json!(["Tier/Gold", "Region/EU"]));
    let clone_values = client
        .get(&format!("{SPACE}/tenants/{clone_id}/variables"))
        .await
        .expect(200);
    assert_eq!(
        clone_values["ProjectVariables"][&project]["Variables"][&test][&database],
        "acme_db"
    );
    assert_eq!(
        clone_values["ProjectVariables"][&project]["Variables"][&test][&api_key],
        json!({"HasValue": true, "NewValue": null})
    );
    let clones = client
        .get(&format!("{SPACE}/tenants?clonedFromTenantId={acme}"))
        .await
        .expect(200);
    assert_eq!(clones["TotalResults"], 1, "{clones}");
    client
        .post(
            &format!("{SPACE}/tenants?clone=Tenants-999"),
            json!({"Name": "Nobody's"}),
        )
        .await
        .expect(404);
    let named_twice = client
        .post(
            &format!("{SPACE}/tenants?clone={acme}"),
            json!({"Name": "Acme"}),
        )
        .await
        .expect(400);
    assert!(problem(&named_twice).contains("Name"), "{named_twice}");

    // Each tenant's deployment sees its own values; Globex gets the defaults and no key.
    release(client).await;
    let created = client
        .post(
            &format!("{SPACE}/deployments/create/tenanted/v1"),
            json!({"ProjectName": "Shop", "ReleaseVersion": "1.0.0", "EnvironmentName": "Test", "Tenants": [acme, globex]}),
        )
        .await
        .expect(201);
    let mut logs = Vec::new();
    for entry in created["DeploymentServerTasks"].as_array().unwrap() {
        let task = entry["ServerTaskId"].as_str().unwrap().to_owned();
        let done = client.wait_for_task(&task, WAIT).await;
        assert_eq!(done["State"], "Success", "{done}");
        logs.push(log_text(client, &task).await);
    }
    let all = logs.join("\n");
    assert!(
        all.contains("tenant=Acme db=acme_db key=******** support=ops@acme.example"),
        "{all}"
    );
    assert!(
        all.contains("tenant=Globex db=shop key=#{ApiKey} support=help@shop.example"),
        "{all}"
    );
    assert!(!all.contains(SECRET), "{all}");

    // The preview shows the same, the secret masked.
    let preview = client
        .get(&format!(
            "{SPACE}/variables/preview?project={project}&environment=Test&tenant=Acme"
        ))
        .await
        .expect(200);
    let database_value = preview["Variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["Name"] == "Database")
        .map(|v| (v["Value"].clone(), v["Source"].clone()));
    assert_eq!(
        database_value,
        Some((json!("acme_db"), json!("Tenant 'Acme'"))),
        "{preview}"
    );
    assert!(!preview.to_string().contains(SECRET), "{preview}");
    app.stop().await;
}

/// A polling deployment target in Test tagged `web`, with `extra` fields.
fn polling_target(name: &str, test: &str, seed: u8, extra: Value) -> Value {
    let mut body = json!({
        "Name": name, "EnvironmentIds": [test], "Roles": ["web"],
        "Endpoint": {"CommunicationStyle": "TentacleActive",
                     "Uri": format!("poll://{name}/"),
                     "Thumbprint": format!("{seed:02X}").repeat(20)}
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

async fn deployment_targets_take_tenants_by_id_or_tag(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let tier = tag_sets(client).await;
    let test = id(&client
        .post(&format!("{SPACE}/environments"), json!({"Name": "Test"}))
        .await
        .expect(201));
    let acme = tenant(client, "Acme", &["Tier/Gold"], json!({})).await;
    let machines = format!("{SPACE}/machines");
    for (extra, field) in [
        (json!({"TenantIds": [acme.clone()]}), "TenantIds"),
        (
            json!({"TenantedDeploymentParticipation": "Tenanted", "TenantIds": ["Tenants-999"]}),
            "TenantIds[0]",
        ),
        (
            json!({"TenantedDeploymentParticipation": "Tenanted", "TenantTags": ["Tier/Bronze"]}),
            "TenantTags[0]",
        ),
        (
            json!({"TenantedDeploymentParticipation": "Sometimes"}),
            "TenantedDeploymentParticipation",
        ),
    ] {
        let refused = client
            .post(&machines, polling_target("bad", &test, 9, extra.clone()))
            .await
            .expect(400);
        assert!(problem(&refused).contains(field), "{extra}: {refused}");
    }
    let by_id = client
        .post(
            &machines,
            polling_target(
                "acme-web",
                &test,
                1,
                json!({"TenantedDeploymentParticipation": "Tenanted", "TenantIds": [acme.clone()]}),
            ),
        )
        .await
        .expect(201);
    let by_tag = client
        .post(
            &machines,
            polling_target(
                "gold-web",
                &test,
                2,
                json!({"TenantedDeploymentParticipation": "TenantedOrUntenanted", "TenantTags": ["tier/gold"]}),
            ),
        )
        .await
        .expect(201);
    assert_eq!(by_tag["TenantTags"], json!(["Tier/Gold"]));
    let plain = client
        .post(&machines, polling_target("plain-web", &test, 3, json!({})))
        .await
        .expect(201);
    assert_eq!(plain["TenantedDeploymentParticipation"], "Untenanted");
    let listed = client
        .get(&format!("{machines}?tenantIds={acme}"))
        .await
        .expect(200);
    assert_eq!(names(&listed), ["acme-web"]);
    let listed = client
        .get(&format!("{machines}?tenantTags=Tier/Gold"))
        .await
        .expect(200);
    assert_eq!(names(&listed), ["gold-web"]);

    // A renamed tag is renamed on the target; a deleted tenant leaves the target's list.
    let tier_id = id(&tier);
    let mut renamed = tier.clone();
    renamed["Tags"][0]["Name"] = json!("Platinum");
    client
        .put(&format!("{SPACE}/tagsets/{tier_id}"), renamed)
        .await
        .expect(200);
    let gold_web = client
        .get(&format!("{machines}/{}", id(&by_tag)))
        .await
        .expect(200);
    assert_eq!(gold_web["TenantTags"], json!(["Tier/Platinum"]));
    client
        .delete(&format!("{SPACE}/tenants/{acme}"))
        .await
        .expect(200);
    let acme_web = client
        .get(&format!("{machines}/{}", id(&by_id)))
        .await
        .expect(200);
    assert_eq!(acme_web["TenantIds"], json!([]));
    app.stop().await;
}

/// Channels: their tenant tags and lifecycle are checked when saved; a release in a channel with
/// tenant tags deploys only to tenants matching them; a channel stays in its project; the
/// default moves only by making another channel the default; a default channel, or one with
/// releases, is not deleted.
async fn a_channel_with_tenant_tags_releases_only_to_matching_tenants(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let (project, _test, acme, globex) = shop(client).await;
    let channels = format!("{SPACE}/channels");
    for (extra, field) in [
        (json!({"TenantTags": ["Tier/Bronze"]}), "TenantTags[0]"),
        (json!({"LifecycleId": "Lifecycles-999"}), "LifecycleId"),
    ] {
        let mut body = json!({"Name": "Gold only", "ProjectId": project});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let refused = client.post(&channels, body).await.expect(400);
        assert!(problem(&refused).contains(field), "{extra}: {refused}");
    }
    let gold = client
        .post(
            &channels,
            json!({"Name": "Gold only", "ProjectId": project, "TenantTags": ["tier/gold"]}),
        )
        .await
        .expect(201);
    assert_eq!(gold["TenantTags"], json!(["Tier/Gold"]));
    let gold_id = id(&gold);
    client
        .post(
            &format!("{SPACE}/releases/create/v1"),
            json!({"ProjectName": "Shop", "ReleaseVersion": "2.0.0", "ChannelName": "Gold only"}),
        )
        .await
        .expect(201);
    let deploy = |tenant: &str| json!({"ProjectName": "Shop", "ReleaseVersion": "2.0.0", "EnvironmentName": "Test", "Tenants": [tenant]});
    let create = format!("{SPACE}/deployments/create/tenanted/v1");
    let refused = client.post(&create, deploy(&globex)).await.expect(400);
    assert!(
        problem(&refused).contains("does not match the tenant tags of channel 'Gold only'"),
        "{refused}"
    );
    let created = client.post(&create, deploy(&acme)).await.expect(201);
    let task = created["DeploymentServerTasks"][0]["ServerTaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = client.wait_for_task(&task, WAIT).await;
    assert_eq!(done["State"], "Success", "{done}");

    // A channel stays in its project, and the default moves only to another channel.
    let gold_path = format!("{channels}/{gold_id}");
    let mut moved = gold.clone();
    moved["ProjectId"] = json!("Projects-999");
    let refused = client.put(&gold_path, moved).await.expect(400);
    assert!(problem(&refused).contains("ProjectId"), "{refused}");
    let listed = client
        .get(&format!("{SPACE}/projects/{project}/channels"))
        .await
        .expect(200);
    let default = listed["Items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["IsDefault"] == true)
        .unwrap()
        .clone();
    let default_path = format!("{channels}/{}", id(&default));
    let mut cleared = default.clone();
    cleared["IsDefault"] = json!(false);
    let refused = client.put(&default_path, cleared).await.expect(400);
    assert!(problem(&refused).contains("IsDefault"), "{refused}");
    // A channel with a release is kept.
    let refused = client.delete(&gold_path).await.expect(400);
    assert!(problem(&refused).contains("1 release"), "{refused}");
    let mut promoted = gold.clone();
    promoted["IsDefault"] = json!(true);
    client.put(&gold_path, promoted).await.expect(200);
    let former = client.get(&default_path).await.expect(200);
    assert_eq!(former["IsDefault"], false, "{former}");
    let refused = client.delete(&gold_path).await.expect(400);
    assert!(problem(&refused).contains("default channel"), "{refused}");
    client.delete(&default_path).await.expect(200);
    client.get(&default_path).await.expect(404);
    app.stop().await;
}

/// [`shop`] with a Production environment, a project template `Database`, and an included
/// library set "Support" with `library_templates`; Acme runs in Test and Production, Globex in
/// Test only.
struct Templated {
    project: String,
    test: String,
    production: String,
    acme: String,
    globex: String,
    library_id: String,
    /// The library set's template ids, in order.
    library_templates: Vec<String>,
    /// The project template's id.
    database: String,
}

async fn templated_shop(client: &Client, library_templates: Value) -> Templated {
    let (project, test, acme, globex) = shop(client).await;
    let production = id(&client
        .post(
            &format!("{SPACE}/environments"),
            json!({"Name": "Production"}),
        )
        .await
        .expect(201));
    let library = client
        .post(
            &format!("{SPACE}/libraryvariablesets"),
            json!({"Name": "Support", "Templates": library_templates}),
        )
        .await
        .expect(201);
    let library_id = id(&library);
    let library_templates = library["Templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    let project_path = format!("{SPACE}/projects/{project}");
    let mut body = client.get(&project_path).await.expect(200);
    body["Templates"] = json!([{"Name": "Database"}]);
    body["IncludedLibraryVariableSetIds"] = json!([library_id]);
    let saved = client.put(&project_path, body).await.expect(200);
    let database = id(&saved["Templates"][0]);
    let acme_path = format!("{SPACE}/tenants/{acme}");
    let mut body = client.get(&acme_path).await.expect(200);
    body["ProjectEnvironments"][&project] = json!([test, production]);
    client.put(&acme_path, body).await.expect(200);
    Templated {
        project,
        test,
        production,
        acme,
        globex,
        library_id,
        library_templates,
        database,
    }
}

/// Tenant values follow variable permissions: a team that may change variables only in Test
/// sees and changes a tenant's values for Test, never Production's, and changes the common
/// (library set) values only of a tenant connected in Test alone.
async fn a_team_scoped_to_test_sees_and_changes_only_the_tenant_values_of_test(mode: Mode) {
    let app = InProcess::start(mode).await;
    let admin = &app.client;
    let Templated {
        project,
        test,
        production,
        acme,
        globex,
        library_id,
        library_templates,
        database,
    } = templated_shop(admin, json!([{"Name": "SupportEmail"}])).await;
    let support = library_templates[0].clone();
    let acme_path = format!("{SPACE}/tenants/{acme}");
    let acme_values = format!("{acme_path}/variables");
    let mut values = admin.get(&acme_values).await.expect(200);
    values["ProjectVariables"][&project]["Variables"] = json!({
        test.clone(): {database.clone(): "acme_test"},
        production.clone(): {database.clone(): "acme_prod"}
    });
    values["LibraryVariables"][&library_id]["Variables"] =
        json!({support.clone(): "ops@acme.example"});
    admin.put(&acme_values, values).await.expect(200);

    // QA changes variables in Test only, and may edit tenants.
    let (qa_user, qa) = user_with_key(admin, "qa").await;
    scoped_team(
        admin,
        "QA",
        &[&qa_user],
        "userroles-projectcontributor",
        &[&test],
    )
    .await;
    scoped_team(
        admin,
        "Tenants",
        &[&qa_user],
        "userroles-tenantmanager",
        &[],
    )
    .await;

    // QA sees Test's values and the common ones, not Production's.
    let seen = qa.get(&acme_values).await.expect(200);
    let environments = &seen["ProjectVariables"][&project]["Variables"];
    assert_eq!(environments[&test][&database], "acme_test", "{seen}");
    assert!(environments.get(&production).is_none(), "{seen}");
    assert!(!seen.to_string().contains("acme_prod"), "{seen}");
    assert_eq!(
        seen["LibraryVariables"][&library_id]["Variables"][&support],
        "ops@acme.example"
    );

    // Changing Test's value works, and Production's value, not sent, is kept.
    let mut change = seen.clone();
    change["ProjectVariables"][&project]["Variables"][&test][&database] = json!("qa_test");
    let saved = qa.put(&acme_values, change).await.expect(200);
    assert!(
        saved["ProjectVariables"][&project]["Variables"]
            .get(&production)
            .is_none(),
        "{saved}"
    );
    let stored = admin.get(&acme_values).await.expect(200);
    let environments = &stored["ProjectVariables"][&project]["Variables"];
    assert_eq!(environments[&test][&database], "qa_test", "{stored}");
    assert_eq!(
        environments[&production][&database], "acme_prod",
        "{stored}"
    );

    // Production's values cannot be written, even as they are (a guess must not probe them).
    let mut crafted = saved.clone();
    crafted["ProjectVariables"][&project]["Variables"][&production] =
        json!({database.clone(): "acme_prod"});
    let refused = qa.put(&acme_values, crafted).await.expect(403);
    assert!(problem(&refused).contains("VariableEdit"), "{refused}");
    // The common values also apply in Production: QA sees them but may not change them.
    let mut common = saved.clone();
    common["LibraryVariables"][&library_id]["Variables"][&support] = json!("qa@acme.example");
    let refused = qa.put(&acme_values, common).await.expect(403);
    assert!(problem(&refused).contains("VariableEdit"), "{refused}");
    assert!(problem(&refused).contains("Support"), "{refused}");
    let stored = admin.get(&acme_values).await.expect(200);
    assert_eq!(
        stored["LibraryVariables"][&library_id]["Variables"][&support],
        "ops@acme.example"
    );
    assert_eq!(
        stored["ProjectVariables"][&project]["Variables"][&production][&database],
        "acme_prod"
    );

    // Globex runs only in Test: QA changes its common values too.
    let globex_values = format!("{SPACE}/tenants/{globex}/variables");
    let mut change = qa.get(&globex_values).await.expect(200);
    change["LibraryVariables"][&library_id]["Variables"][&support] = json!("qa@globex.example");
    let saved = qa.put(&globex_values, change).await.expect(200);
    assert_eq!(
        saved["LibraryVariables"][&library_id]["Variables"][&support],
        "qa@globex.example"
    );

    // The per-value routes follow the same rules. A common value for Production only is hidden
    // from QA, and kept when QA saves.
    let common_path = format!("{acme_path}/commonvariables");
    admin
        .put(
            &common_path,
            json!({"Variables": [
                {"LibraryVariableSetId": library_id, "TemplateId": support, "Value": "ops@acme.example", "Scope": {"EnvironmentIds": []}},
                {"LibraryVariableSetId": library_id, "TemplateId": support, "Value": "prod@acme.example", "Scope": {"EnvironmentIds": [production]}}
            ]}),
        )
        .await
        .expect(200);
    let seen = qa.get(&common_path).await.expect(200);
    assert_eq!(seen["Variables"].as_array().unwrap().len(), 1, "{seen}");
    assert!(!seen.to_string().contains("prod@acme.example"), "{seen}");
    // QA adds a value for Test: it may change variables everywhere that value applies.
    let mut values = seen["Variables"].as_array().unwrap().clone();
    values.push(json!({"LibraryVariableSetId": library_id, "TemplateId": support, "Value": "test@acme.example", "Scope": {"EnvironmentIds": [test]}}));
    let saved = qa
        .put(&common_path, json!({"Variables": values.clone()}))
        .await
        .expect(200);
    assert_eq!(saved["Variables"].as_array().unwrap().len(), 2, "{saved}");
    let all = admin.get(&common_path).await.expect(200);
    assert_eq!(all["Variables"].as_array().unwrap().len(), 3, "{all}");
    // But not the value for every environment, nor one for Production.
    let mut everywhere = values.clone();
    everywhere[0]["Value"] = json!("qa@acme.example");
    let refused = qa
        .put(&common_path, json!({"Variables": everywhere}))
        .await
        .expect(403);
    assert!(problem(&refused).contains("VariableEdit"), "{refused}");
    let mut production_too = values.clone();
    production_too.push(json!({"LibraryVariableSetId": library_id, "TemplateId": support, "Value": "guess", "Scope": {"EnvironmentIds": [production]}}));
    qa.put(&common_path, json!({"Variables": production_too}))
        .await
        .expect(403);
    // Project values: QA sees and sends Test's; Production's stays.
    let project_values = format!("{acme_path}/projectvariables");
    let seen = qa.get(&project_values).await.expect(200);
    assert!(
        seen["Variables"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["Scope"]["EnvironmentIds"] == json!([test])),
        "{seen}"
    );
    qa.put(
        &project_values,
        json!({"Variables": [{"ProjectId": project, "TemplateId": database, "Value": "qa_v2", "Scope": {"EnvironmentIds": [test]}}]}),
    )
    .await
    .expect(200);
    let stored = admin.get(&acme_values).await.expect(200);
    let environments = &stored["ProjectVariables"][&project]["Variables"];
    assert_eq!(environments[&test][&database], "qa_v2", "{stored}");
    assert_eq!(
        environments[&production][&database], "acme_prod",
        "{stored}"
    );
    qa.put(
        &project_values,
        json!({"Variables": [{"ProjectId": project, "TemplateId": database, "Value": "x", "Scope": {"EnvironmentIds": [test, production]}}]}),
    )
    .await
    .expect(403);
    app.stop().await;
}

/// The per-value routes (`commonvariables`, `projectvariables`): a library set value scoped to
/// Production wins there over the one for every environment, project values are set for several
/// environments at once, secrets stay sealed when sent back, mistakes name their field, and a
/// deployment to each environment gets that environment's values.
async fn values_set_one_at_a_time_apply_in_their_environments(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let Templated {
        project,
        test,
        production,
        acme,
        library_id,
        library_templates,
        database,
        ..
    } = templated_shop(
        client,
        json!([
            {"Name": "SupportEmail"},
            {"Name": "SupportToken", "DisplaySettings": {"Octopus.ControlType": "Sensitive"}}
        ]),
    )
    .await;
    let (email, token) = (library_templates[0].clone(), library_templates[1].clone());
    let acme_path = format!("{SPACE}/tenants/{acme}");
    let mut step = flow::script_step(
        "Show",
        "Bash",
        "echo \"db=#{Database} support=#{SupportEmail} token=#{SupportToken}\"",
    );
    step["Name"] = json!("Show");
    flow::set_steps(client, "Spaces-1", &project, vec![step]).await;

    // Nothing set yet: every template is missing.
    let common_path = format!("{acme_path}/commonvariables");
    let empty = client
        .get(&format!("{common_path}?includeMissingVariables=true"))
        .await
        .expect(200);
    assert_eq!(empty["Variables"], json!([]), "{empty}");
    assert_eq!(empty["MissingVariables"].as_array().unwrap().len(), 2);
    let project_values_path = format!("{acme_path}/projectvariables");
    let empty = client
        .get(&format!(
            "{project_values_path}?includeMissingVariables=true"
        ))
        .await
        .expect(200);
    assert_eq!(empty["MissingVariables"].as_array().unwrap().len(), 2);

    // Common values: one everywhere, one for Production only, and a secret.
    let common = |email_production: &str, token_value: Value| {
        json!({"Variables": [
            {"LibraryVariableSetId": library_id, "TemplateId": email, "Value": "help@acme.example", "Scope": {"EnvironmentIds": []}},
            {"LibraryVariableSetId": library_id, "TemplateId": email, "Value": email_production, "Scope": {"EnvironmentIds": [production]}},
            {"LibraryVariableSetId": library_id, "TemplateId": token, "Value": token_value, "Scope": {"EnvironmentIds": []}}
        ]})
    };
    let saved = client
        .put(
            &common_path,
            common("oncall@acme.example", json!("t0k3n-acme-77")),
        )
        .await
        .expect(200);
    assert_eq!(saved["Variables"].as_array().unwrap().len(), 3, "{saved}");
    assert!(!saved.to_string().contains("t0k3n-acme-77"), "{saved}");
    let shown_token = saved["Variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["TemplateId"] == json!(token))
        .unwrap()
        .clone();
    assert_eq!(
        shown_token["Value"],
        json!({"HasValue": true, "NewValue": null})
    );
    assert!(
        shown_token["Id"]
            .as_str()
            .unwrap()
            .starts_with("TenantVariables-")
    );
    // Sent back as shown, the secret stays; the grouped view shows the value for every
    // environment.
    let again = client
        .put(
            &common_path,
            common(
                "oncall@acme.example",
                json!({"HasValue": true, "NewValue": null}),
            ),
        )
        .await
        .expect(200);
    assert_eq!(again["Variables"], saved["Variables"]);
    // Sent with its id, a secret keeps its value when its scope changes: to Production, then
    // back to every environment (the deployments below print it masked, so it is still there).
    let find_token = |page: &Value| {
        page["Variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["TemplateId"] == json!(token))
            .unwrap()
            .clone()
    };
    for environments in [json!([production]), json!([])] {
        let current = client.get(&common_path).await.expect(200);
        let mut moved = common(
            "oncall@acme.example",
            json!({"HasValue": true, "NewValue": null}),
        );
        moved["Variables"][2]["Id"] = find_token(&current)["Id"].clone();
        moved["Variables"][2]["Scope"]["EnvironmentIds"] = environments.clone();
        let now = client.put(&common_path, moved).await.expect(200);
        let token_now = find_token(&now);
        assert_eq!(token_now["Scope"]["EnvironmentIds"], environments, "{now}");
        assert_eq!(
            token_now["Value"],
            json!({"HasValue": true, "NewValue": null})
        );
    }
    let grouped = client
        .get(&format!("{acme_path}/variables"))
        .await
        .expect(200);
    assert_eq!(
        grouped["LibraryVariables"][&library_id]["Variables"][&email],
        "help@acme.example"
    );

    // Project values: one value for both environments, then Production's own.
    let saved = client
        .put(
            &project_values_path,
            json!({"Variables": [
                {"ProjectId": project, "TemplateId": database, "Value": "acme_test", "Scope": {"EnvironmentIds": [test]}},
                {"ProjectId": project, "TemplateId": database, "Value": "acme_prod", "Scope": {"EnvironmentIds": [production]}}
            ]}),
        )
        .await
        .expect(200);
    assert_eq!(saved["Variables"].as_array().unwrap().len(), 2, "{saved}");
    assert_eq!(
        grouped_value(client, &acme_path, &project, &production, &database).await,
        "acme_prod"
    );

    // Mistakes name their field and change nothing.
    for (body, field) in [
        (
            json!({"Variables": [{"ProjectId": project, "TemplateId": database, "Value": "x", "Scope": {"EnvironmentIds": []}}]}),
            "Variables[0].Scope.EnvironmentIds",
        ),
        (
            json!({"Variables": [{"ProjectId": project, "TemplateId": database, "Value": "x", "Scope": {"EnvironmentIds": ["Environments-999"]}}]}),
            "Variables[0].Scope.EnvironmentIds",
        ),
        (
            json!({"Variables": [
                {"ProjectId": project, "TemplateId": database, "Value": "x", "Scope": {"EnvironmentIds": [test]}},
                {"ProjectId": project, "TemplateId": database, "Value": "y", "Scope": {"EnvironmentIds": [test, production]}}
            ]}),
            "Variables[1].Scope.EnvironmentIds",
        ),
        (
            json!({"Variables": [{"ProjectId": "Projects-999", "TemplateId": database, "Value": "x", "Scope": {"EnvironmentIds": [test]}}]}),
            "Variables[0].ProjectId",
        ),
        (
            json!({"Variables": [{"ProjectId": project, "TemplateId": "nope", "Value": "x", "Scope": {"EnvironmentIds": [test]}}]}),
            "Variables[0].TemplateId",
        ),
    ] {
        let refused = client.put(&project_values_path, body).await.expect(400);
        assert!(problem(&refused).contains(field), "{field}: {refused}");
    }
    let overlapping = json!({"Variables": [
        {"LibraryVariableSetId": library_id, "TemplateId": email, "Value": "a", "Scope": {"EnvironmentIds": [test, production]}},
        {"LibraryVariableSetId": library_id, "TemplateId": email, "Value": "b", "Scope": {"EnvironmentIds": [production]}}
    ]});
    let refused = client.put(&common_path, overlapping).await.expect(400);
    assert!(
        problem(&refused).contains("Variables[1].Scope.EnvironmentIds"),
        "{refused}"
    );
    assert_eq!(
        grouped_value(client, &acme_path, &project, &test, &database).await,
        "acme_test"
    );

    // Each environment's deployment gets its own values; the secret is masked in the log.
    release(client).await;
    for (environment, expected) in [
        (
            "Test",
            "db=acme_test support=help@acme.example token=********",
        ),
        (
            "Production",
            "db=acme_prod support=oncall@acme.example token=********",
        ),
    ] {
        let created = client
            .post(
                &format!("{SPACE}/deployments/create/tenanted/v1"),
                json!({"ProjectName": "Shop", "ReleaseVersion": "1.0.0", "EnvironmentName": environment, "Tenants": ["Acme"]}),
            )
            .await
            .expect(201);
        let task = created["DeploymentServerTasks"][0]["ServerTaskId"]
            .as_str()
            .unwrap()
            .to_owned();
        let done = client.wait_for_task(&task, WAIT).await;
        assert_eq!(done["State"], "Success", "{done}");
        let log = log_text(client, &task).await;
        assert!(log.contains(expected), "{environment}: {log}");
        assert!(!log.contains("t0k3n-acme-77"), "{log}");
    }
    app.stop().await;
}

/// A project value of a tenant as the grouped view (`/variables`) shows it.
async fn grouped_value(
    client: &Client,
    tenant_path: &str,
    project: &str,
    environment: &str,
    template: &str,
) -> Value {
    let grouped = client
        .get(&format!("{tenant_path}/variables"))
        .await
        .expect(200);
    grouped["ProjectVariables"][project]["Variables"][environment][template].clone()
}
