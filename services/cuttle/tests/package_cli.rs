//! `cuttle package pack` and `cuttle package push`, run as the built binary: packing a directory
//! (read back with `cuttle-archive`'s `inspect`, the check the feed applies at upload) and
//! pushing to a real `cuttle server` started as a child process.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot unwrap has failed; the panic says where"
)]

mod common;

use common::{Proc, cuttle_binary, free_port};
use cuttle_archive::{ArchiveFormat, EntryKind, Limits};
use cuttle_testkit::Client;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The administrator key the test servers are started with.
const ADMIN_KEY: &str = "API-PACKAGECLITESTKEY0001";

/// Runs `cuttle <args>` to completion, without the Octopus variables of the caller's shell.
fn cuttle(args: &[&str]) -> Output {
    Command::new(cuttle_binary())
        .args(args)
        .env_remove("OCTOPUS_URL")
        .env_remove("OCTOPUS_API_KEY")
        .env_remove("OCTOPUS_SPACE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A directory with nested files, an empty directory and an executable `Deploy.sh`.
fn sample_dir(root: &Path) -> PathBuf {
    let dir = root.join("site");
    std::fs::create_dir_all(dir.join("wwwroot/css")).unwrap();
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::write(dir.join("wwwroot/index.html"), "<html></html>").unwrap();
    std::fs::write(dir.join("wwwroot/css/site.css"), "body {}").unwrap();
    std::fs::write(dir.join("appsettings.json"), "{}").unwrap();
    let script = dir.join("Deploy.sh");
    std::fs::write(&script, "#!/bin/sh\necho deployed\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Packs `dir` with `--json` and returns the printed object; panics with the output on failure.
fn pack_json(dir: &Path, out: &Path, format: &str) -> Value {
    let output = cuttle(&[
        "package",
        "pack",
        dir.to_str().unwrap(),
        "--id",
        "Acme.Web",
        "--version",
        "1.2.3",
        "--format",
        format,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "pack failed: {}", stderr(&output));
    serde_json::from_str(stdout(&output).trim()).unwrap()
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn a_directory_packs_into_a_zip_and_a_tarball_with_relative_paths_and_the_executable_bit() {
    let root = tempfile::tempdir().unwrap();
    let dir = sample_dir(root.path());
    let out = root.path().join("out");
    for (format, extension, archive_format) in [
        ("zip", "zip", ArchiveFormat::Zip),
        ("tar.gz", "tar.gz", ArchiveFormat::TarGz),
    ] {
        let printed = pack_json(&dir, &out, format);
        let path = out.join(format!("Acme.Web.1.2.3.{extension}"));
        assert_eq!(printed["path"], path.to_str().unwrap());
        assert_eq!(printed["packageId"], "Acme.Web");
        assert_eq!(printed["version"], "1.2.3");
        assert_eq!(
            printed["sizeBytes"],
            std::fs::metadata(&path).unwrap().len()
        );
        assert_eq!(printed["sha256"], sha256_of(&path));

        let entries = cuttle_archive::inspect(&path, archive_format, &Limits::default()).unwrap();
        let mut listed: Vec<(String, bool, bool)> = entries
            .iter()
            .map(|entry| {
                (
                    entry.path.clone(),
                    entry.kind == EntryKind::Directory,
                    entry.mode & 0o111 != 0 && entry.kind == EntryKind::File,
                )
            })
            .collect();
        listed.sort();
        let expected: Vec<(String, bool, bool)> = [
            ("Deploy.sh", false, true),
            ("appsettings.json", false, false),
            ("logs", true, false),
            ("wwwroot", true, false),
            ("wwwroot/css", true, false),
            ("wwwroot/css/site.css", false, false),
            ("wwwroot/index.html", false, false),
        ]
        .iter()
        .map(|(path, is_dir, is_exec)| ((*path).to_owned(), *is_dir, *is_exec))
        .collect();
        assert_eq!(listed, expected, "{format}");
        let index = entries
            .iter()
            .find(|entry| entry.path == "wwwroot/index.html")
            .unwrap();
        assert_eq!(index.size, "<html></html>".len() as u64, "{format}");
    }
}

#[test]
fn packing_the_same_directory_twice_gives_identical_bytes() {
    let root = tempfile::tempdir().unwrap();
    let dir = sample_dir(root.path());
    for format in ["zip", "tar.gz"] {
        let first = pack_json(&dir, &root.path().join(format!("first-{format}")), format);
        // New modification times and a new listing order on disk must not change the package.
        let css = dir.join("wwwroot/css/site.css");
        std::fs::remove_file(&css).unwrap();
        std::fs::write(&css, "body {}").unwrap();
        let second = pack_json(&dir, &root.path().join(format!("second-{format}")), format);
        assert_eq!(first["sha256"], second["sha256"], "{format}");
        assert_eq!(first["sizeBytes"], second["sizeBytes"], "{format}");
    }
}

#[test]
fn an_invalid_id_or_version_is_refused_with_a_message_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = sample_dir(root.path());
    let out = root.path().join("out");
    for (id, version, named) in [
        ("Acme Web", "1.2.3", "--id: 'Acme Web'"),
        ("Acme..Web", "1.2.3", "--id: 'Acme..Web'"),
        ("-Acme", "1.2.3", "--id: '-Acme'"),
        ("Acme.Web", "1.2", "--version: '1.2'"),
        ("Acme.Web", "v1.2.3", "--version: 'v1.2.3'"),
        ("Acme.Web", "1.2.3.4.5", "--version: '1.2.3.4.5'"),
        // The feed would read `Acme.2.1.0.0.zip` as package `Acme` version `2.1.0.0`.
        ("Acme.2", "1.0.0", "--id: the file name Acme.2.1.0.0"),
    ] {
        // `--id=...`: a value starting with `-` would otherwise read as an option.
        let output = cuttle(&[
            "package",
            "pack",
            dir.to_str().unwrap(),
            &format!("--id={id}"),
            &format!("--version={version}"),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!output.status.success(), "{id} {version} was accepted");
        assert!(
            stderr(&output).contains(named),
            "{id} {version}: {}",
            stderr(&output)
        );
    }
    assert!(!out.exists(), "a refused pack must write nothing");
}

#[test]
fn an_existing_package_is_replaced_only_with_overwrite() {
    let root = tempfile::tempdir().unwrap();
    let dir = sample_dir(root.path());
    let out = root.path().join("out");
    let args = |overwrite: bool| {
        let mut args = vec![
            "package".to_owned(),
            "pack".to_owned(),
            dir.to_str().unwrap().to_owned(),
            "--id".to_owned(),
            "Acme.Web".to_owned(),
            "--version".to_owned(),
            "1.2.3".to_owned(),
            "--out".to_owned(),
            out.to_str().unwrap().to_owned(),
        ];
        if overwrite {
            args.push("--overwrite".to_owned());
        }
        args
    };
    let run = |args: Vec<String>| cuttle(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let first = run(args(false));
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(
        stdout(&first).trim(),
        out.join("Acme.Web.1.2.3.zip").to_str().unwrap()
    );
    let again = run(args(false));
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists; pass --overwrite"),
        "{}",
        stderr(&again)
    );
    let replaced = run(args(true));
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    // No partial files are left beside the package.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["Acme.Web.1.2.3.zip".to_owned()]);
}

#[test]
fn a_symbolic_link_or_an_output_inside_the_directory_is_refused_rather_than_skipped() {
    let root = tempfile::tempdir().unwrap();
    let dir = sample_dir(root.path());
    let inside = cuttle(&[
        "package",
        "pack",
        dir.to_str().unwrap(),
        "--id",
        "Acme.Web",
        "--version",
        "1.2.3",
        "--out",
        dir.join("dist").to_str().unwrap(),
    ]);
    assert!(!inside.status.success());
    assert!(
        stderr(&inside).contains("is inside the directory being packed"),
        "{}",
        stderr(&inside)
    );
    assert!(!dir.join("dist").exists());

    std::os::unix::fs::symlink("/etc/passwd", dir.join("wwwroot/passwd")).unwrap();
    let linked = cuttle(&[
        "package",
        "pack",
        dir.to_str().unwrap(),
        "--id",
        "Acme.Web",
        "--version",
        "1.2.3",
        "--out",
        root.path().join("out").to_str().unwrap(),
    ]);
    assert!(!linked.status.success());
    assert!(
        stderr(&linked).contains("wwwroot/passwd: it is a symbolic link"),
        "{}",
        stderr(&linked)
    );
}

/// `cuttle server` in embedded mode, as a child process with its own data directory.
struct Server {
    url: String,
    client: Client,
    _process: Proc,
    _data: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(data.path().join("server.log")).unwrap();
        let child = Command::new(cuttle_binary())
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data.path().join("data"))
            .env("CUTTLE_ADMIN_API_KEY", ADMIN_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let process = Proc {
            name: "server".into(),
            child,
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = Client::new(url.clone(), ADMIN_KEY);
        if let Err(err) = client.wait_until_up("/api", Duration::from_secs(20)).await {
            let log = std::fs::read_to_string(data.path().join("server.log")).unwrap_or_default();
            panic!("{err:#}\n{log}");
        }
        Server {
            url,
            client,
            _process: process,
            _data: data,
        }
    }

    /// Runs `cuttle package push --server <this> <args>`.
    fn push(&self, args: &[&str]) -> Output {
        let mut all = vec!["package", "push", "--server", &self.url];
        all.extend_from_slice(args);
        cuttle(&all)
    }
}

/// Packs the sample directory as `Acme.Web.1.2.3.zip` under `root` and returns its path.
fn packed_zip(root: &Path) -> String {
    let printed = pack_json(&sample_dir(root), &root.join("out"), "zip");
    printed["path"].as_str().unwrap().to_owned()
}

/// Parses the one JSON line `push --json` prints for a single file.
fn one_json_line(output: &Output) -> Value {
    let text = stdout(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line: {text}\n{}",
        stderr(output)
    );
    serde_json::from_str(lines[0]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_creates_the_package_then_a_duplicate_fails_unless_ignored() {
    let server = Server::start().await;
    let root = tempfile::tempdir().unwrap();
    let file = packed_zip(root.path());

    let created = server.push(&["--api-key", ADMIN_KEY, &file]);
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(
        stdout(&created).starts_with("created "),
        "{}",
        stdout(&created)
    );
    let listed = server
        .client
        .get("/api/Spaces-1/packages?filter=Acme.Web")
        .await
        .expect(200);
    assert_eq!(listed["Items"][0]["PackageId"], "Acme.Web", "{listed}");
    assert_eq!(listed["Items"][0]["Version"], "1.2.3", "{listed}");

    let duplicate = server.push(&["--api-key", ADMIN_KEY, &file]);
    assert!(!duplicate.status.success());
    assert!(
        stdout(&duplicate).starts_with("failed "),
        "{}",
        stdout(&duplicate)
    );
    assert!(
        stdout(&duplicate).contains("A package with the same name and version already exists"),
        "{}",
        stdout(&duplicate)
    );
    assert!(
        stderr(&duplicate).contains("1 of 1 package(s) could not be pushed"),
        "{}",
        stderr(&duplicate)
    );

    let duplicate_json = server.push(&["--api-key", ADMIN_KEY, "--json", &file]);
    assert!(!duplicate_json.status.success());
    let reported = one_json_line(&duplicate_json);
    assert_eq!(reported["file"], file.as_str());
    assert_eq!(reported["status"], "failed");
    assert_eq!(reported["httpStatus"], 409);
    assert!(
        reported["error"]
            .as_str()
            .unwrap()
            .contains("A package with the same name and version already exists"),
        "{reported}"
    );

    let kept = server.push(&[
        "--api-key",
        ADMIN_KEY,
        "--overwrite-mode",
        "IgnoreIfExists",
        "--json",
        &file,
    ]);
    assert!(kept.status.success(), "{}", stderr(&kept));
    let reported = one_json_line(&kept);
    assert_eq!(reported["status"], "kept");
    assert_eq!(reported["httpStatus"], 200);
    assert_eq!(reported["error"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_space_is_found_by_name_or_id_and_credentials_come_from_octopus_variables() {
    let server = Server::start().await;
    let root = tempfile::tempdir().unwrap();
    let file = packed_zip(root.path());

    // By name, case aside, with the server, key and space from the Octopus CLI's variables.
    let by_name = Command::new(cuttle_binary())
        .args(["package", "push", "--json", &file])
        .env("OCTOPUS_URL", format!("{}/api", server.url))
        .env("OCTOPUS_API_KEY", ADMIN_KEY)
        .env("OCTOPUS_SPACE", "default")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(by_name.status.success(), "{}", stderr(&by_name));
    assert_eq!(one_json_line(&by_name)["status"], "created");

    // By id: the same package in the same space.
    let by_id = server.push(&[
        "--api-key",
        ADMIN_KEY,
        "--space",
        "Spaces-1",
        "--overwrite-mode",
        "ignoreifexists",
        "--json",
        &file,
    ]);
    assert!(by_id.status.success(), "{}", stderr(&by_id));
    assert_eq!(one_json_line(&by_id)["status"], "kept");

    let unknown = server.push(&[
        "--api-key",
        ADMIN_KEY,
        "--space",
        "Nowhere",
        "--json",
        &file,
    ]);
    assert!(!unknown.status.success());
    let reported = one_json_line(&unknown);
    assert_eq!(reported["status"], "failed");
    assert!(
        reported["error"]
            .as_str()
            .unwrap()
            .contains("no space named 'Nowhere'"),
        "{reported}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_fails_every_file_with_the_servers_401_message() {
    let server = Server::start().await;
    let root = tempfile::tempdir().unwrap();
    let file = packed_zip(root.path());
    let missing = root.path().join("Missing.1.0.0.zip");

    let refused = server.push(&[
        "--api-key",
        "API-WRONGWRONGWRONGWRONG",
        "--json",
        &file,
        missing.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    let text = stdout(&refused);
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["status"], "failed");
    assert_eq!(lines[0]["httpStatus"], 401);
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("You must be logged in to perform this action"),
        "{}",
        lines[0]
    );
    // A file that cannot be read fails on its own, before any request.
    assert_eq!(lines[1]["status"], "failed");
    assert_eq!(lines[1]["httpStatus"], Value::Null);
    assert!(
        stderr(&refused).contains("2 of 2 package(s) could not be pushed"),
        "{}",
        stderr(&refused)
    );

    let text_output = server.push(&["--api-key", "API-WRONGWRONGWRONGWRONG", &file]);
    assert!(!text_output.status.success());
    assert!(
        stdout(&text_output).contains("You must be logged in to perform this action"),
        "{}",
        stdout(&text_output)
    );
    assert!(
        stdout(&text_output).contains("(HTTP 401)"),
        "{}",
        stdout(&text_output)
    );
}
