//! `cuttle-agent run` as a real process, driven over real mutual TLS on loopback by a worker
//! built from `cuttle-agent-link`, in both listening and polling mode.

#![allow(clippy::unwrap_used)]

mod support;

use cuttle_agent_link::messages::{
    ExtractPackage, Folder, JobId, PackageUpload, RelativeFilePath, RewriteFiles, ScriptFile,
    ScriptState, ScriptSyntax, Sha256Digest, StartScript,
};
use cuttle_agent_link::{LinkError, RemoteErrorKind, ScriptEvent, WorkerIdentity, WorkerLink};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use support::{
    AgentHome, bash, eventually, process_gone, read_to_end, run_script, under, within, worker_link,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listening_agent_tells_a_trusted_worker_its_capabilities() {
    let home = AgentHome::new();
    let (_agent, _address, requester) = home.start_listening_and_dial().await;
    let capabilities = within(requester.capabilities()).await.unwrap();
    assert_eq!(capabilities.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(capabilities.os, std::env::consts::OS);
    assert_eq!(capabilities.arch, std::env::consts::ARCH);
    assert!(!capabilities.hostname.is_empty());
    assert!(capabilities.shells.contains(&ScriptSyntax::Bash));
    let peer = requester.peer();
    assert!(peer.capabilities.iter().any(|c| c == "script"));
    assert!(peer.capabilities.iter().any(|c| c == "package_upload"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bash_script_streams_its_output_in_order_and_reports_its_exit_code() {
    let home = AgentHome::new();
    // The agent's own settings must not reach scripts.
    let agent = home.listening().start_with(|command| {
        command.env("CUTTLE_AGENT_SECRET", "do-not-leak");
    });
    let address = agent.listening_address().await;
    let requester = within(
        home.worker_link()
            .dial_agent(&address, home.agent.thumbprint()),
    )
    .await
    .unwrap();
    let mut script = bash(
        "TaskJobs-7",
        r#"
echo "cwd=$(pwd)"
cat conf/app.txt
./tool.sh
echo "greeting=$GREETING"
echo "leaked=$(env | grep -c '^CUTTLE_')"
for i in $(seq 1 500); do echo "line $i"; done
echo "to stderr" >&2
exit 3
"#,
    );
    script.environment = BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]);
    script.files = vec![
        ScriptFile {
            path: RelativeFilePath::parse("conf/app.txt").unwrap(),
            contents: b"placed file\n".to_vec(),
            executable: false,
        },
        ScriptFile {
            path: RelativeFilePath::parse("tool.sh").unwrap(),
            contents: b"#!/bin/sh\necho tool ran\n".to_vec(),
            executable: true,
        },
    ];
    let finished = run_script(&requester, script).await;

    assert_eq!(finished.exit_code, 3);
    let work_dir = under(home.path(), &["work", "TaskJobs-7"]);
    let expected_start = [
        format!("cwd={}", work_dir.display()),
        "placed file".to_owned(),
        "tool ran".to_owned(),
        "greeting=hello".to_owned(),
        "leaked=0".to_owned(),
    ];
    assert_eq!(finished.stdout[..5], expected_start[..]);
    let numbered: Vec<String> = (1..=500).map(|i| format!("line {i}")).collect();
    assert_eq!(finished.stdout[5..], numbered[..]);
    assert_eq!(finished.stderr, vec!["to stderr".to_owned()]);
    // Every line exactly once, numbered from 1, and batched rather than one message a line.
    let expected: Vec<u64> = (1..=506).collect();
    let mut sequences = finished.sequences.clone();
    sequences.sort_unstable();
    assert_eq!(sequences, expected);
    assert!(finished.n_batches < 506, "{} batches", finished.n_batches);
    // The working directory is removed once the script is over.
    assert!(!work_dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_after_a_script_finished_returns_its_output_and_exit_code() {
    let home = AgentHome::new();
    let (_agent, _address, requester) = home.start_listening_and_dial().await;
    let run = within(requester.start_script(bash("job-status", "echo one\necho two\nexit 4")))
        .await
        .unwrap();
    let ticket = run.ticket().clone();
    let finished = read_to_end(run).await;
    assert_eq!(finished.exit_code, 4);
    let status = within(requester.get_status(ticket.clone(), 1))
        .await
        .unwrap();
    assert_eq!(status.state, ScriptState::Finished { exit_code: 4 });
    let texts: Vec<&str> = status.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, vec!["two"]);
    // Canceling a finished script says it was no longer running.
    assert!(!within(requester.cancel_script(ticket)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_a_sleeping_script_and_the_children_it_started() {
    let home = AgentHome::new();
    let (_agent, _address, requester) = home.start_listening_and_dial().await;
    let (run, pids) = start_sleeper(&requester, "job-cancel").await;
    assert!(pids.iter().all(|pid| !process_gone(*pid)));

    let was_running = within(requester.cancel_script(run.ticket().clone()))
        .await
        .unwrap();
    assert!(was_running);
    let finished = read_to_end(run).await;
    assert_ne!(finished.exit_code, 0);
    // The background child was in the script's process group: it is gone too.
    for pid in pids {
        eventually(|| process_gone(pid)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_the_agent_does_not_trust_is_refused_and_logged() {
    let home = AgentHome::new();
    let agent = home.listening().start();
    let address = agent.listening_address().await;
    let stranger = WorkerIdentity::generate().unwrap();
    let refused = within(
        worker_link(&stranger, home.agent.thumbprint())
            .dial_agent(&address, home.agent.thumbprint()),
    )
    .await;
    assert!(
        matches!(refused, Err(LinkError::RefusedByPeer { .. })),
        "{refused:?}"
    );
    agent.wait_for_log(&stranger.thumbprint().to_string()).await;
    // The agent keeps serving the workers it trusts.
    let requester = within(
        home.worker_link()
            .dial_agent(&address, home.agent.thumbprint()),
    )
    .await
    .unwrap();
    within(requester.capabilities()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_in_a_missing_language_is_refused_with_the_interpreter_named() {
    let home = AgentHome::new();
    // A PATH holding only bash, so the agent finds no python3 and no pwsh.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/bin/bash", bin.path().join("bash")).unwrap();
    let agent = home.listening().start_with(|command| {
        command.env("PATH", bin.path());
    });
    let address = agent.listening_address().await;
    let requester = within(
        home.worker_link()
            .dial_agent(&address, home.agent.thumbprint()),
    )
    .await
    .unwrap();
    let capabilities = within(requester.capabilities()).await.unwrap();
    assert_eq!(capabilities.shells, vec![ScriptSyntax::Bash]);
    let script = StartScript {
        syntax: ScriptSyntax::Python,
        ..bash("job-python", "print('hi')")
    };
    match within(requester.start_script(script)).await {
        Err(LinkError::Remote(error)) => {
            assert_eq!(error.kind, RemoteErrorKind::BadRequest);
            assert!(error.message.contains("python3"), "{}", error.message);
        }
        Err(other) => panic!("expected a remote refusal, got {other:?}"),
        Ok(_) => panic!("expected a remote refusal, but the script started"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_package_is_cached_and_a_second_upload_sends_nothing() {
    let home = AgentHome::new();
    let (_agent, _address, requester) = home.start_listening_and_dial().await;
    // Several chunks' worth (256 KiB each), so flow control is exercised.
    let bytes: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let sha256 = Sha256Digest::of(&bytes);
    let upload = PackageUpload {
        package_id: "Acme.Web".to_owned(),
        version: "1.0.0".to_owned(),
        sha256,
        total_size: bytes.len() as u64,
    };
    let first = within(requester.upload_package(upload.clone(), &bytes[..]))
        .await
        .unwrap();
    assert!(!first.already_cached);
    let stored = under(home.path(), &["packages", &sha256.to_string()]);
    assert_eq!(std::fs::read(&stored).unwrap(), bytes);
    let second = within(requester.upload_package(upload, &bytes[..]))
        .await
        .unwrap();
    assert!(second.already_cached);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_whose_bytes_do_not_match_its_hash_is_refused_and_not_kept() {
    let home = AgentHome::new();
    let (_agent, _address, requester) = home.start_listening_and_dial().await;
    let declared = Sha256Digest::of(b"the real package");
    let upload = PackageUpload {
        package_id: "Acme.Web".to_owned(),
        version: "1.0.1".to_owned(),
        sha256: declared,
        total_size: 16,
    };
    match within(requester.upload_package(upload, &b"a forged package"[..])).await {
        Err(LinkError::Remote(error)) => assert_eq!(error.kind, RemoteErrorKind::Corrupt),
        other => panic!("expected a corrupt-package refusal, got {other:?}"),
    }
    let packages = std::fs::read_dir(under(home.path(), &["packages"]))
        .unwrap()
        .count();
    assert_eq!(packages, 0);
}

/// A stored zip of `files`.
fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, content) in files {
        writer.start_file(*name, options).unwrap();
        writer.write_all(content.as_bytes()).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

async fn upload(
    requester: &cuttle_agent_link::Requester,
    version: &str,
    bytes: &[u8],
) -> Sha256Digest {
    let sha256 = Sha256Digest::of(bytes);
    let upload = PackageUpload {
        package_id: "Acme.Web".to_owned(),
        version: version.to_owned(),
        sha256,
        total_size: bytes.len() as u64,
    };
    within(requester.upload_package(upload, bytes))
        .await
        .unwrap();
    sha256
}

fn extract(sha256: Sha256Digest, version: &str, environment: &str) -> ExtractPackage {
    ExtractPackage {
        sha256,
        package_id: "Acme.Web".to_owned(),
        version: version.to_owned(),
        extension: ".zip".to_owned(),
        environment_name: environment.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_is_installed_rewritten_and_run_in_a_fresh_folder_that_stays_in_the_home() {
    let home = AgentHome::new();
    let (_agent, _address, requester) = home.start_listening_and_dial().await;
    assert!(
        requester
            .peer()
            .capabilities
            .iter()
            .any(|c| c == "package_install")
    );
    let package = zip_of(&[
        ("Deploy.sh", "echo deploy"),
        ("config/app.conf", "name=#{Name}"),
        ("appsettings.json", r#"{"Mode":"dev"}"#),
    ]);
    let sha256 = upload(&requester, "1.0.0", &package).await;
    // An environment name that looks like a path stays one folder under Applications.
    let installed = within(requester.extract_package(extract(sha256, "1.0.0", "../../escape")))
        .await
        .unwrap();
    assert_eq!(installed.directory.as_str(), ".._.._escape/Acme.Web/1.0.0");
    assert_eq!(installed.top_level_files, ["Deploy.sh", "appsettings.json"]);
    assert_eq!(installed.files, 3);
    let folder = under(
        home.path(),
        &["Applications", ".._.._escape", "Acme.Web", "1.0.0"],
    );
    assert_eq!(std::path::Path::new(&installed.path), folder);
    let again = within(requester.extract_package(extract(sha256, "1.0.0", "../../escape")))
        .await
        .unwrap();
    assert_eq!(again.directory.as_str(), ".._.._escape/Acme.Web/1.0.0_1");

    let (notes, failure) = within(requester.rewrite_files(RewriteFiles {
        folder: Folder::Installation {
            directory: installed.directory.clone(),
        },
        substitute_in_files: vec!["config/*.conf".into(), "missing/*.txt".into()],
        structured_variables: vec!["appsettings.json".into()],
        variables: vec![
            ("Name".into(), "shop".into()),
            ("Mode".into(), "#{Name}-prod".into()),
        ],
    }))
    .await
    .unwrap();
    assert_eq!(failure, None);
    assert!(
        notes.iter().any(|n| n.text.contains("missing/*.txt")),
        "{notes:?}"
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("config/app.conf")).unwrap(),
        "name=shop"
    );
    let settings = std::fs::read_to_string(folder.join("appsettings.json")).unwrap();
    assert!(settings.contains("\"Mode\": \"shop-prod\""), "{settings}");

    let script = StartScript {
        folder: Some(Folder::Installation {
            directory: installed.directory.clone(),
        }),
        ..bash(
            "job-in-installation",
            "echo \"in $PWD\"; cat config/app.conf",
        )
    };
    let finished = run_script(&requester, script).await;
    assert_eq!(finished.exit_code, 0);
    let canonical = folder.canonicalize().unwrap();
    assert_eq!(
        finished.stdout,
        [
            format!("in {}", canonical.display()),
            "name=shop".to_owned()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installations_refuse_packages_and_folders_the_agent_does_not_have() {
    let home = AgentHome::new();
    let (_agent, _address, requester) = home.start_listening_and_dial().await;
    let unknown = Sha256Digest::of(b"never uploaded");
    match within(requester.extract_package(extract(unknown, "1.0.0", "Test"))).await {
        Err(LinkError::Remote(error)) => {
            assert_eq!(error.kind, RemoteErrorKind::NotFound);
            assert!(
                error.message.contains("upload it first"),
                "{}",
                error.message
            );
        }
        other => panic!("expected a not-found refusal, got {other:?}"),
    }
    // Not a zip: the extraction fails and leaves no folder behind.
    let sha256 = upload(&requester, "2.0.0", b"this is not a zip archive").await;
    match within(requester.extract_package(extract(sha256, "2.0.0", "Test"))).await {
        Err(LinkError::Remote(error)) => assert_eq!(error.kind, RemoteErrorKind::Failed),
        other => panic!("expected a failed extraction, got {other:?}"),
    }
    let left = under(home.path(), &["Applications", "Test", "Acme.Web"]);
    assert_eq!(std::fs::read_dir(&left).unwrap().count(), 0);
    let missing = RelativeFilePath::parse("Test/Acme.Web/9.9.9").unwrap();
    let script = StartScript {
        folder: Some(Folder::Installation {
            directory: missing.clone(),
        }),
        ..bash("job-nowhere", "echo never")
    };
    match within(requester.start_script(script)).await {
        Err(LinkError::Remote(error)) => assert_eq!(error.kind, RemoteErrorKind::NotFound),
        Err(other) => panic!("expected a not-found refusal, got {other:?}"),
        Ok(_) => panic!("a script started in an installation that does not exist"),
    }
    let rewrite = RewriteFiles {
        folder: Folder::Installation { directory: missing },
        substitute_in_files: vec!["*".into()],
        structured_variables: Vec::new(),
        variables: Vec::new(),
    };
    match within(requester.rewrite_files(rewrite)).await {
        Err(LinkError::Remote(error)) => assert_eq!(error.kind, RemoteErrorKind::NotFound),
        other => panic!("expected a not-found refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_scripts_files_are_read_in_chunks_until_the_job_is_released() {
    let home = AgentHome::new();
    let (agent, _address, requester) = home.start_listening_and_dial().await;
    let script = StartScript {
        keep_files: true,
        ..bash(
            "job-keep",
            "head -c 3000000 /dev/zero | tr '\\0' 'a' > big.txt; ln -s big.txt link.txt",
        )
    };
    let finished = run_script(&requester, script).await;
    assert_eq!(finished.exit_code, 0, "{:?}", finished.stderr);
    let dir = under(home.path(), &["work", "job-keep"]);
    // Kept, but never the script itself: it held the job's variables.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|name| !name.starts_with(".cuttle-")),
        "{names:?}"
    );
    let big = dir.join("big.txt").display().to_string();
    let (first, size) = within(requester.read_file(&big, 0, u32::MAX))
        .await
        .unwrap();
    assert_eq!(size, 3_000_000);
    assert_eq!(first.len(), 1024 * 1024);
    let (tail, _) = within(requester.read_file(&big, 2_999_000, 5_000))
        .await
        .unwrap();
    assert_eq!(tail, vec![b'a'; 1_000]);
    for refused in [
        dir.join("link.txt").display().to_string(),
        "big.txt".to_owned(),
    ] {
        match within(requester.read_file(&refused, 0, 10)).await {
            Err(LinkError::Remote(error)) => assert_eq!(error.kind, RemoteErrorKind::BadRequest),
            other => panic!("expected a refusal for {refused}, got {other:?}"),
        }
    }
    within(requester.release_job(JobId("job-keep".to_owned())))
        .await
        .unwrap();
    assert!(!dir.exists());

    // Never released (the worker died): gone when the agent starts again.
    let script = StartScript {
        keep_files: true,
        ..bash("job-left", "echo kept > kept.txt")
    };
    assert_eq!(run_script(&requester, script).await.exit_code, 0);
    let left = under(home.path(), &["work", "job-left"]);
    assert!(left.join("kept.txt").exists());
    drop(requester);
    let (_, _) = agent.stop_with(Signal::SIGTERM).await;
    let restarted = home.start();
    restarted.wait_for_log("agent started").await;
    assert!(!left.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_agent_serves_the_worker_it_dials_and_reconnects_after_a_drop() {
    let home = AgentHome::new();
    let worker = home.worker_link();
    let listener = within(worker.listen("127.0.0.1:0")).await.unwrap();
    let address = listener.local_addr().to_string();
    let agent = home.polling(&address, "pollingagentaaaaaaaa").start();

    let served = serve_one_script(listener, "first").await;
    assert_eq!(served.as_deref(), Some("poll://pollingagentaaaaaaaa/"));

    // The worker went away (listener and connection dropped); a new one on the same port gets
    // the agent back.
    let listener = within(bind_again(&worker, &address)).await;
    let served = serve_one_script(listener, "second").await;
    assert_eq!(served.as_deref(), Some("poll://pollingagentaaaaaaaa/"));
    assert!(agent.log().contains("connecting to the server"));
}

/// Accepts the polling agent, runs one script through it and drops everything; returns the
/// subscription id the agent announced.
async fn serve_one_script(
    mut listener: cuttle_agent_link::Listener<cuttle_agent_link::Requester>,
    word: &str,
) -> Option<String> {
    let requester = within(listener.accept()).await.unwrap();
    let finished = run_script(
        &requester,
        bash(&format!("job-{word}"), &format!("echo {word}")),
    )
    .await;
    assert_eq!(finished.stdout, vec![word.to_owned()]);
    assert_eq!(finished.exit_code, 0);
    requester
        .peer()
        .subscription_id
        .as_ref()
        .map(|id| id.to_string())
}

/// Listens on `address` again, retrying while the dropped listener's socket is being closed.
async fn bind_again(
    worker: &WorkerLink,
    address: &str,
) -> cuttle_agent_link::Listener<cuttle_agent_link::Requester> {
    loop {
        match worker.listen(address).await {
            Ok(listener) => return listener,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_agent_stops_its_running_scripts_first() {
    let home = AgentHome::new();
    let (agent, _address, requester) = home.start_listening_and_dial().await;
    let (run, pids) = start_sleeper(&requester, "job-shutdown").await;
    // Keep reading, so the link never holds undelivered output.
    tokio::spawn(read_to_end(run));

    let (status, log) = agent.stop_with(Signal::SIGTERM).await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("agent stopped after receiving SIGTERM"),
        "{log}"
    );
    // The agent signalled them before it exited; they are gone or going.
    for pid in pids {
        eventually(|| process_gone(pid)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_stops_the_scripts_of_one_that_was_killed() {
    let home = AgentHome::new();
    let (agent, _address, requester) = home.start_listening_and_dial().await;
    let (run, pids) = start_sleeper(&requester, "job-orphan").await;
    drop(run);
    drop(requester);

    // SIGKILL gives the agent no chance to clean up: its script lives on in its own group.
    let (_, _) = agent.stop_with(Signal::SIGKILL).await;
    assert!(pids.iter().all(|pid| !process_gone(*pid)));

    let restarted = home.start();
    restarted.wait_for_log("agent started").await;
    assert!(restarted.log().contains("stopped a script left running"));
    for pid in pids {
        eventually(|| process_gone(pid)).await;
    }
    assert!(!under(home.path(), &["work", "job-orphan"]).exists());
}

/// Starts a script that sleeps with a background child; returns the run and the script's and
/// child's pids, once both are running.
async fn start_sleeper(
    requester: &cuttle_agent_link::Requester,
    job_id: &str,
) -> (cuttle_agent_link::ScriptRun, Vec<i32>) {
    let mut run = within(requester.start_script(bash(
        job_id,
        "sleep 300 &\necho \"child=$!\"\necho \"script=$$\"\nsleep 300",
    )))
    .await
    .unwrap();
    let mut pids = Vec::new();
    while pids.len() < 2 {
        match within(run.next()).await.unwrap().unwrap() {
            ScriptEvent::Output(lines) => {
                for line in lines {
                    let (_, pid) = line.text.split_once('=').unwrap();
                    pids.push(pid.parse::<i32>().unwrap());
                }
            }
            ScriptEvent::Finished { exit_code } => panic!("the script ended early: {exit_code}"),
        }
    }
    assert!(pids.iter().all(|pid| !process_gone(*pid)));
    (run, pids)
}
