//! Structured variable replacement in XML files, editing the text in place.
//!
//! As in Octopus, a variable whose name contains `/` or `:` and reads as an XPath expression
//! replaces what the expression selects: an attribute's value, an element's text (its CDATA
//! section when that is all it holds; its children when it has elements and the value is a
//! well-formed XML fragment, else a warning). Unlike Octopus, which writes the whole document
//! back re-indented, only the selected values change: comments, layout and entities elsewhere
//! stay as written.
//!
//! The XPath understood is the part config files use: absolute or relative location paths with
//! `/` and `//`, element names (compared as written, prefix included) or `*`, predicates
//! `[@attr='value']`, `[name='text']` and `[N]`, and a last step `@attr` or `text()`. A name that
//! starts with `/` but uses more than that gets a warning, never a guess.

use quick_xml::events::Event;

/// The edited text and the warnings to log; `Err` when the text is not well-formed XML.
pub fn replace_xml(
    text: &str,
    replacements: &[(String, String)],
) -> Result<(String, Vec<String>, usize), String> {
    let document = Document::parse(text)?;
    let mut warnings = Vec::new();
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for (name, value) in replacements {
        if !name.contains(['/', ':']) {
            continue;
        }
        let Some(path) = parse_path(name) else {
            if name.starts_with('/') {
                warnings.push(format!(
                    "The variable '{name}' looks like an XPath expression that Cuttle does not support yet; it was not used."
                ));
            }
            continue;
        };
        for selected in document.select(&path) {
            match document.edit(text, selected, value) {
                Ok(edit) => edits.push(edit),
                Err(warning) => warnings.push(format!("{warning} (variable '{name}')")),
            }
        }
    }
    // An edit inside a region another edit replaces is dropped: the outer one wins.
    edits.sort_by_key(|(start, end, _)| (*start, std::cmp::Reverse(*end)));
    let mut kept: Vec<(usize, usize, String)> = Vec::new();
    for edit in edits {
        if kept.last().is_some_and(|last| edit.0 < last.1) {
            continue;
        }
        kept.push(edit);
    }
    let count = kept.len();
    let mut edited = text.to_owned();
    for (start, end, replacement) in kept.into_iter().rev() {
        edited.replace_range(start..end, &replacement);
    }
    Ok((edited, warnings, count))
}

/// One element, with the byte spans replacement needs.
struct Element {
    name: String,
    children: Vec<usize>,
    attributes: Vec<Attribute>,
    /// End of the start tag; for `<a/>`, the span of the `/>`.
    open_end: usize,
    self_closing: Option<(usize, usize)>,
    /// Between the tags (`open_end..close_start`).
    content: Option<(usize, usize)>,
    /// Nodes directly inside, as an XML DOM without white space counts them.
    nodes: usize,
    has_elements: bool,
    /// The content span of its only CDATA section, when one was seen.
    cdata: Option<(usize, usize)>,
    /// Its text, for `[name='text']` predicates.
    text: String,
}

struct Attribute {
    name: String,
    value: String,
    span: (usize, usize),
    quote: char,
}

struct Document {
    /// Index 0 is the document node.
    elements: Vec<Element>,
}

/// What an expression selected.
#[derive(Clone, Copy, PartialEq)]
enum Selected {
    Element(usize),
    Attribute(usize, usize),
}

impl Document {
    fn parse(text: &str) -> Result<Document, String> {
        let mut elements = vec![Element::new(String::new(), 0)];
        let mut stack = vec![0usize];
        let mut reader = quick_xml::Reader::from_str(text);
        loop {
            let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
            let event = reader
                .read_event()
                .map_err(|err| format!("{err} at byte {}", reader.error_position()))?;
            let after = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
            let parent = stack.last().copied().unwrap_or(0);
            let tag = text.get(before..after).unwrap_or_default();
            match event {
                Event::Start(start) | Event::Empty(start) => {
                    let empty = tag.ends_with("/>");
                    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
                    let mut element = Element::new(name, after);
                    element.attributes = attributes(tag, before);
                    if empty {
                        element.self_closing = Some((after - 2, after));
                    }
                    let index = elements.len();
                    elements.push(element);
                    let parent = &mut elements[parent];
                    parent.children.push(index);
                    parent.has_elements = true;
                    parent.nodes += 1;
                    if !empty {
                        stack.push(index);
                    }
                }
                Event::End(_) => {
                    if let Some(index) = stack.pop() {
                        let element = &mut elements[index];
                        element.content = Some((element.open_end, before));
                    }
                }
                Event::CData(data) => {
                    let element = &mut elements[parent];
                    element.nodes += 1;
                    element.cdata = Some((before + 9, after.saturating_sub(3)));
                    element.text.push_str(&String::from_utf8_lossy(&data));
                }
                Event::Text(content) => {
                    let decoded = content.decode().map_err(|err| err.to_string())?;
                    if !decoded.trim().is_empty() {
                        let element = &mut elements[parent];
                        element.nodes += 1;
                        element.text.push_str(&decoded);
                    }
                }
                Event::GeneralRef(reference) => {
                    let element = &mut elements[parent];
                    element.nodes += 1;
                    if let Ok(Some(c)) = reference.resolve_char_ref() {
                        element.text.push(c);
                    }
                }
                Event::Comment(_) | Event::PI(_) => elements[parent].nodes += 1,
                Event::Eof => break,
                _ => {}
            }
        }
        if stack.len() > 1 {
            return Err("the document ends inside an element".to_owned());
        }
        Ok(Document { elements })
    }

    fn select(&self, path: &Path) -> Vec<Selected> {
        let mut current = vec![0usize];
        for step in &path.steps {
            let mut next = Vec::new();
            for &context in &current {
                let candidates: Vec<usize> = if step.descendants {
                    self.descendants(context)
                } else {
                    self.elements[context].children.clone()
                };
                let mut matched: Vec<usize> = candidates
                    .into_iter()
                    .filter(|index| step.name == "*" || self.elements[*index].name == step.name)
                    .collect();
                for predicate in &step.predicates {
                    matched = match predicate {
                        Predicate::Position(position) => {
                            matched.get(position - 1).copied().into_iter().collect()
                        }
                        Predicate::Attribute(name, value) => matched
                            .into_iter()
                            .filter(|index| {
                                self.elements[*index]
                                    .attributes
                                    .iter()
                                    .any(|a| &a.name == name && &a.value == value)
                            })
                            .collect(),
                        Predicate::Child(name, value) => matched
                            .into_iter()
                            .filter(|index| {
                                self.elements[*index].children.iter().any(|child| {
                                    let child = &self.elements[*child];
                                    &child.name == name && child.text.trim() == value
                                })
                            })
                            .collect(),
                    };
                }
                for index in matched {
                    if !next.contains(&index) {
                        next.push(index);
                    }
                }
            }
            current = next;
        }
        match &path.last {
            Last::Element => current.into_iter().map(Selected::Element).collect(),
            Last::Attribute(name) => current
                .into_iter()
                .filter_map(|index| {
                    self.elements[index]
                        .attributes
                        .iter()
                        .position(|a| &a.name == name)
                        .map(|at| Selected::Attribute(index, at))
                })
                .collect(),
        }
    }

    fn descendants(&self, index: usize) -> Vec<usize> {
        let mut found = Vec::new();
        let mut pending: Vec<usize> = self.elements[index]
            .children
            .iter()
            .rev()
            .copied()
            .collect();
        while let Some(next) = pending.pop() {
            found.push(next);
            pending.extend(self.elements[next].children.iter().rev());
        }
        found
    }

    /// The edit that sets what `selected` points at to `value`.
    fn edit(
        &self,
        text: &str,
        selected: Selected,
        value: &str,
    ) -> Result<(usize, usize, String), String> {
        match selected {
            Selected::Attribute(element, at) => {
                let attribute = &self.elements[element].attributes[at];
                let (start, end) = attribute.span;
                Ok((start, end, escape(value, Some(attribute.quote))))
            }
            Selected::Element(index) => {
                let element = &self.elements[index];
                if let Some((start, end)) = element.self_closing {
                    let slash = text[..start].len() - text[..start].trim_end().len();
                    return Ok((
                        start - slash,
                        end,
                        format!(">{}</{}>", escape(value, None), element.name),
                    ));
                }
                let (start, end) = element
                    .content
                    .unwrap_or((element.open_end, element.open_end));
                if let Some(cdata) = element.cdata
                    && element.nodes == 1
                    && !value.contains("]]>")
                {
                    return Ok((cdata.0, cdata.1, value.to_owned()));
                }
                if element.has_elements {
                    if !well_formed_fragment(value) {
                        return Err(format!(
                            "The XML element '{}' holds elements, and the new value is not a well-formed XML fragment, so it was left unchanged",
                            element.name
                        ));
                    }
                    return Ok((start, end, value.to_owned()));
                }
                Ok((start, end, escape(value, None)))
            }
        }
    }
}

impl Element {
    fn new(name: String, open_end: usize) -> Element {
        Element {
            name,
            children: Vec::new(),
            attributes: Vec::new(),
            open_end,
            self_closing: None,
            content: None,
            nodes: 0,
            has_elements: false,
            cdata: None,
            text: String::new(),
        }
    }
}

/// The attributes of the start tag `tag`, which begins at byte `offset`, with their value spans.
fn attributes(tag: &str, offset: usize) -> Vec<Attribute> {
    let mut found = Vec::new();
    let bytes = tag.as_bytes();
    // Skip `<` and the element's name.
    let mut at = 1;
    while at < bytes.len() && !bytes[at].is_ascii_whitespace() && !matches!(bytes[at], b'>' | b'/')
    {
        at += 1;
    }
    loop {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let name_start = at;
        while at < bytes.len()
            && !bytes[at].is_ascii_whitespace()
            && !matches!(bytes[at], b'=' | b'>' | b'/')
        {
            at += 1;
        }
        if name_start == at {
            return found;
        }
        let name = tag[name_start..at].to_owned();
        while at < bytes.len() && (bytes[at].is_ascii_whitespace() || bytes[at] == b'=') {
            at += 1;
        }
        let Some(&quote) = bytes.get(at).filter(|q| matches!(q, b'"' | b'\'')) else {
            return found;
        };
        let value_start = at + 1;
        let Some(length) = tag[value_start..].find(quote as char) else {
            return found;
        };
        let raw = &tag[value_start..value_start + length];
        let value = quick_xml::escape::unescape(raw)
            .map(|value| value.into_owned())
            .unwrap_or_else(|_| raw.to_owned());
        found.push(Attribute {
            name,
            value,
            span: (offset + value_start, offset + value_start + length),
            quote: quote as char,
        });
        at = value_start + length + 1;
    }
}

/// Escapes text for element content, or for an attribute value quoted with `quote`.
fn escape(value: &str, quote: Option<char>) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' if quote == Some('"') => escaped.push_str("&quot;"),
            '\'' if quote == Some('\'') => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn well_formed_fragment(value: &str) -> bool {
    let wrapped = format!("<fragment>{value}</fragment>");
    let mut reader = quick_xml::Reader::from_str(&wrapped);
    let mut depth = 0i64;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => depth += 1,
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Eof) => return depth == 0,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// A parsed location path.
struct Path {
    steps: Vec<Step>,
    last: Last,
}

struct Step {
    descendants: bool,
    name: String,
    predicates: Vec<Predicate>,
}

enum Predicate {
    Position(usize),
    Attribute(String, String),
    Child(String, String),
}

enum Last {
    Element,
    Attribute(String),
}

/// Parses the supported XPath subset; None for anything else.
fn parse_path(expression: &str) -> Option<Path> {
    let mut rest = expression.trim();
    let mut steps = Vec::new();
    let mut last = Last::Element;
    let mut first = true;
    while !rest.is_empty() {
        let descendants = if let Some(after) = rest.strip_prefix("//") {
            rest = after;
            true
        } else if let Some(after) = rest.strip_prefix('/') {
            rest = after;
            false
        } else if first {
            false
        } else {
            return None;
        };
        first = false;
        let end = step_end(rest)?;
        let step = &rest[..end];
        rest = &rest[end..];
        if let Some(attribute) = step.strip_prefix('@') {
            if !rest.is_empty() || descendants || !is_name(attribute) {
                return None;
            }
            last = Last::Attribute(attribute.to_owned());
            break;
        }
        if step == "text()" {
            if !rest.is_empty() || descendants {
                return None;
            }
            break;
        }
        let (name, mut predicates_text) = match step.find('[') {
            Some(at) => (&step[..at], &step[at..]),
            None => (step, ""),
        };
        if name != "*" && !is_name(name) {
            return None;
        }
        let mut predicates = Vec::new();
        while let Some(inner) = predicates_text.strip_prefix('[') {
            let close = inner.find(']')?;
            predicates.push(parse_predicate(inner[..close].trim())?);
            predicates_text = &inner[close + 1..];
        }
        if !predicates_text.is_empty() {
            return None;
        }
        steps.push(Step {
            descendants,
            name: name.to_owned(),
            predicates,
        });
    }
    (!steps.is_empty()).then_some(Path { steps, last })
}

/// Where the step at the start of `rest` ends: at the next `/` outside brackets and quotes.
fn step_end(rest: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut depth = 0usize;
    for (at, c) in rest.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => depth = depth.checked_sub(1)?,
            (None, '/') if depth == 0 => return (at > 0).then_some(at),
            _ => {}
        }
    }
    (quote.is_none() && depth == 0 && !rest.is_empty()).then_some(rest.len())
}

fn parse_predicate(text: &str) -> Option<Predicate> {
    if let Ok(position) = text.parse::<usize>() {
        return (position > 0).then_some(Predicate::Position(position));
    }
    let (left, right) = text.split_once('=')?;
    let (left, right) = (left.trim(), right.trim());
    let quote = right.chars().next().filter(|q| matches!(q, '\'' | '"'))?;
    let value = right.strip_prefix(quote)?.strip_suffix(quote)?;
    if value.contains(quote) {
        return None;
    }
    match left.strip_prefix('@') {
        Some(name) if is_name(name) => {
            Some(Predicate::Attribute(name.to_owned(), value.to_owned()))
        }
        None if is_name(left) => Some(Predicate::Child(left.to_owned(), value.to_owned())),
        _ => None,
    }
}

/// An XML name, optionally prefixed (`name`, `p:name`).
fn is_name(text: &str) -> bool {
    let mut parts = text.split(':');
    let valid = |part: &str| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && part
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    parts.clone().count() <= 2 && parts.all(valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replaced(text: &str, list: &[(&str, &str)]) -> (String, Vec<String>, usize) {
        let list: Vec<(String, String)> = list
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        replace_xml(text, &list).unwrap()
    }

    const CONFIG: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<!-- app settings -->
<configuration>
  <appSettings>
    <add key="Environment" value="Development" />
    <add key='Title' value='Old &amp; busted'/>
  </appSettings>
  <connectionStrings>
    <add name="Db" connectionString="Server=.;Database=dev" />
  </connectionStrings>
  <notes><![CDATA[old <notes>]]></notes>
  <empty/>
  <port>80</port>
  <logging><level>Info</level></logging>
</configuration>
"#;

    #[test]
    fn attributes_elements_and_cdata_are_replaced_in_place() {
        let (out, warnings, count) = replaced(
            CONFIG,
            &[
                (
                    "/configuration/appSettings/add[@key='Environment']/@value",
                    "Production",
                ),
                ("//add[@key=\"Title\"]/@value", "New 'n' <shiny>"),
                (
                    "//connectionStrings/add[@name='Db']/@connectionString",
                    "Server=db;Database=\"prod\"",
                ),
                ("/configuration/notes", "new <notes>"),
                ("/configuration/empty", "filled & done"),
                ("/configuration/port/text()", "8080"),
                ("Logging:Level", "ignored: no such prefixed element"),
            ],
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(count, 6);
        let expected = CONFIG
            .replace(r#"value="Development""#, r#"value="Production""#)
            .replace(
                "value='Old &amp; busted'",
                "value='New &apos;n&apos; &lt;shiny&gt;'",
            )
            .replace(
                r#"connectionString="Server=.;Database=dev""#,
                r#"connectionString="Server=db;Database=&quot;prod&quot;""#,
            )
            .replace("<![CDATA[old <notes>]]>", "<![CDATA[new <notes>]]>")
            .replace("<empty/>", "<empty>filled &amp; done</empty>")
            .replace("<port>80</port>", "<port>8080</port>");
        assert_eq!(out, expected);
    }

    #[test]
    fn elements_with_children_take_well_formed_fragments_only() {
        let (out, warnings, _) = replaced(
            CONFIG,
            &[(
                "/configuration/logging",
                "<level>Debug</level><sink>console</sink>",
            )],
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(
            out.contains("<logging><level>Debug</level><sink>console</sink></logging>"),
            "{out}"
        );
        let (out, warnings, count) = replaced(CONFIG, &[("/configuration/logging", "<broken>")]);
        assert_eq!(out, CONFIG);
        assert_eq!(count, 0);
        assert!(
            warnings[0].contains("not a well-formed XML fragment"),
            "{warnings:?}"
        );
    }

    #[test]
    fn positions_child_predicates_and_outer_edits_win() {
        let text = "<r><i><n>a</n><v>1</v></i><i><n>b</n><v>2</v></i></r>";
        let (out, _, _) = replaced(
            text,
            &[
                ("/r/i[2]/v", "20"),
                ("/r/i[n='a']/v", "10"),
                ("/r/*[1]", "<n>z</n>"),
                ("/r/i[1]/n", "inner edit dropped"),
            ],
        );
        assert_eq!(out, "<r><i><n>z</n></i><i><n>b</n><v>20</v></i></r>");
    }

    #[test]
    fn unsupported_xpath_is_a_warning_and_bad_xml_an_error() {
        let (out, warnings, count) = replaced(CONFIG, &[("/configuration/add[last()]", "x")]);
        assert_eq!((out.as_str(), count), (CONFIG, 0));
        assert!(warnings[0].contains("does not support yet"), "{warnings:?}");
        let list = vec![("/a".to_owned(), "x".to_owned())];
        assert!(replace_xml("<a><b></a>", &list).is_err());
        assert!(replace_xml("<a>", &list).is_err());
    }

    #[test]
    fn no_cut_of_a_document_panics() {
        let list: Vec<(String, String)> = [
            "/configuration/empty",
            "//add/@value",
            "/configuration/notes",
        ]
        .iter()
        .map(|name| ((*name).to_owned(), "v".to_owned()))
        .collect();
        for (at, _) in CONFIG.char_indices() {
            let _ = replace_xml(&CONFIG[..at], &list);
            let _ = replace_xml(&CONFIG[at..], &list);
        }
    }
}
