//! Escaping filters for HTML, XML, JSON, YAML, Java properties files and URIs.
//!
//! The YAML and properties escapes write characters they cannot keep as `\uXXXX` UTF-16 code
//! units, as Octostache (a .NET library, whose strings are UTF-16) does.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters is escaped by `Uri.EscapeDataString`.
const URI_DATA: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `Uri.EscapeUriString` also keeps RFC 3986 reserved characters.
const URI: &AsciiSet = &URI_DATA
    .remove(b':')
    .remove(b'/')
    .remove(b'?')
    .remove(b'#')
    .remove(b'[')
    .remove(b']')
    .remove(b'@')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=');

/// Escapes each character with `map`, or keeps it when `map` returns `None`. Octostache's
/// escaping filters take no options and leave an unknown variable as written.
fn escape_with(
    argument: Option<&str>,
    options: &[String],
    map: impl Fn(char, usize) -> Option<String>,
) -> Option<String> {
    if !options.is_empty() {
        return None;
    }
    let argument = argument?;
    let mut escaped = String::with_capacity(argument.len());
    for (index, character) in argument.chars().enumerate() {
        match map(character, index) {
            Some(replacement) => escaped.push_str(&replacement),
            None => escaped.push(character),
        }
    }
    Some(escaped)
}

pub(super) fn html(argument: Option<&str>, options: &[String]) -> Option<String> {
    escape_with(argument, options, |character, _| {
        let entity = match character {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\'' => "&apos;",
            '/' => "&#x2F;",
            _ => return None,
        };
        Some(entity.to_owned())
    })
}

pub(super) fn xml(argument: Option<&str>, options: &[String]) -> Option<String> {
    escape_with(argument, options, |character, _| {
        let entity = match character {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' => "&quot;",
            '\'' => "&apos;",
            _ => return None,
        };
        Some(entity.to_owned())
    })
}

/// Octostache's JSON escape is deliberately small: quotes, backslashes, CR, LF and tab.
pub(super) fn json(argument: Option<&str>, options: &[String]) -> Option<String> {
    escape_with(argument, options, |character, _| {
        let escaped = match character {
            '"' => "\\\"",
            '\r' => "\\r",
            '\t' => "\\t",
            '\n' => "\\n",
            '\\' => "\\\\",
            _ => return None,
        };
        Some(escaped.to_owned())
    })
}

/// Doubles single quotes, and doubles each run of line breaks because YAML folds a single line
/// break inside a single-quoted scalar into a space.
pub(super) fn yaml_single_quote(argument: Option<&str>, options: &[String]) -> Option<String> {
    let argument = argument?;
    if !options.is_empty() {
        return None;
    }
    let mut folded = String::with_capacity(argument.len());
    // Byte positions: a line break run starts and ends at ASCII bytes, so every slice below
    // falls on a character boundary.
    let mut copied_up_to = 0;
    let mut position = 0;
    while position < argument.len() {
        let run_length = argument.get(position..).map_or(0, line_break_run);
        if run_length == 0 {
            position += 1;
            continue;
        }
        folded.push_str(argument.get(copied_up_to..position).unwrap_or_default());
        let run = argument
            .get(position..position + run_length)
            .unwrap_or_default();
        folded.push_str(if run.starts_with('\r') { "\r\n" } else { "\n" });
        folded.push_str(run);
        position += run_length;
        copied_up_to = position;
    }
    folded.push_str(argument.get(copied_up_to..).unwrap_or_default());
    escape_with(Some(&folded), &[], |character, _| {
        (character == '\'').then(|| "''".to_owned())
    })
}

/// The length of the run of `(\r?\n)+` at the start of `text` (0 if there is none).
fn line_break_run(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut length = 0;
    loop {
        match bytes.get(length..) {
            Some([b'\n', ..]) => length += 1,
            Some([b'\r', b'\n', ..]) => length += 2,
            _ => break,
        }
    }
    length
}

fn unicode_escape(character: char) -> String {
    let mut units = [0u16; 2];
    character
        .encode_utf16(&mut units)
        .iter()
        .map(|unit| format!("\\u{unit:04x}"))
        .collect()
}

pub(super) fn yaml_double_quote(argument: Option<&str>, options: &[String]) -> Option<String> {
    escape_with(argument, options, |character, _| {
        let escaped = match character {
            '\r' => "\\r",
            '\n' => "\\n",
            '\t' => "\\t",
            '\\' => "\\\\",
            '"' => "\\\"",
            ' '..='~' => return None,
            other => return Some(unicode_escape(other)),
        };
        Some(escaped.to_owned())
    })
}

/// The escapes keys and values of a Java properties file share.
fn properties_common(character: char) -> Option<String> {
    let escaped = match character {
        '\\' => "\\\\",
        '\r' => "\\r",
        '\n' => "\\n",
        // A tab may be read as a separator, so it is always escaped.
        '\t' => "\\t",
        // ISO-8859-1 characters are kept; anything else is written as \uXXXX.
        other if u32::from(other) < 0xFF => return None,
        other => return Some(unicode_escape(other)),
    };
    Some(escaped.to_owned())
}

pub(super) fn properties_key(argument: Option<&str>, options: &[String]) -> Option<String> {
    escape_with(argument, options, |character, _| match character {
        ' ' => Some("\\ ".to_owned()),
        ':' => Some("\\:".to_owned()),
        '=' => Some("\\=".to_owned()),
        other => properties_common(other),
    })
}

/// Only a leading space needs escaping in a value.
pub(super) fn properties_value(argument: Option<&str>, options: &[String]) -> Option<String> {
    escape_with(argument, options, |character, index| match character {
        ' ' if index == 0 => Some("\\ ".to_owned()),
        other => properties_common(other),
    })
}

pub(super) fn uri(argument: Option<&str>, options: &[String]) -> Option<String> {
    if !options.is_empty() {
        return None;
    }
    Some(utf8_percent_encode(argument?, URI).to_string())
}

pub(super) fn uri_data(argument: Option<&str>, options: &[String]) -> Option<String> {
    if !options.is_empty() {
        return None;
    }
    Some(utf8_percent_encode(argument?, URI_DATA).to_string())
}
