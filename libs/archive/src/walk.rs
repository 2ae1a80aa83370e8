//! The format-independent half of extraction: every entry of every format goes through
//! [`Walker`], which validates it against what the archive already produced and, when extracting,
//! writes it under the staging directory.
//!
//! Why writes cannot escape:
//! - names are parsed into normal components (`name.rs`);
//! - the walker keeps a tree of every path it produced, so a parent is either a directory *it*
//!   created with `create_dir` (which never follows or reuses anything) or the entry is refused;
//! - files are opened with `create_new` (`O_CREAT | O_EXCL`), which fails on any existing path,
//!   dangling symlinks included, so nothing is ever overwritten or written through;
//! - symbolic links are only recorded while entries stream in, then resolved against the finished
//!   tree and created last, after every file and directory: no later entry can go through one,
//!   and a chain of links is followed the way the kernel would follow it (`a -> d/up/..` where
//!   `d/up -> ..` escapes even though it looks harmless component by component);
//! - hard links may only name a regular file this archive already produced.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::name::{self, EntryPath, LinkStep};
use crate::{Entry, EntryKind, ExtractError, Extracted, Limits};

/// How many links one target may go through before it is refused, as Linux's `ELOOP` limit.
const MAX_LINK_HOPS: u32 = 40;

/// The longest symbolic link target accepted, as Linux's `PATH_MAX`.
pub(crate) const MAX_LINK_TARGET_BYTES: u64 = 4096;

/// Permission bits a file keeps: the execute bits survive (scripts must stay runnable);
/// setuid, setgid, sticky and group or world write do not.
const KEPT_MODE_BITS: u32 = 0o755;

/// What the walker knows about one path it produced.
#[derive(Clone, Debug)]
enum Node {
    Directory,
    File,
    Symlink,
}

/// A symbolic link, created only once every other entry is on disk.
struct PendingLink {
    path: EntryPath,
    display: String,
    steps: Vec<LinkStep>,
}

/// Validates entries and, when given a root, writes them under it.
pub(crate) struct Walker<'a> {
    limits: &'a Limits,
    ratio_budget: u64,
    /// The staging directory when extracting; `None` when only inspecting.
    root: Option<PathBuf>,
    tree: HashMap<String, Node>,
    links: Vec<PendingLink>,
    link_targets: HashMap<String, Vec<LinkStep>>,
    /// Explicit directory modes, applied at the end so a read-only directory entry cannot stop
    /// later entries from being written into it.
    directory_modes: Vec<(EntryPath, u32)>,
    entries: Vec<Entry>,
    totals: Extracted,
    buffer: Vec<u8>,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(limits: &'a Limits, archive_bytes: u64, root: Option<PathBuf>) -> Self {
        Walker {
            limits,
            ratio_budget: limits.ratio_budget(archive_bytes),
            root,
            tree: HashMap::new(),
            links: Vec::new(),
            link_targets: HashMap::new(),
            directory_modes: Vec::new(),
            entries: Vec::new(),
            totals: Extracted::default(),
            buffer: vec![0; 64 << 10],
        }
    }

    /// The budget of decompressed bytes a compressed stream may produce, headers included.
    pub(crate) fn stream_budget(&self) -> u64 {
        self.ratio_budget
    }

    /// The ratio limit, for messages.
    pub(crate) fn max_ratio(&self) -> u64 {
        self.limits.max_ratio
    }

    /// How many entries the archive may hold, to refuse an oversized zip before reading it.
    pub(crate) fn max_entries(&self) -> u64 {
        self.limits.max_files
    }

    /// A directory entry. `mode` is the archive's mode, when it has one.
    pub(crate) fn directory(&mut self, raw: &str, mode: Option<u32>) -> Result<(), ExtractError> {
        let display = name::display_name(raw);
        let path = parse(raw, &display)?;
        // `./` is how `tar -C dir .` names the target itself; there is nothing to create.
        if path.is_root() {
            return Ok(());
        }
        self.prepare_parents(&path, &display)?;
        let mode = mode.map_or(0o755, |mode| mode & KEPT_MODE_BITS) | 0o700;
        let key = path.key();
        match self.tree.get(&key) {
            // Repeating a directory is harmless: it carries no content to smuggle past a check,
            // and some zip tools list directories both before and after their files.
            Some(Node::Directory) => {}
            Some(_) => return Err(duplicate(&display, &key)),
            None => {
                self.create_directory(&path)?;
            }
        }
        self.tree.insert(key.clone(), Node::Directory);
        self.directory_modes.push((path, mode));
        self.entries.push(Entry {
            path: key,
            kind: EntryKind::Directory,
            size: 0,
            mode,
        });
        Ok(())
    }

    /// A regular file whose content `data` yields. `exact_size` is the size the format
    /// guarantees (tar); fewer bytes mean the archive was truncated.
    pub(crate) fn file(
        &mut self,
        raw: &str,
        mode: Option<u32>,
        declared_size: u64,
        exact_size: Option<u64>,
        data: &mut dyn Read,
    ) -> Result<(), ExtractError> {
        let display = name::display_name(raw);
        let path = parse(raw, &display)?;
        if path.is_root() {
            return Err(unsafe_entry(
                &display,
                "a file cannot replace the target directory",
            ));
        }
        // Fail early on what the archive admits to; actual bytes are counted below regardless.
        if declared_size > self.limits.max_file_bytes {
            return Err(file_too_large(&display, self.limits.max_file_bytes));
        }
        self.prepare_parents(&path, &display)?;
        let key = path.key();
        self.claim(&key, &display, Node::File)?;
        let mode = mode.map_or(0o644, |mode| mode & KEPT_MODE_BITS) | 0o600;

        let mut output = match &self.root {
            Some(root) => Some(create_file(&join(root, &path))?),
            None => None,
        };
        let written = self.copy(data, output.as_mut(), &display)?;
        if let Some(expected) = exact_size
            && written != expected
        {
            return Err(ExtractError::Corrupt(format!(
                "entry `{display}` declares {expected} bytes but only {written} are present; \
                 the archive is probably truncated"
            )));
        }
        if let Some(file) = output {
            set_file_mode(&file, mode)?;
        }
        self.totals.files += 1;
        self.entries.push(Entry {
            path: key,
            kind: EntryKind::File,
            size: written,
            mode,
        });
        Ok(())
    }

    /// A symbolic link. It is checked now against what is known, and again against the whole
    /// archive in [`Walker::finish`], which also creates it.
    pub(crate) fn symlink(&mut self, raw: &str, raw_target: &str) -> Result<(), ExtractError> {
        let display = name::display_name(raw);
        let path = parse(raw, &display)?;
        if path.is_root() {
            return Err(unsafe_entry(
                &display,
                "a link cannot replace the target directory",
            ));
        }
        let steps = name::parse_link_target(raw_target).map_err(|reason| {
            unsafe_entry(
                &display,
                &format!(
                    "it is a symbolic link to `{}`: {reason}",
                    name::display_name(raw_target)
                ),
            )
        })?;
        if !cfg!(unix) {
            return Err(ExtractError::Unsupported(format!(
                "entry `{display}` is a symbolic link, which is only extracted on Unix"
            )));
        }
        // A purely lexical check first, for an early and precise message; `finish` repeats it
        // through any links on the way.
        let mut depth = path.components().len() - 1;
        for step in &steps {
            match step {
                LinkStep::Up if depth == 0 => {
                    return Err(link_escapes(&display, &steps));
                }
                LinkStep::Up => depth -= 1,
                LinkStep::Down(_) => depth += 1,
            }
        }
        self.prepare_parents(&path, &display)?;
        let key = path.key();
        self.claim(&key, &display, Node::Symlink)?;
        self.link_targets.insert(key.clone(), steps.clone());
        self.entries.push(Entry {
            path: key,
            kind: EntryKind::Symlink {
                target: name::link_target_text(&steps),
            },
            size: 0,
            mode: 0,
        });
        self.links.push(PendingLink {
            path,
            display,
            steps,
        });
        Ok(())
    }

    /// A tar hard link to `raw_target`, which must be a regular file already produced.
    pub(crate) fn hard_link(&mut self, raw: &str, raw_target: &str) -> Result<(), ExtractError> {
        let display = name::display_name(raw);
        let path = parse(raw, &display)?;
        if path.is_root() {
            return Err(unsafe_entry(
                &display,
                "a link cannot replace the target directory",
            ));
        }
        let target = name::parse_entry_name(raw_target).map_err(|reason| {
            unsafe_entry(
                &display,
                &format!(
                    "it is a hard link to `{}`: {reason}",
                    name::display_name(raw_target)
                ),
            )
        })?;
        let target_key = target.key();
        match self.tree.get(&target_key) {
            Some(Node::File) => {}
            Some(_) => {
                return Err(unsafe_entry(
                    &display,
                    &format!("it is a hard link to `{target_key}`, which is not a regular file"),
                ));
            }
            None => {
                return Err(unsafe_entry(
                    &display,
                    &format!(
                        "it is a hard link to `{target_key}`, which is not a file extracted \
                         earlier from this archive"
                    ),
                ));
            }
        }
        self.prepare_parents(&path, &display)?;
        let key = path.key();
        self.claim(&key, &display, Node::File)?;
        if let Some(root) = &self.root {
            // `link(2)` makes a new name for the inode itself; the source is a regular file this
            // walker created, so there is no link on the way to follow.
            fs::hard_link(join(root, &target), join(root, &path))
                .map_err(|error| with_path(error, &key))?;
        }
        self.totals.files += 1;
        self.entries.push(Entry {
            path: key,
            kind: EntryKind::HardLink { target: target_key },
            size: 0,
            mode: 0,
        });
        Ok(())
    }

    /// Refuses an entry of a kind a package never needs (devices, FIFOs, sockets).
    pub(crate) fn refuse_special(&self, raw: &str, kind: &str) -> ExtractError {
        unsafe_entry(
            &name::display_name(raw),
            &format!("it is a {kind}; packages may only contain files, directories and links"),
        )
    }

    /// Resolves every symbolic link against the whole archive, applies directory modes and
    /// creates the links, in that order: nothing is written through a link, and a directory
    /// mode is never applied through one.
    pub(crate) fn finish(mut self) -> Result<(Extracted, Vec<Entry>), ExtractError> {
        for link in &self.links {
            self.resolve_inside(link)?;
        }
        if let Some(root) = &self.root {
            for (path, mode) in &self.directory_modes {
                set_path_mode(&join(root, path), *mode)?;
            }
            for link in &self.links {
                create_symlink(
                    &name::link_target_text(&link.steps),
                    &join(root, &link.path),
                )
                .map_err(|error| with_path(error, &link.path.key()))?;
            }
        }
        self.totals.symlinks = self.links.len() as u64;
        Ok((self.totals, self.entries))
    }

    /// Follows `link` through the finished tree as the kernel would, link by link, and refuses
    /// it if any step leaves the root. Paths the archive does not contain are treated lexically;
    /// the kernel would fail on them instead, so this is never more permissive.
    fn resolve_inside(&self, link: &PendingLink) -> Result<(), ExtractError> {
        let mut current: Vec<String> = link.path.components().to_vec();
        current.pop();
        let mut pending: Vec<LinkStep> = link.steps.iter().rev().cloned().collect();
        let mut hops = 0;
        while let Some(step) = pending.pop() {
            match step {
                LinkStep::Up => {
                    if current.pop().is_none() {
                        return Err(link_escapes(&link.display, &link.steps));
                    }
                }
                LinkStep::Down(component) => {
                    current.push(component);
                    if let Some(steps) = self.link_targets.get(&current.join("/")) {
                        hops += 1;
                        if hops > MAX_LINK_HOPS {
                            return Err(unsafe_entry(
                                &link.display,
                                "its target goes through too many symbolic links (a loop?)",
                            ));
                        }
                        current.pop();
                        pending.extend(steps.iter().rev().cloned());
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes sure every parent of `path` is a directory this walker created, creating the
    /// missing ones. A parent that is a file or a link refuses the entry.
    fn prepare_parents(&mut self, path: &EntryPath, display: &str) -> Result<(), ExtractError> {
        let components = path.components();
        for length in 1..components.len() {
            let prefix = components[..length].join("/");
            match self.tree.get(&prefix) {
                Some(Node::Directory) => {}
                Some(Node::File) => {
                    return Err(unsafe_entry(
                        display,
                        &format!("`{prefix}` is a file, so nothing can be placed under it"),
                    ));
                }
                Some(Node::Symlink) => {
                    return Err(unsafe_entry(
                        display,
                        &format!(
                            "`{prefix}` is a symbolic link; entries are never written through links"
                        ),
                    ));
                }
                None => {
                    self.count_entry()?;
                    if let Some(root) = &self.root {
                        let directory: PathBuf = components[..length]
                            .iter()
                            .fold(root.clone(), |dir, part| dir.join(part));
                        create_directory(&directory).map_err(|error| with_path(error, &prefix))?;
                    }
                    self.tree.insert(prefix, Node::Directory);
                    self.totals.directories += 1;
                }
            }
        }
        Ok(())
    }

    /// Creates the directory `path` itself (its parents exist).
    fn create_directory(&mut self, path: &EntryPath) -> Result<(), ExtractError> {
        self.count_entry()?;
        if let Some(root) = &self.root {
            create_directory(&join(root, path)).map_err(|error| with_path(error, &path.key()))?;
        }
        self.tree.insert(path.key(), Node::Directory);
        self.totals.directories += 1;
        Ok(())
    }

    /// Records a new file or link at `key`, refusing a path the archive already produced.
    fn claim(&mut self, key: &str, display: &str, node: Node) -> Result<(), ExtractError> {
        if self.tree.contains_key(key) {
            return Err(duplicate(display, key));
        }
        self.count_entry()?;
        self.tree.insert(key.to_owned(), node);
        Ok(())
    }

    fn count_entry(&self) -> Result<(), ExtractError> {
        if self.tree.len() as u64 >= self.limits.max_files {
            return Err(ExtractError::LimitExceeded {
                what: format!(
                    "the archive has more than {} entries (files, directories and links)",
                    self.limits.max_files
                ),
            });
        }
        Ok(())
    }

    /// Streams one file's content, counting the bytes actually produced against every limit.
    fn copy(
        &mut self,
        data: &mut dyn Read,
        mut output: Option<&mut File>,
        display: &str,
    ) -> Result<u64, ExtractError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        let result = (|| {
            let mut written: u64 = 0;
            loop {
                let n_read = match data.read(&mut buffer) {
                    Ok(0) => return Ok(written),
                    Ok(n_read) => n_read,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => return Err(archive_read_error(error, display)),
                };
                written += n_read as u64;
                self.totals.bytes += n_read as u64;
                if written > self.limits.max_file_bytes {
                    return Err(file_too_large(display, self.limits.max_file_bytes));
                }
                if self.totals.bytes > self.limits.max_total_bytes {
                    return Err(ExtractError::LimitExceeded {
                        what: format!(
                            "the files together are larger than the limit of {} bytes \
                             (reached while writing `{display}`)",
                            self.limits.max_total_bytes
                        ),
                    });
                }
                if self.totals.bytes > self.ratio_budget {
                    return Err(ratio_exceeded(self.limits.max_ratio));
                }
                if let Some(file) = output.as_mut() {
                    file.write_all(&buffer[..n_read])
                        .map_err(|error| with_path(error, display))?;
                }
            }
        })();
        self.buffer = buffer;
        result
    }
}

/// An error a [`GuardedReader`] raises inside an `io::Error`, so it survives the `tar` crate.
#[derive(Debug)]
pub(crate) struct LimitHit(pub(crate) String);

impl std::fmt::Display for LimitHit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for LimitHit {}

/// Maps an error from reading the archive: a limit stays a limit, anything else means the
/// archive is damaged.
pub(crate) fn archive_read_error(error: io::Error, display: &str) -> ExtractError {
    if let Some(limit) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<LimitHit>())
    {
        return ExtractError::LimitExceeded {
            what: limit.0.clone(),
        };
    }
    if display.is_empty() {
        ExtractError::Corrupt(error.to_string())
    } else {
        ExtractError::Corrupt(format!("cannot read entry `{display}`: {error}"))
    }
}

pub(crate) fn ratio_exceeded(max_ratio: u64) -> ExtractError {
    ExtractError::LimitExceeded {
        what: ratio_message(max_ratio),
    }
}

fn ratio_message(max_ratio: u64) -> String {
    format!("the archive expands to more than {max_ratio} times its own size (a compression bomb?)")
}

fn parse(raw: &str, display: &str) -> Result<EntryPath, ExtractError> {
    name::parse_entry_name(raw).map_err(|reason| unsafe_entry(display, &reason))
}

fn unsafe_entry(display: &str, reason: &str) -> ExtractError {
    ExtractError::Unsafe {
        entry: display.to_owned(),
        reason: reason.to_owned(),
    }
}

fn duplicate(display: &str, key: &str) -> ExtractError {
    unsafe_entry(
        display,
        &format!("the archive already contains an entry at `{key}`; duplicates are refused"),
    )
}

fn link_escapes(display: &str, steps: &[LinkStep]) -> ExtractError {
    unsafe_entry(
        display,
        &format!(
            "it is a symbolic link to `{}`, which resolves outside the target directory",
            name::link_target_text(steps)
        ),
    )
}

fn file_too_large(display: &str, limit: u64) -> ExtractError {
    ExtractError::LimitExceeded {
        what: format!("entry `{display}` is larger than the per-file limit of {limit} bytes"),
    }
}

fn join(root: &Path, path: &EntryPath) -> PathBuf {
    path.components()
        .iter()
        .fold(root.to_path_buf(), |joined, component| {
            joined.join(component)
        })
}

/// Adds the entry's path to an I/O error, which otherwise says only "File exists".
fn with_path(error: io::Error, entry: &str) -> ExtractError {
    ExtractError::Io(io::Error::new(error.kind(), format!("`{entry}`: {error}")))
}

fn create_file(path: &Path) -> Result<File, ExtractError> {
    let mut options = OpenOptions::new();
    // `create_new` is `O_CREAT | O_EXCL`: it fails on any existing path and, by POSIX, on a
    // symbolic link even when it dangles, so it never writes through one. That makes a separate
    // `O_NOFOLLOW` (and an unsafe-free `libc` dependency) unnecessary.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|error| {
        let display = path.file_name().map_or_else(
            || path.display().to_string(),
            |file_name| file_name.to_string_lossy().into_owned(),
        );
        with_path(error, &display)
    })
}

fn create_directory(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    // Never `create_dir_all`: the parent is known to be ours, and an existing path (or link)
    // here must fail rather than be reused.
    builder.create(path)
}

#[cfg(unix)]
fn set_file_mode(file: &File, mode: u32) -> Result<(), ExtractError> {
    use std::os::unix::fs::PermissionsExt;
    // `fchmod` on the open descriptor: no path, so nothing to follow.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(not(unix))]
fn set_file_mode(_file: &File, _mode: u32) -> Result<(), ExtractError> {
    Ok(())
}

#[cfg(unix)]
fn set_path_mode(path: &Path, mode: u32) -> Result<(), ExtractError> {
    use std::os::unix::fs::PermissionsExt;
    // Every component of `path` is a directory the walker created and no link exists yet.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(not(unix))]
fn set_path_mode(_path: &Path, _mode: u32) -> Result<(), ExtractError> {
    Ok(())
}

#[cfg(unix)]
fn create_symlink(target: &str, path: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, path)
}

#[cfg(not(unix))]
fn create_symlink(_target: &str, _path: &Path) -> io::Result<()> {
    // `Walker::symlink` refuses links off Unix, so none reach here.
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symbolic links are only extracted on Unix",
    ))
}

/// Wraps the (decompressed) stream of a tar archive: counts every byte the `tar` crate reads,
/// headers and skipped data included, against the ratio budget, and remembers whether the
/// stream ran dry, which a tar archive with its end marker never does.
pub(crate) struct GuardedReader<R> {
    inner: R,
    read: u64,
    budget: u64,
    max_ratio: u64,
    pub(crate) reached_end: bool,
}

impl<R: Read> GuardedReader<R> {
    pub(crate) fn new(inner: R, budget: u64, max_ratio: u64) -> Self {
        GuardedReader {
            inner,
            read: 0,
            budget,
            max_ratio,
            reached_end: false,
        }
    }
}

impl<R: Read> Read for GuardedReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let n_read = self.inner.read(buffer)?;
        if n_read == 0 && !buffer.is_empty() {
            self.reached_end = true;
        }
        self.read += n_read as u64;
        if self.read > self.budget {
            return Err(io::Error::other(LimitHit(ratio_message(self.max_ratio))));
        }
        Ok(n_read)
    }
}
