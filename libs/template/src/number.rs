//! .NET number parsing and formatting, as Octostache's `Format` filter and `calc` use them.
//!
//! Octostache formats with .NET's `decimal.ToString(format)` and friends. This module implements
//! the standard format strings (`C`, `D`, `E`, `F`, `G`, `N`, `P`, `R`, `X`, each with an optional
//! precision) and the custom ones (`0`, `#`, `.`, `,`, `%`, `‰`, quoted literals, `\` escapes and
//! `;` sections) for the invariant culture: `.` decimal point, `,` group separator, `¤` currency
//! symbol. Exponent placeholders in custom formats (`0.00E+0`) are not supported; such a format
//! yields nothing, so the filter is left as written.

/// A non-negative decimal number as significant digits: `0.d1d2d3… × 10^point`, plus its sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Digits {
    negative: bool,
    /// Significant digits (0-9), without leading or trailing zeros; empty for zero.
    digits: Vec<u8>,
    point: i64,
}

/// Which .NET type a number was parsed as; it decides which formats apply and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NumberKind {
    /// `decimal`, with the number of fraction digits it was written with.
    Decimal {
        scale: usize,
    },
    Double,
    Int32,
}

/// The largest precision accepted in a standard format string such as `F2`.
const MAX_PRECISION: usize = 999;

impl Digits {
    fn new(negative: bool, integer: &str, fraction: &str) -> Digits {
        let mut digits: Vec<u8> = integer
            .bytes()
            .chain(fraction.bytes())
            .map(|byte| byte.wrapping_sub(b'0'))
            .collect();
        let mut point = i64::try_from(integer.len()).unwrap_or(i64::MAX);
        let leading_zeros = digits.iter().take_while(|&&digit| digit == 0).count();
        digits.drain(..leading_zeros);
        point -= i64::try_from(leading_zeros).unwrap_or(0);
        let mut number = Digits {
            negative,
            digits,
            point,
        };
        number.normalize();
        number
    }

    fn normalize(&mut self) {
        while self.digits.last() == Some(&0) {
            self.digits.pop();
        }
        if self.digits.is_empty() {
            self.point = 0;
        }
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Multiplies by `10^power`.
    fn shift(&mut self, power: i64) {
        if !self.is_zero() {
            self.point = self.point.saturating_add(power);
        }
    }

    /// Rounds half away from zero, keeping `keep` significant digits counted from the first.
    fn round_at(&mut self, keep: i64) {
        let length = i64::try_from(self.digits.len()).unwrap_or(i64::MAX);
        if keep >= length {
            return;
        }
        if keep < 0 {
            self.digits.clear();
            self.normalize();
            return;
        }
        let keep = usize::try_from(keep).unwrap_or(0);
        let round_up = self.digits.get(keep).is_some_and(|&digit| digit >= 5);
        self.digits.truncate(keep);
        if round_up {
            let mut carry = true;
            for digit in self.digits.iter_mut().rev() {
                if *digit == 9 {
                    *digit = 0;
                } else {
                    *digit += 1;
                    carry = false;
                    break;
                }
            }
            if carry {
                self.digits.insert(0, 1);
                self.point += 1;
            }
        }
        self.normalize();
    }

    fn round_to_fraction(&mut self, decimals: usize) {
        let decimals = i64::try_from(decimals).unwrap_or(i64::MAX);
        self.round_at(self.point.saturating_add(decimals));
    }

    fn round_to_significant(&mut self, significant: usize) {
        self.round_at(i64::try_from(significant).unwrap_or(i64::MAX));
    }

    /// The digits before the decimal point, empty when the integer part is zero.
    fn integer_digits(&self) -> String {
        let mut text = String::new();
        let mut index: i64 = 0;
        while index < self.point {
            let digit = usize::try_from(index)
                .ok()
                .and_then(|index| self.digits.get(index))
                .copied()
                .unwrap_or(0);
            text.push(char::from(b'0' + digit));
            index += 1;
        }
        text
    }

    /// The first `count` digits after the decimal point, padded with zeros.
    fn fraction_digits(&self, count: usize) -> String {
        (0..count)
            .map(|offset| {
                let index = self
                    .point
                    .saturating_add(i64::try_from(offset).unwrap_or(i64::MAX));
                let digit = usize::try_from(index)
                    .ok()
                    .and_then(|index| self.digits.get(index))
                    .copied()
                    .unwrap_or(0);
                char::from(b'0' + digit)
            })
            .collect()
    }

    fn from_double(value: f64, significant: Option<usize>) -> Digits {
        // Rust prints the shortest digits that round-trip, or exactly `significant` of them.
        let text = match significant {
            Some(count) => format!("{:.*e}", count.saturating_sub(1), value.abs()),
            None => format!("{:e}", value.abs()),
        };
        let (mantissa, exponent) = text.split_once('e').unwrap_or((text.as_str(), "0"));
        let exponent: i64 = exponent.parse().unwrap_or(0);
        let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut number = Digits::new(value.is_sign_negative(), integer, fraction);
        number.shift(exponent);
        number
    }
}

/// Inserts `,` between groups of three digits.
fn group_thousands(integer: &str) -> String {
    let length = integer.len();
    let mut grouped = String::with_capacity(length + length / 3);
    for (index, character) in integer.chars().enumerate() {
        if index > 0 && (length - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(character);
    }
    grouped
}

fn is_dotnet_whitespace(character: char) -> bool {
    matches!(character, '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ')
}

/// Splits an optional leading or trailing sign off a trimmed number.
fn split_sign(text: &str) -> (bool, &str) {
    if let Some(rest) = text.strip_prefix('-') {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix('+') {
        (false, rest)
    } else if let Some(rest) = text.strip_suffix('-') {
        (true, rest)
    } else if let Some(rest) = text.strip_suffix('+') {
        (false, rest)
    } else {
        (false, text)
    }
}

/// Parses like `decimal.TryParse` (NumberStyles.Number, invariant culture): surrounding
/// whitespace, a leading or trailing sign, `,` group separators, a `.` decimal point, no exponent.
pub(crate) fn parse_decimal(text: &str) -> Option<(Digits, usize)> {
    let (negative, body) = split_sign(text.trim_matches(is_dotnet_whitespace));
    let (integer, fraction) = body.split_once('.').unwrap_or((body, ""));
    if !integer.chars().next().is_none_or(|c| c.is_ascii_digit())
        || !integer.chars().all(|c| c.is_ascii_digit() || c == ',')
        || !fraction.chars().all(|c| c.is_ascii_digit())
        || (integer.is_empty() && fraction.is_empty())
    {
        return None;
    }
    let integer: String = integer.chars().filter(|&c| c != ',').collect();
    let number = Digits::new(negative, &integer, fraction);
    // System.Decimal holds at most 29 significant integer digits.
    if number.point > 29 {
        return None;
    }
    Some((number, fraction.len()))
}

/// Parses like `double.TryParse` (NumberStyles.Float | AllowThousands, invariant culture).
pub(crate) fn parse_double(text: &str) -> Option<f64> {
    parse_double_with(text, true)
}

/// Parses like `double.TryParse` with NumberStyles.Float (no group separators).
pub(crate) fn parse_double_float_style(text: &str) -> Option<f64> {
    parse_double_with(text, false)
}

fn parse_double_with(text: &str, allow_thousands: bool) -> Option<f64> {
    let trimmed = text.trim_matches(is_dotnet_whitespace);
    let (negative, body) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    let magnitude = match body {
        "Infinity" | "∞" => f64::INFINITY,
        "NaN" => f64::NAN,
        _ => {
            let (mantissa, exponent) = match body.find(['e', 'E']) {
                Some(at) => (body.get(..at)?, Some(body.get(at + 1..)?)),
                None => (body, None),
            };
            let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
            let integer_ok = integer.chars().next().is_none_or(|c| c.is_ascii_digit())
                && integer
                    .chars()
                    .all(|c| c.is_ascii_digit() || (allow_thousands && c == ','));
            let exponent_ok = exponent.is_none_or(|exponent| {
                let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
                !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
            });
            if !integer_ok
                || !fraction.chars().all(|c| c.is_ascii_digit())
                || (integer.is_empty() && fraction.is_empty())
                || !exponent_ok
            {
                return None;
            }
            let cleaned: String = body.chars().filter(|&c| c != ',').collect();
            cleaned.parse::<f64>().ok()?
        }
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// Parses like `int.TryParse` (NumberStyles.Integer).
pub(crate) fn parse_int32(text: &str) -> Option<i32> {
    let trimmed = text.trim_matches(is_dotnet_whitespace);
    let (negative, digits) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let magnitude: i64 = digits.parse().ok()?;
    i32::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// Formats a double as .NET Core's `double.ToString()` does: the shortest digits that
/// round-trip, in scientific notation (`1E+15`, `1E-05`) when very large or small.
pub(crate) fn format_double_general(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "∞" } else { "-∞" }.to_owned();
    }
    let number = Digits::from_double(value, None);
    general(&number, 15, 'E')
}

/// `.NET "G"` layout of already-rounded digits: fixed unless the exponent is at least
/// `threshold` or below -5 (counting the leading digit), trailing zeros dropped.
fn general(number: &Digits, threshold: usize, exponent_char: char) -> String {
    let mut text = String::new();
    if number.negative && !number.is_zero() {
        text.push('-');
    }
    if number.is_zero() {
        text.push('0');
        return text;
    }
    let threshold = i64::try_from(threshold).unwrap_or(i64::MAX);
    if number.point > threshold || number.point < -3 {
        let mut digits = number.digits.iter().map(|digit| char::from(b'0' + digit));
        text.extend(digits.next());
        let rest: String = digits.collect();
        if !rest.is_empty() {
            text.push('.');
            text.push_str(&rest);
        }
        let exponent = number.point - 1;
        text.push(exponent_char);
        text.push(if exponent < 0 { '-' } else { '+' });
        text.push_str(&format!("{:02}", exponent.unsigned_abs()));
        return text;
    }
    let integer = number.integer_digits();
    text.push_str(if integer.is_empty() { "0" } else { &integer });
    let fraction_length = i64::try_from(number.digits.len()).unwrap_or(0) - number.point;
    if fraction_length > 0 {
        text.push('.');
        text.push_str(&number.fraction_digits(usize::try_from(fraction_length).unwrap_or(0)));
    }
    text
}

/// Formats a number like .NET's `ToString(format)` for the given type, or `None` where .NET
/// throws a `FormatException` (which Octostache turns into "leave the filter as written").
pub(crate) fn format_number(value: &NumberValue, format: &str) -> Option<String> {
    let format = if format.is_empty() { "G" } else { format };
    let mut characters = format.chars();
    let letter = characters.next()?;
    let rest = characters.as_str();
    if letter.is_ascii_alphabetic() && rest.len() <= 9 && rest.chars().all(|c| c.is_ascii_digit()) {
        let precision = if rest.is_empty() {
            None
        } else {
            Some(rest.parse::<usize>().ok()?)
        };
        if precision.is_some_and(|precision| precision > MAX_PRECISION) {
            return None;
        }
        return format_standard(value, letter, precision);
    }
    format_custom(value, format)
}

/// A parsed number of one of the three .NET types `Format` works with.
#[derive(Clone, Debug)]
pub(crate) enum NumberValue {
    Decimal(Digits, usize),
    Double(f64),
    Int32(i32),
}

impl NumberValue {
    fn kind(&self) -> NumberKind {
        match self {
            NumberValue::Decimal(_, scale) => NumberKind::Decimal { scale: *scale },
            NumberValue::Double(_) => NumberKind::Double,
            NumberValue::Int32(_) => NumberKind::Int32,
        }
    }

    /// Exact digits for decimals and integers; for doubles, rounded to `significant` digits
    /// or the shortest round-trip digits.
    fn digits(&self, significant: Option<usize>) -> Digits {
        match self {
            NumberValue::Decimal(digits, _) => digits.clone(),
            NumberValue::Double(value) => Digits::from_double(*value, significant),
            NumberValue::Int32(value) => {
                let text = value.unsigned_abs().to_string();
                Digits::new(*value < 0, &text, "")
            }
        }
    }

    /// The digits rounded to `decimals` places; doubles are rounded exactly from their binary
    /// value, as .NET Core does.
    fn rounded_to_fraction(&self, decimals: usize) -> Digits {
        match self {
            NumberValue::Double(value) => {
                let text = format!("{:.*}", decimals, value.abs());
                let (integer, fraction) = text.split_once('.').unwrap_or((text.as_str(), ""));
                Digits::new(value.is_sign_negative(), integer, fraction)
            }
            _ => {
                let mut digits = self.digits(None);
                digits.round_to_fraction(decimals);
                digits
            }
        }
    }
}

fn sign_shown(value: &NumberValue, rounded: &Digits) -> bool {
    // Integers and decimals that round to zero lose their sign; doubles keep it ("-0.00").
    rounded.negative
        && (matches!(value, NumberValue::Double(_)) || !rounded.is_zero())
        && !matches!(value, NumberValue::Double(number) if number.is_nan())
}

fn fixed_body(rounded: &Digits, decimals: usize, grouped: bool) -> String {
    let integer = rounded.integer_digits();
    let integer = if integer.is_empty() {
        "0".to_owned()
    } else {
        integer
    };
    let mut body = if grouped {
        group_thousands(&integer)
    } else {
        integer
    };
    if decimals > 0 {
        body.push('.');
        body.push_str(&rounded.fraction_digits(decimals));
    }
    body
}

fn format_standard(value: &NumberValue, letter: char, precision: Option<usize>) -> Option<String> {
    if let NumberValue::Double(number) = value
        && !number.is_finite()
    {
        return Some(format_double_general(*number));
    }
    let kind = value.kind();
    match letter.to_ascii_uppercase() {
        'C' => {
            let decimals = precision.unwrap_or(2);
            let rounded = value.rounded_to_fraction(decimals);
            let body = fixed_body(&rounded, decimals, true);
            // Invariant culture: currency symbol ¤, negative pattern "($n)".
            Some(if sign_shown(value, &rounded) {
                format!("(¤{body})")
            } else {
                format!("¤{body}")
            })
        }
        'D' => {
            let NumberValue::Int32(number) = value else {
                return None;
            };
            let digits = number.unsigned_abs().to_string();
            let width = precision.unwrap_or(0);
            let sign = if *number < 0 { "-" } else { "" };
            Some(format!("{sign}{digits:0>width$}"))
        }
        'E' => {
            let decimals = precision.unwrap_or(6);
            let rounded = match value {
                NumberValue::Double(_) => value.digits(Some(decimals + 1)),
                _ => {
                    let mut digits = value.digits(None);
                    digits.round_to_significant(decimals + 1);
                    digits
                }
            };
            let mut text = String::new();
            if sign_shown(value, &rounded) {
                text.push('-');
            }
            let mantissa: Vec<char> = (0..=decimals)
                .map(|index| {
                    let digit = rounded.digits.get(index).copied().unwrap_or(0);
                    char::from(b'0' + digit)
                })
                .collect();
            text.extend(mantissa.first());
            if decimals > 0 {
                text.push('.');
                text.extend(mantissa.iter().skip(1));
            }
            let exponent = if rounded.is_zero() {
                0
            } else {
                rounded.point - 1
            };
            text.push(if letter.is_ascii_uppercase() {
                'E'
            } else {
                'e'
            });
            text.push(if exponent < 0 { '-' } else { '+' });
            text.push_str(&format!("{:03}", exponent.unsigned_abs()));
            Some(text)
        }
        'F' | 'N' => {
            let decimals = precision.unwrap_or(2);
            let rounded = value.rounded_to_fraction(decimals);
            let body = fixed_body(&rounded, decimals, letter.eq_ignore_ascii_case(&'N'));
            let sign = if sign_shown(value, &rounded) { "-" } else { "" };
            Some(format!("{sign}{body}"))
        }
        'G' => {
            let exponent_char = if letter.is_ascii_uppercase() {
                'E'
            } else {
                'e'
            };
            match (kind, precision.filter(|&precision| precision > 0)) {
                (NumberKind::Decimal { scale }, None) => {
                    let digits = value.digits(None);
                    let body = fixed_body(&digits, scale, false);
                    let sign = if sign_shown(value, &digits) { "-" } else { "" };
                    Some(format!("{sign}{body}"))
                }
                (NumberKind::Double, None) => match value {
                    NumberValue::Double(number) => Some(format_double_general(*number)),
                    _ => None,
                },
                (NumberKind::Int32, None) => match value {
                    NumberValue::Int32(number) => Some(number.to_string()),
                    _ => None,
                },
                (_, Some(significant)) => {
                    let rounded = match value {
                        NumberValue::Double(_) => value.digits(Some(significant)),
                        _ => {
                            let mut digits = value.digits(None);
                            digits.round_to_significant(significant);
                            digits
                        }
                    };
                    Some(general(&rounded, significant, exponent_char))
                }
            }
        }
        'P' => {
            let decimals = precision.unwrap_or(2);
            let rounded = match value {
                NumberValue::Double(number) => {
                    let text = format!("{:.*}", decimals + 2, number.abs());
                    let (integer, fraction) = text.split_once('.').unwrap_or((text.as_str(), ""));
                    let mut digits = Digits::new(number.is_sign_negative(), integer, fraction);
                    digits.shift(2);
                    digits
                }
                _ => {
                    let mut digits = value.digits(None);
                    digits.shift(2);
                    digits.round_to_fraction(decimals);
                    digits
                }
            };
            let body = fixed_body(&rounded, decimals, true);
            // Invariant culture: "n %" and "-n %".
            let sign = if sign_shown(value, &rounded) { "-" } else { "" };
            Some(format!("{sign}{body} %"))
        }
        'R' => match value {
            NumberValue::Double(number) => Some(format_double_general(*number)),
            _ => None,
        },
        'X' => {
            let NumberValue::Int32(number) = value else {
                return None;
            };
            // Negative integers print as their two's complement, as .NET does.
            let bits = u32::from_ne_bytes(number.to_ne_bytes());
            let width = precision.unwrap_or(0);
            Some(if letter.is_ascii_uppercase() {
                format!("{bits:0>width$X}")
            } else {
                format!("{bits:0>width$x}")
            })
        }
        _ => None,
    }
}

/// One element of a custom numeric format section.
#[derive(Clone, Debug, PartialEq)]
enum Item {
    Zero,
    Hash,
    Point,
    Comma,
    Percent,
    PerMille,
    Literal(String),
}

/// Splits a custom format into items and `;`-separated sections, honouring quotes and `\`.
fn custom_sections(format: &str) -> Option<Vec<Vec<Item>>> {
    let mut sections = vec![Vec::new()];
    let mut characters = format.chars().peekable();
    while let Some(character) = characters.next() {
        let item = match character {
            '0' => Item::Zero,
            '#' => Item::Hash,
            '.' => Item::Point,
            ',' => Item::Comma,
            '%' => Item::Percent,
            '‰' => Item::PerMille,
            ';' => {
                sections.push(Vec::new());
                continue;
            }
            '\\' => Item::Literal(characters.next().map(String::from).unwrap_or_default()),
            '\'' | '"' => {
                let mut literal = String::new();
                for inner in characters.by_ref() {
                    if inner == character {
                        break;
                    }
                    literal.push(inner);
                }
                Item::Literal(literal)
            }
            'E' | 'e' if matches!(characters.peek(), Some('0' | '+' | '-')) => return None,
            other => Item::Literal(other.to_string()),
        };
        if let Some(section) = sections.last_mut() {
            section.push(item);
        }
    }
    Some(sections)
}

fn format_custom(value: &NumberValue, format: &str) -> Option<String> {
    let sections = custom_sections(format)?;
    // .NET formats doubles with 15 significant digits in custom formats.
    let exact = value.digits(match value {
        NumberValue::Double(_) => Some(15),
        _ => None,
    });
    if let NumberValue::Double(number) = value
        && !number.is_finite()
    {
        return Some(format_double_general(*number));
    }
    let (section, automatic_minus) = match sections.as_slice() {
        [_, _, zero, ..] if exact.is_zero() && !zero.is_empty() => (zero, false),
        [first, negative, ..] if exact.negative && !exact.is_zero() => {
            if negative.is_empty() {
                (first, true)
            } else {
                (negative, false)
            }
        }
        [first, ..] => (first, true),
        [] => return None,
    };

    let point_index = section.iter().position(|item| *item == Item::Point);
    let integer_end = point_index.unwrap_or(section.len());
    let is_digit = |item: &Item| matches!(item, Item::Zero | Item::Hash);
    let integer_items = section.get(..integer_end).unwrap_or_default();
    let fraction_items = point_index
        .and_then(|index| section.get(index + 1..))
        .unwrap_or_default();

    // Commas directly left of the (explicit or implicit) point scale by 1000 each; a comma
    // between digit placeholders turns on grouping.
    let last_digit_before_point = integer_items.iter().rposition(is_digit);
    let mut scale_commas = 0i64;
    let mut grouping = false;
    if let Some(last_digit) = last_digit_before_point {
        let first_digit = integer_items
            .iter()
            .position(is_digit)
            .unwrap_or(last_digit);
        for (index, item) in integer_items.iter().enumerate() {
            if *item != Item::Comma {
                continue;
            }
            if index > first_digit && index < last_digit {
                grouping = true;
            } else if index > last_digit
                && integer_items
                    .get(last_digit + 1..index)
                    .is_some_and(|between| between.iter().all(|item| *item == Item::Comma))
            {
                scale_commas += 1;
            }
        }
    }
    let percents = section
        .iter()
        .filter(|item| **item == Item::Percent)
        .count();
    let per_milles = section
        .iter()
        .filter(|item| **item == Item::PerMille)
        .count();

    let mut number = exact;
    number.shift(i64::try_from(percents * 2 + per_milles * 3).unwrap_or(0) - scale_commas * 3);
    let fraction_placeholders = fraction_items.iter().filter(|item| is_digit(item)).count();
    let fraction_digit_items: Vec<&Item> = fraction_items
        .iter()
        .filter(|item| is_digit(item))
        .collect();
    let minimum_fraction = fraction_digit_items
        .iter()
        .rposition(|item| **item == Item::Zero)
        .map_or(0, |index| index + 1);
    number.round_to_fraction(fraction_placeholders);

    let integer_placeholders = integer_items.iter().filter(|item| is_digit(item)).count();
    let minimum_integer = integer_items
        .iter()
        .filter(|item| is_digit(item))
        .position(|item| *item == Item::Zero)
        .map_or(0, |index| integer_placeholders - index);
    let mut integer = number.integer_digits();
    if integer.len() < minimum_integer {
        integer = format!("{integer:0>minimum_integer$}");
    }
    let mut fraction = number.fraction_digits(fraction_placeholders);
    while fraction.len() > minimum_fraction && fraction.ends_with('0') {
        fraction.pop();
    }

    let mut text = String::new();
    if automatic_minus && number.negative && !number.is_zero() {
        text.push('-');
    }
    let integer_digits: Vec<char> = integer.chars().collect();
    let missing = integer_placeholders.saturating_sub(integer_digits.len());
    let extra = integer_digits.len().saturating_sub(integer_placeholders);
    let mut placeholder = 0usize;
    let emit_digit = |text: &mut String, index: usize| {
        if let Some(digit) = integer_digits.get(index) {
            text.push(*digit);
            let remaining = integer_digits.len() - index - 1;
            if grouping && remaining > 0 && remaining.is_multiple_of(3) {
                text.push(',');
            }
        }
    };
    for item in integer_items {
        match item {
            Item::Zero | Item::Hash => {
                if placeholder == 0 {
                    for index in 0..extra {
                        emit_digit(&mut text, index);
                    }
                }
                if placeholder >= missing {
                    emit_digit(&mut text, placeholder - missing + extra);
                }
                placeholder += 1;
            }
            Item::Comma | Item::Point => {}
            Item::Percent => text.push('%'),
            Item::PerMille => text.push('‰'),
            Item::Literal(literal) => text.push_str(literal),
        }
    }
    if integer_placeholders == 0 && last_digit_before_point.is_none() && fraction_placeholders > 0 {
        // "#.##" style formats with no integer placeholder still print a non-zero integer part.
        text.push_str(&number.integer_digits());
    }
    if point_index.is_some() && !fraction.is_empty() {
        text.push('.');
    }
    let fraction_digits: Vec<char> = fraction.chars().collect();
    let mut fraction_placeholder = 0usize;
    for item in fraction_items {
        match item {
            Item::Zero | Item::Hash => {
                if let Some(digit) = fraction_digits.get(fraction_placeholder) {
                    text.push(*digit);
                }
                fraction_placeholder += 1;
            }
            Item::Comma | Item::Point => {}
            Item::Percent => text.push('%'),
            Item::PerMille => text.push('‰'),
            Item::Literal(literal) => text.push_str(literal),
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decimal(text: &str, format: &str) -> Option<String> {
        let (digits, scale) = parse_decimal(text)?;
        format_number(&NumberValue::Decimal(digits, scale), format)
    }

    #[test]
    fn doubles_print_like_dotnet_core() {
        assert_eq!(format_double_general(5.0), "5");
        assert_eq!(format_double_general(3.5), "3.5");
        assert_eq!(format_double_general(7.0 * 0.2), "1.4000000000000001");
        assert_eq!(format_double_general(1e15), "1E+15");
        assert_eq!(
            format_double_general(123_456_789_012_345.0),
            "123456789012345"
        );
        assert_eq!(format_double_general(0.0001), "0.0001");
        assert_eq!(format_double_general(0.00001), "1E-05");
        assert_eq!(format_double_general(-2.0), "-2");
        assert_eq!(format_double_general(f64::INFINITY), "∞");
    }

    #[test]
    fn standard_formats_follow_the_invariant_culture() {
        assert_eq!(decimal("23.4", "C").as_deref(), Some("¤23.40"));
        assert_eq!(decimal("-23.4", "C").as_deref(), Some("(¤23.40)"));
        assert_eq!(decimal("1234.567", "N").as_deref(), Some("1,234.57"));
        assert_eq!(decimal("1234.567", "F1").as_deref(), Some("1234.6"));
        assert_eq!(decimal("0.125", "P1").as_deref(), Some("12.5 %"));
        assert_eq!(decimal("23.40", "G").as_deref(), Some("23.40"));
        assert_eq!(decimal("1234.5678", "E2").as_deref(), Some("1.23E+003"));
        assert_eq!(decimal("12345", "G3").as_deref(), Some("1.23E+04"));
        assert_eq!(decimal("12", "D"), None);
        assert_eq!(
            format_number(&NumberValue::Int32(42), "D5").as_deref(),
            Some("00042")
        );
        assert_eq!(
            format_number(&NumberValue::Int32(255), "x4").as_deref(),
            Some("00ff")
        );
        assert_eq!(
            format_number(&NumberValue::Int32(-1), "X").as_deref(),
            Some("FFFFFFFF")
        );
    }

    #[test]
    fn custom_formats_place_digits_and_literals() {
        assert_eq!(decimal("1234.5", "0.00").as_deref(), Some("1234.50"));
        assert_eq!(decimal("1234.5", "#,##0.0").as_deref(), Some("1,234.5"));
        assert_eq!(decimal("0.5", "#.##").as_deref(), Some(".5"));
        assert_eq!(
            decimal("5551234567", "(###) ###-####").as_deref(),
            Some("(555) 123-4567")
        );
        assert_eq!(decimal("1234567", "#,,").as_deref(), Some("1"));
        assert_eq!(decimal("0.256", "0.0%").as_deref(), Some("25.6%"));
        assert_eq!(decimal("-5", "0;(0)").as_deref(), Some("(5)"));
        assert_eq!(decimal("0", "0;(0);zero").as_deref(), Some("zero"));
        assert_eq!(decimal("2030", "yyyy").as_deref(), Some("yyyy"));
        assert_eq!(decimal("7", "'#'0").as_deref(), Some("#7"));
    }

    #[test]
    fn parsing_follows_dotnet_number_styles() {
        assert!(parse_decimal("1,234.5").is_some());
        assert!(parse_decimal(" -5 ").is_some());
        assert!(parse_decimal("1e5").is_none());
        assert!(parse_decimal("abc").is_none());
        assert_eq!(parse_double("1,000.5"), Some(1000.5));
        assert_eq!(parse_double("1e3"), Some(1000.0));
        assert_eq!(parse_double_float_style("1,000"), None);
        assert_eq!(parse_int32(" 42 "), Some(42));
        assert_eq!(parse_int32("2147483648"), None);
    }
}
