//! Dates as Octopus writes them: ISO 8601 with milliseconds and a `+00:00` offset.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Formats a timestamp the Octopus way.
pub fn format(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, false)
}

/// serde helpers for `Option<DateTime<Utc>>` fields.
pub mod option {
    use super::*;

    /// Writes `null` or an Octopus date.
    pub fn serialize<S: Serializer>(
        value: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(at) => s.serialize_str(&format(at)),
            None => s.serialize_none(),
        }
    }

    /// Reads any RFC 3339 date; an unparseable one reads as absent, since clients echo server values.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let raw: Option<String> = Option::deserialize(d)?;
        Ok(raw
            .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
            .map(|at| at.with_timezone(&Utc)))
    }
}
