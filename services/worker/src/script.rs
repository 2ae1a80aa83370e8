//! Runs one script in its own process group, streaming its output in batches, and stops the
//! whole group on cancel.

use crate::service_messages::{ArtifactRequest, LogFilter, Said};
use cuttle_bus::Bus;
use cuttle_contracts::{JobOutcome, LogLine, WorkerEvent};
use cuttle_domain::LogCategory;
use cuttle_domain::script::ScriptSyntax;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Where output lines go.
pub trait LogSink: Send + 'static {
    /// Delivers one batch of lines, in order.
    fn send(&self, lines: Vec<LogLine>) -> impl std::future::Future<Output = ()> + Send;
}

/// Sends batches to the orchestrator as `JobLog` events.
pub struct BusLogSink {
    /// The bus.
    pub bus: Arc<dyn Bus>,
    /// Task.
    pub task_id: String,
    /// Job.
    pub job_id: String,
}

impl LogSink for BusLogSink {
    async fn send(&self, lines: Vec<LogLine>) {
        let event = WorkerEvent::JobLog {
            task_id: self.task_id.clone(),
            job_id: self.job_id.clone(),
            lines,
        };
        for attempt in 1..=3u64 {
            match crate::report(self.bus.as_ref(), &event).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, attempt, "log batch not delivered; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
            }
        }
        tracing::error!("dropped a log batch after 3 attempts");
    }
}

/// Largest batch; a batch is also flushed after [`FLUSH_EVERY`].
const BATCH_LINES: usize = 200;
/// Longest a line waits before it is sent, so the task log is live.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// How long output may keep arriving after the script exits (from children it left behind).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

fn interpreter(syntax: ScriptSyntax, path: &Path) -> Result<Command, String> {
    match syntax {
        ScriptSyntax::Bash => {
            let mut command = Command::new("bash");
            command.arg(path);
            Ok(command)
        }
        ScriptSyntax::Python => {
            let mut command = Command::new("python3");
            command.arg("-u").arg(path);
            Ok(command)
        }
        ScriptSyntax::PowerShell => {
            let pwsh = find_on_path("pwsh").ok_or_else(|| {
                "PowerShell scripts run through pwsh, and pwsh is not installed on this worker. Install PowerShell, or use Bash or Python.".to_owned()
            })?;
            let mut command = Command::new(pwsh);
            command
                .args(["-NoLogo", "-NoProfile", "-NonInteractive", "-File"])
                .arg(path);
            Ok(command)
        }
    }
}

pub use cuttle_process::find_on_path;

/// How a script or a whole job ended, and the exit code of the script when one ran.
pub type Ended = (JobOutcome, Option<i32>);

/// The output of one job: lines from every script it runs and the worker's own notes share one
/// numbering and one batcher, so redelivered batches stay idempotent.
///
/// Every line passes a [`LogFilter`] first: service messages are read and kept out of the log,
/// and sensitive values are masked.
pub struct JobLog {
    tx: mpsc::Sender<Entry>,
    batcher: tokio::task::JoinHandle<Said>,
}

/// What goes through a job's log channel.
enum Entry {
    /// A line.
    Line(LogCategory, String),
    /// Answered once every line sent before it was read, with the artifacts asked for so far.
    Sync(tokio::sync::oneshot::Sender<Vec<ArtifactRequest>>),
}

impl JobLog {
    /// Starts batching lines into `sink`, with nothing to mask.
    pub fn start(sink: impl LogSink) -> JobLog {
        JobLog::start_filtered(sink, LogFilter::default())
    }

    /// Starts batching lines into `sink` through `filter`.
    pub fn start_filtered(sink: impl LogSink, filter: LogFilter) -> JobLog {
        let (tx, rx) = mpsc::channel::<Entry>(1024);
        // A spawned task does not inherit the current span; the batcher takes the job's, so the
        // log events it sends carry the deployment's trace context.
        let batcher = tokio::spawn(batch(rx, sink, filter).in_current_span());
        JobLog { tx, batcher }
    }

    /// Adds a line from the worker itself.
    pub async fn line(&self, category: LogCategory, text: impl Into<String>) {
        if self
            .tx
            .send(Entry::Line(category, text.into()))
            .await
            .is_err()
        {
            tracing::warn!("the log batcher stopped early; a line was lost");
        }
    }

    /// The artifacts the scripts asked for, once every line so far was read.
    pub async fn artifacts(&self) -> Vec<ArtifactRequest> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.tx.send(Entry::Sync(reply)).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Flushes what is pending and stops; returns what the scripts said in service messages.
    pub async fn finish(self) -> Said {
        drop(self.tx);
        match self.batcher.await {
            Ok(said) => said,
            Err(err) => {
                tracing::warn!(error = %err, "the log batcher ended abnormally");
                Said::default()
            }
        }
    }
}

/// One script to run.
pub struct ScriptRun<'a> {
    /// The job's own directory, where the owner file goes.
    pub job_dir: &'a Path,
    /// Where the script runs.
    pub cwd: &'a Path,
    /// Its language.
    pub syntax: ScriptSyntax,
    /// The script file.
    pub script: &'a Path,
    /// Its command-line arguments.
    pub args: &'a [String],
}

/// What every script of a job shares: who runs it, how long it may take to stop, and the cancel
/// signal.
#[derive(Clone)]
pub struct ScriptContext {
    /// The worker's name, given to scripts as `CUTTLE_WORKER_NAME`.
    pub worker_name: String,
    /// Time between SIGTERM and SIGKILL on cancel.
    pub kill_grace: Duration,
    /// Fires when the job must stop.
    pub cancel: CancellationToken,
}

/// Runs `body` and returns how it ended and its exit code.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    work_dir: &Path,
    job_id: &str,
    syntax: ScriptSyntax,
    body: &str,
    worker_name: &str,
    kill_grace: Duration,
    cancel: CancellationToken,
    sink: impl LogSink,
) -> Ended {
    let dir = work_dir.join(job_id);
    let log = JobLog::start(sink);
    let context = ScriptContext {
        worker_name: worker_name.to_owned(),
        kill_grace,
        cancel,
    };
    let result = run_inline(&dir, syntax, body, &context, &log).await;
    log.finish().await;
    remove_job_dir(&dir).await;
    result
}

/// Removes a job's directory once the job is over.
pub async fn remove_job_dir(dir: &Path) {
    if let Err(err) = tokio::fs::remove_dir_all(dir).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %err, "could not remove the job directory");
    }
}

/// Writes `body` into the job directory `dir` and runs it there.
pub async fn run_inline(
    dir: &Path,
    syntax: ScriptSyntax,
    body: &str,
    context: &ScriptContext,
    log: &JobLog,
) -> Ended {
    if let Err(err) = tokio::fs::create_dir_all(dir).await {
        return failed(format!(
            "The worker could not create its job directory {}: {err}",
            dir.display()
        ));
    }
    let path = dir.join(format!("script.{}", syntax.extension()));
    if let Err(err) = write_private(&path, body).await {
        return failed(format!("The worker could not write the script file: {err}"));
    }
    run_script(
        &ScriptRun {
            job_dir: dir,
            cwd: dir,
            syntax,
            script: &path,
            args: &[],
        },
        context,
        log,
    )
    .await
}

/// Writes a file only its owner can read: scripts hold variable values, sensitive ones too.
pub async fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await?;
    file.write_all(text.as_bytes()).await?;
    file.flush().await
}

/// A failure before any script ran.
pub fn failed(reason: String) -> Ended {
    (JobOutcome::Failed { reason }, None)
}

/// Runs one script file to its end (or until canceled), streaming its output into `log`.
pub async fn run_script(run: &ScriptRun<'_>, context: &ScriptContext, log: &JobLog) -> Ended {
    let mut command = match interpreter(run.syntax, run.script) {
        Ok(command) => command,
        Err(reason) => return failed(reason),
    };
    command
        .args(run.args)
        .current_dir(run.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so cancel stops everything the script started.
        .process_group(0)
        .kill_on_drop(true)
        .env("CUTTLE_WORKER_NAME", &context.worker_name);
    // Scripts must not see the server's own secrets (database, broker and S3 credentials).
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CUTTLE_") || name.starts_with("AWS_") {
            command.env_remove(&key);
        }
    }
    if context.cancel.is_cancelled() {
        return (JobOutcome::Canceled, None);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return failed(format!("The script could not be started: {err}")),
    };
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(
            stdout,
            LogCategory::Info,
            log.tx.clone(),
        )));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(
            stderr,
            LogCategory::Error,
            log.tx.clone(),
        )));
    }
    let pid = child.id();
    cuttle_process::record_owner(run.job_dir, OWNER_FILE, pid).await;

    let mut canceled = false;
    let status = tokio::select! {
        status = child.wait() => status,
        () = context.cancel.cancelled() => {
            canceled = true;
            cuttle_process::stop_group(pid, context.kill_grace, &mut child).await
        }
    };
    // Output can still be in flight; children left running may hold the pipes open.
    let aborts: Vec<_> = readers.iter().map(|r| r.abort_handle()).collect();
    let drain = async {
        for reader in readers {
            if let Err(err) = reader.await
                && !err.is_cancelled()
            {
                tracing::warn!(error = %err, "an output reader ended abnormally");
            }
        }
    };
    if tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await.is_err() {
        // Something the script started still holds its output open (it may have left the
        // process group with setsid). Stop the group, and stop reading: the step is over.
        tracing::info!("the script left processes holding its output open; no longer reading them");
        cuttle_process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        for abort in aborts {
            abort.abort();
        }
    }
    if canceled {
        return (JobOutcome::Canceled, status.ok().and_then(|s| s.code()));
    }
    match status {
        Ok(status) if status.success() => (JobOutcome::Succeeded, Some(0)),
        Ok(status) => match status.code() {
            Some(code) => (
                JobOutcome::Failed {
                    reason: format!("The script returned exit code {code}"),
                },
                Some(code),
            ),
            None => {
                use std::os::unix::process::ExitStatusExt;
                let signal = status.signal().unwrap_or(0);
                (
                    JobOutcome::Failed {
                        reason: format!("The script was killed by signal {signal}"),
                    },
                    None,
                )
            }
        },
        Err(err) => failed(format!("The worker lost track of the script: {err}")),
    }
}

/// File in a job directory naming the worker process that runs the job and the script's process
/// group, so that a worker starting later can stop scripts whose worker died (see
/// [`stop_orphans`]).
const OWNER_FILE: &str = "owner";

/// Stops the scripts that workers which died (SIGKILL, OOM, power loss) left running in
/// `work_dir`, and removes their job directories. A worker calls it when it starts: a script's
/// own process group keeps it from dying with its worker, which cancel needs.
pub fn stop_orphans(work_dir: &Path) -> usize {
    cuttle_process::stop_orphans(work_dir, OWNER_FILE)
}

async fn read_lines(
    stream: impl AsyncRead + Unpin,
    category: LogCategory,
    tx: mpsc::Sender<Entry>,
) {
    let mut reader = BufReader::new(stream);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer).await {
            Ok(0) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buffer);
                let text = text.trim_end_matches(['\n', '\r']).to_owned();
                if tx.send(Entry::Line(category, text)).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "reading script output failed");
                return;
            }
        }
    }
}

async fn batch(mut rx: mpsc::Receiver<Entry>, sink: impl LogSink, mut filter: LogFilter) -> Said {
    let mut seq = 0i64;
    let mut pending: Vec<LogLine> = Vec::new();
    loop {
        let next = if pending.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(FLUSH_EVERY, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    sink.send(std::mem::take(&mut pending)).await;
                    continue;
                }
            }
        };
        match next {
            Some(Entry::Sync(reply)) => {
                // The receiver may have given up; nothing to do then.
                let _ = reply.send(filter.take_artifacts());
            }
            Some(Entry::Line(category, text)) => {
                let Some((category, text)) = filter.filter(category, text) else {
                    continue;
                };
                seq += 1;
                pending.push(LogLine {
                    seq,
                    at: chrono::Utc::now(),
                    category,
                    text,
                });
                if pending.len() >= BATCH_LINES {
                    sink.send(std::mem::take(&mut pending)).await;
                }
            }
            None => {
                if !pending.is_empty() {
                    sink.send(pending).await;
                }
                return filter.into_said();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<LogLine>>>);

    impl LogSink for Collect {
        async fn send(&self, lines: Vec<LogLine>) {
            self.0.lock().unwrap().extend(lines);
        }
    }

    async fn run_bash(
        body: &str,
        cancel: CancellationToken,
    ) -> (JobOutcome, Option<i32>, Vec<LogLine>) {
        let dir = tempfile::tempdir().unwrap();
        let sink = Collect::default();
        let (outcome, code) = run(
            dir.path(),
            "job",
            ScriptSyntax::Bash,
            body,
            "test",
            Duration::from_millis(500),
            cancel,
            sink.clone(),
        )
        .await;
        let lines = sink.0.lock().unwrap().clone();
        (outcome, code, lines)
    }

    #[tokio::test]
    async fn stdout_and_stderr_lines_arrive_numbered_with_their_categories() {
        let (outcome, code, lines) = run_bash(
            "echo hello\necho oops >&2\nexit 0",
            CancellationToken::new(),
        )
        .await;
        assert_eq!(outcome, JobOutcome::Succeeded);
        assert_eq!(code, Some(0));
        assert!(
            lines
                .iter()
                .any(|l| l.text == "hello" && l.category == LogCategory::Info)
        );
        assert!(
            lines
                .iter()
                .any(|l| l.text == "oops" && l.category == LogCategory::Error)
        );
        let seqs: Vec<i64> = lines.iter().map(|l| l.seq).collect();
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(seqs, sorted);
    }

    #[tokio::test]
    async fn a_non_zero_exit_code_fails_with_the_code_in_the_reason() {
        let (outcome, code, _) = run_bash("exit 3", CancellationToken::new()).await;
        assert_eq!(code, Some(3));
        assert!(matches!(outcome, JobOutcome::Failed { reason } if reason.contains("exit code 3")));
    }

    #[tokio::test]
    async fn cancel_kills_the_script_and_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-alive");
        let body = format!(
            "(sleep 30; touch {}) &\necho started\nsleep 30",
            marker.display()
        );
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            trigger.cancel();
        });
        let (outcome, _, lines) = run_bash(&body, cancel).await;
        assert_eq!(outcome, JobOutcome::Canceled);
        assert!(lines.iter().any(|l| l.text == "started"));
        // The background child was in the same group: it must be gone too.
        let output = std::process::Command::new("pgrep")
            .args(["-f", &marker.display().to_string()])
            .output()
            .unwrap();
        assert!(
            output.stdout.is_empty(),
            "a child of the canceled script survived"
        );
    }

    #[tokio::test]
    async fn a_detached_child_holding_the_output_open_does_not_hang_the_step() {
        let (outcome, _, lines) =
            run_bash("setsid sleep 30 &\necho done", CancellationToken::new()).await;
        assert_eq!(outcome, JobOutcome::Succeeded);
        assert!(lines.iter().any(|l| l.text == "done"));
    }

    #[test]
    fn a_starting_worker_stops_scripts_whose_worker_died() {
        use std::os::unix::process::CommandExt;
        let work = tempfile::tempdir().unwrap();
        // A process that has exited stands for the dead worker.
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let mut orphan = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let job = work.path().join("job-1");
        std::fs::create_dir_all(&job).unwrap();
        std::fs::write(
            job.join(OWNER_FILE),
            format!("{dead_pid} {}\n", orphan.id()),
        )
        .unwrap();
        // A job of a live worker (this process) is left alone.
        let live = work.path().join("job-2");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(
            live.join(OWNER_FILE),
            format!("{} 999999\n", std::process::id()),
        )
        .unwrap();
        assert_eq!(stop_orphans(work.path()), 1);
        let status = orphan.wait().unwrap();
        assert!(!status.success(), "the orphan was killed");
        assert!(!job.exists());
        assert!(live.exists());
    }

    #[tokio::test]
    async fn powershell_without_pwsh_fails_with_a_clear_reason() {
        if find_on_path("pwsh").is_some() {
            // With pwsh installed the step runs instead (variables.rs runs the helpers under it).
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (outcome, _) = run(
            dir.path(),
            "job",
            ScriptSyntax::PowerShell,
            "Write-Host hi",
            "test",
            Duration::from_millis(100),
            CancellationToken::new(),
            Collect::default(),
        )
        .await;
        assert!(
            matches!(outcome, JobOutcome::Failed { reason } if reason.contains("pwsh is not installed"))
        );
    }
}
