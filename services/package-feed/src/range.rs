//! HTTP `Range` requests on package downloads (RFC 9110 section 14): one byte range, or the
//! whole file.

use std::ops::Range;

/// What a `Range` header asks of a file of a known size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send the whole file (200). Multiple ranges and units other than bytes
    /// are answered this way too, which RFC 9110 allows.
    Full,
    /// One satisfiable range (206), end exclusive.
    Partial(Range<u64>),
    /// No byte of the range exists (416).
    Unsatisfiable,
}

/// Interprets a `Range` header value against a file of `size` bytes.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|value| value.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (start, end) = (start.trim(), end.trim());
    let parse = |text: &str| text.parse::<u64>().ok();
    match (start.is_empty(), end.is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match parse(end) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(suffix) if size > 0 => RangeRequest::Partial(size.saturating_sub(suffix)..size),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        // `bytes=N-`: from N to the end.
        (false, true) => match parse(start) {
            Some(first) if first < size => RangeRequest::Partial(first..size),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        // `bytes=N-M`: inclusive, clamped to the file.
        (false, false) => match (parse(start), parse(end)) {
            (Some(first), Some(last)) if first <= last => {
                if first < size {
                    RangeRequest::Partial(first..last.saturating_add(1).min(size))
                } else {
                    RangeRequest::Unsatisfiable
                }
            }
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges_are_clamped_and_suffixes_count_from_the_end() {
        assert_eq!(parse_range(None, 10), RangeRequest::Full);
        assert_eq!(
            parse_range(Some("bytes=2-4"), 10),
            RangeRequest::Partial(2..5)
        );
        assert_eq!(
            parse_range(Some("bytes=2-40"), 10),
            RangeRequest::Partial(2..10)
        );
        assert_eq!(
            parse_range(Some("bytes=7-"), 10),
            RangeRequest::Partial(7..10)
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            RangeRequest::Partial(7..10)
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            RangeRequest::Partial(0..10)
        );
    }

    #[test]
    fn impossible_ranges_are_unsatisfiable_and_odd_ones_get_the_whole_file() {
        assert_eq!(
            parse_range(Some("bytes=10-"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=10-12"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-0"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("bytes=x-2"), 10), RangeRequest::Full);
    }
}
