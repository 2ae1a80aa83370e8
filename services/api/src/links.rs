//! Hypermedia links, built the way Octopus spells them.

use cuttle_wire::Links;

/// Builds a `Links` map from pairs.
pub fn links<const N: usize>(pairs: [(&str, String); N]) -> Links {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The `/api/{space}` prefix of space-scoped links.
pub fn space_prefix(space_id: &str) -> String {
    format!("/api/{space_id}")
}
