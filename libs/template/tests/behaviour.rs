//! The public API, and the places where Cuttle deliberately differs from Octostache (limits,
//! lenient evaluation, filters Cuttle cannot provide). Octostache's own behaviour is covered by
//! the corpus (`tests/corpus.rs`).

use cuttle_template::{LimitKind, Limits, TemplateError, VariableDictionary, is_truthy};

fn dictionary(pairs: &[(&str, &str)]) -> VariableDictionary {
    pairs.iter().copied().collect()
}

#[test]
fn get_evaluates_the_value_and_get_raw_does_not() {
    let variables = dictionary(&[("Path", "C:\\#{Dir}"), ("Dir", "App")]);
    assert_eq!(variables.get("path"), Ok(Some("C:\\App".to_owned())));
    assert_eq!(variables.get_raw("PATH"), Some("C:\\#{Dir}"));
    assert_eq!(variables.get("Missing"), Ok(None));
}

#[test]
fn get_returns_a_value_that_does_not_parse_as_it_is() {
    let variables = dictionary(&[("Broken", "#{Unclosed")]);
    assert_eq!(variables.get("Broken"), Ok(Some("#{Unclosed".to_owned())));
}

#[test]
fn set_replaces_a_value_under_any_case_and_remove_deletes_it() {
    let mut variables = dictionary(&[("Name", "one")]);
    variables.set("NAME", "two");
    assert_eq!(variables.len(), 1);
    assert_eq!(variables.evaluate("#{name}"), Ok("two".to_owned()));
    assert_eq!(variables.remove("name"), Some("two".to_owned()));
    assert!(!variables.contains("Name"));
    assert!(variables.is_empty());
    assert_eq!(variables.evaluate("#{Name}"), Ok("#{Name}".to_owned()));
}

#[test]
fn iteration_lists_variables_in_the_order_they_were_first_set() {
    let variables = dictionary(&[("B", "1"), ("A", "2"), ("b", "3")]);
    let listed: Vec<(&str, &str)> = variables.iter().collect();
    assert_eq!(listed, [("B", "3"), ("A", "2")]);
}

#[test]
fn debug_output_shows_names_but_never_values() {
    let variables = dictionary(&[("Database.Password", "hunter2")]);
    let printed = format!("{variables:?}");
    assert!(printed.contains("Database.Password"));
    assert!(!printed.contains("hunter2"));
}

#[test]
fn detailed_evaluation_reports_each_unresolved_token_once() {
    let variables = dictionary(&[("A", "1")]);
    let evaluation = variables.evaluate_detailed("#{A}#{B}#{B}#{C | ToUpper}");
    let evaluation = evaluation.unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(evaluation.output, "1#{B}#{B}#{C | ToUpper}");
    assert_eq!(evaluation.unresolved, ["#{B}", "#{C | ToUpper}"]);
}

#[test]
fn a_recursive_definition_names_the_whole_chain_in_octostaches_words() {
    let variables = dictionary(&[("Foo", "#{Fox}"), ("Fox", "#{Foo}")]);
    let error = variables.evaluate("#{Foo}").err();
    assert_eq!(
        error.map(|error| error.to_string()).as_deref(),
        Some(
            "An attempt to parse the variable symbol \"Foo\" appears to have resulted in a self \
             referencing loop (Foo -> Fox -> Foo). Ensure that recursive loops do not exist in \
             the variable values."
        )
    );
}

#[test]
fn a_run_condition_reports_a_recursive_definition_instead_of_guessing() {
    let variables = dictionary(&[("A", "#{A}")]);
    assert!(matches!(
        variables.evaluate_condition("#{A}"),
        Err(TemplateError::RecursiveDefinition { .. })
    ));
}

#[test]
fn a_chain_longer_than_the_depth_limit_is_too_deep() {
    let mut variables = VariableDictionary::new();
    for level in 0..40 {
        variables.set(format!("V{level}"), format!("#{{V{}}}", level + 1));
    }
    variables.set("V40", "end");
    match variables.evaluate("#{V0}") {
        Err(TemplateError::TooDeep { variable, limit }) => {
            assert_eq!(limit, Limits::default().max_depth);
            assert!(variable.starts_with('V'), "{variable}");
        }
        other => panic!("expected TooDeep, got {other:?}"),
    }
    variables.set_limits(Limits {
        max_depth: 64,
        ..Limits::default()
    });
    assert_eq!(variables.evaluate("#{V0}"), Ok("end".to_owned()));
}

#[test]
fn exponential_expansion_is_stopped_by_the_limits() {
    let mut variables = VariableDictionary::new();
    for level in 0..30 {
        let next = level + 1;
        variables.set(format!("L{level}"), format!("#{{L{next}}}#{{L{next}}}"));
    }
    variables.set("L30", "x");
    // Lower limits than the defaults keep this test quick; any limit stops the expansion.
    variables.set_limits(Limits {
        max_steps: 200_000,
        ..Limits::default()
    });
    assert!(matches!(
        variables.evaluate("#{L0}"),
        Err(TemplateError::LimitExceeded { .. })
    ));
    // Lenient evaluation never fails: it gives the template back unchanged instead.
    assert_eq!(variables.evaluate_lenient("a #{L0} b"), "a #{L0} b");
}

#[test]
fn the_output_limit_applies_to_filters_that_grow_text() {
    let mut variables = dictionary(&[("Big", &"x".repeat(1_000))]);
    variables.set_limits(Limits {
        max_output_bytes: 10_000,
        ..Limits::default()
    });
    assert_eq!(
        variables.evaluate("#{Big | Replace \"\" \"$_\"}"),
        Ok("#{Big | Replace \"\" \"$_\"}".to_owned()),
        "a replacement that would exceed the limit is not applied"
    );
    assert!(
        variables
            .evaluate("#{each i in Items}#{Big}#{/each}")
            .is_ok()
    );
    variables.set("Items", "a,".repeat(50));
    assert_eq!(
        variables.evaluate("#{each i in Items}#{Big}#{/each}"),
        Err(TemplateError::LimitExceeded {
            kind: LimitKind::OutputBytes,
            limit: 10_000
        })
    );
}

#[test]
fn the_step_limit_stops_long_loops() {
    let mut variables = dictionary(&[("Items", &"a,".repeat(10_000))]);
    variables.set_limits(Limits {
        max_steps: 1_000,
        ..Limits::default()
    });
    assert_eq!(
        variables.evaluate("#{each i in Items}#{i}#{/each}"),
        Err(TemplateError::LimitExceeded {
            kind: LimitKind::Steps,
            limit: 1_000
        })
    );
}

#[test]
fn strict_evaluation_reports_where_a_template_stops_parsing() {
    let variables = VariableDictionary::new();
    match variables.evaluate("abc #{Foo") {
        Err(TemplateError::Parse { position, message }) => {
            assert_eq!(position, 9);
            assert!(message.contains("end of template"), "{message}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn markdown_passes_text_through_because_cuttle_has_no_renderer() {
    let variables = dictionary(&[("Notes", "_yeah!_")]);
    assert_eq!(
        variables.evaluate("#{Notes | Markdown}"),
        Ok("_yeah!_".to_owned())
    );
    assert_eq!(
        variables.evaluate("#{Notes | MarkdownToHtml}"),
        Ok("_yeah!_".to_owned())
    );
}

#[test]
fn base64_is_accepted_as_an_alias_of_to_base64() {
    let variables = dictionary(&[("Value", "Foo Bar")]);
    assert_eq!(
        variables.evaluate("#{Value | Base64}"),
        Ok("Rm9vIEJhcg==".to_owned())
    );
}

#[test]
fn invalid_base64_is_left_as_written_where_octostache_would_throw() {
    let variables = dictionary(&[("Value", "not base64!")]);
    assert_eq!(
        variables.evaluate("#{Value | FromBase64}"),
        Ok("#{Value | FromBase64}".to_owned())
    );
}

#[test]
fn filters_cuttle_does_not_provide_are_left_as_written() {
    let variables = dictionary(&[("Value", "1.2.3"), ("Url", "https://octopus.com/docs")]);
    for template in [
        "#{Value | VersionMajor}",
        "#{Value | Sha256}",
        "#{Value | Md5}",
        "#{Url | UriPart Host}",
    ] {
        let expected = template.replace("Host", "\"Host\"");
        assert_eq!(variables.evaluate(template), Ok(expected));
    }
}

#[test]
fn the_clock_can_be_fixed_for_reproducible_dates() {
    let mut variables = VariableDictionary::new();
    let now = chrono::DateTime::parse_from_rfc3339("2030-05-22T09:05:00-07:00");
    variables.set_now(now.unwrap_or_else(|error| panic!("{error}")));
    assert_eq!(
        variables.evaluate("#{ | NowDate \"yyyy-MM-dd HH:mm\"} #{ | NowDateUtc \"HH:mm\"}"),
        Ok("2030-05-22 09:05 16:05".to_owned())
    );
}

#[test]
fn indexes_lists_what_each_would_iterate() {
    let variables = dictionary(&[
        ("Octopus.Action[Package A].Name", "A"),
        ("Octopus.Action[Package B].Name", "B"),
        ("Roles", "web,db"),
    ]);
    assert_eq!(
        variables.indexes("Octopus.Action"),
        Ok(vec!["Package A".to_owned(), "Package B".to_owned()])
    );
    assert_eq!(
        variables.indexes("Roles"),
        Ok(vec!["web".to_owned(), "db".to_owned()])
    );
    assert_eq!(variables.indexes("Nothing"), Ok(Vec::new()));
}

#[test]
fn truthiness_matches_octostache() {
    for falsy in ["", "0", "false", "False", " FALSE ", "no", "No", "\tno\n"] {
        assert!(!is_truthy(falsy), "{falsy:?} should be falsy");
    }
    for truthy in ["true", "1", "yes", " 0", "00", "nope", "x"] {
        assert!(is_truthy(truthy), "{truthy:?} should be truthy");
    }
}

#[test]
fn names_with_a_variable_index_are_not_bound() {
    let variables = dictionary(&[("A[#{B}]", "x"), ("B", "b")]);
    assert_eq!(variables.evaluate("#{A[b]}"), Ok("#{A[b]}".to_owned()));
}

#[test]
fn a_dictionary_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<VariableDictionary>();
}
