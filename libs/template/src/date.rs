//! .NET date parsing and formatting for the `Format`, `NowDate`, `NowDateUtc`, `AddHours` and
//! `AddDays` filters.
//!
//! Octostache parses dates with `DateTime.TryParse`/`DateTimeOffset.TryParse` in the current
//! culture and formats them with .NET format strings. This module follows the invariant culture
//! (English month and day names, `MM/dd/yyyy` short dates) and accepts the forms deployments
//! actually use: ISO 8601 (`2030-05-22T09:05:00.123+02:00`, also with a space or `/`),
//! `MM/dd/yyyy`, RFC 1123 (`Wed, 22 May 2030 09:05:00 GMT`), `22 May 2030` and `May 22, 2030`,
//! each with an optional time, AM/PM designator and zone. A date without a zone is in "machine
//! local time", whose offset is taken from the evaluation clock (see `VariableDictionary::set_now`).

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    Timelike, Utc,
};

/// What .NET knows about a date's zone (`DateTimeKind`, or a `DateTimeOffset`'s offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DateKind {
    Unspecified,
    Utc,
    /// Machine local time.
    Local,
    /// A `DateTimeOffset` with this offset.
    Offset(FixedOffset),
}

/// A date as .NET holds it: the wall-clock time plus its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DateValue {
    pub(crate) clock: NaiveDateTime,
    pub(crate) kind: DateKind,
}

/// A zone written in a date string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Zone {
    Utc,
    Offset(FixedOffset),
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// A small cursor over the characters of a date string.
struct Scanner<'a> {
    rest: &'a str,
}

impl<'a> Scanner<'a> {
    fn whitespace(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn literal(&mut self, expected: char) -> bool {
        match self.rest.strip_prefix(expected) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn any_of(&mut self, expected: &[char]) -> Option<char> {
        let character = self.rest.chars().next()?;
        if expected.contains(&character) {
            self.rest = self.rest.get(character.len_utf8()..).unwrap_or_default();
            Some(character)
        } else {
            None
        }
    }

    /// Between `min` and `max` ASCII digits.
    fn number(&mut self, min: usize, max: usize) -> Option<u32> {
        let length = self
            .rest
            .bytes()
            .take(max)
            .take_while(u8::is_ascii_digit)
            .count();
        if length < min {
            return None;
        }
        let digits = self.rest.get(..length)?;
        self.rest = self.rest.get(length..)?;
        digits.parse().ok()
    }

    fn word(&mut self) -> &'a str {
        let length = self
            .rest
            .char_indices()
            .find(|(_, character)| !character.is_alphabetic())
            .map_or(self.rest.len(), |(index, _)| index);
        let word = self.rest.get(..length).unwrap_or_default();
        self.rest = self.rest.get(length..).unwrap_or_default();
        word
    }
}

/// A month from its English name or three-letter abbreviation.
fn month_number(word: &str) -> Option<u32> {
    let position = MONTHS.iter().position(|month| {
        month.eq_ignore_ascii_case(word)
            || (word.len() == 3
                && month
                    .get(..3)
                    .is_some_and(|abbreviation| abbreviation.eq_ignore_ascii_case(word)))
    })?;
    u32::try_from(position + 1).ok()
}

fn is_day_name(word: &str) -> bool {
    DAYS.iter().any(|day| {
        day.eq_ignore_ascii_case(word)
            || (word.len() == 3
                && day
                    .get(..3)
                    .is_some_and(|abbreviation| abbreviation.eq_ignore_ascii_case(word)))
    })
}

/// Parses `H:mm[:ss[.fffffff]] [AM|PM]`.
fn parse_time(scanner: &mut Scanner<'_>) -> Option<NaiveTime> {
    let mut hour = scanner.number(1, 2)?;
    if !scanner.literal(':') {
        return None;
    }
    let minute = scanner.number(2, 2)?;
    let mut second = 0;
    let mut nanosecond = 0;
    if scanner.literal(':') {
        second = scanner.number(2, 2)?;
        if scanner.literal('.') {
            let length = scanner.rest.bytes().take_while(u8::is_ascii_digit).count();
            let digits = scanner.rest.get(..length)?;
            scanner.rest = scanner.rest.get(length..)?;
            if digits.is_empty() {
                return None;
            }
            // .NET keeps 100-nanosecond ticks; further digits are dropped.
            let ticks: String = digits
                .chars()
                .chain(std::iter::repeat('0'))
                .take(9)
                .collect();
            nanosecond = ticks.parse::<u32>().ok()? / 100 * 100;
        }
    }
    let before_designator = scanner.rest;
    scanner.whitespace();
    match scanner.word().to_ascii_uppercase().as_str() {
        "AM" if (1..=12).contains(&hour) => hour %= 12,
        "PM" if (1..=12).contains(&hour) => hour = hour % 12 + 12,
        _ => scanner.rest = before_designator,
    }
    NaiveTime::from_hms_nano_opt(hour, minute, second, nanosecond)
}

/// Parses `Z`, `GMT`, `UTC`, `+hh:mm`, `+hhmm` or `+hh`, optionally after whitespace.
fn parse_zone(scanner: &mut Scanner<'_>) -> Option<Zone> {
    scanner.whitespace();
    if scanner.literal('Z') || scanner.literal('z') {
        return Some(Zone::Utc);
    }
    let before = scanner.rest;
    let word = scanner.word();
    if word.eq_ignore_ascii_case("GMT") || word.eq_ignore_ascii_case("UTC") {
        return Some(Zone::Utc);
    }
    scanner.rest = before;
    let sign = scanner.any_of(&['+', '-'])?;
    let hours = scanner.number(1, 2)?;
    let minutes = if scanner.literal(':') {
        scanner.number(2, 2)?
    } else {
        scanner.number(2, 2).unwrap_or(0)
    };
    if hours > 14 || minutes > 59 {
        return None;
    }
    let seconds = i32::try_from(hours * 3600 + minutes * 60).ok()?;
    let offset = FixedOffset::east_opt(if sign == '-' { -seconds } else { seconds })?;
    Some(Zone::Offset(offset))
}

/// Parses the date forms listed in the module documentation.
fn parse_parts(text: &str) -> Option<(NaiveDateTime, Option<Zone>)> {
    let mut scanner = Scanner { rest: text.trim() };
    let date = parse_date(&mut scanner)?;
    let mut time = NaiveTime::MIN;
    let before_time = scanner.rest;
    let separated = scanner.literal('T') || scanner.literal('t') || {
        let trimmed = scanner.rest.trim_start();
        let had_space = trimmed.len() != scanner.rest.len();
        scanner.rest = trimmed;
        had_space
    };
    if separated {
        match parse_time(&mut scanner) {
            Some(parsed) => time = parsed,
            None => scanner.rest = before_time,
        }
    }
    let zone = if scanner.rest.trim().is_empty() {
        None
    } else {
        Some(parse_zone(&mut scanner)?)
    };
    if !scanner.rest.trim().is_empty() {
        return None;
    }
    Some((date.and_time(time), zone))
}

fn parse_date(scanner: &mut Scanner<'_>) -> Option<NaiveDate> {
    let start = scanner.rest;
    // yyyy-MM-dd, yyyy/MM/dd, yyyy.MM.dd
    if let Some(year) = scanner.number(4, 4)
        && let Some(separator) = scanner.any_of(&['-', '/', '.'])
        && let Some(month) = scanner.number(1, 2)
        && scanner.literal(separator)
        && let Some(day) = scanner.number(1, 2)
    {
        return NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day);
    }
    scanner.rest = start;
    // MM/dd/yyyy (the invariant culture's short date)
    if let Some(month) = scanner.number(1, 2)
        && scanner.literal('/')
        && let Some(day) = scanner.number(1, 2)
        && scanner.literal('/')
        && let Some(year) = scanner.number(4, 4)
    {
        return NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day);
    }
    scanner.rest = start;
    // [ddd,] dd MMM yyyy  or  MMM dd[,] yyyy
    let mut word = scanner.word();
    if is_day_name(word) {
        scanner.literal(',');
        scanner.whitespace();
        word = scanner.word();
    }
    if let Some(month) = month_number(word) {
        scanner.whitespace();
        let day = scanner.number(1, 2)?;
        scanner.literal(',');
        scanner.whitespace();
        let year = scanner.number(4, 4)?;
        return NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day);
    }
    if !word.is_empty() {
        return None;
    }
    let day = scanner.number(1, 2)?;
    scanner.whitespace();
    let month = month_number(scanner.word())?;
    scanner.whitespace();
    let year = scanner.number(4, 4)?;
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)
}

fn shift_to(clock: NaiveDateTime, from: FixedOffset, to: FixedOffset) -> Option<NaiveDateTime> {
    let seconds = i64::from(to.local_minus_utc()) - i64::from(from.local_minus_utc());
    clock.checked_add_signed(Duration::seconds(seconds))
}

fn zone_offset(zone: Zone) -> FixedOffset {
    match zone {
        Zone::Utc => utc(),
        Zone::Offset(offset) => offset,
    }
}

fn utc() -> FixedOffset {
    Utc.fix()
}

/// `DateTime.TryParse`: a zoned string is converted to machine local time.
pub(crate) fn parse_datetime(text: &str, local: FixedOffset) -> Option<DateValue> {
    let (clock, zone) = parse_parts(text)?;
    Some(match zone {
        None => DateValue {
            clock,
            kind: DateKind::Unspecified,
        },
        Some(zone) => DateValue {
            clock: shift_to(clock, zone_offset(zone), local)?,
            kind: DateKind::Local,
        },
    })
}

/// `DateTime.TryParse` with `DateTimeStyles.RoundtripKind`: `Z` stays UTC.
pub(crate) fn parse_datetime_roundtrip(text: &str, local: FixedOffset) -> Option<DateValue> {
    let (clock, zone) = parse_parts(text)?;
    Some(match zone {
        None => DateValue {
            clock,
            kind: DateKind::Unspecified,
        },
        Some(Zone::Utc) => DateValue {
            clock,
            kind: DateKind::Utc,
        },
        Some(zone) => DateValue {
            clock: shift_to(clock, zone_offset(zone), local)?,
            kind: DateKind::Local,
        },
    })
}

/// `DateTimeOffset.TryParse`: a string without a zone is taken as machine local time.
pub(crate) fn parse_datetimeoffset(text: &str, local: FixedOffset) -> Option<DateValue> {
    let (clock, zone) = parse_parts(text)?;
    let offset = zone.map_or(local, zone_offset);
    Some(DateValue {
        clock,
        kind: DateKind::Offset(offset),
    })
}

impl DateValue {
    /// The offset that `z` and `K` print; for a plain `DateTime` that is the machine's.
    fn offset(&self, local: FixedOffset) -> FixedOffset {
        match self.kind {
            DateKind::Offset(offset) => offset,
            DateKind::Utc => utc(),
            DateKind::Unspecified | DateKind::Local => local,
        }
    }

    /// The same instant in UTC, for the `r`, `u` and `U` formats.
    fn to_utc(self, local: FixedOffset) -> Option<DateValue> {
        let clock = match self.kind {
            DateKind::Offset(offset) => shift_to(self.clock, offset, utc())?,
            DateKind::Local | DateKind::Unspecified => shift_to(self.clock, local, utc())?,
            DateKind::Utc => self.clock,
        };
        Some(DateValue {
            clock,
            kind: DateKind::Utc,
        })
    }

    /// Adds a duration, returning `None` outside the representable range.
    pub(crate) fn add(self, duration: Duration) -> Option<DateValue> {
        Some(DateValue {
            clock: self.clock.checked_add_signed(duration)?,
            kind: self.kind,
        })
    }
}

/// The clock reading used by `NowDate` (kind unspecified, as .NET's `DateTime.Now` after
/// `SpecifyKind`) and `NowDateUtc`.
pub(crate) fn now_local(now: DateTime<FixedOffset>) -> DateValue {
    DateValue {
        clock: now.naive_local(),
        kind: DateKind::Unspecified,
    }
}

/// `DateTime.UtcNow`.
pub(crate) fn now_utc(now: DateTime<FixedOffset>) -> DateValue {
    DateValue {
        clock: now.naive_utc(),
        kind: DateKind::Utc,
    }
}

fn write_offset(text: &mut String, offset: FixedOffset, width: usize) {
    let seconds = offset.local_minus_utc();
    text.push(if seconds < 0 { '-' } else { '+' });
    let seconds = seconds.unsigned_abs();
    let hours = seconds / 3600;
    let minutes = seconds % 3600 / 60;
    match width {
        1 => text.push_str(&hours.to_string()),
        2 => text.push_str(&format!("{hours:02}")),
        _ => text.push_str(&format!("{hours:02}:{minutes:02}")),
    }
}

/// Formats a date like .NET's `ToString(format)`, or `None` where .NET throws.
pub(crate) fn format_date(value: &DateValue, format: &str, local: FixedOffset) -> Option<String> {
    let format = if format.is_empty() { "G" } else { format };
    let mut characters = format.chars();
    if let (Some(letter), None) = (characters.next(), characters.next()) {
        return format_standard(value, letter, local);
    }
    format_custom(value, format, local)
}

fn format_standard(value: &DateValue, letter: char, local: FixedOffset) -> Option<String> {
    let pattern = match letter {
        'd' => "MM/dd/yyyy",
        'D' => "dddd, dd MMMM yyyy",
        'f' => "dddd, dd MMMM yyyy HH:mm",
        'F' => "dddd, dd MMMM yyyy HH:mm:ss",
        'g' => "MM/dd/yyyy HH:mm",
        'G' => "MM/dd/yyyy HH:mm:ss",
        'm' | 'M' => "MMMM dd",
        'o' | 'O' => {
            let mut text = format_custom(value, "yyyy'-'MM'-'dd'T'HH':'mm':'ss'.'fffffff", local)?;
            match value.kind {
                DateKind::Unspecified => {}
                DateKind::Utc => text.push('Z'),
                DateKind::Local | DateKind::Offset(_) => {
                    write_offset(&mut text, value.offset(local), 3)
                }
            }
            return Some(text);
        }
        'r' | 'R' => {
            let converted = match value.kind {
                DateKind::Offset(_) => value.to_utc(local)?,
                _ => *value,
            };
            return format_custom(&converted, "ddd, dd MMM yyyy HH':'mm':'ss 'GMT'", local);
        }
        's' => "yyyy'-'MM'-'dd'T'HH':'mm':'ss",
        't' => "HH:mm",
        'T' => "HH:mm:ss",
        'u' => {
            let converted = match value.kind {
                DateKind::Offset(_) => value.to_utc(local)?,
                _ => *value,
            };
            return format_custom(&converted, "yyyy'-'MM'-'dd HH':'mm':'ss'Z'", local);
        }
        'U' => {
            let converted = value.to_utc(local)?;
            return format_custom(&converted, "dddd, dd MMMM yyyy HH:mm:ss", local);
        }
        'y' | 'Y' => "yyyy MMMM",
        _ => return None,
    };
    format_custom(value, pattern, local)
}

fn day_name(clock: NaiveDateTime) -> Option<&'static str> {
    DAYS.get(clock.weekday().num_days_from_monday() as usize)
        .copied()
}

fn format_custom(value: &DateValue, format: &str, local: FixedOffset) -> Option<String> {
    let clock = value.clock;
    let characters: Vec<char> = format.chars().collect();
    let mut text = String::new();
    let mut index = 0;
    while let Some(&character) = characters.get(index) {
        let run = characters
            .get(index..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&next| next == character)
            .count();
        let mut consumed = run;
        match character {
            'd' => match run {
                1 => text.push_str(&clock.day().to_string()),
                2 => text.push_str(&format!("{:02}", clock.day())),
                3 => text.push_str(day_name(clock)?.get(..3)?),
                _ => text.push_str(day_name(clock)?),
            },
            'f' | 'F' => {
                if run > 7 {
                    return None;
                }
                let ticks = format!("{:07}", clock.nanosecond() % 1_000_000_000 / 100);
                let mut digits = ticks.get(..run)?.to_owned();
                if character == 'F' {
                    while digits.ends_with('0') {
                        digits.pop();
                    }
                    if digits.is_empty() && text.ends_with('.') {
                        text.pop();
                    }
                }
                text.push_str(&digits);
            }
            'g' => text.push_str("A.D."),
            'h' => {
                let hour = match clock.hour() % 12 {
                    0 => 12,
                    hour => hour,
                };
                text.push_str(&if run == 1 {
                    hour.to_string()
                } else {
                    format!("{hour:02}")
                });
                consumed = run.min(2);
            }
            'H' => {
                text.push_str(&if run == 1 {
                    clock.hour().to_string()
                } else {
                    format!("{:02}", clock.hour())
                });
                consumed = run.min(2);
            }
            'K' => {
                match value.kind {
                    DateKind::Unspecified => {}
                    DateKind::Utc => text.push('Z'),
                    DateKind::Local | DateKind::Offset(_) => {
                        write_offset(&mut text, value.offset(local), 3)
                    }
                }
                consumed = 1;
            }
            'm' => {
                text.push_str(&if run == 1 {
                    clock.minute().to_string()
                } else {
                    format!("{:02}", clock.minute())
                });
                consumed = run.min(2);
            }
            'M' => match run {
                1 => text.push_str(&clock.month().to_string()),
                2 => text.push_str(&format!("{:02}", clock.month())),
                3 => text.push_str(MONTHS.get(clock.month0() as usize)?.get(..3)?),
                _ => text.push_str(MONTHS.get(clock.month0() as usize)?),
            },
            's' => {
                text.push_str(&if run == 1 {
                    clock.second().to_string()
                } else {
                    format!("{:02}", clock.second())
                });
                consumed = run.min(2);
            }
            't' => {
                let designator = if clock.hour() < 12 { "AM" } else { "PM" };
                text.push_str(if run == 1 {
                    designator.get(..1)?
                } else {
                    designator
                });
            }
            'y' => {
                let year = clock.year();
                match run {
                    1 => text.push_str(&(year % 100).to_string()),
                    2 => text.push_str(&format!("{:02}", year % 100)),
                    width => text.push_str(&format!("{year:0width$}")),
                }
            }
            'z' => write_offset(&mut text, value.offset(local), run.min(3)),
            ':' => {
                text.push(':');
                consumed = 1;
            }
            '/' => {
                text.push('/');
                consumed = 1;
            }
            '\'' | '"' => {
                let closing = characters
                    .get(index + 1..)
                    .unwrap_or_default()
                    .iter()
                    .position(|&next| next == character)?;
                text.extend(characters.get(index + 1..index + 1 + closing)?);
                consumed = closing + 2;
            }
            '%' => {
                // `%d` is the custom `d`, not the standard short-date format.
                let next = *characters.get(index + 1)?;
                if next == '%' {
                    return None;
                }
                text.push_str(&format_custom(value, &next.to_string(), local)?);
                consumed = 2;
            }
            '\\' => {
                text.push(*characters.get(index + 1)?);
                consumed = 2;
            }
            other => {
                text.push(other);
                consumed = 1;
            }
        }
        index += consumed;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc_plus(hours: i32) -> FixedOffset {
        FixedOffset::east_opt(hours * 3600).unwrap_or_else(utc)
    }

    fn format(text: &str, pattern: &str) -> Option<String> {
        let date = parse_datetimeoffset(text, utc())?;
        format_date(&date, pattern, utc())
    }

    #[test]
    fn common_date_forms_parse() {
        for text in [
            "2030/05/22 09:05:00",
            "2030-05-22T09:05:00",
            "2030-05-22 09:05",
            "05/22/2030 9:05 AM",
            "Wed, 22 May 2030 09:05:00 GMT",
            "22 May 2030 09:05:00",
            "May 22, 2030 09:05:00",
        ] {
            assert_eq!(
                format(text, "yyyy-MM-dd HH:mm").as_deref(),
                Some("2030-05-22 09:05"),
                "{text}"
            );
        }
        assert!(parse_parts("hello World").is_none());
        assert!(parse_parts("2030-13-01").is_none());
    }

    #[test]
    fn custom_formats_follow_dotnet() {
        assert_eq!(
            format("2030/05/22 09:05:00", "HH dd-MMM-yyy").as_deref(),
            Some("09 22-May-2030")
        );
        assert_eq!(
            format("2030/05/22 21:05:07", "h:mm:ss tt").as_deref(),
            Some("9:05:07 PM")
        );
        assert_eq!(
            format("2030/05/22 09:05:00", "dddd d MMMM yy").as_deref(),
            Some("Wednesday 22 May 30")
        );
        assert_eq!(
            format("2030-05-22T09:05:00+02:00", "zzz|zz|z|K").as_deref(),
            Some("+02:00|+02|+2|+02:00")
        );
        assert_eq!(
            format("2030-05-22T09:05:00.5", "ss.FFF|ss.fff").as_deref(),
            Some("00.5|00.500")
        );
        assert_eq!(
            format("2030-05-22T09:05:00", "ss.FFF").as_deref(),
            Some("00")
        );
        assert_eq!(
            format("2030-05-22T09:05:00", "'Year' yyyy \\y").as_deref(),
            Some("Year 2030 y")
        );
    }

    #[test]
    fn standard_formats_follow_the_invariant_culture() {
        assert_eq!(
            format("2030-05-22T09:05:00+02:00", "O").as_deref(),
            Some("2030-05-22T09:05:00.0000000+02:00")
        );
        assert_eq!(
            format("2030-05-22T09:05:00+02:00", "u").as_deref(),
            Some("2030-05-22 07:05:00Z")
        );
        assert_eq!(
            format("2030-05-22T09:05:00Z", "r").as_deref(),
            Some("Wed, 22 May 2030 09:05:00 GMT")
        );
        assert_eq!(
            format("2030-05-22T09:05:00", "d").as_deref(),
            Some("05/22/2030")
        );
        assert_eq!(format("2030-05-22T09:05:00", "Q"), None);
    }

    #[test]
    fn zoned_datetimes_convert_to_machine_local_time() {
        let date = parse_datetime("2030-05-22T09:05:00Z", utc_plus(10));
        assert_eq!(
            date.map(|date| (date.clock.hour(), date.kind)),
            Some((19, DateKind::Local))
        );
        let kept = parse_datetime_roundtrip("2030-05-22T09:05:00Z", utc_plus(10));
        assert_eq!(kept.map(|date| date.kind), Some(DateKind::Utc));
    }
}
