//! Scripts in their own process groups, shared by the worker and the agent.
//!
//! A script runs as the leader of a new process group, so cancel can stop everything it started
//! ([`stop_group`]), and so it does not die with the process that started it. That process
//! records itself and the group in an owner file beside the script ([`record_owner`]); when a
//! successor starts in the same work directory, [`stop_orphans`] stops the groups whose owner
//! died and removes their directories.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Finds an executable on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Writes `<this pid> <pgid>` to `dir/owner_file`, so a successor can stop the group if this
/// process dies.
pub async fn record_owner(dir: &Path, owner_file: &str, pgid: Option<u32>) {
    let Some(pgid) = pgid else { return };
    let text = format!("{} {pgid}\n", std::process::id());
    if let Err(err) = tokio::fs::write(dir.join(owner_file), text).await {
        tracing::warn!(error = %err, "could not record the script's process group; if this process dies, the script outlives it");
    }
}

/// Stops the scripts that processes which died (SIGKILL, OOM, power loss) left running in the
/// directories under `work_dir`, and removes those directories; returns how many were stopped.
pub fn stop_orphans(work_dir: &Path, owner_file: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return 0;
    };
    let mut stopped = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(text) = std::fs::read_to_string(dir.join(owner_file)) else {
            continue;
        };
        let mut numbers = text
            .split_whitespace()
            .filter_map(|n| n.parse::<i32>().ok());
        let (Some(owner), Some(pgid)) = (numbers.next(), numbers.next()) else {
            continue;
        };
        if u32::try_from(owner).is_ok_and(|owner| owner == std::process::id())
            || process_alive(owner)
        {
            continue;
        }
        match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
            Ok(()) => {
                stopped += 1;
                tracing::warn!(
                    owner.pid = owner,
                    process.pgid = pgid,
                    "stopped a script left running by a process that died"
                );
            }
            Err(nix::errno::Errno::ESRCH) => {}
            Err(err) => {
                tracing::warn!(process.pgid = pgid, error = %err, "could not stop an orphaned script");
            }
        }
        if let Err(err) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %err, "could not remove an orphaned script directory");
        }
    }
    stopped
}

fn process_alive(pid: i32) -> bool {
    // Signal 0 checks existence; EPERM means it exists but belongs to someone else.
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(err) => err == nix::errno::Errno::EPERM,
    }
}

/// Sends `signal` to the process group led by `pid` (a gone group is not an error).
pub fn signal_group(pid: Option<u32>, signal: Signal) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    // The child leads its own group (process_group(0)), so its pid is the group id.
    if let Err(err) = killpg(Pid::from_raw(pid), signal)
        && err != nix::errno::Errno::ESRCH
    {
        tracing::warn!(error = %err, ?signal, "could not signal the script's process group");
    }
}

/// SIGTERM to the whole group, then SIGKILL after `grace` (or as soon as the leader is gone, so
/// nothing it started lives on).
pub async fn stop_group(
    pid: Option<u32>,
    grace: Duration,
    child: &mut tokio::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    signal_group(pid, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => {
            signal_group(pid, Signal::SIGKILL);
            status
        }
        Err(_) => {
            signal_group(pid, Signal::SIGKILL);
            child.wait().await
        }
    }
}
