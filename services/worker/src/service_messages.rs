//! What a job's output says besides text: Octopus service messages (`##octopus[...]` lines the
//! script helpers print) and the masking of sensitive values.
//!
//! A service message is one stdout line, `##octopus[<name> <key>='<base64>' ...]`. Cuttle reads
//! `setVariable` (output variables, optionally sensitive), `resultMessage` (the reason
//! `fail_step` gives), `createArtifact` (a file the worker then keeps as an artifact of the task), and `stdout-<category>` (the category of the lines that
//! follow: verbose, highlight, wait, warning, default). The lines themselves never reach the task
//! log. Every line that does is masked first: each sensitive value, and each value a script sets
//! as a sensitive output, becomes `********`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cuttle_domain::LogCategory;
use std::collections::BTreeMap;

/// What replaces a sensitive value in the log.
pub const MASK: &str = "********";

/// One output variable a script set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputValue {
    /// Its value.
    pub value: String,
    /// Set with `-sensitive` / `sensitive=True`.
    pub sensitive: bool,
}

/// A file a script asked to keep as an artifact of the task (`new_octopusartifact`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRequest {
    /// The file, as the script named it (the helpers make it absolute).
    pub path: String,
    /// The name to list it under.
    pub name: String,
}

/// What the job's scripts said through service messages.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Said {
    /// Output variables by name, the last value set winning.
    pub outputs: BTreeMap<String, OutputValue>,
    /// The message of `fail_step`, when a script gave one.
    pub result_message: Option<String>,
}

/// Turns raw output lines into task log lines: reads service messages, applies categories,
/// masks sensitive values.
#[derive(Debug, Default)]
pub struct LogFilter {
    masks: Vec<String>,
    stdout_category: Option<LogCategory>,
    said: Said,
    artifacts: Vec<ArtifactRequest>,
}

impl LogFilter {
    /// A filter masking `sensitive` values.
    pub fn new(sensitive: impl IntoIterator<Item = String>) -> LogFilter {
        let mut filter = LogFilter::default();
        for value in sensitive {
            filter.add_mask(value);
        }
        filter
    }

    fn add_mask(&mut self, value: String) {
        if value.is_empty() || self.masks.contains(&value) {
            return;
        }
        self.masks.push(value);
        // Longest first, so a value containing another is masked whole.
        self.masks.sort_by_key(|m| std::cmp::Reverse(m.len()));
    }

    /// Masks every sensitive value in `text`.
    pub fn mask(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for mask in &self.masks {
            if text.contains(mask.as_str()) {
                text = text.replace(mask.as_str(), MASK);
            }
        }
        text
    }

    /// The line as the task log shows it, or `None` for a service message.
    pub fn filter(&mut self, category: LogCategory, text: String) -> Option<(LogCategory, String)> {
        if category == LogCategory::Info
            && let Some(message) = parse(&text)
        {
            return self.apply(message);
        }
        let category = match category {
            LogCategory::Info => self.stdout_category.unwrap_or(LogCategory::Info),
            other => other,
        };
        Some((category, self.mask(&text)))
    }

    /// Acts on a service message; returns a line to log about it, if any.
    fn apply(&mut self, message: ServiceMessage) -> Option<(LogCategory, String)> {
        let attribute = |key: &str| message.attributes.get(key).cloned();
        match message.name.as_str() {
            "setVariable" => {
                let name = attribute("name").filter(|n| !n.trim().is_empty())?;
                let value = attribute("value").unwrap_or_default();
                let sensitive =
                    attribute("sensitive").is_some_and(|s| s.trim().eq_ignore_ascii_case("true"));
                if sensitive {
                    self.add_mask(value.clone());
                }
                self.said
                    .outputs
                    .insert(name.trim().to_owned(), OutputValue { value, sensitive });
            }
            "resultMessage" => self.said.result_message = attribute("message"),
            "stdout-verbose" => self.stdout_category = Some(LogCategory::Verbose),
            "stdout-highlight" => self.stdout_category = Some(LogCategory::Highlight),
            "stdout-warning" => self.stdout_category = Some(LogCategory::Warning),
            "stdout-default" | "stdout-wait" => self.stdout_category = None,
            "createArtifact" => {
                let path = attribute("path").filter(|p| !p.trim().is_empty())?;
                let name = attribute("name")
                    .filter(|n| !n.trim().is_empty())
                    .unwrap_or_else(|| {
                        std::path::Path::new(&path)
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_else(|| path.clone())
                    });
                self.artifacts.push(ArtifactRequest { path, name });
            }
            _ => {}
        }
        None
    }

    /// The artifacts asked for since the last call.
    pub fn take_artifacts(&mut self) -> Vec<ArtifactRequest> {
        std::mem::take(&mut self.artifacts)
    }

    /// What the scripts said, once the job is over.
    pub fn into_said(self) -> Said {
        self.said
    }
}

#[derive(Debug)]
struct ServiceMessage {
    name: String,
    attributes: BTreeMap<String, String>,
}

/// Parses `##octopus[name key='base64' ...]`; `None` when the line is not one.
fn parse(line: &str) -> Option<ServiceMessage> {
    let body = line.trim().strip_prefix("##octopus[")?.strip_suffix(']')?;
    let mut rest = body.trim_start();
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let name = rest[..end].to_owned();
    if name.is_empty() {
        return None;
    }
    rest = rest[end..].trim_start();
    let mut attributes = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("='")?;
        let (value, after) = after.split_once('\'')?;
        let decoded = STANDARD.decode(value.trim()).ok()?;
        attributes.insert(
            key.trim().to_owned(),
            String::from_utf8_lossy(&decoded).into_owned(),
        );
        rest = after.trim_start();
    }
    Some(ServiceMessage { name, attributes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        STANDARD.encode(text)
    }

    #[test]
    fn set_variable_is_read_and_hidden_and_sensitive_values_are_masked_from_then_on() {
        let mut filter = LogFilter::new(["s3cret".to_owned()]);
        assert_eq!(
            filter.filter(LogCategory::Info, "password is s3cret!".into()),
            Some((LogCategory::Info, "password is ********!".into()))
        );
        let set = format!(
            "##octopus[setVariable name='{}' value='{}' sensitive='{}']",
            b64("Token"),
            b64("tok-123"),
            b64("True")
        );
        assert_eq!(filter.filter(LogCategory::Info, set), None);
        assert_eq!(
            filter.filter(LogCategory::Error, "token tok-123".into()),
            Some((LogCategory::Error, "token ********".into()))
        );
        let plain = format!(
            "##octopus[setVariable name='{}' value='{}']",
            b64("Colour"),
            b64("blue")
        );
        assert_eq!(filter.filter(LogCategory::Info, plain), None);
        let said = filter.into_said();
        assert_eq!(
            said.outputs.get("Token"),
            Some(&OutputValue {
                value: "tok-123".into(),
                sensitive: true
            })
        );
        assert_eq!(said.outputs["Colour"].value, "blue");
        assert!(!said.outputs["Colour"].sensitive);
    }

    #[test]
    fn categories_switch_until_default_and_fail_step_gives_its_message() {
        let mut filter = LogFilter::default();
        assert_eq!(
            filter.filter(LogCategory::Info, "##octopus[stdout-highlight]".into()),
            None
        );
        assert_eq!(
            filter.filter(LogCategory::Info, "look".into()),
            Some((LogCategory::Highlight, "look".into()))
        );
        // stderr keeps its own category.
        assert_eq!(
            filter.filter(LogCategory::Error, "oops".into()),
            Some((LogCategory::Error, "oops".into()))
        );
        filter.filter(LogCategory::Info, "##octopus[stdout-default]".into());
        assert_eq!(
            filter.filter(LogCategory::Info, "plain".into()),
            Some((LogCategory::Info, "plain".into()))
        );
        filter.filter(
            LogCategory::Info,
            format!("##octopus[resultMessage message='{}']", b64("disk full")),
        );
        assert_eq!(
            filter.into_said().result_message.as_deref(),
            Some("disk full")
        );
    }

    #[test]
    fn lines_that_only_look_like_messages_are_logged_as_written() {
        let mut filter = LogFilter::default();
        for text in [
            "##octopus[",
            "##octopus[]",
            "##octopus[setVariable name='not base64!' value='eA==']",
            "##octopus[setVariable name='eA==]",
            "say ##octopus[stdout-highlight]",
        ] {
            assert_eq!(
                filter.filter(LogCategory::Info, text.into()),
                Some((LogCategory::Info, text.into())),
                "{text}"
            );
        }
        // From stderr, a message is just text.
        assert!(
            filter
                .filter(LogCategory::Error, "##octopus[stdout-highlight]".into())
                .is_some()
        );
        let artifact = filter.filter(
            LogCategory::Info,
            format!(
                "##octopus[createArtifact path='{}' name='{}']",
                b64("/tmp/a.txt"),
                b64("report")
            ),
        );
        assert_eq!(artifact, None);
        filter.filter(
            LogCategory::Info,
            format!("##octopus[createArtifact path='{}']", b64("/tmp/b.log")),
        );
        assert_eq!(
            filter.take_artifacts(),
            [
                ArtifactRequest {
                    path: "/tmp/a.txt".into(),
                    name: "report".into()
                },
                ArtifactRequest {
                    path: "/tmp/b.log".into(),
                    name: "b.log".into()
                }
            ]
        );
        assert!(filter.take_artifacts().is_empty());
    }

    #[test]
    fn the_longest_secret_is_masked_whole() {
        let filter = LogFilter::new(["abc".to_owned(), "abcdef".to_owned(), String::new()]);
        assert_eq!(filter.mask("abcdef abc x"), "******** ******** x");
    }
}
