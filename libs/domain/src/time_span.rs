//! .NET `TimeSpan` strings, as Octopus writes durations in its resources (machine policies).

/// Seconds in a `TimeSpan` string: `hh:mm:ss` or `d.hh:mm:ss`; `None` when it is neither.
pub fn parse_seconds(text: &str) -> Option<u64> {
    let text = text.trim();
    let (days, clock) = match text.split_once('.') {
        Some((days, clock)) if clock.contains(':') => (days.parse::<u64>().ok()?, clock),
        _ => (0, text),
    };
    let parts: Vec<u64> = clock
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let [hours, minutes, seconds] = parts.as_slice() else {
        return None;
    };
    if *hours > 23 || *minutes > 59 || *seconds > 59 {
        return None;
    }
    Some(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn time_spans_read_as_dotnet_writes_them() {
        assert_eq!(parse_seconds("01:00:00"), Some(3600));
        assert_eq!(parse_seconds("00:10:30"), Some(630));
        assert_eq!(parse_seconds("1.00:00:00"), Some(86_400));
        assert_eq!(parse_seconds("25:00:00"), None);
        assert_eq!(parse_seconds("ten minutes"), None);
        assert_eq!(parse_seconds(""), None);
    }
}
