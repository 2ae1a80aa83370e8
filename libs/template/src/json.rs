//! JSON-valued variables, read as leniently as Newtonsoft.Json reads them.
//!
//! Octostache lets a template index into a variable whose value is JSON (`#{Config.Name}`,
//! `#{Config[0]}`, `#{each item in Config}`). It parses with Newtonsoft.Json, which accepts
//! unquoted property names, single-quoted strings and comments, so this parser does too. A
//! sub-object or array is handed on as compact JSON text, exactly as Newtonsoft re-serializes it.

use std::sync::Arc;

use crate::binding::Binding;
use crate::number::format_double_general;

/// Nesting deeper than this is refused, as Newtonsoft's default `MaxDepth` of 64 does.
const MAX_DEPTH: usize = 64;

/// A parsed JSON value. Objects keep their property order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    /// A number as written when it is an integer, else as a double.
    Integer(String),
    Float(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The text Octostache substitutes for a value: scalars as plain text (`True`/`False` for
    /// booleans, as .NET prints them), empty for null, containers as compact JSON.
    pub(crate) fn to_item(&self) -> String {
        match self {
            Json::Null => String::new(),
            Json::Bool(true) => "True".to_owned(),
            Json::Bool(false) => "False".to_owned(),
            Json::Integer(text) => text.clone(),
            Json::Float(value) => format_double_general(*value),
            Json::String(text) => text.clone(),
            Json::Array(_) | Json::Object(_) => {
                let mut text = String::new();
                self.write_compact(&mut text);
                text
            }
        }
    }

    fn write_compact(&self, text: &mut String) {
        match self {
            Json::Null => text.push_str("null"),
            Json::Bool(value) => text.push_str(if *value { "true" } else { "false" }),
            Json::Integer(digits) => text.push_str(digits),
            Json::Float(value) => {
                let printed = format_double_general(*value);
                text.push_str(&printed);
                // Newtonsoft always writes a double with a fraction or an exponent.
                if printed.chars().all(|c| c.is_ascii_digit() || c == '-') {
                    text.push_str(".0");
                }
            }
            Json::String(value) => write_string(text, value),
            Json::Array(items) => {
                text.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        text.push(',');
                    }
                    item.write_compact(text);
                }
                text.push(']');
            }
            Json::Object(properties) => {
                text.push('{');
                for (index, (name, value)) in properties.iter().enumerate() {
                    if index > 0 {
                        text.push(',');
                    }
                    write_string(text, name);
                    text.push(':');
                    value.write_compact(text);
                }
                text.push('}');
            }
        }
    }

    /// A binding for this value as an item of a `#{each}` loop or an indexing result.
    pub(crate) fn to_binding(&self) -> Arc<Binding> {
        Binding::leaf(self.to_item())
    }
}

fn write_string(text: &mut String, value: &str) {
    text.push('"');
    for character in value.chars() {
        match character {
            '"' => text.push_str("\\\""),
            '\\' => text.push_str("\\\\"),
            '\n' => text.push_str("\\n"),
            '\r' => text.push_str("\\r"),
            '\t' => text.push_str("\\t"),
            '\u{08}' => text.push_str("\\b"),
            '\u{0C}' => text.push_str("\\f"),
            control if u32::from(control) < 0x20 => {
                text.push_str(&format!("\\u{:04x}", u32::from(control)));
            }
            other => text.push(other),
        }
    }
    text.push('"');
}

/// Parses one JSON value, leniently; `None` if it is not JSON.
pub(crate) fn parse(text: &str) -> Option<Json> {
    let mut parser = JsonParser {
        characters: text.chars().collect(),
        position: 0,
    };
    let value = parser.value(0)?;
    parser.skip_insignificant()?;
    if parser.position < parser.characters.len() {
        return None;
    }
    Some(value)
}

/// Looks up a property or array index in a JSON text, as Octostache's JSON parser does: a
/// missing property or an index past the end is an empty value, a scalar answers any property
/// with itself, and anything that is not JSON is not found.
pub(crate) fn lookup(text: &str, property: &str) -> Option<Arc<Binding>> {
    match parse(text)? {
        Json::Null => None,
        Json::Array(items) => {
            let index = crate::number::parse_int32(property)?;
            let item = usize::try_from(index)
                .ok()
                .and_then(|index| items.get(index));
            Some(item.map_or_else(|| Binding::leaf(""), Json::to_binding))
        }
        Json::Object(properties) => {
            // The last of duplicate properties wins, as Newtonsoft's default handling does.
            let found = properties.iter().rev().find(|(name, _)| name == property);
            Some(found.map_or_else(|| Binding::leaf(""), |(_, value)| value.to_binding()))
        }
        scalar => Some(scalar.to_binding()),
    }
}

/// The items a `#{each}` over a JSON value iterates: array elements, or for an object one item
/// per property whose value is the property name, with `Key` and `Value` children.
pub(crate) fn items(text: &str) -> Option<Vec<Arc<Binding>>> {
    match parse(text)? {
        Json::Array(items) => Some(items.iter().map(Json::to_binding).collect()),
        Json::Object(properties) => Some(
            properties
                .iter()
                .map(|(name, value)| {
                    let mut binding = Binding {
                        item: Some(name.clone()),
                        ..Binding::default()
                    };
                    binding.children.insert("Key", Binding::leaf(name.clone()));
                    binding.children.insert("Value", value.to_binding());
                    Arc::new(binding)
                })
                .collect(),
        ),
        _ => None,
    }
}

struct JsonParser {
    characters: Vec<char>,
    position: usize,
}

impl JsonParser {
    fn peek(&self) -> Option<char> {
        self.characters.get(self.position).copied()
    }

    fn next(&mut self) -> Option<char> {
        let character = self.peek()?;
        self.position += 1;
        Some(character)
    }

    /// Skips whitespace and comments; `None` for an unterminated block comment.
    fn skip_insignificant(&mut self) -> Option<()> {
        loop {
            match self.peek() {
                Some(character) if character.is_whitespace() => self.position += 1,
                Some('/') => match self.characters.get(self.position + 1) {
                    Some('/') => {
                        while self.peek().is_some_and(|c| c != '\n') {
                            self.position += 1;
                        }
                    }
                    Some('*') => {
                        self.position += 2;
                        loop {
                            match self.next()? {
                                '*' if self.peek() == Some('/') => {
                                    self.position += 1;
                                    break;
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => return Some(()),
                },
                _ => return Some(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_insignificant()?;
        match self.peek()? {
            '{' => self.object(depth),
            '[' => self.array(depth),
            '"' | '\'' => self.string().map(Json::String),
            '-' | '0'..='9' | '.' => self.number(),
            _ => {
                let word = self.bare_word();
                match word.as_str() {
                    "true" => Some(Json::Bool(true)),
                    "false" => Some(Json::Bool(false)),
                    "null" | "undefined" => Some(Json::Null),
                    _ => None,
                }
            }
        }
    }

    fn bare_word(&mut self) -> String {
        let mut word = String::new();
        while let Some(character) = self.peek() {
            if character.is_alphanumeric() || matches!(character, '_' | '$' | '-' | '@') {
                word.push(character);
                self.position += 1;
            } else {
                break;
            }
        }
        word
    }

    fn object(&mut self, depth: usize) -> Option<Json> {
        self.position += 1;
        let mut properties: Vec<(String, Json)> = Vec::new();
        loop {
            self.skip_insignificant()?;
            if self.peek()? == '}' {
                self.position += 1;
                return Some(Json::Object(properties));
            }
            if !properties.is_empty() {
                if self.next()? != ',' {
                    return None;
                }
                self.skip_insignificant()?;
            }
            let name = match self.peek()? {
                '"' | '\'' => self.string()?,
                _ => {
                    let word = self.bare_word();
                    if word.is_empty() {
                        return None;
                    }
                    word
                }
            };
            self.skip_insignificant()?;
            if self.next()? != ':' {
                return None;
            }
            let value = self.value(depth + 1)?;
            match properties
                .iter_mut()
                .find(|(existing, _)| *existing == name)
            {
                Some(existing) => existing.1 = value,
                None => properties.push((name, value)),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<Json> {
        self.position += 1;
        let mut items = Vec::new();
        loop {
            self.skip_insignificant()?;
            if self.peek()? == ']' {
                self.position += 1;
                return Some(Json::Array(items));
            }
            if !items.is_empty() && self.next()? != ',' {
                return None;
            }
            items.push(self.value(depth + 1)?);
        }
    }

    fn string(&mut self) -> Option<String> {
        let quote = self.next()?;
        let mut text = String::new();
        loop {
            match self.next()? {
                character if character == quote => return Some(text),
                '\\' => match self.next()? {
                    'n' => text.push('\n'),
                    'r' => text.push('\r'),
                    't' => text.push('\t'),
                    'b' => text.push('\u{08}'),
                    'f' => text.push('\u{0C}'),
                    'u' => {
                        let unit = self.hex4()?;
                        let character = if (0xD800..0xDC00).contains(&unit)
                            && self.peek() == Some('\\')
                            && self.characters.get(self.position + 1) == Some(&'u')
                        {
                            self.position += 2;
                            let low = self.hex4()?;
                            char::decode_utf16([unit, low])
                                .next()
                                .and_then(Result::ok)
                                .unwrap_or(char::REPLACEMENT_CHARACTER)
                        } else {
                            char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER)
                        };
                        text.push(character);
                    }
                    other => text.push(other),
                },
                other => text.push(other),
            }
        }
    }

    fn hex4(&mut self) -> Option<u16> {
        let mut value: u16 = 0;
        for _ in 0..4 {
            let digit = self.next()?.to_digit(16)?;
            value = value * 16 + u16::try_from(digit).ok()?;
        }
        Some(value)
    }

    fn number(&mut self) -> Option<Json> {
        let start = self.position;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
        {
            self.position += 1;
        }
        let text: String = self.characters.get(start..self.position)?.iter().collect();
        let is_integer = text
            .strip_prefix('-')
            .unwrap_or(&text)
            .chars()
            .all(|c| c.is_ascii_digit());
        if is_integer && !text.is_empty() && text != "-" {
            return Some(Json::Integer(text));
        }
        text.parse::<f64>()
            .ok()
            .filter(|value| value.is_finite())
            .map(Json::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newtonsoft_leniencies_are_accepted() {
        let value = parse("{Name: 'Web', \"Port\": 80, /* note */ Items: [1, 2.5, true, null]}");
        assert_eq!(
            value.map(|value| value.to_item()).as_deref(),
            Some("{\"Name\":\"Web\",\"Port\":80,\"Items\":[1,2.5,true,null]}")
        );
        assert_eq!(parse("{Name: NoComma}"), None);
        assert_eq!(parse("{} trailing"), None);
    }

    #[test]
    fn lookups_follow_octostache_rules() {
        let item = |text: &str, property: &str| lookup(text, property).and_then(|b| b.item.clone());
        assert_eq!(
            item("{\"Hello\": \"World\"}", "Hello").as_deref(),
            Some("World")
        );
        assert_eq!(item("{\"Hello\": \"World\"}", "hello").as_deref(), Some(""));
        assert_eq!(item("[2,3,5,8]", "4").as_deref(), Some(""));
        assert_eq!(item("[2,3,5,8]", "x"), None);
        assert_eq!(item("12", "Anything").as_deref(), Some("12"));
        assert_eq!(item("not json", "x"), None);
        assert_eq!(
            item("{\"Foo\": {\"Bar\":\"11\"}}", "Foo").as_deref(),
            Some("{\"Bar\":\"11\"}")
        );
    }

    #[test]
    fn deeply_nested_json_is_refused_not_overflowed() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert_eq!(parse(&deep), None);
    }
}
