//! Identity files: created once with a private key only the owner can read, then reloaded.
#![allow(clippy::unwrap_used)]

use cuttle_agent_link::{AgentIdentity, IdentityError, WorkerIdentity};

#[test]
fn the_first_run_creates_a_key_readable_only_by_its_owner_and_later_runs_reload_it() {
    let dir = tempfile::tempdir().unwrap();

    let created = AgentIdentity::load_or_create(dir.path()).unwrap();
    let reloaded = AgentIdentity::load_or_create(dir.path()).unwrap();

    assert_eq!(reloaded.thumbprint(), created.thumbprint());
    let text = created.thumbprint().to_string();
    assert_eq!(text.len(), 40);
    assert!(
        text.chars()
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
    );
    assert!(dir.path().join("agent-cert.pem").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("agent-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_worker_and_an_agent_sharing_a_directory_keep_separate_identities() {
    let dir = tempfile::tempdir().unwrap();

    let agent = AgentIdentity::load_or_create(dir.path()).unwrap();
    let worker = WorkerIdentity::load_or_create(dir.path()).unwrap();

    assert_ne!(agent.thumbprint(), worker.thumbprint());
    assert_eq!(
        WorkerIdentity::load_or_create(dir.path())
            .unwrap()
            .thumbprint(),
        worker.thumbprint()
    );
}

#[test]
fn a_certificate_without_its_key_is_an_error_rather_than_a_silent_new_identity() {
    let dir = tempfile::tempdir().unwrap();
    AgentIdentity::load_or_create(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join("agent-key.pem")).unwrap();

    let result = AgentIdentity::load_or_create(dir.path());

    assert!(
        matches!(result, Err(IdentityError::MissingKey { .. })),
        "{result:?}"
    );
}

#[test]
fn a_key_without_its_certificate_gets_a_new_certificate_for_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    AgentIdentity::load_or_create(dir.path()).unwrap();
    let key_before = std::fs::read(dir.path().join("agent-key.pem")).unwrap();
    std::fs::remove_file(dir.path().join("agent-cert.pem")).unwrap();

    let repaired = AgentIdentity::load_or_create(dir.path()).unwrap();

    assert_eq!(
        std::fs::read(dir.path().join("agent-key.pem")).unwrap(),
        key_before
    );
    assert_eq!(
        AgentIdentity::load_or_create(dir.path())
            .unwrap()
            .thumbprint(),
        repaired.thumbprint()
    );
}

#[test]
fn a_key_that_does_not_belong_to_the_certificate_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    AgentIdentity::load_or_create(dir.path()).unwrap();
    AgentIdentity::load_or_create(other.path()).unwrap();
    std::fs::copy(
        other.path().join("agent-key.pem"),
        dir.path().join("agent-key.pem"),
    )
    .unwrap();

    let result = AgentIdentity::load_or_create(dir.path());

    assert!(
        matches!(result, Err(IdentityError::File { .. })),
        "{result:?}"
    );
}
