//! The Octopus-shaped JSON: resources, collections, errors and command bodies.
//!
//! Output is PascalCase, as Octopus writes it. Input is accepted in any key case and unknown
//! fields are ignored (clients echo whole resources back, `Links` included): see [`normalize`].
//! Field lists follow `shared/specs/octopus-api.md`.

pub mod commands;
pub mod dates;
pub mod normalize;
pub mod packages;
pub mod resources;
pub mod security;
pub mod tasks;

pub use normalize::{NormalizeError, from_request_json};

use serde::Serialize;
use std::collections::BTreeMap;

/// Hypermedia links of a resource, `Links` on the wire.
pub type Links = BTreeMap<String, String>;

/// The paging envelope of every list endpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Collection<T> {
    /// Resource name without the "Resource" suffix.
    pub item_type: String,
    /// Items across all pages.
    pub total_results: u64,
    /// The page size asked for.
    pub items_per_page: u64,
    /// Page count.
    pub number_of_pages: u64,
    /// Zero-based index of the last page.
    pub last_page_number: u64,
    /// This page.
    pub items: Vec<T>,
    /// Always false: kept because the C# client reads it.
    pub is_stale: bool,
    /// Self, Template and Page.* links.
    pub links: Links,
}

impl<T> Collection<T> {
    /// Builds a page with Octopus's paging links. `path` is the list route without a query.
    pub fn page(
        item_type: &str,
        items: Vec<T>,
        total: u64,
        skip: u64,
        take: u64,
        path: &str,
        template: &str,
    ) -> Self {
        let page_size = take.max(1);
        let number_of_pages = total.div_ceil(page_size).max(1);
        let last_page_number = number_of_pages - 1;
        let mut links = Links::new();
        let at = |skip: u64| format!("{path}?skip={skip}&take={take}");
        links.insert("Self".into(), at(skip));
        links.insert("Template".into(), template.to_owned());
        links.insert("Page.All".into(), format!("{path}?skip=0&take=2147483647"));
        links.insert("Page.Current".into(), at(skip));
        links.insert(
            "Page.Last".into(),
            at(last_page_number.saturating_mul(page_size)),
        );
        if skip > 0 {
            links.insert("Page.Previous".into(), at(skip.saturating_sub(page_size)));
        }
        if skip.saturating_add(page_size) < total {
            links.insert("Page.Next".into(), at(skip.saturating_add(page_size)));
        }
        Collection {
            item_type: item_type.to_owned(),
            total_results: total,
            items_per_page: take,
            number_of_pages,
            last_page_number,
            items,
            is_stale: false,
            links,
        }
    }
}

/// The error body every non-2xx answer carries (`OctopusErrorsContract`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    /// One-line summary a user can act on.
    pub error_message: String,
    /// Details, one per problem (e.g. one per invalid field).
    pub errors: Vec<String>,
    /// Empty: server stack traces are never sent.
    pub full_exception: Option<String>,
    /// Extra guidance.
    pub help_text: String,
    /// Links to docs.
    pub help_links: Vec<String>,
    /// Structured details, field name to message.
    pub details: BTreeMap<String, String>,
}

impl ErrorBody {
    /// An error with a message and details.
    pub fn new(message: impl Into<String>, errors: Vec<String>) -> Self {
        ErrorBody {
            error_message: message.into(),
            errors,
            full_exception: None,
            help_text: String::new(),
            help_links: Vec::new(),
            details: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_links_appear_only_where_a_page_exists() {
        let page = Collection::page("Project", vec![1, 2], 65, 30, 30, "/api/x", "/api/x{?skip}");
        assert_eq!(page.number_of_pages, 3);
        assert_eq!(page.last_page_number, 2);
        assert_eq!(page.links["Page.Next"], "/api/x?skip=60&take=30");
        assert_eq!(page.links["Page.Previous"], "/api/x?skip=0&take=30");
        let last = Collection::page("Project", vec![1], 65, 60, 30, "/api/x", "t");
        assert!(!last.links.contains_key("Page.Next"));
        let empty = Collection::<u8>::page("Project", vec![], 0, 0, 30, "/api/x", "t");
        assert_eq!(empty.number_of_pages, 1);
    }
}
