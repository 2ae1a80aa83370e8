//! Text filters: case, trimming, slicing, indenting, joining, comparing and Base64.
//!
//! .NET counts string lengths in UTF-16 code units; these filters count Unicode characters, so
//! they differ from Octostache only for characters outside the Basic Multilingual Plane (emoji),
//! and never split a character.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::number::parse_int32;

/// .NET's `Convert.FromBase64String` accepts non-zero trailing bits but requires padding.
const DOTNET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Maps case one character at a time, keeping characters whose mapping is several characters
/// (`ß`), as .NET's simple case mapping does.
fn map_case(text: &str, upper: bool) -> String {
    text.chars()
        .map(|character| {
            let mut mapped: Vec<char> = if upper {
                character.to_uppercase().collect()
            } else {
                character.to_lowercase().collect()
            };
            match (mapped.pop(), mapped.is_empty()) {
                (Some(single), true) => single,
                _ => character,
            }
        })
        .collect()
}

pub(super) fn to_lower(argument: Option<&str>, options: &[String]) -> Option<String> {
    if !options.is_empty() {
        return None;
    }
    argument.map(|text| map_case(text, false))
}

pub(super) fn to_upper(argument: Option<&str>, options: &[String]) -> Option<String> {
    if !options.is_empty() {
        return None;
    }
    argument.map(|text| map_case(text, true))
}

/// The encoding option of `ToBase64`/`FromBase64`: `utf8` (the default) or `unicode` (UTF-16LE).
fn is_unicode_encoding(options: &[String]) -> Option<bool> {
    match options
        .first()
        .map(|option| option.to_lowercase())
        .as_deref()
    {
        None | Some("utf8" | "utf-8") => Some(false),
        Some("unicode") => Some(true),
        Some(_) => None,
    }
}

pub(super) fn to_base64(argument: Option<&str>, options: &[String]) -> Option<String> {
    let argument = argument?;
    if options.len() > 1 {
        return None;
    }
    let bytes: Vec<u8> = if is_unicode_encoding(options)? {
        argument.encode_utf16().flat_map(u16::to_le_bytes).collect()
    } else {
        argument.as_bytes().to_vec()
    };
    Some(DOTNET_BASE64.encode(bytes))
}

/// Decodes Base64. Octostache throws on input that is not Base64 (failing the deployment);
/// Cuttle leaves the expression as written instead.
pub(super) fn from_base64(argument: Option<&str>, options: &[String]) -> Option<String> {
    let argument = argument?;
    if options.len() > 1 {
        return None;
    }
    let unicode = is_unicode_encoding(options)?;
    let compact: String = argument
        .chars()
        .filter(|character| !matches!(character, ' ' | '\t' | '\r' | '\n'))
        .collect();
    let bytes = DOTNET_BASE64.decode(compact).ok()?;
    if unicode {
        let units: Vec<u16> = bytes
            .chunks(2)
            .map(|pair| match pair {
                [low, high] => u16::from_le_bytes([*low, *high]),
                // An odd trailing byte decodes as a replacement character, as in .NET.
                _ => 0xFFFD,
            })
            .collect();
        Some(
            char::decode_utf16(units)
                .map(|unit| unit.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect(),
        )
    } else {
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn single_option(argument: Option<&str>, options: &[String]) -> Option<(String, String)> {
    match (argument, options) {
        (Some(argument), [option]) => Some((argument.to_owned(), option.clone())),
        _ => None,
    }
}

fn boolean(value: bool) -> String {
    if value { "true" } else { "false" }.to_owned()
}

pub(super) fn starts_with(argument: Option<&str>, options: &[String]) -> Option<String> {
    let (argument, prefix) = single_option(argument, options)?;
    Some(boolean(argument.starts_with(&prefix)))
}

pub(super) fn ends_with(argument: Option<&str>, options: &[String]) -> Option<String> {
    let (argument, suffix) = single_option(argument, options)?;
    Some(boolean(argument.ends_with(&suffix)))
}

pub(super) fn contains(argument: Option<&str>, options: &[String]) -> Option<String> {
    let (argument, needle) = single_option(argument, options)?;
    Some(boolean(argument.contains(&needle)))
}

/// `Substring length` or `Substring start length`, in characters; negative numbers, or a
/// start past the end, leave the expression as written.
pub(super) fn substring(argument: Option<&str>, options: &[String]) -> Option<String> {
    let argument = argument?;
    let numbers: Vec<usize> = options
        .iter()
        .map(|option| parse_int32(option).and_then(|number| usize::try_from(number).ok()))
        .collect::<Option<_>>()?;
    let (start, length) = match numbers.as_slice() {
        [length] => (0, *length),
        [start, length] => (*start, *length),
        _ => return None,
    };
    if start > argument.chars().count() {
        return None;
    }
    Some(argument.chars().skip(start).take(length).collect())
}

/// `Truncate length [suffix]`: cuts to `length` characters and appends the suffix (default
/// `...`) only when something was cut.
pub(super) fn truncate(argument: Option<&str>, options: &[String]) -> Option<String> {
    let argument = argument?;
    let length = usize::try_from(parse_int32(options.first()?)?).ok()?;
    let suffix = options.get(1).map_or("...", String::as_str);
    if length < argument.chars().count() {
        let kept: String = argument.chars().take(length).collect();
        Some(kept + suffix)
    } else {
        Some(argument.to_owned())
    }
}

/// `Trim`, `Trim start` or `Trim end`.
pub(super) fn trim(argument: Option<&str>, options: &[String]) -> Option<String> {
    let argument = argument?;
    match options
        .first()
        .map(|option| option.to_lowercase())
        .as_deref()
    {
        None => Some(argument.trim().to_owned()),
        Some("start") => Some(argument.trim_start().to_owned()),
        Some("end") => Some(argument.trim_end().to_owned()),
        Some(_) => None,
    }
}

/// Parses `N`, `/N` or `M/N` (each at most three digits and at most 255) into the initial and
/// subsequent indent widths.
fn indent_sizes(option: &str) -> Option<(usize, usize)> {
    let small_number = |text: &str| {
        if text.is_empty() || text.len() > 3 || !text.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        text.parse::<u8>().ok().map(usize::from)
    };
    match option.split_once('/') {
        None => small_number(option).map(|size| (size, size)),
        Some(("", subsequent)) => Some((0, small_number(subsequent)?)),
        Some((initial, subsequent)) => Some((small_number(initial)?, small_number(subsequent)?)),
    }
}

/// `Indent`: four spaces by default, `Indent N`, `Indent /N` (subsequent lines only),
/// `Indent M/N`, `Indent text`, or `Indent initial subsequent`.
pub(super) fn indent(
    argument: Option<&str>,
    options: &[String],
    max_output: usize,
) -> Option<String> {
    let argument = argument?;
    if argument.is_empty() {
        return Some(String::new());
    }
    let (initial, subsequent) = match options {
        [] => ("    ".to_owned(), "    ".to_owned()),
        [option] => match indent_sizes(option) {
            Some((initial, subsequent)) => (" ".repeat(initial), " ".repeat(subsequent)),
            None => (option.clone(), option.clone()),
        },
        [initial, subsequent] => (initial.clone(), subsequent.clone()),
        _ => return None,
    };
    let line_breaks = argument.matches('\n').count();
    let length = line_breaks
        .saturating_mul(subsequent.len())
        .saturating_add(initial.len())
        .saturating_add(argument.len());
    if length > max_output {
        return None;
    }
    Some(initial + &argument.replace('\n', &format!("\n{subsequent}")))
}

/// `Append options...`: works even with nothing on the left, but needs at least one option.
pub(super) fn append(argument: Option<&str>, options: &[String]) -> Option<String> {
    if options.is_empty() {
        return None;
    }
    Some(argument.unwrap_or_default().to_owned() + &options.concat())
}

/// `Prepend options...`: the mirror of `Append`.
pub(super) fn prepend(argument: Option<&str>, options: &[String]) -> Option<String> {
    if options.is_empty() {
        return None;
    }
    Some(options.concat() + argument.unwrap_or_default())
}
