//! The built-in filters (`#{Name | Filter options}`).
//!
//! Each filter takes the value on its left (`None` when that is an unknown variable or nothing)
//! and the evaluated options, and returns `None` when it cannot apply, in which case Octostache
//! (and so Cuttle) leaves the whole expression as written. Names match case-insensitively. An
//! unknown filter name also returns `None`.

mod escape;
mod pattern;
mod text;

use chrono::{DateTime, Duration, FixedOffset};

use crate::date::{self, DateKind};
use crate::number::{self, NumberValue};

/// What a filter may read besides its input: the clock for `NowDate` and friends.
pub(crate) struct FilterContext {
    pub(crate) now: DateTime<FixedOffset>,
    /// Filters whose output can grow far beyond their input (`Replace`, `Indent`) give up
    /// rather than build a string longer than this.
    pub(crate) max_output: usize,
}

/// Applies the filter `name`; `None` means "leave the expression as written".
pub(crate) fn apply(
    name: &str,
    argument: Option<&str>,
    options: &[String],
    context: &FilterContext,
) -> Option<String> {
    match name.to_ascii_lowercase().as_str() {
        "tolower" => text::to_lower(argument, options),
        "toupper" => text::to_upper(argument, options),
        // Octostache's name is ToBase64; Base64 is a Cuttle alias, which Octopus would leave as
        // written.
        "tobase64" | "base64" => text::to_base64(argument, options),
        "frombase64" => text::from_base64(argument, options),
        "htmlescape" => escape::html(argument, options),
        "xmlescape" => escape::xml(argument, options),
        "jsonescape" => escape::json(argument, options),
        "yamlsinglequoteescape" => escape::yaml_single_quote(argument, options),
        "yamldoublequoteescape" => escape::yaml_double_quote(argument, options),
        "propertieskeyescape" => escape::properties_key(argument, options),
        "propertiesvalueescape" => escape::properties_value(argument, options),
        "uriescape" => escape::uri(argument, options),
        "uridataescape" => escape::uri_data(argument, options),
        // Octostache renders Markdown to HTML with Markdig. Cuttle has no Markdown renderer, so
        // these pass the text through unchanged rather than failing the deployment.
        "markdown" | "markdowntohtml" => {
            if options.is_empty() {
                argument.map(str::to_owned)
            } else {
                None
            }
        }
        "nowdate" => now_date(argument, options, date::now_local(context.now), context),
        "nowdateutc" => now_date(argument, options, date::now_utc(context.now), context),
        "addhours" => add_time(argument, options, 3_600.0, context),
        "adddays" => add_time(argument, options, 86_400.0, context),
        "format" => format(argument, options, context),
        "match" => pattern::matches(argument, options),
        "replace" => pattern::replace(argument, options, context.max_output),
        "startswith" => text::starts_with(argument, options),
        "endswith" => text::ends_with(argument, options),
        "contains" => text::contains(argument, options),
        "substring" => text::substring(argument, options),
        "truncate" => text::truncate(argument, options),
        "trim" => text::trim(argument, options),
        "indent" => text::indent(argument, options, context.max_output),
        "append" => text::append(argument, options),
        "prepend" => text::prepend(argument, options),
        _ => None,
    }
}

/// `NowDate`/`NowDateUtc`: only with nothing on the left, and at most a format.
fn now_date(
    argument: Option<&str>,
    options: &[String],
    now: date::DateValue,
    context: &FilterContext,
) -> Option<String> {
    if argument.is_some() || options.len() > 1 {
        return None;
    }
    let format = options.first().map_or("O", String::as_str);
    date::format_date(&now, format, *context.now.offset())
}

/// `AddHours`/`AddDays`: shifts a date and prints it round-trip (`O`). A `Z` date stays UTC, an
/// explicit offset is kept, and a date without a zone stays without one.
fn add_time(
    argument: Option<&str>,
    options: &[String],
    seconds_per_unit: f64,
    context: &FilterContext,
) -> Option<String> {
    let argument = argument?;
    let [amount] = options else {
        return None;
    };
    let amount = number::parse_double_float_style(amount)?;
    let nanoseconds = (amount * seconds_per_unit * 1e9).round();
    // i64 nanoseconds span ±292 years, far more than any date arithmetic in a deployment.
    if !nanoseconds.is_finite() || nanoseconds.abs() >= 9.2e18 {
        return None;
    }
    // The range was checked just above, so this conversion is exact enough and cannot wrap.
    let duration = Duration::nanoseconds(nanoseconds as i64);
    let local = *context.now.offset();
    let parsed = match date::parse_datetime_roundtrip(argument, local) {
        Some(value) if value.kind != DateKind::Local => value,
        _ => date::parse_datetimeoffset(argument, local)?,
    };
    date::format_date(&parsed.add(duration)?, "O", local)
}

/// `Format`: one option formats a decimal, or failing that a date; two options name the type
/// first (`Int32`, `Double`, `Decimal`, `Date`/`DateTime`, `DateTimeOffset`).
fn format(argument: Option<&str>, options: &[String], context: &FilterContext) -> Option<String> {
    let argument = argument?;
    let local = *context.now.offset();
    match options {
        [pattern] => {
            if let Some((digits, scale)) = number::parse_decimal(argument) {
                return number::format_number(&NumberValue::Decimal(digits, scale), pattern);
            }
            let value = date::parse_datetimeoffset(argument, local)?;
            date::format_date(&value, pattern, local)
        }
        [kind, pattern] => match kind.to_lowercase().as_str() {
            "int32" | "int" => {
                let value = number::parse_int32(argument)?;
                number::format_number(&NumberValue::Int32(value), pattern)
            }
            "double" => {
                let value = number::parse_double(argument)?;
                number::format_number(&NumberValue::Double(value), pattern)
            }
            "decimal" => {
                let (digits, scale) = number::parse_decimal(argument)?;
                number::format_number(&NumberValue::Decimal(digits, scale), pattern)
            }
            "date" | "datetime" => {
                let value = date::parse_datetime(argument, local)?;
                date::format_date(&value, pattern, local)
            }
            "datetimeoffset" => {
                let value = date::parse_datetimeoffset(argument, local)?;
                date::format_date(&value, pattern, local)
            }
            _ => None,
        },
        _ => None,
    }
}
