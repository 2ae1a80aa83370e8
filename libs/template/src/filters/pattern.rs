//! `Match` and `Replace`, which take regular expressions as Octostache's do.
//!
//! Patterns are compiled with regex-lite, whose syntax covers what deployment templates use
//! (classes, anchors, groups, alternation, repetition) but not .NET's look-around or
//! back-references; a pattern it cannot compile leaves the expression as written, where
//! Octostache would have thrown. Replacement text uses .NET's syntax (`$1`, `${name}`, `$$`,
//! `$&`, `` $` ``, `$'`, `$+`, `$_`), expanded here rather than by regex-lite, whose `$name`
//! rules differ.

use regex_lite::{Captures, Regex, RegexBuilder};

/// Compiled programs larger than this are refused, so a hostile pattern cannot exhaust memory.
const MAX_PROGRAM_BYTES: usize = 1 << 20;
/// Group nesting deeper than this is refused, so compiling cannot exhaust the stack.
const MAX_PATTERN_NESTING: u32 = 64;

fn compile(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(pattern)
        .size_limit(MAX_PROGRAM_BYTES)
        .nest_limit(MAX_PATTERN_NESTING)
        .build()
        .ok()
}

/// `Match pattern`: `true` when the pattern matches anywhere in the value.
pub(super) fn matches(argument: Option<&str>, options: &[String]) -> Option<String> {
    let (Some(argument), [pattern]) = (argument, options) else {
        return None;
    };
    let matched = compile(pattern)?.is_match(argument);
    Some(if matched { "true" } else { "false" }.to_owned())
}

/// `Replace pattern [replacement]`: replaces every match; the replacement defaults to empty.
pub(super) fn replace(
    argument: Option<&str>,
    options: &[String],
    max_output: usize,
) -> Option<String> {
    let argument = argument?;
    let pattern = compile(options.first()?)?;
    let replacement = options.get(1).map_or("", String::as_str);
    let mut result = String::with_capacity(argument.len());
    let mut copied_up_to = 0;
    for captures in pattern.captures_iter(argument) {
        let Some(whole) = captures.get(0) else {
            continue;
        };
        result.push_str(
            argument
                .get(copied_up_to..whole.start())
                .unwrap_or_default(),
        );
        let expansion = Expansion {
            captures: &captures,
            pattern: &pattern,
            input: argument,
            max_output,
        };
        if !expansion.write(replacement, &mut result) {
            return None;
        }
        copied_up_to = whole.end();
    }
    result.push_str(argument.get(copied_up_to..).unwrap_or_default());
    Some(result)
}

/// One match's view of a .NET replacement string.
struct Expansion<'a, 'h> {
    captures: &'a Captures<'h>,
    pattern: &'a Regex,
    input: &'h str,
    max_output: usize,
}

impl Expansion<'_, '_> {
    fn group(&self, index: usize) -> &str {
        self.captures.get(index).map_or("", |found| found.as_str())
    }

    /// Appends text, refusing to grow the output past the limit.
    fn push(&self, output: &mut String, text: &str) -> bool {
        if output.len().saturating_add(text.len()) > self.max_output {
            return false;
        }
        output.push_str(text);
        true
    }

    /// Expands `replacement` for this match onto `output`; `false` if it grew too long.
    fn write(&self, replacement: &str, output: &mut String) -> bool {
        let whole = self.captures.get(0);
        let mut rest = replacement;
        while let Some(dollar) = rest.find('$') {
            if !self.push(output, rest.get(..dollar).unwrap_or_default()) {
                return false;
            }
            let after = rest.get(dollar + 1..).unwrap_or_default();
            let (expansion, consumed): (Option<&str>, usize) = match after.chars().next() {
                Some('$') => (Some("$"), 1),
                Some('&') => (Some(self.group(0)), 1),
                Some('`') => (
                    Some(
                        self.input
                            .get(..whole.map_or(0, |found| found.start()))
                            .unwrap_or_default(),
                    ),
                    1,
                ),
                Some('\'') => (
                    Some(
                        self.input
                            .get(whole.map_or(0, |found| found.end())..)
                            .unwrap_or_default(),
                    ),
                    1,
                ),
                Some('_') => (Some(self.input), 1),
                Some('+') => (
                    Some(self.group(self.pattern.captures_len().saturating_sub(1))),
                    1,
                ),
                Some('{') => match after.find('}') {
                    Some(close) => (
                        self.named(after.get(1..close).unwrap_or_default()),
                        close + 1,
                    ),
                    None => (None, 0),
                },
                Some(character) if character.is_ascii_digit() => match self.numbered(after) {
                    Some((text, length)) => (Some(text), length),
                    None => (None, 0),
                },
                _ => (None, 0),
            };
            // Anything else after `$` is literal, the `$` included.
            if !self.push(output, expansion.unwrap_or("$")) {
                return false;
            }
            rest = after.get(consumed..).unwrap_or_default();
        }
        self.push(output, rest)
    }

    /// `${name}` or `${number}`: an existing group, else nothing (the text stays literal).
    fn named(&self, name: &str) -> Option<&str> {
        match name.parse::<usize>() {
            Ok(index) if index < self.pattern.captures_len() => Some(self.group(index)),
            Ok(_) => None,
            Err(_) => match self.captures.name(name) {
                Some(found) => Some(found.as_str()),
                None => self
                    .pattern
                    .capture_names()
                    .any(|known| known == Some(name))
                    .then_some(""),
            },
        }
    }

    /// `$12`: the longest run of digits that names an existing group, as .NET reads it.
    fn numbered(&self, after: &str) -> Option<(&str, usize)> {
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        (1..=digits).rev().find_map(|length| {
            let index = after.get(..length)?.parse::<usize>().ok()?;
            (index < self.pattern.captures_len()).then(|| (self.group(index), length))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replaced(input: &str, pattern: &str, replacement: &str) -> Option<String> {
        replace(
            Some(input),
            &[pattern.to_owned(), replacement.to_owned()],
            1 << 20,
        )
    }

    #[test]
    fn replacements_use_dotnet_group_syntax() {
        assert_eq!(
            replaced("opuocts", "o(.+)o([a-z]*)s", "o$2o$1s").as_deref(),
            Some("octopus")
        );
        assert_eq!(
            replaced("abc", "(?P<x>b)", "[${x}]").as_deref(),
            Some("a[b]c")
        );
        assert_eq!(replaced("abc", "b", "$$").as_deref(), Some("a$c"));
        assert_eq!(replaced("abc", "b", "<$&>").as_deref(), Some("a<b>c"));
        assert_eq!(replaced("abc", "(b)", "$1x").as_deref(), Some("abxc"));
        assert_eq!(replaced("abc", "b", "$9").as_deref(), Some("a$9c"));
        assert_eq!(replaced("abc", "b", "$`|$'").as_deref(), Some("aa|cc"));
    }

    #[test]
    fn an_invalid_pattern_is_not_applied() {
        assert_eq!(replaced("abc", "(", "x"), None);
        assert_eq!(matches(Some("abc"), &["(?<=a)b".to_owned()]), None);
    }
}
