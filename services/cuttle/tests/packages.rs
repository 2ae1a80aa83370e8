//! The built-in package feed over HTTP, in both modes (embedded: SQLite and local blobs;
//! distributed: PostgreSQL and S3): push with each overwrite mode, refusal of invalid packages,
//! listing, versions, ranged downloads, deletion, space isolation and build information.
//! Archives are built in memory with the `zip`, `tar` and `flate2` crates.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::{InProcess, push, push_as, zip_bytes};
use cuttle_testkit::{Client, Mode, Reply};
use serde_json::{Value, json};

both_modes!(
    a_pushed_zip_is_listed_found_and_downloaded_with_byte_ranges,
    duplicate_pushes_follow_the_overwrite_mode,
    invalid_packages_are_refused_with_a_reason_and_never_listed,
    latest_and_versions_list_the_newest_version_first_and_deletes_remove_them,
    tarballs_and_nupkgs_are_accepted_and_a_nuspec_must_match_its_file_name,
    the_same_package_in_two_spaces_is_two_packages,
    build_information_is_pushed_once_and_shows_on_its_package,
    a_release_pins_package_versions_and_a_deployment_runs_the_package_conventions,
    a_deployed_package_gets_its_files_substituted_and_json_settings_replaced,
    an_inline_script_gets_its_referenced_packages_files_substituted,
    package_selection_mistakes_are_refused_naming_the_field,
    a_script_step_runs_a_script_from_inside_its_package_with_referenced_packages,
    a_failing_deploy_script_fails_the_step_after_running_deploy_failed,
    a_package_deleted_after_the_release_fails_the_deployment_with_a_reason,
    retention_keeps_the_latest_versions_and_every_version_a_release_uses,
    a_package_named_by_a_variable_is_chosen_when_the_release_is_created,
);

/// How long a deployment may take in these tests before they give up.
const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A gzip-compressed tar holding `files`.
fn tar_gz_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *content).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A nupkg whose nuspec says `id` and `version`.
fn nupkg_bytes(id: &str, version: &str) -> Vec<u8> {
    let nuspec = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<package xmlns="http://schemas.microsoft.com/packaging/2013/05/nuspec.xsd">
  <metadata>
    <id>{id}</id>
    <version>{version}</version>
    <title>Acme &amp; Web</title>
    <description>The web site.</description>
    <releaseNotes>Fixed things.</releaseNotes>
  </metadata>
</package>"#
    );
    zip_bytes(&[
        (&format!("{id}.nuspec"), nuspec.as_bytes()),
        ("content/index.html", b"<html></html>"),
    ])
}

/// GET with an optional `Range`; the status, headers and raw body.
async fn download(
    client: &Client,
    path: &str,
    range: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .get(format!("{}{path}", client.base))
        .header("X-Octopus-ApiKey", &client.api_key);
    if let Some(range) = range {
        request = request.header("Range", range);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|value| value.to_str().unwrap())
        .unwrap_or_default()
}

fn ids_of(page: &Value) -> Vec<String> {
    page["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["Id"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_pushed_zip_is_listed_found_and_downloaded_with_byte_ranges(mode: Mode) {
    let app = InProcess::start(mode).await;
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let bytes = zip_bytes(&[("app/data.bin", &content), ("app/readme.txt", b"hello")]);
    let pushed = push_as(
        &app.client,
        "Spaces-1",
        "file",
        "My.Pkg.1.2.3-beta.4.zip",
        bytes.clone(),
        "",
    )
    .await
    .expect(201);
    assert_eq!(pushed["Id"], "packages-My.Pkg.1.2.3-beta.4");
    assert_eq!(pushed["PackageId"], "My.Pkg");
    assert_eq!(pushed["Version"], "1.2.3-beta.4");
    assert_eq!(pushed["FileExtension"], ".zip");
    assert_eq!(pushed["FeedId"], "feeds-builtin");
    assert_eq!(pushed["NuGetPackageId"], "My.Pkg");
    assert_eq!(pushed["NuGetFeedId"], "feeds-builtin");
    assert_eq!(pushed["PackageSizeBytes"], bytes.len() as u64);
    assert_eq!(pushed["Hash"].as_str().unwrap().len(), 64);
    assert!(pushed["Published"].as_str().unwrap().ends_with("+00:00"));

    // Found by a case-insensitive substring of its id, in all three route shapes.
    for path in [
        "/api/Spaces-1/packages?filter=my.p",
        "/api/spaces/Spaces-1/packages?filter=MY.PKG",
        "/api/packages?filter=pkg",
    ] {
        let page = app.client.get(path).await.expect(200);
        assert_eq!(page["ItemType"], "Package");
        assert_eq!(ids_of(&page), ["packages-My.Pkg.1.2.3-beta.4"], "{path}");
    }
    let none = app
        .client
        .get("/api/Spaces-1/packages?filter=other")
        .await
        .expect(200);
    assert_eq!(none["TotalResults"], 0);
    let exact = app
        .client
        .get("/api/Spaces-1/packages?nuGetPackageId=my.pkg")
        .await
        .expect(200);
    assert_eq!(exact["TotalResults"], 1);

    // The id is path-encoded by clients (`+` as %2B); a missing one is 404.
    let one = app
        .client
        .get("/api/Spaces-1/packages/packages-My.Pkg.1.2.3-beta.4")
        .await
        .expect(200);
    assert_eq!(one["Hash"], pushed["Hash"]);
    assert!(one.get("PackageVersionBuildInformation").is_none());
    app.client
        .get("/api/Spaces-1/packages/packages-My.Pkg.9.9.9")
        .await
        .expect(404);
    app.client
        .get("/api/Spaces-1/packages/not-a-package-id")
        .await
        .expect(404);

    let versions = app
        .client
        .get("/api/Spaces-1/feeds/feeds-builtin/packages/versions?packageId=My.Pkg")
        .await
        .expect(200);
    assert_eq!(versions["TotalResults"], 1);
    assert_eq!(versions["Items"][0]["Version"], "1.2.3-beta.4");
    assert_eq!(versions["Items"][0]["SizeBytes"], bytes.len() as u64);

    // The whole file, then exact byte ranges.
    let raw = "/api/Spaces-1/packages/packages-My.Pkg.1.2.3-beta.4/raw";
    let (status, headers, body) = download(&app.client, raw, None).await;
    assert_eq!(status, 200);
    assert_eq!(body, bytes);
    assert_eq!(header(&headers, "accept-ranges"), "bytes");
    assert!(header(&headers, "content-disposition").contains("My.Pkg.1.2.3-beta.4.zip"));
    let (status, headers, body) = download(&app.client, raw, Some("bytes=1000-1999")).await;
    assert_eq!(status, 206);
    assert_eq!(body, &bytes[1000..2000]);
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes 1000-1999/{}", bytes.len())
    );
    let (status, _, body) = download(&app.client, raw, Some("bytes=-10")).await;
    assert_eq!(status, 206);
    assert_eq!(body, &bytes[bytes.len() - 10..]);
    let past_the_end = format!("bytes={}-", bytes.len());
    let (status, headers, _) = download(&app.client, raw, Some(&past_the_end)).await;
    assert_eq!(status, 416);
    assert_eq!(
        header(&headers, "content-range"),
        format!("bytes */{}", bytes.len())
    );

    // No delta compression: clients fall back to a full upload on 404.
    app.client
        .get("/api/Spaces-1/packages/My.Pkg/1.2.3-beta.4/delta-signature")
        .await
        .expect(404);
    app.stop().await;
}

async fn duplicate_pushes_follow_the_overwrite_mode(mode: Mode) {
    let app = InProcess::start(mode).await;
    let first = zip_bytes(&[("a.txt", b"first")]);
    let second = zip_bytes(&[("a.txt", b"second version")]);
    let created = push(&app.client, "Spaces-1", "Hello.1.0.0.zip", first.clone())
        .await
        .expect(201);

    // FailIfExists is the default: 409 with the message clients match on.
    for query in ["", "?overwriteMode=FailIfExists"] {
        let refused = push_as(
            &app.client,
            "Spaces-1",
            "data",
            "Hello.1.0.0.zip",
            second.clone(),
            query,
        )
        .await
        .expect(409);
        let message = refused["ErrorMessage"].as_str().unwrap();
        assert!(
            message.contains("A package with the same name and version already exists"),
            "{message}"
        );
    }
    // The same version spelled differently is the same package.
    push(&app.client, "Spaces-1", "hello.1.0.0.0.zip", second.clone())
        .await
        .expect(409);

    // IgnoreIfExists keeps the existing file and answers 200.
    let kept = push_as(
        &app.client,
        "Spaces-1",
        "file",
        "Hello.1.0.0.zip",
        second.clone(),
        "?overwriteMode=IgnoreIfExists",
    )
    .await
    .expect(200);
    assert_eq!(kept["Hash"], created["Hash"]);

    // OverwriteExisting (and the legacy replace=true) store the new file: 201.
    let replaced = push_as(
        &app.client,
        "Spaces-1",
        "file",
        "Hello.1.0.0.zip",
        second.clone(),
        "?overwriteMode=OverwriteExisting",
    )
    .await
    .expect(201);
    assert_ne!(replaced["Hash"], created["Hash"]);
    let (_, _, body) = download(
        &app.client,
        "/api/Spaces-1/packages/packages-Hello.1.0.0/raw",
        None,
    )
    .await;
    assert_eq!(body, second);
    let again = push_as(
        &app.client,
        "Spaces-1",
        "file",
        "Hello.1.0.0.zip",
        first.clone(),
        "?replace=true",
    )
    .await
    .expect(201);
    assert_eq!(again["Hash"], created["Hash"]);
    let (_, _, body) = download(
        &app.client,
        "/api/Spaces-1/packages/packages-Hello.1.0.0/raw",
        None,
    )
    .await;
    assert_eq!(body, first);

    let listed = app.client.get("/api/Spaces-1/packages").await.expect(200);
    assert_eq!(listed["TotalResults"], 1);
    let bad_mode = push_as(
        &app.client,
        "Spaces-1",
        "file",
        "Hello.2.0.0.zip",
        first,
        "?overwriteMode=Sometimes",
    )
    .await
    .expect(400);
    assert!(bad_mode.to_string().contains("overwriteMode"), "{bad_mode}");
    app.stop().await;
}

async fn invalid_packages_are_refused_with_a_reason_and_never_listed(mode: Mode) {
    let app = InProcess::start(mode).await;
    let good = zip_bytes(&[("a.txt", b"content")]);
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 30);
    let tarball = tar_gz_bytes(&[("a.txt", b"some content to compress")]);
    let mut truncated_tarball = tarball.clone();
    truncated_tarball.truncate(tarball.len() / 2);
    let empty_zip = zip_bytes(&[]);
    // Larger than one S3 part, so the store has started a multipart upload before the
    // validation refuses the file.
    let mut big_truncated = zip_bytes(&[("big.bin", &vec![7u8; 12 * 1024 * 1024])]);
    big_truncated.truncate(big_truncated.len() - 30);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("Hello.1.0.0.zip", big_truncated, "not a valid .zip package"),
        ("Hello.zip", good.clone(), "no version"),
        ("Hello.1.0.zip", good.clone(), "not a valid package"),
        (
            "Hello.1.0.0-.zip",
            good.clone(),
            "not a valid package version",
        ),
        ("Hel lo.1.0.0.zip", good.clone(), "not a valid package id"),
        ("Hello.1.0.0.exe", good.clone(), "extension"),
        ("Hello.1.0.0.zip", truncated, "not a valid .zip package"),
        (
            "Hello.1.0.0.zip",
            b"just some text, not a zip".to_vec(),
            "not a valid .zip package",
        ),
        ("Hello.1.0.0.zip", Vec::new(), "empty"),
        ("Hello.1.0.0.zip", empty_zip, "no files"),
        (
            "Hello.1.0.0.tar.gz",
            good.clone(),
            "not a valid .tar.gz package",
        ),
        (
            "Hello.1.0.0.tar.gz",
            truncated_tarball,
            "not a valid .tar.gz package",
        ),
        ("Hello.1.0.0.nupkg", good, ".nuspec"),
        (
            "Hello.1.0.0.nupkg",
            nupkg_bytes("Other", "1.0.0"),
            "does not match",
        ),
        (
            "Hello.1.0.0.nupkg",
            nupkg_bytes("Hello", "2.0.0"),
            "does not match",
        ),
    ];
    for (file_name, bytes, reason) in cases {
        let refused = push(&app.client, "Spaces-1", file_name, bytes)
            .await
            .expect(400);
        let text = refused.to_string();
        assert!(
            text.contains(reason),
            "{file_name}: expected '{reason}' in {text}"
        );
    }
    // No file part at all.
    let response = reqwest::Client::new()
        .post(format!("{}/api/Spaces-1/packages/raw", app.client.base))
        .header("X-Octopus-ApiKey", &app.client.api_key)
        .multipart(reqwest::multipart::Form::new().text("comment", "no file"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let listed = app.client.get("/api/Spaces-1/packages").await.expect(200);
    assert_eq!(listed["TotalResults"], 0, "{listed}");
    // The store received every refused file while it arrived, and kept none of them.
    let blob = cuttle_platform::connect_blob(app.config()).await.unwrap();
    let objects = blob.list("packages/").await.unwrap();
    assert!(objects.is_empty(), "{objects:?}");
    app.stop().await;
}

async fn latest_and_versions_list_the_newest_version_first_and_deletes_remove_them(mode: Mode) {
    let app = InProcess::start(mode).await;
    for file_name in [
        "Acme.Web.1.9.0.zip",
        "Acme.Web.1.10.0.zip",
        "Acme.Web.1.10.0-beta.2.zip",
        "Acme.Api.2.0.0.zip",
    ] {
        push(
            &app.client,
            "Spaces-1",
            file_name,
            zip_bytes(&[("a.txt", file_name.as_bytes())]),
        )
        .await
        .expect(201);
    }
    let all = app
        .client
        .get("/api/Spaces-1/packages?filter=acme")
        .await
        .expect(200);
    assert_eq!(
        ids_of(&all),
        [
            "packages-Acme.Api.2.0.0",
            "packages-Acme.Web.1.10.0",
            "packages-Acme.Web.1.10.0-beta.2",
            "packages-Acme.Web.1.9.0"
        ]
    );
    let latest = app
        .client
        .get("/api/Spaces-1/packages?filter=acme&latest=true")
        .await
        .expect(200);
    assert_eq!(
        ids_of(&latest),
        ["packages-Acme.Api.2.0.0", "packages-Acme.Web.1.10.0"]
    );
    let paged = app
        .client
        .get("/api/Spaces-1/packages?skip=1&take=2")
        .await
        .expect(200);
    assert_eq!(paged["TotalResults"], 4);
    assert_eq!(
        ids_of(&paged),
        [
            "packages-Acme.Web.1.10.0",
            "packages-Acme.Web.1.10.0-beta.2"
        ]
    );

    let versions_path = "/api/Spaces-1/feeds/feeds-builtin/packages/versions?packageId=acme.web";
    let versions = app.client.get(versions_path).await.expect(200);
    let listed: Vec<&str> = versions["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["1.10.0", "1.10.0-beta.2", "1.9.0"]);
    let releases = app
        .client
        .get(&format!("{versions_path}&includePreRelease=false"))
        .await
        .expect(200);
    assert_eq!(releases["TotalResults"], 2);
    app.client
        .get("/api/Spaces-1/feeds/feeds-builtin/packages/versions")
        .await
        .expect(400);

    app.client
        .delete("/api/Spaces-1/packages/packages-Acme.Web.1.10.0")
        .await
        .expect(200);
    app.client
        .get("/api/Spaces-1/packages/packages-Acme.Web.1.10.0")
        .await
        .expect(404);
    let (status, _, _) = download(
        &app.client,
        "/api/Spaces-1/packages/packages-Acme.Web.1.10.0/raw",
        None,
    )
    .await;
    assert_eq!(status, 404);
    app.client
        .delete("/api/Spaces-1/packages/bulk?ids=packages-Acme.Web.1.9.0,packages-Acme.Api.2.0.0,packages-Gone.1.0.0")
        .await
        .expect(200);
    let left = app.client.get("/api/Spaces-1/packages").await.expect(200);
    assert_eq!(ids_of(&left), ["packages-Acme.Web.1.10.0-beta.2"]);
    // A deleted version can be pushed again.
    push(
        &app.client,
        "Spaces-1",
        "Acme.Web.1.10.0.zip",
        zip_bytes(&[("b.txt", b"again")]),
    )
    .await
    .expect(201);
    app.stop().await;
}

async fn tarballs_and_nupkgs_are_accepted_and_a_nuspec_must_match_its_file_name(mode: Mode) {
    let app = InProcess::start(mode).await;
    let tarball = tar_gz_bytes(&[("bin/app", b"#!/bin/sh\necho hi\n"), ("README", b"read me")]);
    let pushed = push(
        &app.client,
        "Spaces-1",
        "Tools.3.1.4.tar.gz",
        tarball.clone(),
    )
    .await
    .expect(201);
    assert_eq!(pushed["FileExtension"], ".tar.gz");
    let (_, _, body) = download(
        &app.client,
        "/api/Spaces-1/packages/packages-Tools.3.1.4/raw",
        None,
    )
    .await;
    assert_eq!(body, tarball);
    push(&app.client, "Spaces-1", "Tools.3.1.5.tgz", tarball)
        .await
        .expect(201);

    // The nuspec may spell the id in another case and the version in another form.
    let nupkg = push(
        &app.client,
        "Spaces-1",
        "Acme.Lib.1.0.0.nupkg",
        nupkg_bytes("acme.lib", "1.0.0.0"),
    )
    .await
    .expect(201);
    assert_eq!(nupkg["Title"], "Acme & Web");
    assert_eq!(nupkg["Description"], "The web site.");
    assert_eq!(nupkg["ReleaseNotes"], "Fixed things.");
    app.stop().await;
}

async fn the_same_package_in_two_spaces_is_two_packages(mode: Mode) {
    let app = InProcess::start(mode).await;
    let other = app
        .client
        .post("/api/spaces", json!({"Name": "Other"}))
        .await
        .expect(201);
    let other_id = other["Id"].as_str().unwrap().to_owned();
    let ours = zip_bytes(&[("a.txt", b"ours")]);
    let theirs = zip_bytes(&[("a.txt", b"theirs, which differ")]);
    push(&app.client, "Spaces-1", "Shared.1.0.0.zip", ours.clone())
        .await
        .expect(201);
    push(&app.client, &other_id, "Shared.1.0.0.zip", theirs.clone())
        .await
        .expect(201);
    push(&app.client, &other_id, "Secret.1.0.0.zip", theirs.clone())
        .await
        .expect(201);

    let (_, _, body) = download(
        &app.client,
        "/api/Spaces-1/packages/packages-Shared.1.0.0/raw",
        None,
    )
    .await;
    assert_eq!(body, ours);
    let (_, _, body) = download(
        &app.client,
        &format!("/api/{other_id}/packages/packages-Shared.1.0.0/raw"),
        None,
    )
    .await;
    assert_eq!(body, theirs);
    // One space cannot see or reach the other's packages.
    let listed = app.client.get("/api/Spaces-1/packages").await.expect(200);
    assert_eq!(ids_of(&listed), ["packages-Shared.1.0.0"]);
    app.client
        .get("/api/Spaces-1/packages/packages-Secret.1.0.0")
        .await
        .expect(404);
    let (status, _, _) = download(
        &app.client,
        "/api/Spaces-1/packages/packages-Secret.1.0.0/raw",
        None,
    )
    .await;
    assert_eq!(status, 404);
    app.client
        .delete("/api/Spaces-1/packages/packages-Secret.1.0.0")
        .await
        .expect(404);
    // Deleting in one space leaves the other's copy.
    app.client
        .delete("/api/Spaces-1/packages/packages-Shared.1.0.0")
        .await
        .expect(200);
    app.client
        .get(&format!("/api/{other_id}/packages/packages-Shared.1.0.0"))
        .await
        .expect(200);
    // Deleting the space takes its packages along.
    let mut space = app
        .client
        .get(&format!("/api/spaces/{other_id}"))
        .await
        .expect(200);
    space["TaskQueueStopped"] = json!(true);
    app.client
        .put(&format!("/api/spaces/{other_id}"), space)
        .await
        .expect(200);
    app.client
        .delete(&format!("/api/spaces/{other_id}"))
        .await
        .expect(200);
    app.stop().await;
}

async fn build_information_is_pushed_once_and_shows_on_its_package(mode: Mode) {
    let app = InProcess::start(mode).await;
    push(
        &app.client,
        "Spaces-1",
        "Hello.1.0.0.zip",
        zip_bytes(&[("a.txt", b"a")]),
    )
    .await
    .expect(201);
    let body = json!({
        "spaceId": "Spaces-1",
        "PackageId": "Hello",
        "Version": "1.0.0",
        "OctopusBuildInformation": {
            "Branch": "main", "BuildEnvironment": "BitBucket", "BuildNumber": "288",
            "BuildUrl": "https://ci.example/288",
            "Commits": [{"Id": "314cf2c3ee916c81", "Comment": "GOD-1 - test build info"}],
            "VcsCommitNumber": "314cf2c3ee916c81", "VcsRoot": "http://git.example/repo", "VcsType": "Git"
        }
    });
    let created = app
        .client
        .post("/api/Spaces-1/build-information", body.clone())
        .await
        .expect(201);
    let id = created["Id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("BuildInformation-"), "{created}");
    assert_eq!(created["VcsCommitNumber"], "314cf2c3ee916c81");
    assert_eq!(created["Commits"][0]["Comment"], "GOD-1 - test build info");

    let duplicate = app
        .client
        .post(
            "/api/Spaces-1/build-information?overwriteMode=FailIfExists",
            body.clone(),
        )
        .await
        .expect(400);
    assert!(
        duplicate["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("Metadata for the specified Package ID and version already exists."),
        "{duplicate}"
    );
    app.client
        .post(
            "/api/Spaces-1/build-information?overwriteMode=IgnoreIfExists",
            body.clone(),
        )
        .await
        .expect(200);
    let mut changed = body.clone();
    changed["OctopusBuildInformation"]["VcsCommitNumber"] = json!("abcdef0");
    app.client
        .post(
            "/api/Spaces-1/build-information?overwriteMode=OverwriteExisting",
            changed,
        )
        .await
        .expect(201);

    let package = app
        .client
        .get("/api/Spaces-1/packages/packages-Hello.1.0.0")
        .await
        .expect(200);
    assert_eq!(
        package["PackageVersionBuildInformation"]["VcsCommitNumber"],
        "abcdef0"
    );
    assert_eq!(package["PackageVersionBuildInformation"]["Branch"], "main");
    let one = app
        .client
        .get(&format!("/api/Spaces-1/build-information/{id}"))
        .await
        .expect(200);
    assert_eq!(one["PackageId"], "Hello");
    let listed = app
        .client
        .get("/api/Spaces-1/build-information?packageId=hello&latest=true")
        .await
        .expect(200);
    assert_eq!(listed["TotalResults"], 1);

    let bad = app
        .client
        .post(
            "/api/Spaces-1/build-information",
            json!({"PackageId": "Hello", "Version": "not-a-version", "OctopusBuildInformation": {}}),
        )
        .await
        .expect(400);
    assert!(bad.to_string().contains("Version"), "{bad}");
    // Build information is per space too.
    app.client
        .get(&format!("/api/spaces/Spaces-1/build-information/{id}"))
        .await
        .expect(200);
    let other = app
        .client
        .post("/api/spaces", json!({"Name": "Elsewhere"}))
        .await
        .expect(201);
    app.client
        .get(&format!(
            "/api/{}/build-information/{id}",
            other["Id"].as_str().unwrap()
        ))
        .await
        .expect(404);
    app.stop().await;
}

/// An environment and a project whose process has one step of `action_type` with `properties`
/// and the package references `packages` (`(reference name, package id)`). Returns the project
/// id.
async fn package_project(
    client: &Client,
    env: &str,
    project: &str,
    action_type: &str,
    properties: Value,
    packages: &[(&str, &str)],
) -> String {
    let id =
        cuttle_testkit::flow::project_with_script(client, "Spaces-1", env, project, "true").await;
    let path = format!("/api/Spaces-1/projects/{id}/deploymentprocesses");
    let mut process = client.get(&path).await.expect(200);
    let references: Vec<Value> = packages
        .iter()
        .map(|(name, package)| {
            json!({"Name": name, "PackageId": package, "FeedId": "feeds-builtin",
                   "AcquisitionLocation": "Server", "Properties": {"Extract": "True"}})
        })
        .collect();
    process["Steps"] = json!([{
        "Name": "Deploy web",
        "Actions": [{
            "Name": "Deploy web", "ActionType": action_type,
            "Properties": properties,
            "Packages": references,
        }]
    }]);
    client.put(&path, process).await.expect(200);
    id
}

async fn create_release(client: &Client, project: &str, extra: Value) -> Reply {
    let mut body = json!({"spaceIdOrName": "Spaces-1", "ProjectName": project});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    client.post("/api/Spaces-1/releases/create/v1", body).await
}

/// Deploys release `version` of `project` to `env`, waits, and returns the task and raw log.
async fn deploy(client: &Client, project: &str, version: &str, env: &str) -> (Value, String) {
    let deployed = client
        .post(
            "/api/Spaces-1/deployments/create/untenanted/v1",
            json!({"spaceIdOrName": "Spaces-1", "ProjectName": project,
                   "ReleaseVersion": version, "EnvironmentNames": [env]}),
        )
        .await
        .expect(201);
    let task_id = deployed["DeploymentServerTasks"][0]["ServerTaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let task = client.wait_for_task(&task_id, WAIT).await;
    let raw = client
        .get(&format!("/api/Spaces-1/tasks/{task_id}/raw"))
        .await
        .expect(200);
    (task, raw.as_str().unwrap().to_owned())
}

/// Creates a release of `project` with the latest packages and deploys it to `env`.
async fn release_and_deploy(client: &Client, project: &str, env: &str) -> (Value, String) {
    let release = create_release(client, project, json!({})).await.expect(201);
    deploy(
        client,
        project,
        release["ReleaseVersion"].as_str().unwrap(),
        env,
    )
    .await
}

/// The position of `needle` in `log`, failing the test with the log when it is missing.
fn position(log: &str, needle: &str) -> usize {
    log.find(needle)
        .unwrap_or_else(|| panic!("the log has no '{needle}':\n{log}"))
}

fn deployable_zip(marker: &str) -> Vec<u8> {
    zip_bytes(&[
        (
            "PreDeploy.sh",
            b"echo \"predeploy in $(basename \"$(dirname \"$PWD\")\")/$(basename \"$PWD\")\"\n",
        ),
        (
            "Deploy.sh",
            b"echo \"deploy reads $(cat content/marker.txt)\"\n",
        ),
        (
            "PostDeploy.py",
            b"print('postdeploy from python in ' + get_octopusvariable('Octopus.Environment.Name'))\n",
        ),
        ("content/marker.txt", marker.as_bytes()),
    ])
}

async fn a_release_pins_package_versions_and_a_deployment_runs_the_package_conventions(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    push(
        client,
        "Spaces-1",
        "Acme.Web.1.0.0.zip",
        deployable_zip("one"),
    )
    .await
    .expect(201);
    push(
        client,
        "Spaces-1",
        "Acme.Web.1.1.0.zip",
        deployable_zip("one-one"),
    )
    .await
    .expect(201);
    push(
        client,
        "Spaces-1",
        "Acme.Web.2.0.0-beta.1.zip",
        deployable_zip("beta"),
    )
    .await
    .expect(201);
    client
        .post(
            "/api/Spaces-1/build-information",
            json!({"PackageId": "Acme.Web", "Version": "2.0.0-beta.1",
                   "OctopusBuildInformation": {"BuildNumber": "77", "VcsCommitNumber": "abc123",
                                               "Branch": "main"}}),
        )
        .await
        .expect(201);
    package_project(
        client,
        "Staging",
        "Web",
        "Octopus.TentaclePackage",
        json!({"Octopus.Action.Package.PackageId": "Acme.Web",
               "Octopus.Action.Package.FeedId": "feeds-builtin"}),
        &[("", "Acme.Web")],
    )
    .await;
    // A later step reads where the package went, through the step's output variable.
    let project_id = client.get("/api/Spaces-1/projects/Web").await.expect(200)["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let process_path = format!("/api/Spaces-1/projects/{project_id}/deploymentprocesses");
    let mut process = client.get(&process_path).await.expect(200);
    process["Steps"].as_array_mut().unwrap().push(json!({
        "Name": "Report",
        "Actions": [{"Name": "Report", "ActionType": "Octopus.Script",
            "Properties": {"Octopus.Action.Script.Syntax": "Bash",
                "Octopus.Action.Script.ScriptBody":
                    "echo \"installed in #{Octopus.Action[Deploy web].Output.Package.InstallationDirectoryPath}\""}}]
    }));
    client.put(&process_path, process).await.expect(200);

    // No version named: the latest, pre-releases included (no channel rules).
    let latest = create_release(client, "Web", json!({"ReleaseVersion": "1.0.0"}))
        .await
        .expect(201);
    let release = client
        .get(&format!(
            "/api/Spaces-1/releases/{}",
            latest["ReleaseId"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert_eq!(
        release["SelectedPackages"],
        json!([{"ActionName": "Deploy web", "StepName": "Deploy web",
                "PackageReferenceName": "", "Version": "2.0.0-beta.1"}])
    );
    assert_eq!(release["BuildInformation"][0]["PackageId"], "Acme.Web");
    assert_eq!(release["BuildInformation"][0]["BuildNumber"], "77");
    assert_eq!(release["BuildInformation"][0]["VcsCommitNumber"], "abc123");

    // Named through Packages (by package id), and through PackageVersion.
    let pinned = create_release(
        client,
        "Web",
        json!({"ReleaseVersion": "1.0.1", "Packages": ["Acme.Web:1.1.0"], "PackageVersion": "1.0.0"}),
    )
    .await
    .expect(201);
    let by_default = create_release(
        client,
        "Web",
        json!({"ReleaseVersion": "1.0.2", "PackageVersion": "1.0.0"}),
    )
    .await
    .expect(201);
    let stable = create_release(
        client,
        "Web",
        json!({"ReleaseVersion": "1.0.3", "PackagePrerelease": "beta"}),
    )
    .await
    .expect(201);
    for (created, expected) in [
        (&pinned, "1.1.0"),
        (&by_default, "1.0.0"),
        (&stable, "2.0.0-beta.1"),
    ] {
        let release = client
            .get(&format!(
                "/api/Spaces-1/releases/{}",
                created["ReleaseId"].as_str().unwrap()
            ))
            .await
            .expect(200);
        assert_eq!(release["SelectedPackages"][0]["Version"], expected);
    }

    let (task, log) = deploy(client, "Web", "1.0.1", "Staging").await;
    assert_eq!(task["State"], "Success", "{log}");
    let pre = position(&log, "predeploy in Acme.Web/1.1.0");
    let main = position(&log, "deploy reads one-one");
    let post = position(&log, "postdeploy from python in Staging");
    assert!(pre < main && main < post, "{log}");
    position(&log, "Downloading package Acme.Web 1.1.0");
    position(&log, "installed in /");
    position(&log, "Applications/Staging/Acme.Web/1.1.0\n");

    // The same version again: a fresh folder, and the package comes from the worker's cache.
    let (task, log) = deploy(client, "Web", "1.0.1", "Staging").await;
    assert_eq!(task["State"], "Success", "{log}");
    position(&log, "predeploy in Acme.Web/1.1.0_1");
    position(&log, "was found in the worker's cache");

    let (task, log) = deploy(client, "Web", "1.0.2", "Staging").await;
    assert_eq!(task["State"], "Success", "{log}");
    position(&log, "deploy reads one\n");
    app.stop().await;
}

async fn a_deployed_package_gets_its_files_substituted_and_json_settings_replaced(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let package = zip_bytes(&[
        ("PreDeploy.sh", b"echo \"before: $(cat config/app.conf)\"\n"),
        (
            "Deploy.sh",
            b"cat config/app.conf\ncat appsettings.json\ncat k8s/values.yaml\ncat conf/db.properties\ncat web.config\n",
        ),
        (
            "web.config",
            b"<configuration>\n  <appSettings><add key=\"Env\" value=\"dev\" /></appSettings>\n</configuration>\n",
        ),
        ("conf/db.properties", b"# database\nurl = jdbc:old\n"),
        ("config/app.conf", b"name=#{AppName}\n"),
        (
            "k8s/values.yaml",
            b"# chart values\nLogging:\n  LogLevel:\n    Default: Warning # quiet\nreplicas: 1\n",
        ),
        (
            "appsettings.json",
            br#"{"Logging":{"LogLevel":{"Default":"Warning"}},"Port":80}"#,
        ),
    ]);
    push(client, "Spaces-1", "Acme.Configured.1.0.0.zip", package)
        .await
        .expect(201);
    // The properties Octopus's step editor writes when both features are on.
    let project = package_project(
        client,
        "Staging",
        "Configured",
        "Octopus.TentaclePackage",
        json!({"Octopus.Action.Package.PackageId": "Acme.Configured",
               "Octopus.Action.Package.FeedId": "feeds-builtin",
               "Octopus.Action.EnabledFeatures":
                   "Octopus.Features.SubstituteInFiles,Octopus.Features.JsonConfigurationVariables",
               "Octopus.Action.SubstituteInFiles.Enabled": "True",
               "Octopus.Action.SubstituteInFiles.TargetFiles": "config/*.conf\nmissing/*.template",
               "Octopus.Action.Package.JsonConfigurationVariablesEnabled": "True",
               "Octopus.Action.Package.JsonConfigurationVariablesTargets":
                   "**/appsettings.json\nk8s/*.yaml\nconf/*.properties\nweb.config"}),
        &[("", "Acme.Configured")],
    )
    .await;
    let path = format!("/api/Spaces-1/projects/{project}/variables");
    let mut set = client.get(&path).await.expect(200);
    set["Variables"] = json!([
        {"Name": "AppName", "Value": "shop"},
        {"Name": "Logging:LogLevel:Default", "Value": "Debug"},
        {"Name": "Port", "Value": "8080"},
        {"Name": "url", "Value": "jdbc:postgresql://db/shop"},
        {"Name": "/configuration/appSettings/add[@key='Env']/@value", "Value": "prod"},
    ]);
    client.put(&path, set).await.expect(200);

    let (task, log) = release_and_deploy(client, "Configured", "Staging").await;
    assert_eq!(task["State"], "Success", "{log}");
    // PreDeploy sees the files as packaged; Deploy sees them rewritten.
    let before = position(&log, "before: name=#{AppName}");
    let warning = position(
        &log,
        "that match the substitution target pattern 'missing/*.template'",
    );
    let replaced = position(
        &log,
        "Structured variable replacement succeeded on file appsettings.json with format JSON",
    );
    let substituted = position(&log, "name=shop");
    assert!(
        before < warning && warning < replaced && replaced < substituted,
        "{log}"
    );
    assert!(log[..warning].contains("No files were found in "), "{log}");
    position(&log, "\"Default\": \"Debug\"");
    // A number stays a number.
    position(&log, "\"Port\": 8080");
    // A YAML file keeps its comments and layout.
    position(
        &log,
        "Structured variable replacement succeeded on file k8s/values.yaml with format YAML",
    );
    position(&log, "url = jdbc:postgresql://db/shop");
    position(&log, "<add key=\"Env\" value=\"prod\" />");
    let comment = position(&log, "# chart values");
    assert!(
        comment < position(&log, "    Default: Debug # quiet"),
        "{log}"
    );
    app.stop().await;
}

async fn package_selection_mistakes_are_refused_naming_the_field(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let project_id = package_project(
        client,
        "Staging",
        "Web",
        "Octopus.TentaclePackage",
        json!({}),
        &[("", "Acme.Web")],
    )
    .await;
    // Nothing pushed yet: the latest cannot be chosen.
    let reply = create_release(client, "Web", json!({})).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.body.to_string().contains("no version"),
        "{}",
        reply.body
    );

    push(
        client,
        "Spaces-1",
        "Acme.Web.1.0.0.zip",
        deployable_zip("x"),
    )
    .await
    .expect(201);
    for (extra, field) in [
        (json!({"Packages": ["Nope:1.0.0"]}), "Packages"),
        (json!({"Packages": ["Acme.Web:9.9.9"]}), "Packages"),
        (json!({"Packages": ["Acme.Web:not a version"]}), "Packages"),
        (json!({"Packages": ["just-a-version"]}), "Packages"),
        (json!({"PackageVersion": "3.0.0"}), "PackageVersion"),
        (json!({"PackagePrerelease": "rc"}), "Packages"),
    ] {
        let reply = create_release(client, "Web", extra.clone()).await;
        assert_eq!(reply.status, 400, "{extra}: {}", reply.body);
        assert!(
            reply.body.to_string().contains(field),
            "{extra}: {}",
            reply.body
        );
    }
    // The classic route wants a version for every package reference.
    let reply = client
        .post(
            "/api/Spaces-1/releases",
            json!({"ProjectId": project_id, "Version": "5.0.0"}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.body.to_string().contains("SelectedPackages"),
        "{}",
        reply.body
    );
    let created = client
        .post(
            "/api/Spaces-1/releases",
            json!({"ProjectId": project_id, "Version": "5.0.0",
                   "SelectedPackages": [{"ActionName": "Deploy web", "Version": "1.0.0"}]}),
        )
        .await
        .expect(201);
    assert_eq!(created["SelectedPackages"][0]["Version"], "1.0.0");
    // Modifying a release may change its package versions, but only to ones in the feed.
    let release_path = format!("/api/Spaces-1/releases/{}", created["Id"].as_str().unwrap());
    let mut modified = created.clone();
    modified["SelectedPackages"][0]["Version"] = json!("7.7.7");
    let reply = client.put(&release_path, modified.clone()).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.body.to_string().contains("SelectedPackages"),
        "{}",
        reply.body
    );
    push(
        client,
        "Spaces-1",
        "Acme.Web.1.1.0.zip",
        deployable_zip("y"),
    )
    .await
    .expect(201);
    modified["SelectedPackages"][0]["Version"] = json!("1.1.0");
    let updated = client.put(&release_path, modified).await.expect(200);
    assert_eq!(updated["SelectedPackages"][0]["Version"], "1.1.0");
    // Nothing half-written: only the one good release exists.
    let releases = client
        .get(&format!("/api/Spaces-1/projects/{project_id}/releases"))
        .await
        .expect(200);
    assert_eq!(releases["TotalResults"], 1);
    app.stop().await;
}

async fn a_script_step_runs_a_script_from_inside_its_package_with_referenced_packages(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let scripts = zip_bytes(&[(
        "tools/run.sh",
        b"echo \"args: $1 | $2\"\necho \"tool says $(cat Helpers/helper.txt)\"\n",
    )]);
    push(client, "Spaces-1", "Acme.Scripts.1.0.0.zip", scripts)
        .await
        .expect(201);
    let helpers = tar_gz_bytes(&[("helper.txt", b"hello from a tarball")]);
    push(client, "Spaces-1", "Acme.Helpers.3.1.0.tar.gz", helpers)
        .await
        .expect(201);
    // The script file name and its parameters hold variables, evaluated before the run.
    let project = package_project(
        client,
        "Staging",
        "Scripted",
        "Octopus.Script",
        json!({"Octopus.Action.RunOnServer": "true",
               "Octopus.Action.Script.ScriptSource": "Package",
               "Octopus.Action.Script.ScriptFileName": "#{ToolFolder}/run.sh",
               "Octopus.Action.Script.ScriptParameters": "--name '#{Words}'"}),
        &[("", "Acme.Scripts"), ("Helpers", "Acme.Helpers")],
    )
    .await;
    let path = format!("/api/Spaces-1/projects/{project}/variables");
    let mut set = client.get(&path).await.expect(200);
    set["Variables"] = json!([
        {"Name": "ToolFolder", "Value": "tools"},
        {"Name": "Words", "Value": "two words"},
    ]);
    client.put(&path, set).await.expect(200);
    let (task, log) = release_and_deploy(client, "Scripted", "Staging").await;
    assert_eq!(task["State"], "Success", "{log}");
    position(&log, "args: --name | two words");
    position(&log, "tool says hello from a tarball");
    app.stop().await;
}

async fn a_failing_deploy_script_fails_the_step_after_running_deploy_failed(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let package = zip_bytes(&[
        ("Deploy.sh", b"echo deploying\nexit 7\n"),
        ("PostDeploy.sh", b"echo must-not-run\n"),
        ("DeployFailed.sh", b"echo cleaning up after failure\n"),
    ]);
    push(client, "Spaces-1", "Acme.Broken.1.0.0.zip", package)
        .await
        .expect(201);
    package_project(
        client,
        "Staging",
        "Broken",
        "Octopus.TentaclePackage",
        json!({}),
        &[("", "Acme.Broken")],
    )
    .await;
    let (task, log) = release_and_deploy(client, "Broken", "Staging").await;
    assert_eq!(task["State"], "Failed", "{log}");
    assert!(
        task["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("exit code 7"),
        "{task}"
    );
    position(&log, "cleaning up after failure");
    assert!(!log.contains("must-not-run"), "{log}");
    app.stop().await;
}

async fn a_package_deleted_after_the_release_fails_the_deployment_with_a_reason(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    push(
        client,
        "Spaces-1",
        "Acme.Gone.1.0.0.zip",
        deployable_zip("x"),
    )
    .await
    .expect(201);
    package_project(
        client,
        "Staging",
        "Gone",
        "Octopus.TentaclePackage",
        json!({}),
        &[("", "Acme.Gone")],
    )
    .await;
    let release = create_release(client, "Gone", json!({})).await.expect(201);
    client
        .delete("/api/Spaces-1/packages/packages-Acme.Gone.1.0.0")
        .await
        .expect(200);
    let (task, log) = deploy(
        client,
        "Gone",
        release["ReleaseVersion"].as_str().unwrap(),
        "Staging",
    )
    .await;
    assert_eq!(task["State"], "Failed", "{log}");
    assert!(
        task["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("no longer in the built-in feed"),
        "{task}"
    );
    app.stop().await;
}

async fn retention_keeps_the_latest_versions_and_every_version_a_release_uses(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    for version in ["1.0.0", "1.1.0", "1.2.0", "1.10.0", "1.3.0"] {
        push(
            client,
            "Spaces-1",
            &format!("Acme.Web.{version}.zip"),
            deployable_zip(version),
        )
        .await
        .expect(201);
    }
    push(
        client,
        "Spaces-1",
        "Acme.Other.1.0.0.zip",
        deployable_zip("o"),
    )
    .await
    .expect(201);
    package_project(
        client,
        "Staging",
        "Web",
        "Octopus.TentaclePackage",
        json!({}),
        &[("", "Acme.Web")],
    )
    .await;
    create_release(client, "Web", json!({"PackageVersion": "1.0.0"}))
        .await
        .expect(201);

    // Bad settings are refused naming the field; other feeds cannot be changed.
    let feed_path = "/api/Spaces-1/feeds/feeds-builtin";
    let mut feed = client.get(feed_path).await.expect(200);
    feed["KeepLatestVersionsPerPackage"] = json!(-1);
    let reply = client.put(feed_path, feed.clone()).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply
            .body
            .to_string()
            .contains("KeepLatestVersionsPerPackage"),
        "{}",
        reply.body
    );
    client
        .put("/api/Spaces-1/feeds/feeds-other", feed.clone())
        .await
        .expect(501);
    let reply = client
        .post("/api/Spaces-1/tasks", json!({"Name": "Backup"}))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);

    feed["KeepLatestVersionsPerPackage"] = json!(2);
    let saved = client.put(feed_path, feed).await.expect(200);
    assert_eq!(saved["KeepLatestVersionsPerPackage"], 2);
    assert_eq!(saved["Name"], "Octopus Server (built-in)");

    let task = client
        .post("/api/Spaces-1/tasks", json!({"Name": "Retention"}))
        .await
        .expect(201);
    assert_eq!(task["Name"], "Retention");
    assert_eq!(task["State"], "Success");
    let log = client
        .get(&format!(
            "/api/Spaces-1/tasks/{}/raw",
            task["Id"].as_str().unwrap()
        ))
        .await
        .expect(200);
    let log = log.as_str().unwrap();
    position(log, "Removed package Acme.Web 1.1.0");
    position(log, "Removed package Acme.Web 1.2.0");
    position(log, "Removed 2 package versions.");

    let versions = client
        .get("/api/Spaces-1/feeds/feeds-builtin/packages/versions?packageId=Acme.Web")
        .await
        .expect(200);
    let kept: Vec<&str> = versions["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Version"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["1.10.0", "1.3.0", "1.0.0"]);
    client
        .get("/api/Spaces-1/packages/packages-Acme.Other.1.0.0")
        .await
        .expect(200);
    let (status, _, _) = download(
        client,
        "/api/Spaces-1/packages/packages-Acme.Web.1.1.0/raw",
        None,
    )
    .await;
    assert_eq!(status, 404);
    // The release still deploys the version retention kept for it.
    let (task, log) = deploy(client, "Web", "0.0.1", "Staging").await;
    assert_eq!(task["State"], "Success", "{log}");
    position(&log, "deploy reads 1.0.0");
    app.stop().await;
}

async fn an_inline_script_gets_its_referenced_packages_files_substituted(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    let package = zip_bytes(&[
        ("app.conf", b"region=#{Region}\n"),
        ("settings.json", br#"{"Region":"none"}"#),
    ]);
    push(client, "Spaces-1", "Acme.Settings.2.0.0.zip", package)
        .await
        .expect(201);
    let project = package_project(
        client,
        "Staging",
        "Inline",
        "Octopus.Script",
        json!({"Octopus.Action.RunOnServer": "true",
               "Octopus.Action.Script.ScriptSource": "Inline",
               "Octopus.Action.Script.Syntax": "Bash",
               "Octopus.Action.Script.ScriptBody": "cat Settings/app.conf\ncat Settings/settings.json",
               "Octopus.Action.EnabledFeatures":
                   "Octopus.Features.SubstituteInFiles,Octopus.Features.JsonConfigurationVariables",
               "Octopus.Action.SubstituteInFiles.TargetFiles": "Settings/*.conf",
               "Octopus.Action.Package.JsonConfigurationVariablesTargets": "Settings/settings.json"}),
        &[("Settings", "Acme.Settings")],
    )
    .await;
    let path = format!("/api/Spaces-1/projects/{project}/variables");
    let mut set = client.get(&path).await.expect(200);
    set["Variables"] = json!([{"Name": "Region", "Value": "eu-west"}]);
    client.put(&path, set).await.expect(200);
    let (task, log) = release_and_deploy(client, "Inline", "Staging").await;
    assert_eq!(task["State"], "Success", "{log}");
    position(&log, "region=eu-west");
    position(&log, "\"Region\": \"eu-west\"");
    app.stop().await;
}

async fn a_package_named_by_a_variable_is_chosen_when_the_release_is_created(mode: Mode) {
    let app = InProcess::start(mode).await;
    let client = &app.client;
    for (file, marker) in [
        ("Acme.Blue.1.0.0.zip", "blue"),
        ("Acme.Green.2.0.0.zip", "green"),
    ] {
        push(
            client,
            "Spaces-1",
            file,
            zip_bytes(&[("colour.txt", marker.as_bytes())]),
        )
        .await
        .expect(201);
    }
    let project = package_project(
        client,
        "Staging",
        "Colours",
        "Octopus.Script",
        json!({"Octopus.Action.RunOnServer": "true",
               "Octopus.Action.Script.ScriptSource": "Inline",
               "Octopus.Action.Script.Syntax": "Bash",
               "Octopus.Action.Script.ScriptBody": "echo \"deployed $(cat App/colour.txt)\""}),
        &[("App", "Acme.#{Colour}")],
    )
    .await;
    let path = format!("/api/Spaces-1/projects/{project}/variables");
    let set_colour = async |colour: &str, scope: Value| {
        let mut set = client.get(&path).await.expect(200);
        set["Variables"] = json!([{"Name": "Colour", "Value": colour, "Scope": scope}]);
        client.put(&path, set).await.expect(200);
    };

    // A value only an environment would give is not known when the release is created.
    let staging = client
        .get("/api/Spaces-1/environments?name=Staging")
        .await
        .expect(200)["Items"][0]["Id"]
        .clone();
    set_colour("Blue", json!({"Environment": [staging]})).await;
    let refused = create_release(client, "Colours", json!({}))
        .await
        .expect(400);
    let message = refused["ErrorMessage"].as_str().unwrap();
    assert!(
        message.contains("Deploy web") && message.contains("not known until deployment"),
        "{refused}"
    );

    set_colour("Blue", json!({})).await;
    let release = create_release(client, "Colours", json!({}))
        .await
        .expect(201);
    let stored = client
        .get(&format!(
            "/api/Spaces-1/releases/{}",
            release["ReleaseId"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert_eq!(stored["SelectedPackages"][0]["PackageId"], "Acme.Blue");
    assert_eq!(stored["SelectedPackages"][0]["Version"], "1.0.0");
    // Changing the variable later changes the next release, never this one.
    set_colour("Green", json!({})).await;
    let (task, log) = deploy(
        client,
        "Colours",
        release["ReleaseVersion"].as_str().unwrap(),
        "Staging",
    )
    .await;
    assert_eq!(task["State"], "Success", "{log}");
    position(&log, "deployed blue");
    let (task, log) = release_and_deploy(client, "Colours", "Staging").await;
    assert_eq!(task["State"], "Success", "{log}");
    position(&log, "deployed green");

    // Retention keeps the version a release pinned through a variable.
    for version in ["1.1.0", "1.2.0"] {
        push(
            client,
            "Spaces-1",
            &format!("Acme.Blue.{version}.zip"),
            zip_bytes(&[("colour.txt", b"newer blue")]),
        )
        .await
        .expect(201);
    }
    let feed_path = "/api/Spaces-1/feeds/feeds-builtin";
    let mut feed = client.get(feed_path).await.expect(200);
    feed["KeepLatestVersionsPerPackage"] = json!(1);
    client.put(feed_path, feed).await.expect(200);
    let task = client
        .post("/api/Spaces-1/tasks", json!({"Name": "Retention"}))
        .await
        .expect(201);
    assert_eq!(task["State"], "Success", "{task}");
    let versions = client
        .get("/api/Spaces-1/feeds/feeds-builtin/packages/versions?packageId=Acme.Blue")
        .await
        .expect(200);
    let kept: Vec<&str> = versions["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Version"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["1.2.0", "1.0.0"]);
    app.stop().await;
}
