//! The v1 message set: what a worker asks an agent and what the agent answers.
//!
//! Every request gets exactly one final [`Response`]. Before it, the agent may send any number
//! of [`Progress`] messages for the same request: a script's ticket and its output, or the
//! go-ahead to stream a package. The enums are internally tagged by `type` in snake case, e.g.
//! `{"type":"get_status","ticket":"...","after_sequence":10}`.
//!
//! Compatibility: fields may be added with `#[serde(default)]` within v1; anything else is a new
//! protocol version. A request kind the agent does not know arrives as [`Request::Unsupported`]
//! and is answered with [`RemoteErrorKind::Unsupported`], so a newer worker can probe an older
//! agent without breaking the connection.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What a worker (the requesting side) asks an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// What the agent is and can run; answered by [`Response::Capabilities`].
    Capabilities,
    /// Runs a script. Progress: [`Progress::ScriptStarted`] then [`Progress::Output`] batches;
    /// final answer: [`Response::ScriptFinished`].
    StartScript(StartScript),
    /// Reads a script's state and the output after `after_sequence` (0 for all), e.g. after a
    /// reconnect lost the original request; answered by [`Response::Status`].
    GetStatus {
        /// The script.
        ticket: ScriptTicket,
        /// The last output sequence number already received.
        after_sequence: u64,
    },
    /// Stops a running script; answered by [`Response::CancelRequested`]. The script's own
    /// request still ends with [`Response::ScriptFinished`].
    Cancel {
        /// The script.
        ticket: ScriptTicket,
    },
    /// Offers a package. The agent answers [`Response::PackageStored`] at once when it already
    /// holds the hash, otherwise sends [`Progress::SendPackage`], receives the bytes as data
    /// chunks and answers [`Response::PackageStored`] once the hash checks out.
    UploadPackage(PackageUpload),
    /// Extracts a package the agent holds (after [`Request::UploadPackage`]) into a fresh
    /// folder `Applications/<environment>/<package id>/<version>[_N]` of its home; answered by
    /// [`Response::PackageExtracted`].
    ExtractPackage(ExtractPackage),
    /// Runs the file features (variable substitution, structured replacement) on the files of
    /// an extracted package; answered by [`Response::FilesRewritten`].
    RewriteFiles(RewriteFiles),
    /// Places a package the agent holds into a job's staging folder, for a script that runs
    /// there ([`Folder::Staging`]); answered by [`Response::PackageStaged`].
    StagePackage(StagePackage),
    /// Reads part of a regular file on the agent (an artifact a script published); answered by
    /// [`Response::FileChunk`].
    ReadFile {
        /// The file's absolute path on the agent.
        path: String,
        /// Where to start.
        offset: u64,
        /// How many bytes at most; the agent sends at most [`MAX_FILE_CHUNK`].
        length: u32,
    },
    /// Removes what the agent kept of a job after its scripts ended (`keep_files`); answered
    /// by [`Response::Released`].
    ReleaseJob {
        /// The job.
        job_id: JobId,
    },
    /// A request kind from a newer protocol revision that this side does not know.
    #[serde(other)]
    Unsupported,
}

impl Request {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Capabilities => "capabilities",
            Request::StartScript(_) => "start_script",
            Request::GetStatus { .. } => "get_status",
            Request::Cancel { .. } => "cancel",
            Request::UploadPackage(_) => "upload_package",
            Request::ExtractPackage(_) => "extract_package",
            Request::RewriteFiles(_) => "rewrite_files",
            Request::StagePackage(_) => "stage_package",
            Request::ReadFile { .. } => "read_file",
            Request::ReleaseJob { .. } => "release_job",
            Request::Unsupported => "unsupported",
        }
    }
}

/// An intermediate message about a request that is still running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Progress {
    /// The script is running under this ticket.
    ScriptStarted {
        /// The ticket for [`Request::GetStatus`] and [`Request::Cancel`].
        ticket: ScriptTicket,
    },
    /// Output lines, in sequence order, batched so a chatty script does not cost a frame a line.
    Output {
        /// The lines.
        lines: Vec<OutputLine>,
    },
    /// The agent does not have the package: send its bytes. Sent by the link itself.
    SendPackage {
        /// How many chunks may be in flight before the agent grants more (flow control).
        window: u32,
    },
}

/// The final answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Answers [`Request::Capabilities`].
    Capabilities(AgentCapabilities),
    /// Ends [`Request::StartScript`]: the script exited.
    ScriptFinished {
        /// The script.
        ticket: ScriptTicket,
        /// Its exit code; a script killed by a signal or by cancel is reported as non-zero.
        exit_code: i32,
    },
    /// Answers [`Request::GetStatus`].
    Status(ScriptStatus),
    /// Answers [`Request::Cancel`].
    CancelRequested {
        /// The script.
        ticket: ScriptTicket,
        /// False when it had already finished.
        was_running: bool,
    },
    /// Ends [`Request::UploadPackage`]: the agent holds the package.
    PackageStored {
        /// The package's SHA-256.
        sha256: Sha256Digest,
        /// True when nothing was sent because the agent already had it.
        already_cached: bool,
    },
    /// Answers [`Request::ExtractPackage`].
    PackageExtracted(PackageExtracted),
    /// Answers [`Request::ReadFile`].
    FileChunk {
        /// The bytes read, base64 in JSON; fewer than asked only at the end of the file.
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
        /// The file's size.
        total_size: u64,
    },
    /// Answers [`Request::ReleaseJob`].
    Released,
    /// Answers [`Request::StagePackage`].
    PackageStaged {
        /// The job's staging folder's full path on the agent.
        path: String,
    },
    /// Answers [`Request::RewriteFiles`], whether or not the features succeeded.
    FilesRewritten {
        /// What the features said, in order, for the task log.
        notes: Vec<Note>,
        /// Why the features failed (a file that is not UTF-8, say); `None` when they succeeded.
        failure: Option<String>,
    },
    /// The request failed on the agent.
    Error(RemoteError),
}

/// A failure reported by the serving side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RemoteError {
    /// What kind of failure, for callers to branch on.
    pub kind: RemoteErrorKind,
    /// A sentence for the task log.
    pub message: String,
}

impl RemoteError {
    /// A failure with a kind and a message.
    pub fn new(kind: RemoteErrorKind, message: impl Into<String>) -> RemoteError {
        RemoteError {
            kind,
            message: message.into(),
        }
    }
}

/// Kinds of [`RemoteError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteErrorKind {
    /// The agent does not know this request kind.
    Unsupported,
    /// The request is malformed or impossible (e.g. a syntax with no interpreter installed).
    BadRequest,
    /// No script has this ticket.
    NotFound,
    /// Too many requests are in flight on this connection.
    Busy,
    /// An uploaded package did not match its declared size or SHA-256.
    Corrupt,
    /// The agent failed while handling the request.
    Failed,
    /// A kind from a newer revision.
    #[serde(other)]
    Other,
}

impl fmt::Display for RemoteErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            RemoteErrorKind::Unsupported => "unsupported",
            RemoteErrorKind::BadRequest => "bad request",
            RemoteErrorKind::NotFound => "not found",
            RemoteErrorKind::Busy => "busy",
            RemoteErrorKind::Corrupt => "corrupt",
            RemoteErrorKind::Failed => "failed",
            RemoteErrorKind::Other => "error",
        };
        f.write_str(text)
    }
}

/// What an agent is: answers [`Request::Capabilities`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCapabilities {
    /// The cuttle-agent version.
    pub agent_version: String,
    /// `std::env::consts::OS`, e.g. `linux`.
    pub os: String,
    /// `std::env::consts::ARCH`, e.g. `x86_64`.
    pub arch: String,
    /// The machine's host name.
    pub hostname: String,
    /// The script syntaxes whose interpreter is installed.
    pub shells: Vec<ScriptSyntax>,
}

/// A script language the agent can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptSyntax {
    /// `bash`.
    Bash,
    /// `python3`.
    Python,
    /// `pwsh`.
    PowerShell,
}

/// The job a script belongs to, as the orchestrator names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

/// The agent's handle on a running script.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScriptTicket(pub String);

impl fmt::Display for ScriptTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Asks an agent to run a script.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct StartScript {
    /// The job this script runs for; an agent may refuse a second start of the same job.
    pub job_id: JobId,
    /// The language.
    pub syntax: ScriptSyntax,
    /// The script's text.
    pub body: String,
    /// Environment variables for the script process, on top of the agent's cleaned environment.
    pub environment: BTreeMap<String, String>,
    /// Octopus variables for the script, by name; may hold sensitive values.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Files to write into the script's working directory first (small ones; packages travel
    /// by [`Request::UploadPackage`]).
    #[serde(default)]
    pub files: Vec<ScriptFile>,
    /// Run the script in this folder instead of its fresh working directory. Only agents that
    /// answer [`Request::ExtractPackage`] and [`Request::StagePackage`] know it, so a worker
    /// sends it only after one of those worked. A staging folder is removed when the script
    /// ends.
    #[serde(default)]
    pub folder: Option<Folder>,
    /// Command-line arguments for the script.
    #[serde(default)]
    pub args: Vec<String>,
    /// Keep the working directory (the script file itself excepted) and the job's staging
    /// folder after the script ends, until [`Request::ReleaseJob`], so the worker can read the
    /// artifacts the script published there.
    #[serde(default)]
    pub keep_files: bool,
}

impl fmt::Debug for StartScript {
    // Environment and variable values may be secrets, so only their names print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartScript")
            .field("job_id", &self.job_id)
            .field("syntax", &self.syntax)
            .field("body_len", &self.body.len())
            .field("environment", &self.environment.keys().collect::<Vec<_>>())
            .field("variables", &self.variables.keys().collect::<Vec<_>>())
            .field("files", &self.files)
            .field("folder", &self.folder)
            .field("args", &self.args.len())
            .finish()
    }
}

/// A file to place next to the script.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptFile {
    /// Where, relative to the working directory.
    pub path: RelativeFilePath,
    /// The bytes, base64 in JSON.
    #[serde(with = "base64_bytes")]
    pub contents: Vec<u8>,
    /// Whether to mark it executable.
    #[serde(default)]
    pub executable: bool,
}

impl fmt::Debug for ScriptFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptFile")
            .field("path", &self.path)
            .field("len", &self.contents.len())
            .field("executable", &self.executable)
            .finish()
    }
}

/// A relative path that stays inside its base directory: no root, no `..`, no empty parts.
///
/// Checked when a message is decoded, so the agent never sees a path that could escape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RelativeFilePath(String);

impl RelativeFilePath {
    /// Accepts `a/b.txt`; refuses `/etc/passwd`, `../x`, `a//b`, `C:\x` and NUL bytes.
    pub fn parse(text: &str) -> Result<RelativeFilePath, InvalidFilePath> {
        let refuse = || InvalidFilePath(text.to_owned());
        if text.is_empty() || text.contains('\0') || text.contains('\\') || text.contains(':') {
            return Err(refuse());
        }
        if text
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(refuse());
        }
        Ok(RelativeFilePath(text.to_owned()))
    }

    /// The path text, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RelativeFilePath {
    type Error = InvalidFilePath;
    fn try_from(text: String) -> Result<RelativeFilePath, InvalidFilePath> {
        RelativeFilePath::parse(&text)
    }
}

impl From<RelativeFilePath> for String {
    fn from(path: RelativeFilePath) -> String {
        path.0
    }
}

/// A path that could leave its directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a safe relative path; use '/'-separated names without '..'")]
pub struct InvalidFilePath(pub String);

/// Which stream an output line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of script output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    /// Position in the script's output, from 1; lets a reconnecting worker ask for the rest.
    pub sequence: u64,
    /// When the agent read the line.
    pub at: DateTime<Utc>,
    /// Stdout or stderr.
    pub stream: OutputStream,
    /// The text, without its newline.
    pub text: String,
}

/// A script's state, answering [`Request::GetStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptStatus {
    /// The script.
    pub ticket: ScriptTicket,
    /// Running or finished.
    pub state: ScriptState,
    /// Output after the requested sequence number, in order.
    pub lines: Vec<OutputLine>,
}

/// Whether a script is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScriptState {
    /// Still running.
    Running,
    /// Exited.
    Finished {
        /// Its exit code.
        exit_code: i32,
    },
}

/// Asks the agent to install a package it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractPackage {
    /// The package's SHA-256: which cached file to extract.
    pub sha256: Sha256Digest,
    /// The package id, a folder name.
    pub package_id: String,
    /// Its version, a folder name.
    pub version: String,
    /// The file name's extension (`.zip`, `.tar.gz`, ...), which picks the archive format.
    pub extension: String,
    /// The environment's name, a folder name.
    pub environment_name: String,
}

/// A folder on the agent that holds a job's packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Folder {
    /// An installation ([`PackageExtracted::directory`]).
    Installation {
        /// Relative to the agent's `Applications` folder.
        directory: RelativeFilePath,
    },
    /// The job's staging folder ([`Request::StagePackage`]).
    Staging {
        /// The job.
        job_id: JobId,
    },
}

/// The most bytes one [`Response::FileChunk`] carries (with base64 well inside the frame limit).
pub const MAX_FILE_CHUNK: u32 = 1024 * 1024;

/// Asks the agent to place a package it holds into a job's staging folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagePackage {
    /// The job whose staging folder receives it.
    pub job_id: JobId,
    /// The package's SHA-256: which cached file.
    pub sha256: Sha256Digest,
    /// The package id, for messages.
    pub package_id: String,
    /// Its version, for messages.
    pub version: String,
    /// The file name's extension (`.zip`, `.tar.gz`, ...), which picks the archive format.
    pub extension: String,
    /// Where in the staging folder: a folder to extract into, or the file's name when
    /// `extract` is false; `None` extracts into the staging folder itself.
    pub name: Option<RelativeFilePath>,
    /// Extract the archive, or place the file as it is.
    pub extract: bool,
    /// A regular file the package must hold once extracted (a script to run), checked by the
    /// agent.
    #[serde(default)]
    pub expect_file: Option<RelativeFilePath>,
}

/// Where a package was installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageExtracted {
    /// The folder, relative to the agent's `Applications` folder.
    pub directory: RelativeFilePath,
    /// The folder's full path on the agent, for the task log and
    /// `Package.InstallationDirectoryPath`.
    pub path: String,
    /// The names of the regular files at the top of the folder (where convention scripts such as
    /// `Deploy.sh` are found).
    pub top_level_files: Vec<String>,
    /// How many files were extracted.
    pub files: u64,
    /// How many bytes they hold.
    pub bytes: u64,
}

/// Asks the agent to rewrite an installed package's files with the job's variables.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewriteFiles {
    /// The folder.
    pub folder: Folder,
    /// Target patterns for "Substitute Variables in Templates".
    pub substitute_in_files: Vec<String>,
    /// Target patterns for "Structured Configuration Variables".
    pub structured_variables: Vec<String>,
    /// The job's variables, (name, raw value) in the order they are set; may hold sensitive
    /// values, so the link's TLS is all that carries them and `Debug` prints names only.
    pub variables: Vec<(String, String)>,
}

impl fmt::Debug for RewriteFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RewriteFiles")
            .field("folder", &self.folder)
            .field("substitute_in_files", &self.substitute_in_files)
            .field("structured_variables", &self.structured_variables)
            .field("variables", &self.variables.len())
            .finish()
    }
}

/// A line the agent wrote about work other than a script's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// How the task log shows it.
    pub level: NoteLevel,
    /// The text.
    pub text: String,
}

/// Levels of a [`Note`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteLevel {
    /// Detail.
    Verbose,
    /// Normal output.
    Info,
    /// Something the user should look at.
    Warning,
    /// Something that went wrong.
    Error,
    /// A level from a newer revision.
    #[serde(other)]
    Other,
}

/// Describes a package offered by [`Request::UploadPackage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageUpload {
    /// The package id, e.g. `Acme.Web`.
    pub package_id: String,
    /// Its version, e.g. `1.4.2`.
    pub version: String,
    /// The SHA-256 of the bytes; the agent's cache key and the check on arrival.
    pub sha256: Sha256Digest,
    /// Exactly how many bytes follow.
    pub total_size: u64,
}

/// A SHA-256 digest, 64 lower-case hex digits on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// Wraps raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Sha256Digest {
        Sha256Digest(bytes)
    }

    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256Digest {
        use sha2::Digest;
        Sha256Digest(sha2::Sha256::digest(bytes).into())
    }

    /// Parses 64 hex digits in either case.
    pub fn parse(text: &str) -> Result<Sha256Digest, InvalidDigest> {
        let mut bytes = [0u8; 32];
        if text.len() != 64 || hex::decode_to_slice(text, &mut bytes).is_err() {
            return Err(InvalidDigest(text.to_owned()));
        }
        Ok(Sha256Digest(bytes))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = InvalidDigest;
    fn try_from(text: String) -> Result<Sha256Digest, InvalidDigest> {
        Sha256Digest::parse(&text)
    }
}

impl From<Sha256Digest> for String {
    fn from(digest: Sha256Digest) -> String {
        digest.to_string()
    }
}

/// Text that is not a SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a SHA-256 digest; expected 64 hex digits")]
pub struct InvalidDigest(pub String);

/// Serde for bytes as standard base64 text, so small files fit in a JSON message.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_type_in_snake_case() {
        let request = Request::GetStatus {
            ticket: ScriptTicket("t-1".into()),
            after_sequence: 3,
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "get_status", "ticket": "t-1", "after_sequence": 3})
        );
    }

    #[test]
    fn an_unknown_request_kind_decodes_as_unsupported() {
        let request: Request =
            serde_json::from_str(r#"{"type":"rotate_keys","urgent":true}"#).unwrap();
        assert_eq!(request, Request::Unsupported);
    }

    #[test]
    fn script_file_paths_that_escape_are_refused_when_decoded() {
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "C:\\x",
            "",
            "./a",
        ] {
            assert!(RelativeFilePath::parse(bad).is_err(), "{bad} was accepted");
        }
        assert!(RelativeFilePath::parse("conf/app.json").is_ok());
        let json = r#"{"path":"../../root/.ssh/authorized_keys","contents":""}"#;
        assert!(serde_json::from_str::<ScriptFile>(json).is_err());
    }

    #[test]
    fn start_script_debug_hides_variable_values() {
        let start = StartScript {
            job_id: JobId("job-1".into()),
            syntax: ScriptSyntax::Bash,
            body: "echo hi".into(),
            environment: BTreeMap::from([("TOKEN".into(), "s3cr3t".into())]),
            variables: BTreeMap::from([("Password".into(), "hunter2".into())]),
            files: vec![],
            folder: None,
            args: Vec::new(),
            keep_files: false,
        };
        let text = format!("{start:?}");
        assert!(text.contains("TOKEN") && text.contains("Password"));
        assert!(!text.contains("s3cr3t") && !text.contains("hunter2"));
    }
}
