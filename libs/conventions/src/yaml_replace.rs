//! Structured variable replacement in YAML files, editing the text in place.
//!
//! Octopus keeps a YAML file's comments, order and layout when it replaces values, so the file
//! is not parsed into a tree and written back: the parser's events carry their source spans, and
//! only the spans of the replaced values are rewritten.
//!
//! - A value is addressed as in JSON files: mapping keys joined with `:`, sequence items by
//!   index (`Servers:0:Name`), compared ignoring case, in every document of the file.
//! - A scalar takes the variable's value. It keeps its quoting style where the new text allows
//!   (plain and block scalars become plain, single-quoted stays single-quoted); otherwise it is
//!   double-quoted.
//!   Numbers and `true`/`false`/`null` are written plain.
//! - A mapping or sequence is replaced whole when the value reads as a JSON object or array,
//!   written as a flow collection (JSON is valid YAML); otherwise it stays, with a warning.
//! - Values inside a replaced collection, and keys, are never edited.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;

/// The edited text and the warnings to log; `Err` when the text is not valid YAML.
pub fn replace_yaml(
    text: &str,
    replacements: &[(String, String)],
) -> Result<(String, Vec<String>), String> {
    let wanted: HashMap<String, &str> = replacements
        .iter()
        .map(|(name, value)| (name.to_lowercase(), value.as_str()))
        .collect();
    let offsets = CharOffsets::new(text);
    let mut walk = Walk {
        wanted: &wanted,
        stack: Vec::new(),
        edits: Vec::new(),
        warnings: Vec::new(),
        replacing: 0,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|err| err.to_string())?;
        let span = offsets.bytes(&span);
        walk.on_event(event, span, text);
    }
    let mut edited = text.to_owned();
    // Spans never overlap (nested edits are dropped), so applying them from the end keeps the
    // earlier offsets valid.
    walk.edits.sort_by_key(|edit| std::cmp::Reverse(edit.start));
    for edit in walk.edits {
        edited.replace_range(edit.start..edit.end, &edit.text);
    }
    Ok((edited, walk.warnings))
}

/// One replaced byte range.
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

enum Frame {
    Mapping {
        path: Option<String>,
        /// The key just read, while its value is awaited; None while a key is awaited.
        key: Option<Option<String>>,
        /// Just after the `:` that follows that key, when it could be found.
        value_from: Option<usize>,
        /// Where a whole-collection replacement starts, and whether it needs a space first.
        start: (usize, bool),
        replace_with: Option<String>,
    },
    Sequence {
        path: Option<String>,
        next_index: usize,
        start: (usize, bool),
        replace_with: Option<String>,
    },
}

struct Walk<'a> {
    wanted: &'a HashMap<String, &'a str>,
    stack: Vec<Frame>,
    edits: Vec<Edit>,
    warnings: Vec<String>,
    /// How many collections being replaced whole enclose the current event.
    replacing: usize,
}

/// Where a node sits: its path when it is a value (None for anything inside a key), and in a
/// mapping, where the text after its key's `:` starts.
enum Role {
    Key,
    Value(Option<String>, Option<usize>),
}

impl Walk<'_> {
    fn on_event(&mut self, event: Event<'_>, span: (usize, usize), text: &str) {
        match event {
            Event::DocumentStart(_) => self.stack.clear(),
            Event::Scalar(value, style, _, _) => {
                let role = self.place();
                let Role::Value(path, value_from) = role else {
                    self.set_key(Some(value.into_owned()), text, span.1);
                    return;
                };
                if let Some(path) = path
                    && self.replacing == 0
                    && let Some(new) = self.wanted.get(&path.to_lowercase())
                {
                    let (start, end) = trimmed(text, span);
                    let block = matches!(style, ScalarStyle::Literal | ScalarStyle::Folded);
                    // A block scalar's span leaves out its `|` or `>` header: the new value
                    // goes where the header was, just after the key or the item's dash.
                    let (start, text) = match (block, value_from) {
                        (false, _) => (start, scalar(new, style)),
                        (true, Some(from)) => (from, format!(" {}", scalar(new, style))),
                        (true, None) => (block_header(text, start), scalar(new, style)),
                    };
                    self.edits.push(Edit { start, end, text });
                }
                self.value_done();
            }
            Event::Alias(_) => {
                if let Role::Key = self.place() {
                    self.set_key(None, text, span.1);
                } else {
                    self.value_done();
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let (path, start) = match self.place() {
                    Role::Key => {
                        // A collection used as a key: nothing inside it is addressable.
                        self.set_key(None, text, span.1);
                        (None, (span.0, false))
                    }
                    // In a mapping, a replacement goes just after the key's `:`, on its line:
                    // a flow collection on a line of its own would have to be indented deeper.
                    Role::Value(path, Some(from)) => (path, (from, true)),
                    Role::Value(path, None) => (path, (span.0, false)),
                };
                let replace_with = self.collection_replacement(path.as_deref());
                if replace_with.is_some() {
                    self.replacing += 1;
                }
                self.stack
                    .push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Mapping {
                            path,
                            key: None,
                            value_from: None,
                            start,
                            replace_with,
                        }
                    } else {
                        Frame::Sequence {
                            path,
                            next_index: 0,
                            start,
                            replace_with,
                        }
                    });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                let (start, replace_with) = match self.stack.pop() {
                    Some(Frame::Mapping {
                        start,
                        replace_with,
                        ..
                    })
                    | Some(Frame::Sequence {
                        start,
                        replace_with,
                        ..
                    }) => (start, replace_with),
                    None => return,
                };
                if let Some(json) = replace_with {
                    self.replacing -= 1;
                    if self.replacing == 0 {
                        let ((start, space), end) = (start, span.1.max(start.0));
                        let (start, end) = trimmed(text, (start, end));
                        let text = if space { format!(" {json}") } else { json };
                        self.edits.push(Edit { start, end, text });
                    }
                }
                self.value_done();
            }
            _ => {}
        }
    }

    /// The role of the node that starts now, from the collection around it.
    fn place(&mut self) -> Role {
        match self.stack.last_mut() {
            None => Role::Value(None, None),
            Some(Frame::Mapping { key: None, .. }) => Role::Key,
            Some(Frame::Mapping {
                key: Some(key),
                path,
                value_from,
                ..
            }) => Role::Value(join(path.as_deref(), key.as_deref()), *value_from),
            Some(Frame::Sequence {
                path, next_index, ..
            }) => {
                let index = next_index.to_string();
                *next_index += 1;
                Role::Value(join(path.as_deref(), Some(&index)), None)
            }
        }
    }

    /// Records the key just read (None when it cannot be addressed), which ended at `key_end`.
    fn set_key(&mut self, key: Option<String>, text: &str, key_end: usize) {
        if let Some(Frame::Mapping {
            key: slot,
            value_from,
            ..
        }) = self.stack.last_mut()
        {
            *slot = Some(key);
            let after = text.get(key_end..).unwrap_or_default();
            let gap = after.len() - after.trim_start_matches([' ', '\t']).len();
            *value_from = after[gap..].starts_with(':').then_some(key_end + gap + 1);
        }
    }

    /// A value ended: the mapping around it awaits its next key.
    fn value_done(&mut self) {
        if let Some(Frame::Mapping { key, .. }) = self.stack.last_mut() {
            *key = None;
        }
    }

    /// The flow text a collection at `path` is replaced with, if a variable names it.
    fn collection_replacement(&mut self, path: Option<&str>) -> Option<String> {
        if self.replacing > 0 {
            return None;
        }
        let path = path?;
        let value = self.wanted.get(&path.to_lowercase())?;
        match serde_json::from_str::<serde_json::Value>(value) {
            Ok(json @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
                Some(json.to_string())
            }
            _ => {
                self.warnings.push(format!(
                    "The variable '{path}' names a YAML mapping or sequence, but its value is not a JSON object or array, so the value was left unchanged."
                ));
                None
            }
        }
    }
}

fn join(path: Option<&str>, segment: Option<&str>) -> Option<String> {
    let segment = segment?;
    Some(match path {
        None => segment.to_owned(),
        Some(path) => format!("{path}:{segment}"),
    })
}

/// The span without the line breaks and spaces a block node's span ends with.
fn trimmed(text: &str, (start, end): (usize, usize)) -> (usize, usize) {
    let end = end.min(text.len()).max(start);
    (start, start + text[start..end].trim_end().len())
}

/// Where the `|` or `>` header of a block scalar whose content starts at `content` is: on the
/// last line before the content that is not blank.
fn block_header(text: &str, content: usize) -> usize {
    let before = &text[..content];
    let mut end = before.trim_end().len();
    loop {
        let line_start = before[..end].rfind('\n').map_or(0, |at| at + 1);
        let line = &before[line_start..end];
        match line.find(['|', '>']) {
            Some(at) => return line_start + at,
            None if line_start == 0 => return content,
            None => end = line_start - 1,
        }
    }
}

/// The new value as a scalar, in the original style where the text allows it.
fn scalar(value: &str, style: ScalarStyle) -> String {
    let typed = matches!(value, "true" | "false" | "null")
        || serde_json::from_str::<serde_json::Number>(value).is_ok();
    let unquoted = matches!(
        style,
        ScalarStyle::Plain | ScalarStyle::Literal | ScalarStyle::Folded
    );
    if typed || (unquoted && plain_safe(value)) {
        return value.to_owned();
    }
    if style == ScalarStyle::SingleQuoted && !value.contains(['\n', '\r']) {
        return format!("'{}'", value.replace('\'', "''"));
    }
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::Value::String(value.to_owned()).to_string()
}

/// Whether `value` reads back as the same string when written plain.
fn plain_safe(value: &str) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    (first.is_alphanumeric() || matches!(first, '_' | '/' | '.'))
        && value.chars().all(|c| {
            c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.' | '/' | ':' | '+' | '=' | '@')
        })
        && !value.ends_with([' ', ':'])
        && !value.contains(": ")
        && !matches!(
            value.to_ascii_lowercase().as_str(),
            "yes" | "no" | "on" | "off" | "y" | "n" | "~" | "true" | "false" | "null"
        )
}

/// Converts the parser's character positions to byte offsets.
struct CharOffsets {
    /// Byte offset of each character, then the text's length.
    bytes: Vec<usize>,
}

impl CharOffsets {
    fn new(text: &str) -> Self {
        let mut bytes: Vec<usize> = text.char_indices().map(|(offset, _)| offset).collect();
        bytes.push(text.len());
        Self { bytes }
    }

    fn byte(&self, index: usize) -> usize {
        self.bytes
            .get(index)
            .copied()
            .unwrap_or_else(|| self.bytes.last().copied().unwrap_or(0))
    }

    fn bytes(&self, span: &Span) -> (usize, usize) {
        (self.byte(span.start.index()), self.byte(span.end.index()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replaced(text: &str, list: &[(&str, &str)]) -> (String, Vec<String>) {
        let list: Vec<(String, String)> = list
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        replace_yaml(text, &list).unwrap()
    }

    #[test]
    fn scalars_are_replaced_by_path_keeping_comments_and_layout() {
        let text = "# settings\nLogging:\n  LogLevel:\n    Default: Information   # noisy\n    Microsoft: Warning\nName: 'app'\nPort: 80\n";
        let (out, warnings) = replaced(
            text,
            &[
                ("logging:loglevel:default", "Debug"),
                ("Name", "it's mine"),
                ("Port", "8080"),
                ("Missing:Key", "x"),
            ],
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            out,
            "# settings\nLogging:\n  LogLevel:\n    Default: Debug   # noisy\n    Microsoft: Warning\nName: 'it''s mine'\nPort: 8080\n"
        );
    }

    #[test]
    fn sequence_items_are_addressed_by_index() {
        let text = "Servers:\n- name: a\n  port: 1\n- name: b\n  port: 2\nTags: [x, y]\n";
        let (out, _) = replaced(text, &[("Servers:1:port", "3"), ("Tags:0", "z")]);
        assert_eq!(
            out,
            "Servers:\n- name: a\n  port: 1\n- name: b\n  port: 3\nTags: [z, y]\n"
        );
    }

    #[test]
    fn values_that_would_read_differently_plain_are_quoted() {
        let text = "a: x\nb: \"y\"\nc: z\nd: |\n  old\n  text\ne: end\n";
        let (out, _) = replaced(
            text,
            &[
                ("a", "has: colon"),
                ("b", "line\nbreak"),
                ("c", "yes"),
                ("d", "new"),
            ],
        );
        assert_eq!(
            out,
            "a: \"has: colon\"\nb: \"line\\nbreak\"\nc: \"yes\"\nd: new\ne: end\n"
        );
    }

    #[test]
    fn collections_are_replaced_whole_by_json_and_bad_json_is_a_warning() {
        let text = "Logging:\n  LogLevel: Info\n  Console: true\nHosts:\n- a\n- b\nKeep:\n  x: 1\n";
        let (out, warnings) = replaced(
            text,
            &[
                ("Logging", r#"{"LogLevel":"Debug"}"#),
                ("Logging:LogLevel", "ignored inside a replaced mapping"),
                ("Hosts", r#"["c"]"#),
                ("Keep", "not json"),
            ],
        );
        assert_eq!(
            out,
            "Logging: {\"LogLevel\":\"Debug\"}\nHosts: [\"c\"]\nKeep:\n  x: 1\n"
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("'Keep'"), "{warnings:?}");
        // The result is still YAML.
        let (again, _) = replaced(&out, &[("Hosts:0", "d")]);
        assert!(again.contains("[\"d\"]"), "{again}");
    }

    #[test]
    fn no_prefix_or_cut_of_a_document_panics() {
        let text = "# c\nA:\n  B: |\n    ü\n  C: [1, {D: 'é'}]\n- x\nE: >-\n  f\n? [k]\n: v\n\"G\" : \"h\"\n";
        let list: Vec<(String, String)> = ["A", "A:B", "A:C", "A:C:1:D", "E", "G", "0", "?"]
            .iter()
            .map(|name| ((*name).to_owned(), "[\"n\"]".to_owned()))
            .collect();
        for (at, _) in text.char_indices() {
            let _ = replace_yaml(&text[..at], &list);
            let _ = replace_yaml(&text[at..], &list);
        }
    }

    #[test]
    fn non_ascii_text_before_a_value_keeps_offsets_right() {
        let text = "Título: café\nVille: Zürich # ici\n";
        let (out, _) = replaced(text, &[("Ville", "Genève")]);
        assert_eq!(out, "Título: café\nVille: Genève # ici\n");
    }

    #[test]
    fn every_document_of_a_stream_is_replaced_and_bad_yaml_is_an_error() {
        let (out, _) = replaced(
            "- |\n  old\n- >- # folded\n  text\n- [a, {b: c}]\n",
            &[("0", "x"), ("1", "w"), ("2:1:b", "d")],
        );
        assert_eq!(out, "- x\n- w\n- [a, {b: d}]\n");
        let (out, _) = replaced("a: 1\n---\na: 2\n", &[("a", "3")]);
        assert_eq!(out, "a: 3\n---\na: 3\n");
        let list = vec![("a".to_owned(), "1".to_owned())];
        assert!(replace_yaml("a: [1, 2\nb: c", &list).is_err());
    }
}
