//! Permissions and isolation end to end, in both modes: a team scoped to one environment deploys
//! there and nowhere else; users, API keys, teams and roles are managed through Octopus's routes;
//! and every route of `cuttle_api::authz::ROUTES` is called as principals of two organisations
//! and of a scoped team, none of whom ever sees the other organisation's data.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::InProcess;
use cuttle_api::authz::{ROUTES, Rule};
use cuttle_testkit::flow::{scoped_team, user_with_key};
use cuttle_testkit::{Client, Mode, flow};
use serde_json::{Value, json};
use std::time::Duration;

both_modes!(
    a_team_scoped_to_test_deploys_to_test_and_is_refused_production,
    a_team_scoped_to_test_sees_and_manages_only_the_targets_in_test,
    users_keys_teams_and_roles_are_managed_and_checked,
    no_route_lets_one_organisation_see_another,
    organisations_are_rate_limited_and_held_to_quotas,
    a_team_restricted_to_one_project_sees_and_changes_only_it,
    a_team_scoped_to_test_sees_and_changes_only_test_variables,
);

const WAIT: Duration = Duration::from_secs(60);

fn id(value: &Value) -> String {
    value["Id"].as_str().unwrap().to_owned()
}

/// User "qa" in team "QA", a project deployer restricted to the environment `test`.
async fn qa_deployer(admin: &Client, test: &str) -> Client {
    let (qa_user, qa) = user_with_key(admin, "qa").await;
    scoped_team(
        admin,
        "QA",
        &[&qa_user],
        "userroles-projectdeployer",
        &[test],
    )
    .await;
    qa
}

/// Project "Web" running `script` in Test, and a Production environment; returns (project id,
/// Test's id, Production's id).
async fn web_in_test_and_production(admin: &Client, script: &str) -> (String, String, String) {
    let project = flow::project_with_script(admin, "Spaces-1", "Test", "Web", script).await;
    let production = id(&admin
        .post("/api/Spaces-1/environments", json!({"Name": "Production"}))
        .await
        .expect(201));
    let test = id(&admin
        .get("/api/Spaces-1/environments?name=Test")
        .await
        .expect(200)["Items"][0]);
    (project, test, production)
}

async fn a_team_scoped_to_test_deploys_to_test_and_is_refused_production(mode: Mode) {
    let app = InProcess::start(mode).await;
    let admin = &app.client;
    // Each deployment publishes an artifact, seen as its deployment is.
    let (project, test, production) = web_in_test_and_production(
        admin,
        "echo deployed > report.txt; new_octopusartifact report.txt",
    )
    .await;
    let release = admin
        .post(
            "/api/Spaces-1/releases",
            json!({"ProjectId": project, "Version": "1.0.0"}),
        )
        .await
        .expect(201);
    let qa = qa_deployer(admin, &test).await;

    // Test: allowed, and the deployment runs.
    let deployed = qa
        .post(
            "/api/Spaces-1/deployments",
            json!({"ReleaseId": id(&release), "EnvironmentId": test}),
        )
        .await
        .expect(201);
    let task = qa
        .wait_for_task(deployed["TaskId"].as_str().unwrap(), WAIT)
        .await;
    assert_eq!(task["State"], "Success", "{task}");

    // Production: 403 naming the permission, and no deployment is created.
    let refused = qa
        .post(
            "/api/Spaces-1/deployments",
            json!({"ReleaseId": id(&release), "EnvironmentId": production}),
        )
        .await
        .expect(403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Missing permission: DeploymentCreate"),
        "{refused}"
    );
    let refused = qa
        .post(
            "/api/Spaces-1/deployments/create/untenanted/v1",
            json!({"ProjectName": "Web", "ReleaseVersion": "1.0.0", "EnvironmentNames": ["Production"]}),
        )
        .await
        .expect(403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("DeploymentCreate")
    );
    let deployments = admin.get("/api/Spaces-1/deployments").await.expect(200);
    assert_eq!(deployments["TotalResults"], 1, "{deployments}");
    // The team does not see deployments to environments outside its scope.
    let to_production = admin
        .post(
            "/api/Spaces-1/deployments",
            json!({"ReleaseId": id(&release), "EnvironmentId": production}),
        )
        .await
        .expect(201);
    let seen = qa.get("/api/Spaces-1/deployments").await.expect(200);
    assert_eq!(seen["TotalResults"], 1, "{seen}");
    assert_eq!(seen["Items"][0]["EnvironmentId"], test.as_str());
    qa.get(&format!("/api/Spaces-1/deployments/{}", id(&to_production)))
        .await
        .expect(404);
    let production_task = admin
        .wait_for_task(to_production["TaskId"].as_str().unwrap(), WAIT)
        .await;
    assert_eq!(production_task["State"], "Success", "{production_task}");
    let artifacts = admin.get("/api/Spaces-1/artifacts").await.expect(200);
    assert_eq!(artifacts["TotalResults"], 2, "{artifacts}");
    let seen = qa.get("/api/Spaces-1/artifacts").await.expect(200);
    assert_eq!(seen["TotalResults"], 1, "{seen}");
    assert_eq!(seen["Items"][0]["ServerTaskId"], task["Id"], "{seen}");
    let hidden = artifacts["Items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["ServerTaskId"] == production_task["Id"])
        .unwrap();
    for path in ["", "/content"] {
        qa.get(&format!("/api/Spaces-1/artifacts/{}{path}", id(hidden)))
            .await
            .expect(404);
    }
    // A project deployer may not delete artifacts anywhere.
    let refused = qa
        .delete(&format!("/api/Spaces-1/artifacts/{}", id(hidden)))
        .await
        .expect(403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .ends_with("ArtifactDelete")
    );
    qa.get(&format!(
        "/api/Spaces-1/artifacts/{}",
        id(&seen["Items"][0])
    ))
    .await
    .expect(200);
    let of_release = qa
        .get(&format!(
            "/api/Spaces-1/releases/{}/deployments",
            id(&release)
        ))
        .await
        .expect(200);
    assert_eq!(of_release["TotalResults"], 1, "{of_release}");
    qa.get(&format!("/api/Spaces-1/releases/{}", id(&release)))
        .await
        .expect(200);

    // The team sees only the environment it is scoped to.
    let environments = qa.get("/api/Spaces-1/environments").await.expect(200);
    assert_eq!(environments["TotalResults"], 1, "{environments}");
    assert_eq!(environments["Items"][0]["Id"], test.as_str());
    qa.get(&format!("/api/Spaces-1/environments/{production}"))
        .await
        .expect(404);
    // A project deployer views projects but does not create environments or spaces.
    qa.get("/api/Spaces-1/projects").await.expect(200);
    let refused = qa
        .post("/api/Spaces-1/environments", json!({"Name": "Staging"}))
        .await
        .expect(403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("EnvironmentCreate")
    );
    qa.post("/api/spaces", json!({"Name": "Mine"}))
        .await
        .expect(403);

    // What the user holds, as Octopus reports it.
    let held = qa.get("/api/users/me/permissions").await.expect(200);
    let scopes = held["SpacePermissions"]["DeploymentCreate"]
        .as_array()
        .unwrap();
    assert_eq!(scopes.len(), 1, "{held}");
    assert_eq!(scopes[0]["SpaceId"], "Spaces-1");
    assert_eq!(scopes[0]["RestrictedToEnvironmentIds"], json!([test]));
    assert!(
        held["SpacePermissions"]["EnvironmentCreate"].is_null(),
        "{held}"
    );
    assert!(
        held["Teams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["Name"] == "QA"),
        "{held}"
    );
    app.stop().await;
}

async fn a_team_scoped_to_test_sees_and_manages_only_the_targets_in_test(mode: Mode) {
    let app = InProcess::start(mode).await;
    let admin = &app.client;
    let environment = |name: &'static str| async move {
        id(&admin
            .post("/api/Spaces-1/environments", json!({"Name": name}))
            .await
            .expect(201))
    };
    let (test, production) = (environment("Test").await, environment("Production").await);
    let target = |name: &str, environments: Vec<&str>, seed: u8| {
        json!({"Name": name, "EnvironmentIds": environments, "Roles": ["web"],
               "Endpoint": {"CommunicationStyle": "TentaclePassive",
                            "Uri": format!("https://127.0.0.1:1{seed:04}/"),
                            "Thumbprint": format!("{seed:02X}").repeat(20)}})
    };
    let mut in_test = admin
        .post("/api/Spaces-1/machines", target("web-test", vec![&test], 1))
        .await
        .expect(201);
    let in_production = id(&admin
        .post(
            "/api/Spaces-1/machines",
            target("web-prod", vec![&production], 2),
        )
        .await
        .expect(201));
    let (ops_user, ops) = user_with_key(admin, "ops").await;
    scoped_team(
        admin,
        "Test ops",
        &[&ops_user],
        "userroles-environmentmanager",
        &[&test],
    )
    .await;

    // Seeing: lists, `all` and reads leave Production's target out; its environment is a 404.
    let listed = ops.get("/api/Spaces-1/machines").await.expect(200);
    assert_eq!(listed["TotalResults"], 1, "{listed}");
    assert_eq!(listed["Items"][0]["Name"], "web-test");
    let all = ops.get("/api/Spaces-1/machines/all").await.expect(200);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    ops.get(&format!("/api/Spaces-1/machines/{in_production}"))
        .await
        .expect(404);
    ops.get(&format!("/api/Spaces-1/environments/{production}/machines"))
        .await
        .expect(404);
    let tests = ops
        .get(&format!("/api/Spaces-1/environments/{test}/machines"))
        .await
        .expect(200);
    assert_eq!(tests["TotalResults"], 1, "{tests}");

    // Changing: Test's target yes, unless it would reach into Production; Production's no.
    in_test["Name"] = json!("web-test-renamed");
    ops.put(
        &format!("/api/Spaces-1/machines/{}", id(&in_test)),
        in_test.clone(),
    )
    .await
    .expect(200);
    in_test["EnvironmentIds"] = json!([test, production]);
    let refused = ops
        .put(&format!("/api/Spaces-1/machines/{}", id(&in_test)), in_test)
        .await
        .expect(403);
    assert!(refused.to_string().contains("MachineEdit"), "{refused}");
    ops.delete(&format!("/api/Spaces-1/machines/{in_production}"))
        .await
        .expect(404);
    ops.post(
        "/api/Spaces-1/machines",
        target("new-prod", vec![&production], 3),
    )
    .await
    .expect(403);
    ops.post("/api/Spaces-1/machines", target("new-test", vec![&test], 4))
        .await
        .expect(201);
    let everything = admin.get("/api/Spaces-1/machines").await.expect(200);
    let mut names: Vec<&str> = everything["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["new-test", "web-prod", "web-test-renamed"]);
    app.stop().await;
}

async fn users_keys_teams_and_roles_are_managed_and_checked(mode: Mode) {
    let app = InProcess::start(mode).await;
    let admin = &app.client;
    let (user_id, user) = user_with_key(admin, "dev").await;

    // Keys: listed without the key itself, revocable by their owner, then refused.
    let keys = user
        .get(&format!("/api/users/{user_id}/apikeys"))
        .await
        .expect(200);
    assert_eq!(keys["TotalResults"], 1, "{keys}");
    assert!(keys["Items"][0].get("ApiKey").is_none(), "{keys}");
    let second = user
        .post(
            &format!("/api/users/{user_id}/apikeys"),
            json!({"Purpose": "second", "Expires": "2099-01-01T00:00:00Z"}),
        )
        .await
        .expect(201);
    assert_eq!(second["Expires"], "2099-01-01T00:00:00Z", "{second}");
    user.post(
        &format!("/api/users/{user_id}/apikeys"),
        json!({"Purpose": "past", "Expires": "2001-01-01T00:00:00Z"}),
    )
    .await
    .expect(400);
    let first = id(&keys["Items"][0]);
    user.delete(&format!("/api/users/{user_id}/apikeys/{first}"))
        .await
        .expect(200);
    user.get("/api/users/me").await.expect(401);
    let user = Client::new(
        admin.base.clone(),
        second["ApiKey"].as_str().unwrap().to_owned(),
    );
    assert_eq!(id(&user.get("/api/users/me").await.expect(200)), user_id);

    // Someone else's account takes UserView / UserEdit.
    let refused = user.get("/api/users").await.expect(403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("UserView")
    );
    user.get("/api/users/Users-1").await.expect(403);
    user.delete(&format!("/api/users/{user_id}"))
        .await
        .expect(403);
    // Bad input names the field.
    let bad = admin
        .post("/api/users", json!({"Username": "has space"}))
        .await
        .expect(400);
    assert!(bad.to_string().contains("Username"), "{bad}");
    let bad = admin
        .post("/api/users", json!({"Username": "dev"}))
        .await
        .expect(400);
    assert!(bad.to_string().contains("already in use"), "{bad}");

    // Teams and scoped roles are validated.
    let team = id(&admin
        .post(
            "/api/teams",
            json!({"Name": "Devs", "MemberUserIds": [user_id]}),
        )
        .await
        .expect(201));
    let bad = admin
        .post(
            "/api/scopeduserroles",
            json!({"TeamId": team, "UserRoleId": "userroles-nope", "SpaceId": "Spaces-1"}),
        )
        .await
        .expect(400);
    assert!(bad.to_string().contains("UserRoleId"), "{bad}");
    let bad = admin
        .post(
            "/api/scopeduserroles",
            json!({"TeamId": team, "UserRoleId": "userroles-projectviewer"}),
        )
        .await
        .expect(400);
    assert!(bad.to_string().contains("SpaceId"), "{bad}");
    let bad = admin
        .post(
            "/api/scopeduserroles",
            json!({"TeamId": team, "UserRoleId": "userroles-projectviewer", "SpaceId": "Spaces-1", "EnvironmentIds": ["Environments-999"]}),
        )
        .await
        .expect(400);
    assert!(bad.to_string().contains("EnvironmentIds"), "{bad}");
    let bad = admin
        .post(
            "/api/teams",
            json!({"Name": "Ghosts", "MemberUserIds": ["Users-999"]}),
        )
        .await
        .expect(400);
    assert!(bad.to_string().contains("MemberUserIds"), "{bad}");
    // Before a role, the user sees no space; after a viewer role, they read but do not write.
    user.get("/api/Spaces-1/projects").await.expect(404);
    assert_eq!(user.get("/api/spaces").await.expect(200)["TotalResults"], 0);
    admin
        .post(
            "/api/scopeduserroles",
            json!({"TeamId": team, "UserRoleId": "userroles-projectviewer", "SpaceId": "Spaces-1"}),
        )
        .await
        .expect(201);
    user.get("/api/Spaces-1/projects").await.expect(200);
    assert_eq!(user.get("/api/spaces").await.expect(200)["TotalResults"], 1);
    let refused = user
        .post("/api/Spaces-1/projectgroups", json!({"Name": "Mine"}))
        .await
        .expect(403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("ProjectGroupCreate")
    );

    // A custom role: known permissions only, then granted like a built-in one.
    let bad = admin
        .post(
            "/api/userroles",
            json!({"Name": "Bad", "GrantedSpacePermissions": ["NoSuchThing"]}),
        )
        .await
        .expect(400);
    assert!(bad.to_string().contains("GrantedSpacePermissions"), "{bad}");
    let role = id(&admin
        .post(
            "/api/userroles",
            json!({"Name": "Group maker", "GrantedSpacePermissions": ["ProjectGroupCreate", "ProjectGroupView"]}),
        )
        .await
        .expect(201));
    admin
        .post(
            "/api/scopeduserroles",
            json!({"TeamId": team, "UserRoleId": role, "SpaceId": "Spaces-1"}),
        )
        .await
        .expect(201);
    user.post("/api/Spaces-1/projectgroups", json!({"Name": "Mine"}))
        .await
        .expect(201);
    // In use, so not deletable; built-in roles never are.
    admin
        .delete(&format!("/api/userroles/{role}"))
        .await
        .expect(400);
    admin
        .delete("/api/userroles/userroles-systemadministrator")
        .await
        .expect(400);
    let catalogue = admin.get("/api/permissions/all").await.expect(200);
    assert!(
        catalogue["DeploymentCreate"]["SupportedRestrictions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "Environments")
    );

    // A system manager sees no space until it makes one, and then manages it (the new space's
    // rows are written by a caller who could not see it when the request began).
    let (manager_id, manager) = user_with_key(admin, "sysmanager").await;
    let managers = id(&admin
        .post(
            "/api/teams",
            json!({"Name": "System managers", "MemberUserIds": [manager_id]}),
        )
        .await
        .expect(201));
    admin
        .post(
            "/api/scopeduserroles",
            json!({"TeamId": managers, "UserRoleId": "userroles-systemmanager"}),
        )
        .await
        .expect(201);
    manager.get("/api/Spaces-1/projects").await.expect(404);
    let made = manager
        .post("/api/spaces", json!({"Name": "Managed"}))
        .await
        .expect(201);
    let made = id(&made);
    let groups = manager
        .get(&format!("/api/{made}/projectgroups/all"))
        .await
        .expect(200);
    assert_eq!(groups.as_array().unwrap().len(), 1, "{groups}");
    manager.get("/api/Spaces-1/projects").await.expect(404);

    // Deleting the team takes its roles with it.
    admin
        .delete(&format!("/api/teams/{team}"))
        .await
        .expect(200);
    user.get("/api/Spaces-1/projects").await.expect(404);
    admin.delete("/api/teams/teams-everyone").await.expect(400);
    app.stop().await;
}

/// A second organisation, "Bravo", made as signup makes one; and a store to reach it.
async fn second_organisation(
    app: &InProcess,
) -> (
    cuttle_store::Store,
    cuttle_api::organisations::NewOrganisation,
) {
    let store = cuttle_platform::connect_store(app.config()).await.unwrap();
    let created = cuttle_api::organisations::create(
        &store,
        cuttle_api::organisations::Signup {
            name: "Bravo",
            slug: "bravo",
            username: "bravo-owner",
            email: None,
            password_hash: None,
            email_verified: true,
        },
    )
    .await
    .unwrap();
    (store, created)
}

/// Fills a route template's parameters with the identifiers of `ids`.
fn concrete(template: &str, ids: &Ids) -> String {
    let first = template.split('/').nth(1).unwrap_or_default();
    let id = match first {
        "users" => ids.user.as_str(),
        "teams" => ids.team.as_str(),
        "userroles" => ids.role.as_str(),
        "scopeduserroles" => ids.binding.as_str(),
        "spaces" => ids.space.as_str(),
        "tasks" => ids.task.as_str(),
        "projects" => ids.project.as_str(),
        "environments" => ids.environment.as_str(),
        "releases" => ids.release.as_str(),
        "deployments" => ids.deployment.as_str(),
        "tenants" => ids.tenant.as_str(),
        "tagsets" => ids.tag_set.as_str(),
        _ => "Things-1",
    };
    template
        .replace("{space_id}", &ids.space)
        .replace("{id}", id)
        .replace("{key_id}", &ids.key)
        .replace("{version}", "1.0.0")
}

/// One organisation's identifiers, as the other organisation would try them.
struct Ids {
    space: String,
    user: String,
    team: String,
    role: String,
    binding: String,
    key: String,
    task: String,
    project: String,
    environment: String,
    release: String,
    deployment: String,
    tenant: String,
    tag_set: String,
}

/// Builds an organisation's world through `client` with names carrying `marker`.
async fn world(client: &Client, space: &str, marker: &str) -> Ids {
    let project = flow::project_with_script(
        client,
        space,
        &format!("{marker}-env"),
        &format!("{marker}-project"),
        &format!("echo {marker}"),
    )
    .await;
    let task = flow::release_and_deploy(
        client,
        space,
        &format!("{marker}-project"),
        &format!("{marker}-env"),
    )
    .await;
    client.wait_for_task(&task, WAIT).await;
    let deployment = client
        .get(&format!("/api/{space}/deployments"))
        .await
        .expect(200)["Items"][0]
        .clone();
    let user = client
        .post("/api/users", json!({"Username": format!("{marker}-user")}))
        .await
        .expect(201);
    let key = client
        .post(
            &format!("/api/users/{}/apikeys", id(&user)),
            json!({"Purpose": marker}),
        )
        .await
        .expect(201);
    let team = client
        .post(
            "/api/teams",
            json!({"Name": format!("{marker}-team"), "MemberUserIds": [id(&user)], "SpaceId": space}),
        )
        .await
        .expect(201);
    let role = client
        .post(
            "/api/userroles",
            json!({"Name": format!("{marker}-role"), "GrantedSpacePermissions": ["ProjectView"]}),
        )
        .await
        .expect(201);
    let binding = client
        .post(
            "/api/scopeduserroles",
            json!({"TeamId": id(&team), "UserRoleId": id(&role), "SpaceId": space}),
        )
        .await
        .expect(201);
    let tag_set = client
        .post(
            &format!("/api/{space}/tagsets"),
            json!({"Name": format!("{marker}-tier"), "Tags": [{"Name": format!("{marker}-gold")}]}),
        )
        .await
        .expect(201);
    let tenant = client
        .post(
            &format!("/api/{space}/tenants"),
            json!({"Name": format!("{marker}-tenant"), "TenantTags": [format!("{marker}-tier/{marker}-gold")]}),
        )
        .await
        .expect(201);
    Ids {
        space: space.to_owned(),
        user: id(&user),
        team: id(&team),
        role: id(&role),
        binding: id(&binding),
        key: id(&key),
        task,
        project,
        environment: deployment["EnvironmentId"].as_str().unwrap().to_owned(),
        release: deployment["ReleaseId"].as_str().unwrap().to_owned(),
        deployment: id(&deployment),
        tenant: id(&tenant),
        tag_set: id(&tag_set),
    }
}

/// Every (method, path) a route table entry is served at, filled with `ids`.
fn calls(ids: &Ids) -> Vec<(reqwest::Method, String, Rule)> {
    let mut out = Vec::new();
    for (template, rules) in ROUTES {
        for (method, rule) in *rules {
            // Public routes (the root document, sign-in, the portal) hold nobody's data.
            if *rule == Rule::Public {
                continue;
            }
            let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
            let path = concrete(template, ids);
            let mounts: Vec<String> = match rule {
                Rule::Space(_) => vec![
                    format!("/api/{}{path}", ids.space),
                    format!("/api/spaces/{}{path}", ids.space),
                    format!("/api{path}"),
                ],
                Rule::Tasks(_) => vec![format!("/api/{}{path}", ids.space), format!("/api{path}")],
                _ => vec![format!("/api{path}")],
            };
            for mount in mounts {
                out.push((method.clone(), mount, *rule));
            }
        }
    }
    out
}

async fn no_route_lets_one_organisation_see_another(mode: Mode) {
    let app = InProcess::start(mode).await;
    let alpha = &app.client;
    let store = cuttle_platform::connect_store(app.config()).await.unwrap();
    let bravo_org = cuttle_api::organisations::create(
        &store,
        cuttle_api::organisations::Signup {
            name: "Bravo Ltd",
            slug: "bravo",
            username: "bravo-owner",
            email: Some("owner@bravo.example"),
            password_hash: None,
            email_verified: true,
        },
    )
    .await
    .unwrap();
    let bravo = Client::new(alpha.base.clone(), bravo_org.api_key.clone());
    let alpha_ids = world(alpha, "Spaces-1", "alpha").await;
    let bravo_ids = world(&bravo, &bravo_org.space_id, "bravo").await;
    // A scoped member of alpha: the viewer team of alpha's world.
    let alpha_member = Client::new(
        alpha.base.clone(),
        alpha
            .post(
                &format!("/api/users/{}/apikeys", alpha_ids.user),
                json!({"Purpose": "isolation"}),
            )
            .await
            .expect(201)["ApiKey"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let anonymous = alpha.anonymous();

    // Identifiers that exist nowhere: what the other organisation's must be indistinguishable from.
    let ghost = Ids {
        space: "Spaces-9999".into(),
        user: "Users-9999".into(),
        team: "Teams-9999".into(),
        role: "UserRoles-9999".into(),
        binding: "ScopedUserRoles-9999".into(),
        key: "APIKeys-9999".into(),
        task: "ServerTasks-9999".into(),
        project: "Projects-9999".into(),
        environment: "Environments-9999".into(),
        release: "Releases-9999".into(),
        deployment: "Deployments-9999".into(),
        tenant: "Tenants-9999".into(),
        tag_set: "TagSets-9999".into(),
    };
    let ghost_calls = calls(&ghost);
    let mut checked = 0usize;
    for (caller, name, theirs, their_marker) in [
        (&bravo, "bravo owner", &alpha_ids, "alpha"),
        (alpha, "alpha owner", &bravo_ids, "bravo"),
        (&alpha_member, "alpha scoped member", &bravo_ids, "bravo"),
    ] {
        for ((method, path, _), (_, ghost_path, _)) in calls(theirs).into_iter().zip(&ghost_calls) {
            let reply = caller.send(method.clone(), &path, Some(json!({}))).await;
            let ghostly = caller
                .send(method.clone(), ghost_path, Some(json!({})))
                .await;
            checked += 1;
            let body = reply.body.to_string();
            assert!(
                reply.status != 500,
                "{name}: {method} {path} answered 500: {body}"
            );
            assert!(
                !body.to_lowercase().contains(their_marker),
                "{name}: {method} {path} leaked {their_marker}'s data: {body}"
            );
            for their_id in [
                &theirs.user,
                &theirs.team,
                &theirs.role,
                &theirs.binding,
                &theirs.key,
                &theirs.task,
            ] {
                assert!(
                    !body.contains(&format!("\"{their_id}\"")),
                    "{name}: {method} {path} showed {their_id}: {body}"
                );
            }
            // The other organisation's things answer exactly as things that do not exist.
            assert_eq!(
                reply.status, ghostly.status,
                "{name}: {method} {path} answered {} but {ghost_path} answered {}: {body}",
                reply.status, ghostly.status
            );
            if path.contains(&format!("/{}/", theirs.space))
                || path.ends_with(&format!("/{}", theirs.space))
            {
                assert!(
                    reply.status == 404 || reply.status == 403 && ghostly.status == 403,
                    "{name}: {method} {path}: {body}"
                );
            }
        }
        // Anonymous callers get 401 from every route but the root document.
        for (method, path, rule) in calls(theirs) {
            if rule == Rule::Public {
                continue;
            }
            let reply = anonymous.send(method.clone(), &path, Some(json!({}))).await;
            checked += 1;
            assert_eq!(
                reply.status, 401,
                "anonymous: {method} {path}: {}",
                reply.body
            );
        }
    }
    println!(
        "isolation: {checked} calls ({} route methods)",
        ROUTES.iter().map(|(_, r)| r.len()).sum::<usize>()
    );
    app.stop().await;
}

async fn organisations_are_rate_limited_and_held_to_quotas(mode: Mode) {
    let app = InProcess::start_with(mode, |config| {
        config.limits.requests_per_minute = 30;
        config.limits.max_spaces = 2;
        config.limits.max_users = 2;
    })
    .await;
    let alpha = &app.client;
    // Quotas: the admin plus one user; the default space plus one.
    alpha
        .post("/api/users", json!({"Username": "second"}))
        .await
        .expect(201);
    let refused = alpha
        .post("/api/users", json!({"Username": "third"}))
        .await
        .expect(403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("limit of 2 users"),
        "{refused}"
    );
    alpha
        .post("/api/spaces", json!({"Name": "Second"}))
        .await
        .expect(201);
    let refused = alpha
        .post("/api/spaces", json!({"Name": "Third"}))
        .await
        .expect(403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("limit of 2 spaces"),
        "{refused}"
    );

    // The request rate: at most 30 a minute, then 429 with Retry-After, for this organisation
    // only.
    let (_, bravo) = second_organisation(&app).await;
    let bravo = Client::new(alpha.base.clone(), bravo.api_key);
    let mut limited = None;
    for _ in 0..70 {
        let response = reqwest::Client::new()
            .get(format!("{}/api/users/me", alpha.base))
            .header("X-Octopus-ApiKey", &alpha.api_key)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let limited = limited.expect("the 31st request in a minute is refused");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    bravo.get("/api/users/me").await.expect(200);
    app.stop().await;
}

async fn a_team_restricted_to_one_project_sees_and_changes_only_it(mode: Mode) {
    let app = InProcess::start(mode).await;
    let admin = &app.client;
    let alpha = flow::project_with_script(admin, "Spaces-1", "Dev", "Alpha", "echo a").await;
    let beta = flow::project_with_script(admin, "Spaces-1", "Dev", "Beta", "echo b").await;
    let (dev_user, dev) = user_with_key(admin, "dev").await;
    let team = admin
        .post(
            "/api/teams",
            json!({"Name": "Alpha devs", "MemberUserIds": [dev_user], "SpaceId": "Spaces-1"}),
        )
        .await
        .expect(201);
    admin
        .post(
            "/api/scopeduserroles",
            json!({"TeamId": id(&team), "UserRoleId": "userroles-projectcontributor", "SpaceId": "Spaces-1", "ProjectIds": [alpha]}),
        )
        .await
        .expect(201);
    let listed = dev.get("/api/Spaces-1/projects").await.expect(200);
    assert_eq!(listed["TotalResults"], 1, "{listed}");
    assert_eq!(listed["Items"][0]["Name"], "Alpha");
    let all = dev.get("/api/Spaces-1/projects/all").await.expect(200);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    dev.get(&format!("/api/Spaces-1/projects/{beta}"))
        .await
        .expect(404);
    flow::set_script(&dev, "Spaces-1", &alpha, "echo changed").await;
    let path = format!("/api/Spaces-1/projects/{beta}/deploymentprocesses");
    let process = admin.get(&path).await.expect(200);
    let refused = dev.put(&path, process).await.expect(403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("ProcessEdit"),
        "{refused}"
    );
    let variables = admin
        .get(&format!("/api/Spaces-1/projects/{beta}/variables"))
        .await
        .expect(200);
    dev.put(
        &format!("/api/Spaces-1/projects/{beta}/variables"),
        variables.clone(),
    )
    .await
    .expect(403);
    // Beta's variables stay out of reach by every route: its project's and the set's own.
    let set_path = format!(
        "/api/Spaces-1/variables/{}",
        variables["Id"].as_str().unwrap()
    );
    dev.get(&format!("/api/Spaces-1/projects/{beta}/variables"))
        .await
        .expect(404);
    dev.get(&set_path).await.expect(404);
    let refused = dev.put(&set_path, variables).await.expect(403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("VariableEdit"),
        "{refused}"
    );
    let alpha_variables = dev
        .get(&format!("/api/Spaces-1/projects/{alpha}/variables"))
        .await
        .expect(200);
    dev.get(&format!(
        "/api/Spaces-1/variables/{}",
        alpha_variables["Id"].as_str().unwrap()
    ))
    .await
    .expect(200);
    // A library variable set's variables need LibraryVariableSetEdit (which project
    // contributors hold), not VariableEdit.
    let library = admin
        .post(
            "/api/Spaces-1/libraryvariablesets",
            json!({"Name": "Shared"}),
        )
        .await
        .expect(201);
    let library_path = format!(
        "/api/Spaces-1/variables/{}",
        library["VariableSetId"].as_str().unwrap()
    );
    let library_set = dev.get(&library_path).await.expect(200);
    dev.put(&library_path, library_set.clone())
        .await
        .expect(200);
    let role = admin
        .post(
            "/api/userroles",
            json!({"Name": "Project variables only", "GrantedSpacePermissions":
                ["ProjectView", "VariableView", "VariableEdit", "LibraryVariableSetView"]}),
        )
        .await
        .expect(201);
    let (editor_user, editor) = user_with_key(admin, "editor").await;
    let (_, _) = scoped_team(admin, "Variable editors", &[&editor_user], &id(&role), &[]).await;
    editor
        .put(
            &format!(
                "/api/Spaces-1/variables/{}",
                alpha_variables["Id"].as_str().unwrap()
            ),
            editor
                .get(&format!("/api/Spaces-1/projects/{alpha}/variables"))
                .await
                .expect(200),
        )
        .await
        .expect(200);
    let library_set = editor.get(&library_path).await.expect(200);
    let refused = editor.put(&library_path, library_set).await.expect(403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("LibraryVariableSetEdit"),
        "{refused}"
    );
    app.stop().await;
}

/// PostgreSQL's row-level security, the second lock: inside an organisation's scope (as the api
/// runs every authenticated request), rows of another organisation's spaces, or of its own spaces
/// the caller cannot see, cannot be read, changed or written, even by a query that names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_hides_other_organisations_and_unseen_spaces_in_postgresql() {
    use cuttle_store::documents;
    use cuttle_store::rls::scoped;
    let app = InProcess::start(Mode::Distributed).await;
    let (store, bravo) = second_organisation(&app).await;
    let alpha_space = cuttle_domain::SpaceId::parse("Spaces-1").unwrap();
    let bravo_space = cuttle_domain::SpaceId::parse(&bravo.space_id).unwrap();
    let get = |space: cuttle_domain::SpaceId| {
        let store = store.clone();
        async move {
            documents::get(store.conn(), &space, "Space", space.as_str())
                .await
                .unwrap()
                .is_some()
        }
    };
    // Unscoped (background services): everything.
    assert!(get(alpha_space.clone()).await);
    assert!(get(bravo_space.clone()).await);
    // Scoped to bravo: alpha's rows do not exist, bravo's do.
    let bravo_org = bravo.organisation.id.clone();
    assert!(!scoped(&bravo_org, get(alpha_space.clone())).await);
    assert!(scoped(&bravo_org, get(bravo_space.clone())).await);
    let (spaces, _) = scoped(&bravo_org, async {
        documents::list_spaces(store.conn(), &documents::ListQuery::everything())
            .await
            .unwrap()
    })
    .await;
    assert_eq!(
        spaces.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        [bravo.space_id.as_str()]
    );
    // Nor can bravo write into alpha's space, even naming it.
    let written = scoped(&bravo_org, async {
        documents::insert(
            store.conn(),
            documents::NewDocument {
                id: "Environments-999".into(),
                space_id: alpha_space.clone(),
                kind: "Environment",
                name: "Intruder".into(),
                parent_id: None,
                unique_key: None,
                sort_order: 0,
                data: serde_json::json!({"Name": "Intruder"}),
            },
            "",
        )
        .await
    })
    .await;
    assert!(
        written.is_err(),
        "a row was written into another organisation's space"
    );
    // A space of no organisation is invisible to every organisation.
    assert!(!scoped("Organisations-999", get(bravo_space.clone())).await);

    // Within the organisation, rows of a space the caller cannot see do not exist either, though
    // the space document itself does (names are unique across the organisation).
    let environment = |id: &str| documents::NewDocument {
        id: id.into(),
        space_id: bravo_space.clone(),
        kind: "Environment",
        name: id.into(),
        parent_id: None,
        unique_key: None,
        sort_order: 0,
        data: serde_json::json!({"Name": id}),
    };
    documents::insert(store.conn(), environment("Environments-900"), "")
        .await
        .unwrap();
    let get_environment = || {
        let store = store.clone();
        let space = bravo_space.clone();
        async move {
            documents::get(store.conn(), &space, "Environment", "Environments-900")
                .await
                .unwrap()
                .is_some()
        }
    };
    let nowhere = || Some(Vec::<String>::new());
    let only_bravo = || Some(vec![bravo.space_id.clone()]);
    assert!(!cuttle_store::rls::scoped_to(&bravo_org, nowhere(), get_environment()).await);
    assert!(cuttle_store::rls::scoped_to(&bravo_org, nowhere(), get(bravo_space.clone())).await);
    assert!(cuttle_store::rls::scoped_to(&bravo_org, only_bravo(), get_environment()).await);
    assert!(cuttle_store::rls::scoped_to(&bravo_org, None, get_environment()).await);
    // Seeing another organisation's space id in the list does not open it.
    let alpha_listed = Some(vec!["Spaces-1".to_owned()]);
    assert!(!cuttle_store::rls::scoped_to(&bravo_org, alpha_listed, get(alpha_space)).await);
    // Nor can such a caller write there, until it is admitted to a space it has just made.
    let written = cuttle_store::rls::scoped_to(&bravo_org, nowhere(), async {
        let refused = documents::insert(store.conn(), environment("Environments-901"), "")
            .await
            .is_err();
        cuttle_store::rls::admit_space(store.conn(), &bravo.space_id)
            .await
            .unwrap();
        let admitted = documents::insert(store.conn(), environment("Environments-902"), "")
            .await
            .is_ok();
        (refused, admitted)
    })
    .await;
    assert_eq!(written, (true, true));
    app.stop().await;
}

/// A team whose roles are restricted to Test sees the variables that apply in Test and changes
/// only those that apply in Test alone; Production's stay hidden and intact when it saves.
async fn a_team_scoped_to_test_sees_and_changes_only_test_variables(mode: Mode) {
    const SECRET: &str = "prod-s3cret-4411";
    let app = InProcess::start(mode).await;
    let admin = &app.client;
    let (project, test, production) = web_in_test_and_production(admin, "echo").await;
    let path = format!("/api/Spaces-1/projects/{project}/variables");
    let mut set = admin.get(&path).await.expect(200);
    set["Variables"] = json!([
        {"Name": "Greeting", "Value": "hello"},
        {"Name": "Conn", "Value": "test-conn", "Scope": {"Environment": [test]}},
        {"Name": "Conn", "Value": "prod-conn", "Scope": {"Environment": [production]}},
        {"Name": "Secret", "Value": SECRET, "IsSensitive": true, "Scope": {"Environment": [production]}},
        {"Name": "Shared", "Value": "both", "Scope": {"Environment": [test, production]}}
    ]);
    admin.put(&path, set).await.expect(200);
    let qa = qa_deployer(admin, &test).await;

    // What QA sees: Test's and the unscoped, each marked with whether QA may change it.
    let seen = qa.get(&path).await.expect(200);
    let shown = |set: &Value| -> Vec<(String, String, bool)> {
        let mut out: Vec<_> = set["Variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["Name"].as_str().unwrap().to_owned(),
                    v["Value"].as_str().unwrap_or("").to_owned(),
                    v["IsEditable"].as_bool().unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let owned = |list: &[(&str, &str, bool)]| -> Vec<(String, String, bool)> {
        list.iter()
            .map(|(n, v, e)| ((*n).to_owned(), (*v).to_owned(), *e))
            .collect()
    };
    assert_eq!(
        shown(&seen),
        owned(&[
            ("Conn", "test-conn", true),
            ("Greeting", "hello", false),
            ("Shared", "both", false)
        ])
    );
    assert!(!seen.to_string().contains("prod-conn"), "{seen}");
    let by_id = qa
        .get(&format!(
            "/api/Spaces-1/variables/{}",
            seen["Id"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert_eq!(shown(&by_id), shown(&seen));

    // QA changes Test's value and adds one for Test; Production's stay as they were.
    let mut change = seen.clone();
    let variables = change["Variables"].as_array_mut().unwrap();
    for variable in variables.iter_mut() {
        if variable["Name"] == "Conn" {
            variable["Value"] = json!("test-conn-2");
        }
    }
    variables.push(json!({"Name": "Extra", "Value": "x", "Scope": {"Environment": [test]}}));
    let saved = qa.put(&path, change.clone()).await.expect(200);
    assert_eq!(shown(&saved).len(), 4, "{saved}");
    let everything = admin.get(&path).await.expect(200);
    assert_eq!(
        shown(&everything),
        owned(&[
            ("Conn", "prod-conn", true),
            ("Conn", "test-conn-2", true),
            ("Extra", "x", true),
            ("Greeting", "hello", true),
            ("Secret", "", true),
            ("Shared", "both", true)
        ])
    );

    // Refused, each with a 403 naming VariableEdit, and nothing changes.
    let latest = qa.get(&path).await.expect(200);
    let edit = |change: &dyn Fn(&mut Vec<Value>)| {
        let mut body = latest.clone();
        change(body["Variables"].as_array_mut().unwrap());
        body
    };
    let attempts = [
        edit(&|vars| {
            for v in vars.iter_mut().filter(|v| v["Name"] == "Greeting") {
                v["Value"] = json!("changed everywhere");
            }
        }),
        edit(&|vars| {
            vars.push(
                json!({"Name": "Sneaky", "Value": "p", "Scope": {"Environment": [production]}}),
            )
        }),
        edit(&|vars| vars.retain(|v| v["Name"] != "Shared")),
        edit(&|vars| {
            for v in vars.iter_mut().filter(|v| v["Name"] == "Extra") {
                v["Scope"] = json!({"Environment": [production]});
            }
        }),
        edit(&|vars| vars.push(json!({"Name": "Everywhere", "Value": "u"}))),
    ];
    for attempt in attempts {
        let refused = qa.put(&path, attempt).await.expect(403);
        assert!(
            refused["ErrorMessage"]
                .as_str()
                .unwrap()
                .contains("VariableEdit"),
            "{refused}"
        );
    }
    assert_eq!(
        shown(&admin.get(&path).await.expect(200)),
        shown(&everything)
    );

    // The preview shows values too: Test's, not Production's.
    qa.get(&format!(
        "/api/Spaces-1/variables/preview?project={project}&environment=Test"
    ))
    .await
    .expect(200);
    let refused = qa
        .get(&format!(
            "/api/Spaces-1/variables/preview?project={project}&environment=Production"
        ))
        .await
        .expect(403);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("VariableView"),
        "{refused}"
    );
    app.stop().await;
}
