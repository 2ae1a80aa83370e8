//! Runs the scripts workers send: each in a fresh working directory, in its own process group,
//! its output streamed back in small batches and kept for `get_status`, and the whole group
//! stopped on cancel and when the agent stops.
//!
//! The ideas are the worker's (`services/worker/src/script.rs`); the agent keeps its own copy
//! because it links none of the worker's server crates.

use cuttle_agent_link::messages::{
    JobId, OutputLine, OutputStream, ScriptState, ScriptStatus, ScriptSyntax, ScriptTicket,
    StartScript,
};
use cuttle_agent_link::{Progress, RemoteError, RemoteErrorKind, Responder, Response};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

/// Most lines in one `Output` progress message.
const BATCH_LINES: usize = 200;
/// Most bytes of text in one `Output` message or `get_status` answer. With JSON's worst-case
/// escaping (6 bytes a byte) this stays well under the link's 4 MiB frame limit.
const BATCH_BYTES: usize = 256 * 1024;
/// Most lines in one `get_status` answer.
const STATUS_PAGE_LINES: usize = 1000;
/// Longest a line waits before it is sent, so the task log is live.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Longest line; a longer one is split, so one endless line cannot exhaust memory.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// Output kept per script for `get_status` after a reconnect; the oldest lines go first.
const RETAINED_BYTES: usize = 32 * 1024 * 1024;
/// How long a finished script's status and output stay available.
const FINISHED_RETENTION: Duration = Duration::from_secs(3600);
/// How long output may keep arriving after the script exits (from children it left behind).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// Names inside a working directory that belong to the agent, not to the script's files.
const RESERVED_PREFIX: &str = ".cuttle-";
/// File in a working directory naming the agent process and the script's process group, so an
/// agent starting later can stop scripts whose agent died (see [`stop_orphans`]).
const OWNER_FILE: &str = ".cuttle-owner";
/// The exit code reported for a script that was canceled yet exited 0 (128 + SIGTERM), since
/// a canceled script is never reported as a success.
const CANCELED_EXIT_CODE: i32 = 143;

/// The interpreters the agent knows, in the order capabilities list them.
const SHELLS: [(ScriptSyntax, &str); 3] = [
    (ScriptSyntax::Bash, "bash"),
    (ScriptSyntax::Python, "python3"),
    (ScriptSyntax::PowerShell, "pwsh"),
];

/// The script syntaxes whose interpreter is on PATH now.
pub fn available_shells() -> Vec<ScriptSyntax> {
    SHELLS
        .iter()
        .filter(|(_, program)| find_on_path(program).is_some())
        .map(|(syntax, _)| *syntax)
        .collect()
}

use cuttle_process::find_on_path;

fn program_of(syntax: ScriptSyntax) -> &'static str {
    SHELLS
        .iter()
        .find(|(known, _)| *known == syntax)
        .map_or("bash", |(_, program)| program)
}

fn extension_of(syntax: ScriptSyntax) -> &'static str {
    match syntax {
        ScriptSyntax::Bash => "sh",
        ScriptSyntax::Python => "py",
        ScriptSyntax::PowerShell => "ps1",
    }
}

/// The scripts this agent runs or ran recently, by ticket.
pub struct Scripts {
    work_dir: PathBuf,
    kill_grace: Duration,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_ticket: HashMap<ScriptTicket, Arc<Script>>,
    /// Set once the agent stops: no new script may start.
    shutting_down: bool,
}

/// One script: its output so far, its state and its cancel switch.
struct Script {
    ticket: ScriptTicket,
    job_id: JobId,
    output: Mutex<RetainedOutput>,
    state: watch::Sender<ScriptState>,
    cancel: watch::Sender<bool>,
    finished_at: Mutex<Option<Instant>>,
}

impl Script {
    fn is_running(&self) -> bool {
        *self.state.borrow() == ScriptState::Running
    }

    fn output(&self) -> MutexGuard<'_, RetainedOutput> {
        // Pushing and popping lines cannot panic halfway, so a poisoned lock is consistent.
        self.output.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finish(&self, exit_code: i32) {
        *self
            .finished_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.state.send_replace(ScriptState::Finished { exit_code });
    }

    fn expired(&self, now: Instant) -> bool {
        self.finished_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| now.duration_since(at) > FINISHED_RETENTION)
    }
}

/// The output kept for `get_status`, bounded by [`RETAINED_BYTES`].
#[derive(Default)]
struct RetainedOutput {
    lines: VecDeque<OutputLine>,
    bytes: usize,
}

impl RetainedOutput {
    fn push(&mut self, line: OutputLine) {
        self.bytes += line.text.len();
        self.lines.push_back(line);
        while self.bytes > RETAINED_BYTES {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.text.len(),
                None => break,
            }
        }
    }

    /// Lines after `after_sequence`, at most one batch's worth.
    fn after(&self, after_sequence: u64) -> Vec<OutputLine> {
        // Sequence numbers ascend, so the first wanted line is found by bisection.
        let first = self
            .lines
            .partition_point(|line| line.sequence <= after_sequence);
        let mut page = Vec::new();
        let mut bytes = 0;
        for line in self.lines.range(first..) {
            let full = bytes + line.text.len() > BATCH_BYTES || page.len() >= STATUS_PAGE_LINES;
            if !page.is_empty() && full {
                break;
            }
            bytes += line.text.len();
            page.push(line.clone());
        }
        page
    }
}

/// A script whose process has started.
struct Launched {
    script: Arc<Script>,
    child: Child,
    dir: PathBuf,
    /// Keep `dir` (all but the script file) until the worker releases the job.
    keep_files: bool,
}

fn bad_request(message: impl Into<String>) -> RemoteError {
    RemoteError::new(RemoteErrorKind::BadRequest, message)
}

fn failed(message: impl Into<String>) -> RemoteError {
    RemoteError::new(RemoteErrorKind::Failed, message)
}

impl Scripts {
    /// Scripts run in directories under `work_dir`; cancel waits `kill_grace` before SIGKILL.
    pub fn new(work_dir: PathBuf, kill_grace: Duration) -> Scripts {
        Scripts {
            work_dir,
            kill_grace,
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Map inserts and removals cannot panic halfway, so a poisoned lock is consistent.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn find(&self, ticket: &ScriptTicket) -> Result<Arc<Script>, RemoteError> {
        self.table().by_ticket.get(ticket).cloned().ok_or_else(|| {
            RemoteError::new(
                RemoteErrorKind::NotFound,
                format!(
                    "this agent has no script with ticket {ticket}; it finished over an hour ago or the agent restarted"
                ),
            )
        })
    }

    /// Answers `start_script`: starts it, streams its output and answers with its exit code.
    /// `cwd` is where it runs when not in its own fresh working directory (an installation).
    pub async fn serve_start(
        &self,
        start: StartScript,
        cwd: Option<PathBuf>,
        responder: Responder,
    ) {
        let launched = match self.launch(&start, cwd.as_deref()).await {
            Ok(launched) => launched,
            Err(error) => {
                tracing::warn!(job.id = %start.job_id.0, error = %error, "refused to start a script");
                if let Err(err) = responder.respond(Response::Error(error)).await {
                    tracing::debug!(error = %err, "could not send the refusal; the worker is gone");
                }
                return;
            }
        };
        let ticket = launched.script.ticket.clone();
        let started = Progress::ScriptStarted {
            ticket: ticket.clone(),
        };
        if let Err(err) = responder.progress(started).await {
            // Without its ticket nobody can follow or cancel the script, so it must not run.
            tracing::warn!(script.ticket = %ticket, error = %err, "the worker left before learning the script's ticket; stopping the script");
            launched.script.cancel.send_replace(true);
        }
        let (exit_code, responder) = self.run_to_end(launched, responder).await;
        let Some(responder) = responder else {
            return;
        };
        let finished = Response::ScriptFinished { ticket, exit_code };
        if let Err(err) = responder.respond(finished).await {
            tracing::info!(error = %err, "the worker left before the script finished; its status stays available for get_status");
        }
    }

    /// Checks the request, creates the fresh working directory and spawns the interpreter.
    async fn launch(
        &self,
        start: &StartScript,
        cwd: Option<&Path>,
    ) -> Result<Launched, RemoteError> {
        check_job_id(&start.job_id)?;
        let program = program_of(start.syntax);
        let interpreter = find_on_path(program).ok_or_else(|| {
            bad_request(format!(
                "this agent cannot run {:?} scripts: {program} is not on its PATH; install it or use another syntax",
                start.syntax
            ))
        })?;
        if let Some(file) = start
            .files
            .iter()
            .find(|file| file.path.as_str().starts_with(RESERVED_PREFIX))
        {
            return Err(bad_request(format!(
                "the file name '{}' is reserved: names starting with '{RESERVED_PREFIX}' belong to the agent",
                file.path.as_str()
            )));
        }
        let script = self.register(&start.job_id)?;
        let dir = self.work_dir.join(&start.job_id.0);
        match self.spawn(start, &interpreter, &dir, cwd, &script).await {
            Ok(child) => Ok(Launched {
                script,
                child,
                dir,
                keep_files: start.keep_files,
            }),
            Err(error) => {
                script.finish(-1);
                self.table().by_ticket.remove(&script.ticket);
                remove_dir(&dir).await;
                Err(error)
            }
        }
    }

    /// Adds a new script to the table, unless its job already runs or the agent is stopping.
    fn register(&self, job_id: &JobId) -> Result<Arc<Script>, RemoteError> {
        let now = Instant::now();
        let mut table = self.table();
        if table.shutting_down {
            return Err(failed(
                "the agent is shutting down; retry on another agent or after it restarts",
            ));
        }
        table.by_ticket.retain(|_, script| !script.expired(now));
        if let Some(running) = table
            .by_ticket
            .values()
            .find(|script| script.job_id == *job_id && script.is_running())
        {
            return Err(bad_request(format!(
                "job {} already runs on this agent under ticket {}",
                job_id.0, running.ticket
            )));
        }
        let ticket = ScriptTicket(uuid::Uuid::new_v4().simple().to_string());
        let script = Arc::new(Script {
            ticket: ticket.clone(),
            job_id: job_id.clone(),
            output: Mutex::new(RetainedOutput::default()),
            state: watch::Sender::new(ScriptState::Running),
            cancel: watch::Sender::new(false),
            finished_at: Mutex::new(None),
        });
        table.by_ticket.insert(ticket, script.clone());
        Ok(script)
    }

    async fn spawn(
        &self,
        start: &StartScript,
        interpreter: &Path,
        dir: &Path,
        cwd: Option<&Path>,
        script: &Script,
    ) -> Result<Child, RemoteError> {
        let prepare_error = |err: std::io::Error| {
            failed(format!(
                "the agent could not prepare the working directory {}: {err}",
                dir.display()
            ))
        };
        // A directory left by an earlier run of this job would mix its files into this one.
        remove_dir(dir).await;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(prepare_error)?;
        for file in &start.files {
            // `RelativeFilePath` has no root, `..` or empty parts, and the directory is fresh,
            // so every file lands inside it.
            let path = dir.join(file.path.as_str());
            let mode = if file.executable { 0o755 } else { 0o644 };
            write_file(&path, &file.contents, mode)
                .await
                .map_err(prepare_error)?;
        }
        let script_path = dir.join(format!(
            "{RESERVED_PREFIX}script.{}",
            extension_of(start.syntax)
        ));
        write_file(&script_path, start.body.as_bytes(), 0o600)
            .await
            .map_err(prepare_error)?;

        let mut command = Command::new(interpreter);
        match start.syntax {
            ScriptSyntax::Bash => {}
            // Unbuffered, so lines arrive as they are printed.
            ScriptSyntax::Python => {
                command.arg("-u");
            }
            ScriptSyntax::PowerShell => {
                command.args(["-NoLogo", "-NoProfile", "-NonInteractive", "-File"]);
            }
        }
        command
            .arg(&script_path)
            .args(&start.args)
            .current_dir(cwd.unwrap_or(dir))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so cancel stops everything the script started.
            .process_group(0)
            .kill_on_drop(true);
        // Scripts must not see the agent's own settings; what the worker sends is explicit.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CUTTLE_") {
                command.env_remove(&key);
            }
        }
        command.envs(&start.environment);
        let child = command.spawn().map_err(|err| {
            failed(format!(
                "the agent could not start {}: {err}",
                interpreter.display()
            ))
        })?;
        cuttle_process::record_owner(dir, OWNER_FILE, child.id()).await;
        tracing::info!(
            job.id = %start.job_id.0,
            script.ticket = %script.ticket,
            script.syntax = ?start.syntax,
            process.pid = child.id(),
            "script started"
        );
        Ok(child)
    }

    /// Streams the script's output until it exits or is stopped, then cleans up. Returns the
    /// exit code and the responder, which the batcher borrowed (`None` if the batcher failed,
    /// in which case dropping it already answered the worker).
    async fn run_to_end(
        &self,
        launched: Launched,
        responder: Responder,
    ) -> (i32, Option<Responder>) {
        let Launched {
            script,
            mut child,
            dir,
            keep_files,
        } = launched;
        let (lines_tx, lines_rx) = mpsc::channel(1024);
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(tokio::spawn(read_lines(
                stdout,
                OutputStream::Stdout,
                lines_tx.clone(),
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(tokio::spawn(read_lines(
                stderr,
                OutputStream::Stderr,
                lines_tx.clone(),
            )));
        }
        drop(lines_tx);
        let batcher = {
            let script = script.clone();
            tokio::spawn(async move {
                batch(lines_rx, &script, &responder).await;
                responder
            })
        };

        let pid = child.id();
        let mut cancel = script.cancel.subscribe();
        let mut canceled = false;
        let status = tokio::select! {
            status = child.wait() => status,
            () = wait_for_cancel(&mut cancel) => {
                canceled = true;
                tracing::info!(script.ticket = %script.ticket, "stopping a script: SIGTERM to its process group");
                cuttle_process::stop_group(pid, self.kill_grace, &mut child).await
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
            // process group with setsid). Stop the group, and stop reading: the script is over.
            tracing::info!(script.ticket = %script.ticket, "the script left processes holding its output open; no longer reading them");
            cuttle_process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            for abort in aborts {
                abort.abort();
            }
        }
        let responder = match batcher.await {
            Ok(responder) => Some(responder),
            Err(err) => {
                tracing::warn!(error = %err, "the output batcher ended abnormally");
                None
            }
        };
        let exit_code = exit_code_of(status, canceled);
        if keep_files {
            // The script file holds the job's variables, secrets too: it never outlives the run.
            remove_reserved_files(&dir).await;
        } else {
            remove_dir(&dir).await;
        }
        script.finish(exit_code);
        tracing::info!(
            job.id = %script.job_id.0,
            script.ticket = %script.ticket,
            script.exit_code = exit_code,
            script.canceled = canceled,
            "script finished"
        );
        (exit_code, responder)
    }

    /// Answers `get_status`: the state and at most one batch of lines after `after_sequence`;
    /// a worker catching up asks again after the last line it got until none come back.
    pub fn status(
        &self,
        ticket: &ScriptTicket,
        after_sequence: u64,
    ) -> Result<ScriptStatus, RemoteError> {
        let script = self.find(ticket)?;
        // The state is read before the lines: a script seen finished has all its lines kept.
        let state = *script.state.borrow();
        let lines = script.output().after(after_sequence);
        Ok(ScriptStatus {
            ticket: ticket.clone(),
            state,
            lines,
        })
    }

    /// Answers `cancel`: asks the script to stop; returns whether it was still running.
    pub fn cancel(&self, ticket: &ScriptTicket) -> Result<bool, RemoteError> {
        let script = self.find(ticket)?;
        let was_running = script.is_running();
        if was_running {
            tracing::info!(job.id = %script.job_id.0, script.ticket = %ticket, "cancel requested");
            script.cancel.send_replace(true);
        }
        Ok(was_running)
    }

    /// Refuses new scripts, stops every running one (SIGTERM, then SIGKILL after the grace
    /// period) and waits until each has been cleaned up. Called when the agent stops, so no
    /// script outlives it.
    pub async fn stop_all(&self) {
        let running: Vec<Arc<Script>> = {
            let mut table = self.table();
            table.shutting_down = true;
            table
                .by_ticket
                .values()
                .filter(|script| script.is_running())
                .cloned()
                .collect()
        };
        if running.is_empty() {
            return;
        }
        tracing::info!(
            script.count = running.len(),
            "stopping running scripts before the agent exits"
        );
        for script in &running {
            script.cancel.send_replace(true);
        }
        let patience = self.kill_grace + DRAIN_AFTER_EXIT + Duration::from_secs(5);
        for script in running {
            let mut state = script.state.subscribe();
            let finished = tokio::time::timeout(
                patience,
                state.wait_for(|state| *state != ScriptState::Running),
            )
            .await;
            if !matches!(finished, Ok(Ok(_))) {
                tracing::warn!(script.ticket = %script.ticket, "a script did not finish stopping in time");
            }
        }
    }
}

/// Waits until the cancel switch is on; never returns if nobody can turn it on any more.
async fn wait_for_cancel(cancel: &mut watch::Receiver<bool>) {
    if cancel.wait_for(|on| *on).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Job ids name directories, so they must be one safe path component.
pub(crate) fn check_job_id(job_id: &JobId) -> Result<(), RemoteError> {
    let id = &job_id.0;
    let safe = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if safe {
        Ok(())
    } else {
        Err(bad_request(format!(
            "job id '{id}' cannot name a directory; use up to 128 letters, digits, '-', '_' and '.', not starting with '.'"
        )))
    }
}

fn exit_code_of(status: std::io::Result<std::process::ExitStatus>, canceled: bool) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    let code = match status {
        // A shell reports death by signal N as 128 + N; workers read it the same way.
        Ok(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(err) => {
            tracing::warn!(error = %err, "lost track of a script's process");
            -1
        }
    };
    if canceled && code == 0 {
        CANCELED_EXIT_CODE
    } else {
        code
    }
}

/// Writes `contents` to `path` with `mode`. The file is created owner-only and opened up to
/// `mode` only once written, so a script (which holds variable values, secrets too) is never
/// readable by others, not even for an instant.
async fn write_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncWriteExt;
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await?;
    file.write_all(contents).await?;
    file.flush().await?;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).await
}

/// Removes every directory left under `work_dir`, at start once orphans were stopped: kept
/// files of jobs the worker never released.
pub fn remove_leftovers(work_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if let Err(err) = std::fs::remove_dir_all(entry.path()) {
            tracing::warn!(dir = %entry.path().display(), error = %err, "could not remove a job's kept files");
        }
    }
}

/// Removes the agent's own files (the script, the owner record) from a kept directory.
async fn remove_reserved_files(dir: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(RESERVED_PREFIX)
            && let Err(err) = tokio::fs::remove_file(entry.path()).await
        {
            tracing::warn!(file = %entry.path().display(), error = %err, "could not remove a script file");
        }
    }
}

impl Scripts {
    /// Removes a job's kept working directory, unless one of its scripts still runs.
    pub async fn release(&self, job_id: &JobId) -> Result<(), RemoteError> {
        check_job_id(job_id)?;
        let running = self
            .table()
            .by_ticket
            .values()
            .any(|script| script.job_id == *job_id && script.is_running());
        if !running {
            remove_dir(&self.work_dir.join(&job_id.0)).await;
        }
        Ok(())
    }
}

async fn remove_dir(dir: &Path) {
    if let Err(err) = tokio::fs::remove_dir_all(dir).await
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(script.dir = %dir.display(), error = %err, "could not remove a script's working directory");
    }
}

/// Stops the scripts that an agent which died (SIGKILL, OOM, power loss) left running under
/// `work_dir`, and removes their directories. Called when the agent starts: a script's own
/// process group keeps it from dying with its agent, which cancel needs.
pub fn stop_orphans(work_dir: &Path) -> usize {
    cuttle_process::stop_orphans(work_dir, OWNER_FILE)
}

async fn read_lines(
    stream: impl AsyncRead + Unpin,
    which: OutputStream,
    lines: mpsc::Sender<(OutputStream, String)>,
) {
    let mut reader = BufReader::new(stream);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        // At most MAX_LINE_BYTES at a time: a longer line arrives as several.
        let limit = MAX_LINE_BYTES as u64;
        match (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut buffer)
            .await
        {
            Ok(0) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buffer);
                let text = text.trim_end_matches(['\n', '\r']).to_owned();
                if lines.send((which, text)).await.is_err() {
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

/// Numbers the lines, keeps them for `get_status` and sends them to the worker in batches of
/// at most [`BATCH_LINES`] lines or [`BATCH_BYTES`], at most [`FLUSH_EVERY`] late.
async fn batch(
    mut lines: mpsc::Receiver<(OutputStream, String)>,
    script: &Script,
    responder: &Responder,
) {
    let mut sequence = 0u64;
    let mut pending: Vec<OutputLine> = Vec::new();
    let mut pending_bytes = 0usize;
    // Once the worker is gone, lines are only kept; it reads them with get_status.
    let mut worker_listening = true;
    loop {
        let next = if pending.is_empty() {
            lines.recv().await
        } else {
            match tokio::time::timeout(FLUSH_EVERY, lines.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    send_batch(responder, &mut pending, &mut worker_listening).await;
                    pending_bytes = 0;
                    continue;
                }
            }
        };
        let Some((stream, text)) = next else { break };
        sequence += 1;
        let line = OutputLine {
            sequence,
            at: chrono::Utc::now(),
            stream,
            text,
        };
        script.output().push(line.clone());
        pending_bytes += line.text.len();
        pending.push(line);
        if pending.len() >= BATCH_LINES || pending_bytes >= BATCH_BYTES {
            send_batch(responder, &mut pending, &mut worker_listening).await;
            pending_bytes = 0;
        }
    }
    if !pending.is_empty() {
        send_batch(responder, &mut pending, &mut worker_listening).await;
    }
}

async fn send_batch(
    responder: &Responder,
    pending: &mut Vec<OutputLine>,
    worker_listening: &mut bool,
) {
    let lines = std::mem::take(pending);
    if !*worker_listening {
        return;
    }
    if let Err(err) = responder.progress(Progress::Output { lines }).await {
        tracing::info!(error = %err, "could not stream script output; it stays available for get_status");
        *worker_listening = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sequence: u64, text: &str) -> OutputLine {
        OutputLine {
            sequence,
            at: chrono::Utc::now(),
            stream: OutputStream::Stdout,
            text: text.to_owned(),
        }
    }

    #[test]
    fn retained_output_pages_after_a_sequence_number() {
        let mut output = RetainedOutput::default();
        for sequence in 1..=5 {
            output.push(line(sequence, "x"));
        }
        let page: Vec<u64> = output.after(2).iter().map(|l| l.sequence).collect();
        assert_eq!(page, vec![3, 4, 5]);
        assert!(output.after(5).is_empty());
    }

    #[test]
    fn job_ids_that_could_escape_the_work_directory_are_refused() {
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "job 1"] {
            assert!(check_job_id(&JobId(bad.to_owned())).is_err(), "{bad}");
        }
        assert!(check_job_id(&JobId("TaskJobs-12.a_b".to_owned())).is_ok());
    }

    #[test]
    fn a_canceled_script_that_exits_zero_is_not_reported_as_a_success() {
        use std::os::unix::process::ExitStatusExt;
        let zero = std::process::ExitStatus::from_raw(0);
        assert_eq!(exit_code_of(Ok(zero), true), CANCELED_EXIT_CODE);
        assert_eq!(exit_code_of(Ok(zero), false), 0);
        // Killed by SIGKILL (9): the raw wait status is the signal number.
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(exit_code_of(Ok(killed), false), 137);
    }
}
