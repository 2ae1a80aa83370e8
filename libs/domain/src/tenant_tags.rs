//! Tenant tag filters, as Octopus matches them.
//!
//! A tag is written by its canonical name, `TagSet/Tag`. A filter (the `TenantTags` of a
//! deployment target, a step, a variable's scope, a channel or a tenanted deployment) matches a
//! tenant when, for every tag set the filter names, the tenant has at least one of the filter's
//! tags of that set: tags of one set are OR'ed, tag sets are AND'ed. Names compare
//! case-insensitively. An empty filter matches every tenant.

/// The tag set of a canonical tag name (`Tier` of `Tier/Gold`); `None` when the name has no `/`.
pub fn tag_set_of(canonical: &str) -> Option<&str> {
    canonical
        .split_once('/')
        .map(|(set, _)| set.trim())
        .filter(|set| !set.is_empty())
}

/// Whether a tenant holding `tenant_tags` matches `filter`.
pub fn matches(tenant_tags: &[String], filter: &[String]) -> bool {
    let mut sets: Vec<&str> = filter.iter().filter_map(|tag| tag_set_of(tag)).collect();
    sets.sort_by_key(|set| set.to_lowercase());
    sets.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    let untagged_filter = filter.iter().any(|tag| tag_set_of(tag).is_none());
    if untagged_filter && !filter.iter().any(|f| has(tenant_tags, f)) {
        return false;
    }
    sets.iter().all(|set| {
        filter
            .iter()
            .filter(|tag| tag_set_of(tag).is_some_and(|s| s.eq_ignore_ascii_case(set)))
            .any(|tag| has(tenant_tags, tag))
    })
}

/// Why `matches` is false: the filter's tag sets the tenant has none of, each as the tags that
/// would have satisfied it (`Tier/Gold or Tier/Silver`).
pub fn missing(tenant_tags: &[String], filter: &[String]) -> Vec<String> {
    let mut sets: Vec<&str> = filter.iter().filter_map(|tag| tag_set_of(tag)).collect();
    sets.sort_by_key(|set| set.to_lowercase());
    sets.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    sets.iter()
        .filter_map(|set| {
            let wanted: Vec<&str> = filter
                .iter()
                .filter(|tag| tag_set_of(tag).is_some_and(|s| s.eq_ignore_ascii_case(set)))
                .map(String::as_str)
                .collect();
            (!wanted.iter().any(|tag| has(tenant_tags, tag))).then(|| wanted.join(" or "))
        })
        .collect()
}

fn has(tags: &[String], wanted: &str) -> bool {
    tags.iter()
        .any(|tag| tag.trim().eq_ignore_ascii_case(wanted.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_set_is_or_and_sets_are_and() {
        let gold_eu = tags(&["Tier/Gold", "Region/EU"]);
        let silver_us = tags(&["Tier/Silver", "Region/US"]);
        let cases: &[(&[&str], bool, bool)] = &[
            (&[], true, true),
            (&["Tier/Gold"], true, false),
            (&["Tier/Gold", "Tier/Silver"], true, true),
            (&["Tier/Gold", "Region/US"], false, false),
            (&["Tier/Gold", "Tier/Silver", "Region/US"], false, true),
            (&["tier/gold"], true, false),
            (&["Tier/Bronze"], false, false),
        ];
        for (filter, gold, silver) in cases {
            let filter = tags(filter);
            assert_eq!(
                matches(&gold_eu, &filter),
                *gold,
                "gold/eu against {filter:?}"
            );
            assert_eq!(
                matches(&silver_us, &filter),
                *silver,
                "silver/us against {filter:?}"
            );
        }
    }

    #[test]
    fn missing_names_each_unmet_tag_set() {
        let filter = tags(&["Tier/Gold", "Tier/Silver", "Region/US"]);
        assert_eq!(
            missing(&tags(&["Region/EU"]), &filter),
            vec![
                "Region/US".to_owned(),
                "Tier/Gold or Tier/Silver".to_owned()
            ]
        );
        assert!(missing(&tags(&["Tier/Silver", "Region/US"]), &filter).is_empty());
    }

    #[test]
    fn a_name_without_a_set_must_be_held_itself() {
        assert!(!matches(&tags(&["Tier/Gold"]), &tags(&["Gold"])));
        assert!(matches(&tags(&["Gold"]), &tags(&["Gold"])));
    }
}
