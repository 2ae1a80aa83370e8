//! `cuttle package pack|push`: builds a deployment package from a directory, and uploads package
//! files to a server's built-in feed (`POST /api/{space}/packages/raw`, B.11 and D.13 of the
//! spec).
//!
//! Both commands are clients: they read no server configuration, so they stay out of the
//! `CUTTLE_*` namespace (which the server's config owns and checks strictly) and take the Octopus
//! CLI's `OCTOPUS_URL`, `OCTOPUS_API_KEY` and `OCTOPUS_SPACE` as environment fallbacks.

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use cuttle_archive::{ArchiveFormat, Limits};
use cuttle_domain::package::{PackageId, PackageVersion, split_id_and_version};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `cuttle package ...`.
#[derive(Subcommand)]
pub enum PackageCommand {
    /// Builds `<id>.<version>.zip` (or `.tar.gz`) from a directory's contents.
    Pack(PackArgs),
    /// Uploads package files to a server's built-in feed.
    Push(PushArgs),
}

/// Arguments of `cuttle package pack`.
#[derive(Args)]
pub struct PackArgs {
    /// The directory whose contents become the package (paths in the package are relative to it).
    dir: PathBuf,
    /// The package id: letters and digits in segments separated by `-`, `.` or `_`.
    #[arg(long)]
    id: String,
    /// The package version: SemVer 2.0 (1.2.3, 1.2.3-beta.1) or four-part (1.2.3.4).
    #[arg(long)]
    version: String,
    /// The archive format.
    #[arg(long, value_enum, default_value_t = PackFormat::Zip)]
    format: PackFormat,
    /// Where to write the package (created if missing; default: the current directory).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Replaces a package file of the same name already in the output directory.
    #[arg(long)]
    overwrite: bool,
    /// Prints a JSON object instead of the path.
    #[arg(long)]
    json: bool,
}

/// The archive formats `pack` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PackFormat {
    /// `.zip`, deflated.
    Zip,
    /// `.tar.gz`.
    #[value(name = "tar.gz", alias = "tgz")]
    TarGz,
}

impl PackFormat {
    fn extension(self) -> &'static str {
        match self {
            PackFormat::Zip => "zip",
            PackFormat::TarGz => "tar.gz",
        }
    }

    fn archive_format(self) -> ArchiveFormat {
        match self {
            PackFormat::Zip => ArchiveFormat::Zip,
            PackFormat::TarGz => ArchiveFormat::TarGz,
        }
    }
}

/// Arguments of `cuttle package push`.
#[derive(Args)]
pub struct PushArgs {
    /// The package files, each named `<PackageId>.<Version>.<ext>`.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The server's URL, e.g. http://localhost:8080.
    #[arg(long, env = "OCTOPUS_URL")]
    server: String,
    /// An API key (`API-...`), sent in the X-Octopus-ApiKey header.
    #[arg(long, env = "OCTOPUS_API_KEY", hide_env_values = true)]
    api_key: String,
    /// The space, by name or id (`Spaces-N`); default: the server's default space.
    #[arg(long, env = "OCTOPUS_SPACE")]
    space: Option<String>,
    /// What the feed does when the package id and version are already there.
    #[arg(long, value_enum, ignore_case = true, default_value_t = OverwriteMode::FailIfExists)]
    overwrite_mode: OverwriteMode,
    /// Prints one JSON object per file instead of text, and no progress bar.
    #[arg(long)]
    json: bool,
}

/// The feed's `overwriteMode` query values, spelled as Octopus spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OverwriteMode {
    /// Refuse a duplicate with 409.
    #[value(name = "FailIfExists")]
    FailIfExists,
    /// Replace the existing package.
    #[value(name = "OverwriteExisting")]
    OverwriteExisting,
    /// Keep the existing package and answer 200.
    #[value(name = "IgnoreIfExists")]
    IgnoreIfExists,
}

impl OverwriteMode {
    fn as_query(self) -> &'static str {
        match self {
            OverwriteMode::FailIfExists => "FailIfExists",
            OverwriteMode::OverwriteExisting => "OverwriteExisting",
            OverwriteMode::IgnoreIfExists => "IgnoreIfExists",
        }
    }
}

/// Runs one `cuttle package` command.
pub async fn run(command: PackageCommand) -> anyhow::Result<()> {
    match command {
        // Packing is blocking file work from start to end; it gets a blocking thread.
        PackageCommand::Pack(args) => tokio::task::spawn_blocking(move || pack(&args))
            .await
            .context("the pack task failed")?,
        PackageCommand::Push(args) => push(args).await,
    }
}

// ---------------------------------------------------------------------------------------------
// pack

/// Every entry gets this modification time (the zip epoch, 1980-01-01 00:00:00 UTC), so that the
/// same directory always packs to the same bytes.
const FIXED_MTIME_UNIX: u64 = 315_532_800;

/// One thing to put in the package.
struct PackEntry {
    /// The `/`-separated path relative to the packed directory, without a trailing `/`.
    relative: String,
    /// Where it is on disk.
    source: PathBuf,
    kind: PackEntryKind,
}

enum PackEntryKind {
    Directory,
    File { size: u64, executable: bool },
}

impl PackEntry {
    /// The permission bits the entry is stored with. Only the executable bit of the source is
    /// kept: the rest depends on the packing user's umask and would make packages differ.
    fn mode(&self) -> u32 {
        match self.kind {
            PackEntryKind::Directory
            | PackEntryKind::File {
                executable: true, ..
            } => 0o755,
            PackEntryKind::File {
                executable: false, ..
            } => 0o644,
        }
    }
}

fn pack(args: &PackArgs) -> anyhow::Result<()> {
    let (id, version) = parse_id_and_version(&args.id, &args.version)?;
    let file_name = format!(
        "{}.{}.{}",
        id.as_str(),
        version.as_str(),
        args.format.extension()
    );
    let source = fs::canonicalize(&args.dir)
        .with_context(|| format!("cannot read the directory {}", args.dir.display()))?;
    if !source.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    // A package written into the directory being packed would end up inside the next package
    // built from it; refusing is clearer than skipping it quietly. Checked before creating the
    // output directory, so that a refusal leaves nothing behind.
    if resolve_missing(&args.out)?.starts_with(&source) {
        bail!(
            "the output directory {} is inside the directory being packed, {}; pass --out with a directory outside it",
            args.out.display(),
            args.dir.display()
        );
    }
    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the output directory {}", args.out.display()))?;
    let out_dir = fs::canonicalize(&args.out)
        .with_context(|| format!("cannot read the output directory {}", args.out.display()))?;
    let destination = out_dir.join(&file_name);
    let shown_path = args.out.join(&file_name);
    if !args.overwrite && destination.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; pass --overwrite to replace it",
            shown_path.display()
        );
    }

    let mut entries = Vec::new();
    collect_entries(&source, "", &mut entries)?;
    // Byte order of the `/`-separated paths: the same on every machine, and a directory comes
    // right before its contents.
    entries.sort_by(|a, b| a.relative.cmp(&b.relative));

    // Written beside its destination under a hidden name, and renamed into place only once
    // complete and checked, so a failure never leaves a half-written package behind.
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{file_name}.partial-"))
        .tempfile_in(&out_dir)
        .with_context(|| format!("cannot create a file in {}", args.out.display()))?;
    let file = partial
        .as_file()
        .try_clone()
        .context("cannot write the package")?;
    match args.format {
        PackFormat::Zip => write_zip(file, &entries),
        PackFormat::TarGz => write_tar_gz(file, &entries),
    }
    .with_context(|| format!("cannot write {}", shown_path.display()))?;

    // The feed runs these same checks on every upload (names, duplicates, limits, checksums), so a
    // package that passes here is not refused for its contents there.
    cuttle_archive::inspect(
        partial.path(),
        args.format.archive_format(),
        &Limits::default(),
    )
    .with_context(|| format!("the package built from {} is not valid", args.dir.display()))?;
    let (size_bytes, sha256) = size_and_sha256(partial.path())?;
    set_readable_by_all(partial.as_file())?;
    if args.overwrite {
        partial.persist(&destination).map_err(|err| err.error)
    } else {
        partial
            .persist_noclobber(&destination)
            .map_err(|err| err.error)
    }
    .with_context(|| format!("cannot write {}", shown_path.display()))?;

    if args.json {
        println!(
            "{}",
            json!({
                "path": shown_path.display().to_string(),
                "packageId": id.as_str(),
                "version": version.as_str(),
                "sizeBytes": size_bytes,
                "sha256": sha256,
            })
        );
    } else {
        println!("{}", shown_path.display());
    }
    Ok(())
}

/// The canonical form of `path`, which may not exist yet: its nearest existing ancestor
/// canonicalized, with the missing components appended.
fn resolve_missing(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute = std::path::absolute(path)
        .with_context(|| format!("cannot resolve the path {}", path.display()))?;
    let mut missing = Vec::new();
    let mut existing = absolute.as_path();
    while existing.symlink_metadata().is_err() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut resolved = fs::canonicalize(existing)
        .with_context(|| format!("cannot resolve the path {}", path.display()))?;
    resolved.extend(missing.iter().rev());
    Ok(resolved)
}

/// Validates `--id` and `--version` by the feed's own rules, and checks that the file name they
/// make reads back as the same id and version: the feed takes both from the file name alone.
fn parse_id_and_version(id: &str, version: &str) -> anyhow::Result<(PackageId, PackageVersion)> {
    let id = PackageId::parse(id).map_err(|err| anyhow::anyhow!("--id: {err}"))?;
    let version =
        PackageVersion::parse(version).map_err(|err| anyhow::anyhow!("--version: {err}"))?;
    let stem = format!("{}.{}", id.as_str(), version.as_str());
    match split_id_and_version(&stem) {
        Some((read_id, read_version))
            if read_id.as_str() == id.as_str() && read_version.as_str() == version.as_str() =>
        {
            Ok((id, version))
        }
        Some((read_id, read_version)) => bail!(
            "--id: the file name {stem}.* would be read by the feed as package '{read_id}' version '{}'; choose an id whose last segment does not start with a digit",
            read_version.as_str()
        ),
        None => bail!("--id: the file name {stem}.* cannot be read back as an id and a version"),
    }
}

/// Adds the contents of `directory` (whose path in the package is `prefix`) to `entries`,
/// recursively. Anything that cannot be packed faithfully is an error naming it, never skipped.
fn collect_entries(
    directory: &Path,
    prefix: &str,
    entries: &mut Vec<PackEntry>,
) -> anyhow::Result<()> {
    let listing = fs::read_dir(directory)
        .with_context(|| format!("cannot list the directory {}", directory.display()))?;
    for item in listing {
        let item =
            item.with_context(|| format!("cannot list the directory {}", directory.display()))?;
        let source = item.path();
        let name = item.file_name();
        let Some(name) = name.to_str() else {
            bail!(
                "cannot pack {}: its name is not valid UTF-8, which packages require",
                source.display()
            );
        };
        // On Unix a backslash is an ordinary file name character, but Windows and the feed
        // read it as a separator.
        if name.contains('\\') {
            bail!(
                "cannot pack {}: its name contains a backslash, which packages read as a directory separator",
                source.display()
            );
        }
        let relative = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        // symlink_metadata: a link is reported as a link, never followed.
        let metadata = fs::symlink_metadata(&source)
            .with_context(|| format!("cannot read {}", source.display()))?;
        let file_type = metadata.file_type();
        if file_type.is_dir() {
            entries.push(PackEntry {
                relative: relative.clone(),
                source: source.clone(),
                kind: PackEntryKind::Directory,
            });
            collect_entries(&source, &relative, entries)?;
        } else if file_type.is_file() {
            entries.push(PackEntry {
                relative,
                source,
                kind: PackEntryKind::File {
                    size: metadata.len(),
                    executable: is_executable(&metadata),
                },
            });
        } else if file_type.is_symlink() {
            // A link may point outside the directory, and zip readers disagree on links, so
            // packing one would ship something other than what the directory holds.
            bail!(
                "cannot pack {}: it is a symbolic link; replace it with the file or directory it points to",
                source.display()
            );
        } else {
            bail!(
                "cannot pack {}: it is not a regular file or directory (a device, FIFO or socket)",
                source.display()
            );
        }
    }
    Ok(())
}

#[cfg(unix)]
fn is_executable(metadata: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_metadata: &fs::Metadata) -> bool {
    false
}

/// The temporary file is created private (0600); the finished package is an ordinary file.
#[cfg(unix)]
fn set_readable_by_all(file: &File) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .context("cannot set the package file's permissions")
}

#[cfg(not(unix))]
fn set_readable_by_all(_file: &File) -> anyhow::Result<()> {
    Ok(())
}

/// Opens a file to pack, reading exactly the size listed: a file that grew since is cut there,
/// one that shrank makes the archive invalid, which the check after writing reports.
fn open_source(entry: &PackEntry, size: u64) -> anyhow::Result<io::Take<File>> {
    let file = File::open(&entry.source)
        .with_context(|| format!("cannot read {}", entry.source.display()))?;
    Ok(file.take(size))
}

fn write_zip(file: File, entries: &[PackEntry]) -> anyhow::Result<()> {
    use zip::write::SimpleFileOptions;
    let mut writer = zip::ZipWriter::new(BufWriter::new(file));
    let base = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    for entry in entries {
        let options = base.unix_permissions(entry.mode());
        match entry.kind {
            PackEntryKind::Directory => {
                writer.add_directory(format!("{}/", entry.relative), options)?;
            }
            PackEntryKind::File { size, .. } => {
                // Zip64 only where needed, so ordinary packages stay readable by old tools.
                writer.start_file(
                    entry.relative.as_str(),
                    options.large_file(size >= u64::from(u32::MAX)),
                )?;
                let mut reader = open_source(entry, size)?;
                io::copy(&mut reader, &mut writer)
                    .with_context(|| format!("cannot read {}", entry.source.display()))?;
            }
        }
    }
    let mut buffered = writer.finish()?;
    buffered.flush()?;
    Ok(())
}

fn write_tar_gz(file: File, entries: &[PackEntry]) -> anyhow::Result<()> {
    // The gzip header's time and file name stay empty, again for identical bytes.
    let encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(BufWriter::new(file), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode());
        header.set_mtime(FIXED_MTIME_UNIX);
        header.set_uid(0);
        header.set_gid(0);
        match entry.kind {
            PackEntryKind::Directory => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, format!("{}/", entry.relative), io::empty())?;
            }
            PackEntryKind::File { size, .. } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                let reader = open_source(entry, size)?;
                // append_data writes a GNU long-name entry first for paths over 100 bytes.
                builder
                    .append_data(&mut header, &entry.relative, reader)
                    .with_context(|| format!("cannot read {}", entry.source.display()))?;
            }
        }
    }
    let encoder = builder.into_inner()?;
    let mut buffered = encoder.finish()?;
    buffered.flush()?;
    Ok(())
}

/// The size and lower-case hex SHA-256 of a file, read in chunks.
fn size_and_sha256(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut file =
        File::open(path).with_context(|| format!("cannot read back {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n_read = file
            .read(&mut buffer)
            .with_context(|| format!("cannot read back {}", path.display()))?;
        if n_read == 0 {
            break;
        }
        hasher.update(&buffer[..n_read]);
        size += n_read as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

// ---------------------------------------------------------------------------------------------
// push

/// `take` that means "all" to Octopus (int32 max, A.4 of the spec).
const TAKE_ALL: &str = "2147483647";

/// How one file's push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PushStatus {
    /// 201: stored (new, or replacing with OverwriteExisting).
    Created,
    /// 200: the feed already had this id and version and kept it (IgnoreIfExists).
    Kept,
    /// Anything else.
    Failed,
}

impl PushStatus {
    fn as_str(self) -> &'static str {
        match self {
            PushStatus::Created => "created",
            PushStatus::Kept => "kept",
            PushStatus::Failed => "failed",
        }
    }
}

/// The result of pushing one file.
struct PushOutcome {
    status: PushStatus,
    http_status: Option<u16>,
    error: Option<String>,
}

/// Why a request failed: the server's message, and its HTTP status when it answered.
#[derive(Debug)]
struct Failure {
    http_status: Option<u16>,
    message: String,
}

impl Failure {
    fn local(message: impl Into<String>) -> Failure {
        Failure {
            http_status: None,
            message: message.into(),
        }
    }

    fn outcome(self) -> PushOutcome {
        PushOutcome {
            status: PushStatus::Failed,
            http_status: self.http_status,
            error: Some(self.message),
        }
    }
}

async fn push(args: PushArgs) -> anyhow::Result<()> {
    let base = normalize_base_url(&args.server)?;
    let client = reqwest::Client::builder()
        .user_agent(concat!("cuttle-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .build()
        .context("cannot create the HTTP client")?;
    let api = Api {
        client,
        base,
        api_key: args.api_key.clone(),
    };
    let show_progress = !args.json && io::stderr().is_terminal();

    // A space that cannot be resolved fails every file alike, reported per file like any other
    // failure, so that `--json` output always has one object per file.
    let target = resolve_space(&api, args.space.as_deref()).await;
    let mut n_failed = 0usize;
    for file in &args.files {
        let outcome = match &target {
            Ok(space) => {
                push_one(
                    &api,
                    space.as_deref(),
                    file,
                    args.overwrite_mode,
                    show_progress,
                )
                .await
            }
            Err(failure) => Failure {
                http_status: failure.http_status,
                message: failure.message.clone(),
            }
            .outcome(),
        };
        if outcome.status == PushStatus::Failed {
            n_failed += 1;
        }
        report(file, &outcome, args.json);
    }
    if n_failed > 0 {
        bail!(
            "{n_failed} of {} package(s) could not be pushed",
            args.files.len()
        );
    }
    Ok(())
}

/// Prints one file's outcome on standard output.
fn report(file: &Path, outcome: &PushOutcome, as_json: bool) {
    if as_json {
        println!(
            "{}",
            json!({
                "file": file.display().to_string(),
                "status": outcome.status.as_str(),
                "httpStatus": outcome.http_status,
                "error": outcome.error,
            })
        );
        return;
    }
    match outcome.status {
        PushStatus::Created => println!("created  {}", file.display()),
        PushStatus::Kept => println!(
            "kept     {}: the feed already has this package id and version and kept it",
            file.display()
        ),
        PushStatus::Failed => {
            let status = outcome
                .http_status
                .map(|code| format!(" (HTTP {code})"))
                .unwrap_or_default();
            let message = outcome.error.as_deref().unwrap_or("unknown error");
            println!("failed   {}: {message}{status}", file.display());
        }
    }
}

/// The server's base URL by the Octopus clients' rules (A.1 of the spec): anything from the last
/// `/api/` on is cut, as is a trailing `/`, so `http://host/vdir/api` works too.
fn normalize_base_url(server: &str) -> anyhow::Result<String> {
    let mut url = server.trim().to_owned();
    if url.is_empty() {
        bail!("--server is empty: give the server's URL, e.g. http://localhost:8080");
    }
    if !url.ends_with('/') {
        url.push('/');
    }
    if let Some(index) = url.rfind("/api/").filter(|index| *index >= 1) {
        url.truncate(index);
    }
    let url = url.trim_end_matches('/').to_owned();
    let parsed = reqwest::Url::parse(&url).with_context(|| format!("--server: '{server}'"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("--server: '{server}' is not an http:// or https:// URL");
    }
    Ok(url)
}

/// An authenticated connection to one server.
struct Api {
    client: reqwest::Client,
    base: String,
    api_key: String,
}

impl Api {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("X-Octopus-ApiKey", &self.api_key)
    }
}

/// The space id to push to: `None` for the server's default space, which `/api/packages/raw`
/// addresses without a lookup (D.13).
async fn resolve_space(api: &Api, space: Option<&str>) -> Result<Option<String>, Failure> {
    let Some(space) = space.map(str::trim).filter(|space| !space.is_empty()) else {
        return Ok(None);
    };
    if looks_like_space_id(space) {
        return Ok(Some(space.to_owned()));
    }
    // The TS client's lookup (A.4): a substring search, then an exact match among the results.
    // Unlike it, the match ignores case, as Octopus treats space names.
    let response = api
        .request(reqwest::Method::GET, "/api/spaces")
        .query(&[("partialName", space), ("skip", "0"), ("take", TAKE_ALL)])
        .send()
        .await
        .map_err(|err| Failure::local(format!("cannot reach {}: {}", api.base, chain(&err))))?;
    let body = json_or_failure(response).await?;
    let items = body["Items"].as_array().cloned().unwrap_or_default();
    let named = |item: &&Value| {
        item["Name"]
            .as_str()
            .is_some_and(|name| name.to_lowercase() == space.to_lowercase())
    };
    let matches: Vec<&Value> = items.iter().filter(named).collect();
    let chosen = match matches.as_slice() {
        [one] => *one,
        [] => {
            let similar: Vec<&str> = items.iter().filter_map(|i| i["Name"].as_str()).collect();
            let hint = if similar.is_empty() {
                String::new()
            } else {
                format!(" (names containing it: {})", similar.join(", "))
            };
            return Err(Failure::local(format!(
                "no space named '{space}' on {}{hint}; pass --space with a space's name or id (Spaces-N)",
                api.base
            )));
        }
        // Names differing only in case: the exact spelling decides, as in the TS client.
        several => match several.iter().find(|item| item["Name"] == space) {
            Some(exact) => *exact,
            None => {
                return Err(Failure::local(format!(
                    "several spaces are named '{space}' apart from case; pass --space with the exact name or the id (Spaces-N)"
                )));
            }
        },
    };
    match chosen["Id"].as_str() {
        Some(id) => Ok(Some(id.to_owned())),
        None => Err(Failure::local(format!(
            "the server listed space '{space}' without an Id"
        ))),
    }
}

/// `Spaces-<digits>`, the shape of every Octopus space id.
fn looks_like_space_id(space: &str) -> bool {
    space
        .strip_prefix("Spaces-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The body of a successful response as JSON, or the server's error as a [`Failure`].
async fn json_or_failure(response: reqwest::Response) -> Result<Value, Failure> {
    let status = response.status();
    if !status.is_success() {
        return Err(failure_from(response).await);
    }
    response.json().await.map_err(|err| Failure {
        http_status: Some(status.as_u16()),
        message: format!("the server's answer is not JSON: {}", chain(&err)),
    })
}

/// A non-2xx response as a [`Failure`]: Octopus's `ErrorMessage` followed by each of `Errors` on
/// its own line, as the Octopus clients show it (A.9 of the spec); the raw body otherwise.
async fn failure_from(response: reqwest::Response) -> Failure {
    let status = response.status();
    let text = match response.text().await {
        Ok(text) => text,
        Err(err) => {
            return Failure {
                http_status: Some(status.as_u16()),
                message: format!(
                    "HTTP {status}, and its body could not be read: {}",
                    chain(&err)
                ),
            };
        }
    };
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let message = match body["ErrorMessage"].as_str() {
        Some(message) => {
            let details: Vec<&str> = body["Errors"]
                .as_array()
                .map(|errors| errors.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            std::iter::once(message)
                .chain(details.into_iter().filter(|detail| *detail != message))
                .collect::<Vec<_>>()
                .join("\n")
        }
        None if text.trim().is_empty() => format!("HTTP {status}"),
        None => {
            let mut excerpt: String = text.trim().chars().take(500).collect();
            if excerpt.len() < text.trim().len() {
                excerpt.push('…');
            }
            format!("HTTP {status}: {excerpt}")
        }
    };
    Failure {
        http_status: Some(status.as_u16()),
        message,
    }
}

/// An error and its causes on one line ("error sending request: connection refused").
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The part's content type, by extension, as the TS client sets it (B.11).
fn content_type(file_name: &str) -> &'static str {
    match ArchiveFormat::from_file_name(file_name) {
        Some(ArchiveFormat::Zip) => "application/zip",
        Some(ArchiveFormat::TarGz) => "application/gzip",
        Some(ArchiveFormat::TarBz2) => "application/x-bzip2",
        Some(ArchiveFormat::Tar) => "application/x-tar",
        None => "application/octet-stream",
    }
}

/// Uploads one file, streamed from disk, and reads the feed's answer.
async fn push_one(
    api: &Api,
    space: Option<&str>,
    path: &Path,
    mode: OverwriteMode,
    show_progress: bool,
) -> PushOutcome {
    let Some(file_name) = path.file_name().and_then(|name| name.to_str()) else {
        return Failure::local("the file name is not valid UTF-8").outcome();
    };
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(err) => return Failure::local(format!("cannot read the file: {err}")).outcome(),
    };
    let length = match file.metadata().await {
        Ok(metadata) if metadata.is_file() => metadata.len(),
        Ok(_) => return Failure::local("not a regular file").outcome(),
        Err(err) => return Failure::local(format!("cannot read the file: {err}")).outcome(),
    };

    let progress = progress_bar(file_name, length, show_progress);
    let counted = progress.clone();
    let stream =
        tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                counted.inc(bytes.len() as u64);
            }
        });
    let part = match reqwest::multipart::Part::stream_with_length(
        reqwest::Body::wrap_stream(stream),
        length,
    )
    .file_name(file_name.to_owned())
    .mime_str(content_type(file_name))
    {
        Ok(part) => part,
        Err(err) => {
            return Failure::local(format!("cannot build the upload: {}", chain(&err))).outcome();
        }
    };
    // The TS client's field name; the feed takes the first file part under any name.
    let form = reqwest::multipart::Form::new().part("fileToUpload", part);
    let route = match space {
        Some(space) => format!("/api/{space}/packages/raw"),
        None => "/api/packages/raw".to_owned(),
    };
    let sent = api
        .request(reqwest::Method::POST, &route)
        .query(&[("overwriteMode", mode.as_query())])
        .multipart(form)
        .send()
        .await;
    progress.finish_and_clear();

    let response = match sent {
        Ok(response) => response,
        Err(err) => {
            return Failure::local(format!("cannot upload to {}: {}", api.base, chain(&err)))
                .outcome();
        }
    };
    let status = response.status();
    match status.as_u16() {
        201 => PushOutcome {
            status: PushStatus::Created,
            http_status: Some(201),
            error: None,
        },
        200 => PushOutcome {
            status: PushStatus::Kept,
            http_status: Some(200),
            error: None,
        },
        _ if status.is_success() => PushOutcome {
            status: PushStatus::Created,
            http_status: Some(status.as_u16()),
            error: None,
        },
        _ => failure_from(response).await.outcome(),
    }
}

/// A byte-count progress bar on standard error, or a hidden one when nobody is watching.
fn progress_bar(file_name: &str, length: u64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    match ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        Ok(style) => bar.set_style(style.progress_chars("=> ")),
        // The template is a constant; were it wrong, the default style still shows progress.
        Err(err) => tracing::debug!(error = %err, "progress bar template refused"),
    }
    bar.set_message(file_name.to_owned());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_follow_the_octopus_client_rules() {
        for (given, expected) in [
            ("http://h:8080", "http://h:8080"),
            ("http://h:8080/", "http://h:8080"),
            ("http://h:8080/api", "http://h:8080"),
            ("http://h/vdir/api/Spaces-1/", "http://h/vdir"),
            (" https://h/vdir ", "https://h/vdir"),
        ] {
            assert_eq!(
                normalize_base_url(given).ok().as_deref(),
                Some(expected),
                "{given}"
            );
        }
        for bad in ["", "h:8080", "ftp://h", "not a url"] {
            assert!(normalize_base_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn space_ids_are_recognized_and_names_are_not() {
        assert!(looks_like_space_id("Spaces-1"));
        assert!(looks_like_space_id("Spaces-42"));
        for name in ["Default", "Spaces-", "Spaces-x", "Spaces 1", "spaces"] {
            assert!(!looks_like_space_id(name), "{name}");
        }
    }

    #[test]
    fn an_id_ending_in_digits_that_would_read_back_differently_is_refused() {
        assert!(parse_id_and_version("Acme.Web", "1.2.3").is_ok());
        assert!(parse_id_and_version("Acme.Web", "1.2.3.4-beta.1+sha.5").is_ok());
        assert!(parse_id_and_version("Acme.7zip", "1.0.0").is_ok());
        let err = parse_id_and_version("Acme.1", "2.3.4")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("would be read")));
        assert!(parse_id_and_version("Acme.Web", "1.2").is_err());
        assert!(parse_id_and_version("Acme..Web", "1.2.3").is_err());
    }
}
