//! Structured variable replacement in Java properties files, editing the text in place.
//!
//! As in Octopus, every `key=value` entry whose key (unescaped, compared ignoring case) is a
//! variable's name takes the variable's value; comments, blank lines, order and the entries'
//! separators stay as they are. The file format is `java.util.Properties`': a key ends at the
//! first unescaped `=`, `:` or white space; a line ending in an odd number of backslashes
//! continues on the next one; `#` and `!` start comment lines. A key written alone gets `:` and
//! the value. The new value is escaped so that `Properties.load` reads it back exactly.

use std::collections::HashMap;

/// The edited text and how many entries were replaced.
pub fn replace_properties(text: &str, replacements: &[(String, String)]) -> (String, usize) {
    let wanted: HashMap<String, &str> = replacements
        .iter()
        .map(|(name, value)| (name.to_lowercase(), value.as_str()))
        .collect();
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for line in logical_lines(text) {
        let Some(entry) = parse_entry(&line) else {
            continue;
        };
        let Some(value) = wanted.get(&entry.key.to_lowercase()) else {
            continue;
        };
        let mut replacement = if entry.has_separator {
            String::new()
        } else {
            ":".to_owned()
        };
        replacement.push_str(&escape_value(value));
        edits.push((entry.value_start, line.end, replacement));
    }
    let count = edits.len();
    let mut edited = text.to_owned();
    for (start, end, replacement) in edits.into_iter().rev() {
        edited.replace_range(start..end, &replacement);
    }
    (edited, count)
}

/// One logical line: its characters (continuations removed) with their byte offsets, and the
/// byte offset where it ends (before its line break).
struct Line {
    chars: Vec<(usize, char)>,
    end: usize,
}

fn logical_lines(text: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut current = Line {
        chars: Vec::new(),
        end: 0,
    };
    let mut offset = 0;
    let mut continuing = false;
    for physical in text.split_inclusive('\n') {
        let content = physical.trim_end_matches(['\n', '\r']);
        let mut chars: Vec<(usize, char)> = content
            .char_indices()
            .map(|(at, c)| (offset + at, c))
            .collect();
        if continuing {
            // A continuation line's leading white space is not part of the value.
            let blank = chars
                .iter()
                .take_while(|(_, c)| matches!(c, ' ' | '\t' | '\u{c}'))
                .count();
            chars.drain(..blank);
        }
        let trailing = content.chars().rev().take_while(|c| *c == '\\').count();
        let is_comment = !continuing
            && chars
                .iter()
                .find(|(_, c)| !matches!(c, ' ' | '\t' | '\u{c}'))
                .is_some_and(|(_, c)| matches!(c, '#' | '!'));
        continuing = trailing % 2 == 1 && !is_comment;
        if continuing {
            chars.pop();
        }
        current.chars.extend(chars);
        current.end = offset + content.len();
        offset += physical.len();
        if !continuing {
            lines.push(std::mem::replace(
                &mut current,
                Line {
                    chars: Vec::new(),
                    end: offset,
                },
            ));
        }
    }
    if continuing {
        lines.push(current);
    }
    lines
}

/// A `key=value` entry of a logical line.
struct Entry {
    key: String,
    has_separator: bool,
    /// Byte offset where the value starts (the line's end when it has none).
    value_start: usize,
}

fn parse_entry(line: &Line) -> Option<Entry> {
    let blank = |c: char| matches!(c, ' ' | '\t' | '\u{c}');
    let mut chars = line.chars.iter().copied().peekable();
    while chars.next_if(|(_, c)| blank(*c)).is_some() {}
    let (_, first) = *chars.peek()?;
    if matches!(first, '#' | '!') {
        return None;
    }
    let mut key = String::new();
    let mut has_separator = false;
    while let Some((_, c)) = chars.peek().copied() {
        if c == '\\' {
            chars.next();
            if let Some(decoded) = unescape(&mut chars) {
                key.push(decoded);
            }
            continue;
        }
        if c == '=' || c == ':' || blank(c) {
            break;
        }
        key.push(c);
        chars.next();
    }
    // The separator: white space, then at most one `=` or `:`, then white space.
    while chars.next_if(|(_, c)| blank(*c)).is_some() {
        has_separator = true;
    }
    if chars.next_if(|(_, c)| matches!(c, '=' | ':')).is_some() {
        has_separator = true;
        while chars.next_if(|(_, c)| blank(*c)).is_some() {}
    }
    let value_start = chars.peek().map_or(line.end, |(at, _)| *at);
    Some(Entry {
        key,
        has_separator,
        value_start,
    })
}

/// Reads the rest of an escape (after its backslash).
fn unescape(chars: &mut std::iter::Peekable<impl Iterator<Item = (usize, char)>>) -> Option<char> {
    let (_, c) = chars.next()?;
    Some(match c {
        't' => '\t',
        'n' => '\n',
        'r' => '\r',
        'f' => '\u{c}',
        'u' => {
            let hex: String = (0..4)
                .filter_map(|_| chars.next().map(|(_, c)| c))
                .collect();
            u32::from_str_radix(&hex, 16)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{fffd}')
        }
        other => other,
    })
}

/// Escapes a value so that `Properties.load` reads back exactly `value`.
fn escape_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for (index, c) in value.chars().enumerate() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            '\u{c}' => escaped.push_str("\\f"),
            // Leading white space would be read as part of the separator.
            ' ' if index == 0 => escaped.push_str("\\ "),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replaced(text: &str, list: &[(&str, &str)]) -> (String, usize) {
        let list: Vec<(String, String)> = list
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        replace_properties(text, &list)
    }

    #[test]
    fn values_of_matching_keys_are_replaced_keeping_everything_else() {
        let text = "# settings\r\n! also a comment: port=1\r\nport = 80\r\nhost:localhost\r\n\r\n  name   old value\r\nempty=\r\nalone\r\nother=kept\r\n";
        let (out, count) = replaced(
            text,
            &[
                ("PORT", "8080"),
                ("host", "db.internal"),
                ("name", "new value"),
                ("empty", "filled"),
                ("alone", "x"),
                ("comment", "never"),
            ],
        );
        assert_eq!(count, 5);
        assert_eq!(
            out,
            "# settings\r\n! also a comment: port=1\r\nport = 8080\r\nhost:db.internal\r\n\r\n  name   new value\r\nempty=filled\r\nalone:x\r\nother=kept\r\n"
        );
    }

    #[test]
    fn escaped_keys_continuations_and_special_values_round_trip() {
        let text = "my\\ key=a\nlong = first \\\n       second\nurl\\:x=1\nlast=end";
        let (out, count) = replaced(
            text,
            &[
                ("my key", " lead\\ing\ttab\nline"),
                ("long", "short"),
                ("url:x", "2"),
                ("last", "done"),
            ],
        );
        assert_eq!(count, 4);
        assert_eq!(
            out,
            "my\\ key=\\ lead\\\\ing\\ttab\\nline\nlong = short\nurl\\:x=2\nlast=done"
        );
    }

    #[test]
    fn a_continued_comment_line_does_not_swallow_the_next_entry() {
        let (out, count) = replaced("# ends with \\\nkey=1\n", &[("key", "2")]);
        assert_eq!(count, 1);
        assert_eq!(out, "# ends with \\\nkey=2\n");
    }

    #[test]
    fn no_cut_of_a_file_panics() {
        let text = "a\\u00e9=é\\\n  b\nc:\\u12\n\\";
        for (at, _) in text.char_indices() {
            let _ = replaced(&text[..at], &[("a\u{e9}", "x"), ("c", "y")]);
            let _ = replaced(&text[at..], &[("a\u{e9}", "x"), ("c", "y")]);
        }
        let (out, _) = replaced("a\\u00e9=old\n", &[("a\u{e9}", "new")]);
        assert_eq!(out, "a\\u00e9=new\n");
    }
}
