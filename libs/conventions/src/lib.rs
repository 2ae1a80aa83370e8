//! The configuration features of Octopus's package steps that rewrite extracted files with the
//! job's variables, in the order Calamari runs them (after the PreDeploy scripts, before the
//! Deploy scripts). Pure file work with no server crate: a worker runs it on its own
//! extractions, and the agent runs it on a deployment target's (`services/agent`).
//! 1. "Substitute Variables in Templates": each file matching a target pattern is evaluated as
//!    a template (`#{...}`; unknown variables stay as written). Files must be UTF-8.
//! 2. "Structured Configuration Variables": in each JSON file matching a target pattern, every
//!    value whose key path (keys joined with `:`, array items by index, compared ignoring case)
//!    is a variable's name takes the variable's value. Numbers and booleans stay numbers and
//!    booleans when the new value is one, objects and arrays are replaced by the value read as
//!    JSON, anything else becomes a string; names starting with `Octopus` are ignored unless
//!    they start with `Octopus:`. The file is written back indented, keys in their order. As in
//!    Octopus the extension picks the format first: a `.yml`/`.yaml` file is edited in place by
//!    the same paths, keeping its comments and layout ([`crate::yaml_replace`]), and a
//!    `.properties` file has the values of matching keys replaced ([`crate::properties_replace`]).
//!    An `.xml` file, or a file of another extension that is not JSON but starts like XML
//!    (`web.config`), has what XPath-named variables select replaced ([`crate::xml_replace`]).
//!
//! A target pattern is a glob relative to the extraction folder (`*` and `?` within one folder,
//! `**` for any number of folders, `[...]`, `{a,b}`; `\` is read as `/`) and may hold `#{...}`.
//! A pattern that matches nothing gets a warning, as in Octopus. Matching never leaves the
//! folder: absolute patterns and patterns with `..` are refused, the walk never follows links,
//! and a matching link is used only when it leads to a file inside the folder.

pub mod install;
pub mod properties_replace;
pub mod xml_replace;
pub mod yaml_replace;

use cuttle_domain::LogCategory;
use cuttle_template::VariableDictionary;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// How many patterns one target line may expand to through `{a,b}` alternatives.
const MAX_ALTERNATIVES: usize = 256;

/// The variable that turns off the warning for a substitution pattern matching no file.
const NO_MATCH_WARNING: &str = "Octopus.Action.SubstituteInFiles.EnableNoMatchWarning";

/// Which files the two features rewrite: target patterns, one or more per line; an empty list
/// turns a feature off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileFeatures {
    /// "Substitute Variables in Templates" (`Octopus.Action.SubstituteInFiles.TargetFiles`).
    pub substitute_in_files: Vec<String>,
    /// "Structured Configuration Variables"
    /// (`Octopus.Action.Package.JsonConfigurationVariablesTargets`).
    pub structured_variables: Vec<String>,
}

impl FileFeatures {
    /// True when neither feature has a file to work on.
    pub fn is_empty(&self) -> bool {
        self.substitute_in_files.is_empty() && self.structured_variables.is_empty()
    }
}

/// A job's variables as the features read them: `#{...}` evaluated leniently (unknown
/// variables stay as written).
#[derive(Default)]
pub struct Variables {
    dictionary: VariableDictionary,
}

impl Variables {
    /// The variables of `dictionary`.
    pub fn new(dictionary: VariableDictionary) -> Variables {
        Variables { dictionary }
    }

    /// Variables from (name, raw value) pairs; a later pair of the same name wins.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Variables {
        let mut dictionary = VariableDictionary::new();
        for (name, value) in pairs {
            dictionary.set(name, value);
        }
        Variables { dictionary }
    }

    /// The dictionary underneath.
    pub fn dictionary(&self) -> &VariableDictionary {
        &self.dictionary
    }

    /// `text` with `#{...}` evaluated; unknown variables stay as written.
    pub fn substitute(&self, text: &str) -> String {
        self.dictionary.evaluate_lenient(text)
    }

    /// The value of the variable `name` (in any case), evaluated; `None` when it is not set.
    pub fn get(&self, name: &str) -> Option<String> {
        self.dictionary
            .get_raw(name)
            .map(|raw| self.dictionary.evaluate_lenient(raw))
    }

    /// Every variable with its value evaluated, in the order the variables were first set.
    pub fn evaluated(&self) -> Vec<(String, String)> {
        self.dictionary
            .iter()
            .map(|(name, value)| (name.to_owned(), self.dictionary.evaluate_lenient(value)))
            .collect()
    }

    /// Every variable with its raw value, in the order the variables were first set.
    pub fn raw(&self) -> Vec<(String, String)> {
        self.dictionary
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    }
}

/// The lines the features write for the task log, in order. The caller passes them on: a worker
/// into the job's log, an agent in its answer.
#[derive(Default)]
pub struct Notes {
    lines: std::sync::Mutex<Vec<(LogCategory, String)>>,
}

impl Notes {
    /// Adds a line.
    pub async fn line(&self, category: LogCategory, text: impl Into<String>) {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((category, text.into()));
    }

    /// The lines so far, leaving none behind.
    pub fn take(&self) -> Vec<(LogCategory, String)> {
        std::mem::take(
            &mut *self
                .lines
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Runs the enabled features on the files under `root`; `Err` is the reason the step fails.
pub async fn apply(
    settings: &FileFeatures,
    root: &Path,
    variables: &Variables,
    log: &Notes,
) -> Result<(), String> {
    if settings.is_empty() {
        return Ok(());
    }
    let tree = Tree::list(root).await?;
    let templates = target_patterns(&settings.substitute_in_files, variables);
    if !templates.is_empty() {
        substitute_in_files(&tree, &templates, variables, log).await?;
    }
    let structured = target_patterns(&settings.structured_variables, variables);
    if !structured.is_empty() {
        replace_structured(&tree, &structured, variables, log).await?;
    }
    Ok(())
}

/// The target lines with `#{...}` evaluated, one pattern per non-empty line of the result.
fn target_patterns(lines: &[String], variables: &Variables) -> Vec<String> {
    if lines.is_empty() {
        return Vec::new();
    }
    variables
        .substitute(&lines.join("\n"))
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The files `pattern` matches, after logging what the walk noted; `None` when the pattern was
/// refused (with a warning naming it).
async fn matched(tree: &Tree, pattern: &str, kind: &str, log: &Notes) -> Option<Found> {
    match tree.matching(pattern) {
        Ok(found) => {
            for note in &found.notes {
                log.line(LogCategory::Verbose, note.clone()).await;
            }
            Some(found)
        }
        Err(why) => {
            log.line(
                LogCategory::Warning,
                format!("The {kind} target pattern '{pattern}' was skipped: {why}."),
            )
            .await;
            None
        }
    }
}

/// "Substitute Variables in Templates".
async fn substitute_in_files(
    tree: &Tree,
    patterns: &[String],
    variables: &Variables,
    log: &Notes,
) -> Result<(), String> {
    let warn_no_match = variables
        .get(NO_MATCH_WARNING)
        .is_none_or(|flag| !flag.trim().eq_ignore_ascii_case("false"));
    let mut done = HashSet::new();
    for pattern in patterns {
        let Some(found) = matched(tree, pattern, "substitution", log).await else {
            continue;
        };
        if found.files.is_empty() {
            if warn_no_match {
                log.line(
                    LogCategory::Warning,
                    format!(
                        "No files were found in {} that match the substitution target pattern '{pattern}'",
                        tree.root_display
                    ),
                )
                .await;
            }
            continue;
        }
        for (relative, path) in found.files {
            if !done.insert(path.clone()) {
                continue;
            }
            log.line(
                LogCategory::Verbose,
                format!("Performing variable substitution on '{relative}'"),
            )
            .await;
            let text = read_text(&path, &relative, "variables cannot be substituted in it").await?;
            let substituted = variables.substitute(&text);
            if substituted != text {
                write_text(&path, &relative, &substituted).await?;
            }
        }
    }
    Ok(())
}

/// "Structured Configuration Variables".
async fn replace_structured(
    tree: &Tree,
    patterns: &[String],
    variables: &Variables,
    log: &Notes,
) -> Result<(), String> {
    let replacements: Vec<(String, String)> = variables
        .evaluated()
        .into_iter()
        .filter(|(name, _)| names_a_structure(name))
        .collect();
    let mut done = HashSet::new();
    for pattern in patterns {
        let Some(found) = matched(tree, pattern, "replacement", log).await else {
            continue;
        };
        if found.files.is_empty() {
            let warning = if found.directories > 0 {
                format!(
                    "Skipping structured variable replacement on '{pattern}' because it is a directory."
                )
            } else {
                format!(
                    "No files were found in {} that match the replacement target pattern '{pattern}'",
                    tree.root_display
                )
            };
            log.line(LogCategory::Warning, warning).await;
            continue;
        }
        for (relative, path) in found.files {
            if done.insert(path.clone()) {
                replace_in_file(&path, &relative, &replacements, log).await?;
            }
        }
    }
    Ok(())
}

/// Octopus leaves out its own variables (`Octopus.Action.Name`, ...): a name starting with
/// `Octopus` is used only when a `:` follows.
fn names_a_structure(name: &str) -> bool {
    let octopus = name
        .get(..7)
        .is_some_and(|start| start.eq_ignore_ascii_case("octopus"));
    !octopus || name[7..].starts_with(':')
}

/// Structured replacement in one file.
async fn replace_in_file(
    path: &Path,
    relative: &str,
    replacements: &[(String, String)],
    log: &Notes,
) -> Result<(), String> {
    let text = read_text(path, relative, "its values cannot be replaced").await?;
    let (bom, body) = match text.strip_prefix('\u{feff}') {
        Some(body) => (true, body),
        None => (false, text.as_str()),
    };
    // As in Octopus, the file's extension picks the format when it names one.
    let extension = Path::new(relative)
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let in_place = match extension.as_str() {
        "yml" | "yaml" => Some(InPlace::Yaml),
        "xml" => Some(InPlace::Xml),
        "properties" => Some(InPlace::Properties),
        _ => None,
    };
    if let Some(format) = in_place {
        return replace_in_place(format, path, relative, body, bom, replacements, log).await;
    }
    let parsed = if body.trim().is_empty() {
        Ok(Node::Object(Vec::new()))
    } else {
        serde_json::from_str::<Node>(body)
    };
    let mut document = match parsed {
        Ok(document) => document,
        Err(err) => {
            // Like Octopus, a file whose extension names no format is tried as XML after JSON
            // (`web.config`, `*.csproj`).
            if extension != "json" && body.trim_start().starts_with('<') {
                let xml = InPlace::Xml;
                return replace_in_place(xml, path, relative, body, bom, replacements, log).await;
            }
            let note = if extension == "json" {
                ""
            } else {
                " (nor is it XML; YAML and Java properties files are recognised by their .yml, .yaml and .properties extensions)"
            };
            return Err(format!(
                "Structured variable replacement failed on file {relative}. The file could not be parsed as JSON{note}: {err}"
            ));
        }
    };
    for warning in replace(&mut document, replacements) {
        log.line(LogCategory::Warning, warning).await;
    }
    let rendered = render(&document, LineEnding::of(body), bom)
        .map_err(|err| format!("{relative} could not be written as JSON: {err}"))?;
    write_text(path, relative, &rendered).await?;
    succeeded(log, relative, "JSON").await;
    Ok(())
}

/// The formats whose files are edited in place, keeping their comments and layout.
#[derive(Clone, Copy)]
enum InPlace {
    /// [`crate::yaml_replace`].
    Yaml,
    /// [`crate::xml_replace`].
    Xml,
    /// [`crate::properties_replace`].
    Properties,
}

impl InPlace {
    fn name(self) -> &'static str {
        match self {
            InPlace::Yaml => "YAML",
            InPlace::Xml => "XML",
            InPlace::Properties => "Java Properties",
        }
    }

    /// The edited text, the warnings, and how many values changed (None: not counted, the file
    /// is always written back).
    fn edit(
        self,
        text: &str,
        replacements: &[(String, String)],
    ) -> Result<(String, Vec<String>, Option<usize>), String> {
        Ok(match self {
            InPlace::Yaml => {
                let (edited, warnings) = crate::yaml_replace::replace_yaml(text, replacements)?;
                (edited, warnings, None)
            }
            InPlace::Xml => {
                let (edited, warnings, count) =
                    crate::xml_replace::replace_xml(text, replacements)?;
                (edited, warnings, Some(count))
            }
            InPlace::Properties => {
                let (edited, count) =
                    crate::properties_replace::replace_properties(text, replacements);
                (edited, Vec::new(), Some(count))
            }
        })
    }

    fn nothing_matched(self, relative: &str) -> String {
        match self {
            InPlace::Xml => {
                format!("No variable names selected anything in {relative}: it was left unchanged.")
            }
            _ => {
                format!("No variable names matched the keys of {relative}: it was left unchanged.")
            }
        }
    }
}

/// Structured replacement in a file edited in place; `text` is without its byte order mark.
async fn replace_in_place(
    format: InPlace,
    path: &Path,
    relative: &str,
    text: &str,
    bom: bool,
    replacements: &[(String, String)],
    log: &Notes,
) -> Result<(), String> {
    let (mut edited, warnings, replaced) = format.edit(text, replacements).map_err(|err| {
        format!(
            "Structured variable replacement failed on file {relative}. The file could not be parsed as {}: {err}",
            format.name()
        )
    })?;
    for warning in warnings {
        log.line(LogCategory::Warning, warning).await;
    }
    if replaced == Some(0) {
        log.line(LogCategory::Info, format.nothing_matched(relative))
            .await;
        return Ok(());
    }
    if bom {
        edited.insert(0, '\u{feff}');
    }
    write_text(path, relative, &edited).await?;
    succeeded(log, relative, format.name()).await;
    Ok(())
}

/// Logs Octopus's line for a file whose values were replaced.
async fn succeeded(log: &Notes, relative: &str, format: &str) {
    log.line(
        LogCategory::Info,
        format!(
            "Structured variable replacement succeeded on file {relative} with format {format}"
        ),
    )
    .await;
}

/// A file's text; `Err` names the file when it cannot be read or is not UTF-8.
async fn read_text(path: &Path, relative: &str, consequence: &str) -> Result<String, String> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|err| format!("{relative} could not be read: {err}"))?;
    String::from_utf8(bytes).map_err(|err| {
        format!(
            "The file {relative} is not UTF-8 text (invalid byte at offset {}), so {consequence}.",
            err.utf8_error().valid_up_to()
        )
    })
}

async fn write_text(path: &Path, relative: &str, text: &str) -> Result<(), String> {
    tokio::fs::write(path, text)
        .await
        .map_err(|err| format!("{relative} could not be written: {err}"))
}

/// The files and folders under an extraction folder, listed once for every pattern.
struct Tree {
    /// The folder as the log names it.
    root_display: String,
    entries: Vec<Entry>,
}

/// One file, folder or link under the extraction folder.
struct Entry {
    /// Its path from the extraction folder, with `/` separators.
    relative: String,
    kind: Kind,
}

enum Kind {
    /// A regular file, or a link to one inside the folder: the real path.
    File(PathBuf),
    Directory,
    /// A link that leads outside the folder, nowhere, or to a folder.
    UnusableLink,
}

/// What a pattern matched.
#[derive(Default)]
struct Found {
    /// (relative path, real path) of the files, in path order.
    files: Vec<(String, PathBuf)>,
    /// How many folders matched (they are never targets).
    directories: usize,
    /// Lines for the verbose log (links skipped).
    notes: Vec<String>,
}

impl Tree {
    /// Walks `root` without following links.
    async fn list(root: &Path) -> Result<Tree, String> {
        let root_display = root.display().to_string();
        let owned = root.to_path_buf();
        let entries = tokio::task::spawn_blocking(move || list_blocking(&owned))
            .await
            .map_err(|err| format!("Listing the package's files stopped abnormally: {err}"))??;
        Ok(Tree {
            root_display,
            entries,
        })
    }

    /// The entries matching `pattern`; `Err` says why the pattern cannot be used.
    fn matching(&self, pattern: &str) -> Result<Found, String> {
        let patterns = compile(pattern)?;
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        let mut found = Found::default();
        for entry in &self.entries {
            if !patterns
                .iter()
                .any(|p| p.matches_with(&entry.relative, options))
            {
                continue;
            }
            match &entry.kind {
                Kind::File(path) => found.files.push((entry.relative.clone(), path.clone())),
                Kind::Directory => found.directories += 1,
                Kind::UnusableLink => found.notes.push(format!(
                    "Skipping {}: it is a link that does not lead to a file inside {}.",
                    entry.relative, self.root_display
                )),
            }
        }
        Ok(found)
    }
}

fn list_blocking(root: &Path) -> Result<Vec<Entry>, String> {
    let unreadable = |err: &dyn fmt::Display| {
        format!("The files in {} could not be listed: {err}", root.display())
    };
    // Walking the real path means every path the walk yields is real too (links are never
    // followed), so files found twice (directly and through a link) compare equal.
    let real_root = std::fs::canonicalize(root).map_err(|err| unreadable(&err))?;
    let mut entries = Vec::new();
    for entry in walkdir::WalkDir::new(&real_root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|err| unreadable(&err))?;
        let Ok(relative) = entry.path().strip_prefix(&real_root) else {
            continue;
        };
        let relative = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let file_type = entry.file_type();
        let kind = if file_type.is_file() {
            Kind::File(entry.path().to_path_buf())
        } else if file_type.is_dir() {
            Kind::Directory
        } else if file_type.is_symlink() {
            match std::fs::canonicalize(entry.path()) {
                Ok(target)
                    if target.starts_with(&real_root)
                        && std::fs::metadata(&target).is_ok_and(|m| m.is_file()) =>
                {
                    Kind::File(target)
                }
                _ => Kind::UnusableLink,
            }
        } else {
            // Sockets, pipes and devices are never targets.
            continue;
        };
        entries.push(Entry { relative, kind });
    }
    Ok(entries)
}

/// A target pattern as globs: `\` read as `/`, `./` dropped, `{a,b}` expanded.
fn compile(pattern: &str) -> Result<Vec<glob::Pattern>, String> {
    let mut normal = pattern.replace('\\', "/");
    while let Some(rest) = normal.strip_prefix("./") {
        normal = rest.to_owned();
    }
    if normal.starts_with('/') || normal.split('/').any(|step| step == "..") {
        return Err("it is not a path inside the extraction folder".into());
    }
    expand_alternatives(&normal)?
        .iter()
        .map(|p| glob::Pattern::new(p).map_err(|err| format!("it is not a valid pattern: {err}")))
        .collect()
}

/// `a{b,c}d` as `abd` and `acd`, nested braces included; a brace without its pair is literal.
fn expand_alternatives(pattern: &str) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    let mut pending = vec![pattern.to_owned()];
    while let Some(next) = pending.pop() {
        let Some((open, close)) = first_group(&next) else {
            done.push(next);
            continue;
        };
        let inside = &next[open + 1..close];
        for choice in split_choices(inside) {
            pending.push(format!("{}{choice}{}", &next[..open], &next[close + 1..]));
        }
        if pending.len() + done.len() > MAX_ALTERNATIVES {
            return Err(format!(
                "it expands to more than {MAX_ALTERNATIVES} alternatives"
            ));
        }
    }
    done.reverse();
    Ok(done)
}

/// Byte positions of the first `{` that has a matching `}`, and of that `}`.
fn first_group(pattern: &str) -> Option<(usize, usize)> {
    let bytes = pattern.as_bytes();
    for (open, _) in pattern.match_indices('{') {
        let mut depth = 0usize;
        for (index, byte) in bytes.iter().enumerate().skip(open) {
            match byte {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some((open, index));
                    }
                }
                _ => {}
            }
        }
    }
    None
}

/// The comma-separated choices of a group, commas inside nested groups kept.
fn split_choices(inside: &str) -> Vec<&str> {
    let mut choices = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (index, byte) in inside.bytes().enumerate() {
        match byte {
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                choices.push(&inside[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    choices.push(&inside[start..]);
    choices
}

/// A JSON document that keeps its keys in the order the file has them.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Node>),
    /// Entries in file order; a key given twice keeps its first place and its last value.
    Object(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Node, E> {
        Ok(Node::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Node, E> {
        Ok(Node::Number(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Node, E> {
        Ok(Node::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Node, E> {
        serde_json::Number::from_f64(value)
            .map(Node::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Node, E> {
        Ok(Node::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Node, E> {
        Ok(Node::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => entries.push((key, value)),
            }
        }
        Ok(Node::Object(entries))
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => serializer.serialize_unit(),
            Node::Bool(value) => serializer.serialize_bool(*value),
            Node::Number(value) => value.serialize(serializer),
            Node::String(value) => serializer.serialize_str(value),
            Node::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

impl Node {
    fn child_mut(&mut self, index: usize) -> Option<&mut Node> {
        match self {
            Node::Array(items) => items.get_mut(index),
            Node::Object(entries) => entries.get_mut(index).map(|(_, value)| value),
            _ => None,
        }
    }
}

/// Replaces every value of `document` whose key path names one of `variables`; returns
/// warnings for values that could not be set.
fn replace(document: &mut Node, variables: &[(String, String)]) -> Vec<String> {
    let mut locations = HashMap::new();
    map_paths(document, None, &mut Vec::new(), &mut locations);
    let mut replaced: Vec<Vec<usize>> = Vec::new();
    let mut warnings = Vec::new();
    for (name, value) in variables {
        let Some(location) = locations.get(&name.to_lowercase()) else {
            continue;
        };
        // Inside a value an earlier variable replaced whole: that value is gone.
        if replaced
            .iter()
            .any(|done| location.len() > done.len() && location.starts_with(done))
        {
            continue;
        }
        let Some(node) = location
            .iter()
            .try_fold(&mut *document, |node, index| node.child_mut(*index))
        else {
            continue;
        };
        match replacement(node, value) {
            Ok(new) => {
                *node = new;
                replaced.push(location.clone());
            }
            Err(why) => warnings.push(format!(
                "Unable to set value for {name}. The following error occurred: {why}"
            )),
        }
    }
    warnings
}

/// Records the location (child indexes from the root) of every value below `node` under its
/// lower-cased key path. A path found twice (keys differing in case) keeps the last location.
fn map_paths(
    node: &Node,
    path: Option<&str>,
    location: &mut Vec<usize>,
    locations: &mut HashMap<String, Vec<usize>>,
) {
    let children: Vec<(String, &Node)> = match node {
        Node::Object(entries) => entries.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Node::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (index, (key, child)) in children.into_iter().enumerate() {
        let child_path = match path {
            Some(parent) => format!("{parent}:{key}"),
            None => key,
        };
        location.push(index);
        locations.insert(child_path.to_lowercase(), location.clone());
        map_paths(child, Some(&child_path), location, locations);
        location.pop();
    }
}

/// The value `text` gives to a place holding `old`: Octopus keeps a number or boolean's type
/// when the text is one, reads the text as JSON where an object or array was, and otherwise
/// sets a string.
fn replacement(old: &Node, text: &str) -> Result<Node, String> {
    match old {
        Node::Object(_) | Node::Array(_) => {
            serde_json::from_str::<Node>(text).map_err(|err| err.to_string())
        }
        Node::Number(_) => {
            let trimmed = text.trim();
            if let Ok(integer) = trimmed.parse::<i64>() {
                return Ok(Node::Number(integer.into()));
            }
            Ok(trimmed
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| Node::String(text.to_owned()), Node::Number))
        }
        Node::Bool(_) => {
            let trimmed = text.trim();
            Ok(if trimmed.eq_ignore_ascii_case("true") {
                Node::Bool(true)
            } else if trimmed.eq_ignore_ascii_case("false") {
                Node::Bool(false)
            } else {
                Node::String(text.to_owned())
            })
        }
        Node::String(_) | Node::Null => Ok(Node::String(text.to_owned())),
    }
}

/// The line ending a file mostly uses; `\n` when it has none.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LineEnding {
    crlf: bool,
    trailing: bool,
}

impl LineEnding {
    fn of(text: &str) -> LineEnding {
        let crlf = text.matches("\r\n").count();
        let lf = text.matches('\n').count() - crlf;
        LineEnding {
            crlf: crlf > lf,
            trailing: text.ends_with('\n'),
        }
    }
}

/// The document indented by two spaces, with the file's line ending and byte order mark.
fn render(document: &Node, ending: LineEnding, bom: bool) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(document)?;
    if ending.crlf {
        // JSON strings escape their line breaks, so every raw `\n` is layout.
        text = text.replace('\n', "\r\n");
    }
    if ending.trailing {
        text.push_str(if ending.crlf { "\r\n" } else { "\n" });
    }
    if bom {
        text.insert(0, '\u{feff}');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables(pairs: &[(&str, &str)]) -> Variables {
        Variables::from_pairs(
            pairs
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        )
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn replaced(json: &str, list: &[(&str, &str)]) -> (String, Vec<String>) {
        let mut document: Node = serde_json::from_str(json).unwrap();
        let warnings = replace(&mut document, &pairs(list));
        (serde_json::to_string(&document).unwrap(), warnings)
    }

    #[test]
    fn values_keep_their_type_where_the_new_value_fits_it() {
        let (json, warnings) = replaced(
            r#"{"url":"dev","port":8080,"ratio":1.5,"debug":true,"name":"80","gone":null,"n":1}"#,
            &[
                ("url", "test"),
                ("port", " 80 "),
                ("ratio", "0.25"),
                ("debug", "False"),
                ("name", "8080"),
                ("gone", "back"),
                ("n", "not a number"),
            ],
        );
        assert_eq!(
            json,
            r#"{"url":"test","port":80,"ratio":0.25,"debug":false,"name":"8080","gone":"back","n":"not a number"}"#
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn hierarchical_names_match_keys_ignoring_case_and_arrays_by_index() {
        let (json, _) = replaced(
            r#"{"Logging":{"LogLevel":{"Default":"Warning"}},"foo":{"bar":["a","b",{"url":"x"}]}}"#,
            &[
                ("logging:loglevel:default", "Debug"),
                ("foo:bar:1", "qux"),
                ("Foo:Bar:2:URL", "test.weather.com"),
                ("foo:bar:9", "nowhere"),
                ("Logging", "not used: no such path at the top? it is"),
            ],
        );
        // `Logging` names the object: it is read as JSON and fails, so it stays as it was.
        assert_eq!(
            json,
            r#"{"Logging":{"LogLevel":{"Default":"Debug"}},"foo":{"bar":["a","qux",{"url":"test.weather.com"}]}}"#
        );
    }

    #[test]
    fn objects_and_arrays_are_replaced_whole_by_json_and_bad_json_is_a_warning() {
        let (json, warnings) = replaced(
            r#"{"weatherApi":{"url":"dev","key":"DEV"},"list":[1,2],"keep":{"a":1}}"#,
            &[
                ("weatherApi", r#"{"url":"test","key":"TEST"}"#),
                // Inside the object just replaced: the old object is gone, nothing happens.
                ("weatherApi:url", "ignored"),
                ("list", r#"["baz","qux"]"#),
                ("keep", "{not json"),
            ],
        );
        assert_eq!(
            json,
            r#"{"weatherApi":{"url":"test","key":"TEST"},"list":["baz","qux"],"keep":{"a":1}}"#
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("Unable to set value for keep."),
            "{warnings:?}"
        );
    }

    #[test]
    fn octopus_variables_are_left_out_unless_a_colon_follows() {
        assert!(!names_a_structure("Octopus.Action.Name"));
        assert!(!names_a_structure("OctopusServer:WebPort"));
        assert!(!names_a_structure("octopus"));
        assert!(names_a_structure("Octopus:WebPort"));
        assert!(names_a_structure("Port"));
        assert!(names_a_structure("Octo"));
        assert!(names_a_structure("Octopüs"));
    }

    #[test]
    fn rendering_keeps_key_order_line_endings_and_the_byte_order_mark() {
        let body = "{\r\n\"b\": 1,\r\n\"a\": [],\r\n\"c\": {}\r\n}\r\n";
        let document: Node = serde_json::from_str(body).unwrap();
        let text = render(&document, LineEnding::of(body), true).unwrap();
        assert_eq!(
            text,
            "\u{feff}{\r\n  \"b\": 1,\r\n  \"a\": [],\r\n  \"c\": {}\r\n}\r\n"
        );
        let text = render(&document, LineEnding::of("{}"), false).unwrap();
        assert_eq!(text, "{\n  \"b\": 1,\n  \"a\": [],\n  \"c\": {}\n}");
    }

    #[test]
    fn patterns_expand_alternatives_and_never_leave_the_folder() {
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        let matches = |pattern: &str, path: &str| {
            compile(pattern)
                .unwrap()
                .iter()
                .any(|p| p.matches_with(path, options))
        };
        assert!(matches("*.json", "app.json"));
        assert!(!matches("*.json", "config/app.json"));
        assert!(matches("**/*.json", "app.json"));
        assert!(matches("**/*.json", "a/b/app.json"));
        assert!(matches("config\\*.conf", "config/app.conf"));
        assert!(matches("./config/*.conf", "config/app.conf"));
        assert!(matches("**/*.{yml,yaml}", "k8s/deploy.yaml"));
        assert!(matches("**/*.{yml,yaml}", "k8s/deploy.yml"));
        assert!(matches("{a,b{c,d}}.txt", "bd.txt"));
        assert!(matches("odd{.txt", "odd{.txt"));
        assert!(!matches("App.json", "app.json"));
        assert!(compile("../outside.json").is_err());
        assert!(compile("config/../../x").is_err());
        assert!(compile("/etc/passwd").is_err());
        assert!(compile("\\etc\\passwd").is_err());
        assert!(compile("{a,b}{c,d}{e,f}{g,h}{i,j}{k,l}{m,n}{o,p}{q,r}").is_err());
    }

    async fn run(
        root: &Path,
        settings: FileFeatures,
        vars: &Variables,
    ) -> (Result<(), String>, Vec<(LogCategory, String)>) {
        let notes = Notes::default();
        let result = apply(&settings, root, vars, &notes).await;
        (result, notes.take())
    }

    fn warnings(lines: &[(LogCategory, String)]) -> Vec<&str> {
        lines
            .iter()
            .filter(|(c, _)| *c == LogCategory::Warning)
            .map(|(_, t)| t.as_str())
            .collect()
    }

    #[tokio::test]
    async fn files_are_substituted_then_json_values_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("config/deep")).unwrap();
        std::fs::write(
            root.join("config/app.conf"),
            "name=#{AppName} keep=#{Unknown}\n",
        )
        .unwrap();
        std::fs::write(root.join("config/deep/other.conf"), "env=#{Env}").unwrap();
        std::fs::write(
            root.join("appsettings.json"),
            "{\"Name\": \"#{AppName}\", \"Port\": 80, \"Logging\": {\"Level\": \"Warning\"}}\n",
        )
        .unwrap();
        std::fs::write(root.join("deploy.yaml"), "# deployment\nport: 80 # http\n").unwrap();
        std::fs::write(
            root.join("app.properties"),
            "\u{feff}# server\nport=80\nname=#{AppName}\n",
        )
        .unwrap();
        let vars = variables(&[
            ("AppName", "shop"),
            ("Env", "prod"),
            ("Port", "8080"),
            ("Logging:Level", "Debug"),
            ("Octopus.Action.Name", "ignored"),
        ]);
        let settings = FileFeatures {
            substitute_in_files: vec![
                "config/*.conf".into(),
                "#{Folder}/*.conf".into(),
                "appsettings.json".into(),
            ],
            structured_variables: vec![
                "*.json".into(),
                "*.yaml".into(),
                "*.properties".into(),
                "config".into(),
            ],
        };
        let (result, lines) = run(root, settings, &vars).await;
        result.unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("config/app.conf")).unwrap(),
            "name=shop keep=#{Unknown}\n"
        );
        // `*` stays within one folder.
        assert_eq!(
            std::fs::read_to_string(root.join("config/deep/other.conf")).unwrap(),
            "env=#{Env}"
        );
        // Substituted first, then replaced.
        assert_eq!(
            std::fs::read_to_string(root.join("appsettings.json")).unwrap(),
            "{\n  \"Name\": \"shop\",\n  \"Port\": 8080,\n  \"Logging\": {\n    \"Level\": \"Debug\"\n  }\n}\n"
        );
        // YAML is edited in place: comments and layout stay.
        assert_eq!(
            std::fs::read_to_string(root.join("deploy.yaml")).unwrap(),
            "# deployment\nport: 8080 # http\n"
        );
        // A properties file keeps its comments (and byte order mark); only values change.
        assert_eq!(
            std::fs::read_to_string(root.join("app.properties")).unwrap(),
            "\u{feff}# server\nport=8080\nname=#{AppName}\n"
        );
        assert!(
            lines.contains(&(
                LogCategory::Info,
                "Structured variable replacement succeeded on file deploy.yaml with format YAML"
                    .into()
            )),
            "{lines:?}"
        );
        let warned = warnings(&lines);
        assert_eq!(warned.len(), 2, "{lines:?}");
        assert!(
            warned[0].contains("match the substitution target pattern '#{Folder}/*.conf'"),
            "{warned:?}"
        );
        assert_eq!(
            warned[1],
            "Skipping structured variable replacement on 'config' because it is a directory."
        );
        assert!(
            lines.contains(&(
                LogCategory::Verbose,
                "Performing variable substitution on 'config/app.conf'".into()
            )),
            "{lines:?}"
        );
        assert!(
            lines.contains(&(
                LogCategory::Info,
                "Structured variable replacement succeeded on file appsettings.json with format JSON"
                    .into()
            )),
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn the_no_match_warning_can_be_turned_off_with_its_variable() {
        let dir = tempfile::tempdir().unwrap();
        let settings = FileFeatures {
            substitute_in_files: vec!["missing.conf".into()],
            structured_variables: vec![],
        };
        let (result, lines) = run(dir.path(), settings.clone(), &variables(&[])).await;
        result.unwrap();
        assert_eq!(warnings(&lines).len(), 1, "{lines:?}");
        let quiet = variables(&[(NO_MATCH_WARNING, "False")]);
        let (result, lines) = run(dir.path(), settings, &quiet).await;
        result.unwrap();
        assert!(warnings(&lines).is_empty(), "{lines:?}");
    }

    #[tokio::test]
    async fn bad_files_fail_the_step_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("broken.json"), "{\"a\": ").unwrap();
        std::fs::write(root.join("latin1.conf"), b"caf\xe9 #{A}").unwrap();
        let vars = variables(&[("A", "1")]);
        let (result, _) = run(
            root,
            FileFeatures {
                substitute_in_files: vec![],
                structured_variables: vec!["broken.json".into()],
            },
            &vars,
        )
        .await;
        let reason = result.unwrap_err();
        assert!(
            reason.starts_with("Structured variable replacement failed on file broken.json. The file could not be parsed as JSON: "),
            "{reason}"
        );
        let (result, _) = run(
            root,
            FileFeatures {
                substitute_in_files: vec!["*.conf".into()],
                structured_variables: vec![],
            },
            &vars,
        )
        .await;
        let reason = result.unwrap_err();
        assert!(
            reason.contains("latin1.conf is not UTF-8 text (invalid byte at offset 3)"),
            "{reason}"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn links_are_used_only_when_they_lead_to_a_file_inside_the_folder() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.conf"), "#{A}").unwrap();
        std::fs::create_dir(outside.path().join("dir")).unwrap();
        std::fs::write(outside.path().join("dir/inner.conf"), "#{A}").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("real.conf"), "#{A}").unwrap();
        std::os::unix::fs::symlink(root.join("real.conf"), root.join("alias.conf")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.conf"), root.join("out.conf"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path().join("dir"), root.join("linked")).unwrap();
        let vars = variables(&[("A", "done")]);
        let (result, lines) = run(
            root,
            FileFeatures {
                substitute_in_files: vec!["**/*.conf".into()],
                structured_variables: vec![],
            },
            &vars,
        )
        .await;
        result.unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("real.conf")).unwrap(),
            "done"
        );
        // Substituted once, though found twice (directly and through the link).
        let substituted: Vec<&str> = lines
            .iter()
            .filter(|(_, t)| t.starts_with("Performing variable substitution"))
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(
            substituted,
            ["Performing variable substitution on 'alias.conf'"],
            "{lines:?}"
        );
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret.conf")).unwrap(),
            "#{A}"
        );
        assert_eq!(
            std::fs::read_to_string(outside.path().join("dir/inner.conf")).unwrap(),
            "#{A}"
        );
        assert!(
            lines
                .iter()
                .any(|(_, t)| t.starts_with("Skipping out.conf: it is a link")),
            "{lines:?}"
        );
    }
}
