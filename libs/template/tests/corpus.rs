//! The data-driven corpus: every case in `tests/corpus/*.json` is a template, the variables it
//! runs against and what Octostache renders, with the Octostache fixture or rule it comes from.
//!
//! A case has `name`, `rule`, `variables` (ordered `[name, value]` pairs, since order decides
//! iteration order), `template`, then either `expect` (the output) or `error` (the
//! `TemplateError` variant), and optionally `mode` (`strict`, the default; `lenient`; or
//! `condition` for `evaluate_condition`, whose `expect` is `true` or `false`), `now` (an RFC 3339
//! clock for `NowDate`), `unresolved` (the tokens reported as left as written) and
//! `error_contains` (text the error message must contain).

use std::fs;
use std::path::PathBuf;

use chrono::DateTime;
use cuttle_template::{TemplateError, VariableDictionary};
use serde_json::Value;

fn corpus_files() -> Vec<PathBuf> {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<PathBuf> = fs::read_dir(&directory)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", directory.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();
    files
}

fn text<'a>(case: &'a Value, field: &str) -> Option<&'a str> {
    case.get(field).and_then(Value::as_str)
}

fn dictionary(case: &Value) -> Result<VariableDictionary, String> {
    let mut variables = VariableDictionary::new();
    for pair in case
        .get("variables")
        .and_then(Value::as_array)
        .ok_or("`variables` is missing")?
    {
        match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(name), Value::String(value)]) => variables.set(name, value),
            _ => return Err(format!("bad variable pair {pair}")),
        }
    }
    if let Some(now) = text(case, "now") {
        let now =
            DateTime::parse_from_rfc3339(now).map_err(|error| format!("bad `now`: {error}"))?;
        variables.set_now(now);
    }
    Ok(variables)
}

fn error_kind(error: &TemplateError) -> &'static str {
    match error {
        TemplateError::Parse { .. } => "Parse",
        TemplateError::RecursiveDefinition { .. } => "RecursiveDefinition",
        TemplateError::TooDeep { .. } => "TooDeep",
        TemplateError::LimitExceeded { .. } => "LimitExceeded",
        _ => "other",
    }
}

/// Runs one case; `Err` describes how it failed.
fn run(case: &Value) -> Result<(), String> {
    let variables = dictionary(case)?;
    let template = text(case, "template").ok_or("`template` is missing")?;
    let mode = text(case, "mode").unwrap_or("strict");
    if let Some(expected_error) = text(case, "error") {
        let outcome = match mode {
            "condition" => variables
                .evaluate_condition(template)
                .map(|value| value.to_string()),
            _ => variables.evaluate(template),
        };
        return match outcome {
            Err(error) if error_kind(&error) == expected_error => {
                match text(case, "error_contains") {
                    Some(needle) if !error.to_string().contains(needle) => {
                        Err(format!("error {error} does not contain {needle:?}"))
                    }
                    _ => Ok(()),
                }
            }
            other => Err(format!("expected a {expected_error} error, got {other:?}")),
        };
    }
    let expected = text(case, "expect").ok_or("`expect` or `error` is needed")?;
    match mode {
        "condition" => {
            let actual = variables
                .evaluate_condition(template)
                .map_err(|error| format!("unexpected error {error}"))?;
            if actual.to_string() != expected {
                return Err(format!("expected {expected}, got {actual}"));
            }
        }
        "lenient" => {
            let actual = variables.evaluate_lenient(template);
            if actual != expected {
                return Err(format!("expected {expected:?}, got {actual:?}"));
            }
        }
        _ => {
            let evaluation = variables
                .evaluate_detailed(template)
                .map_err(|error| format!("unexpected error {error}"))?;
            if evaluation.output != expected {
                return Err(format!(
                    "expected {expected:?}, got {:?}",
                    evaluation.output
                ));
            }
            if let Some(unresolved) = case.get("unresolved").and_then(Value::as_array) {
                let unresolved: Vec<&str> = unresolved.iter().filter_map(Value::as_str).collect();
                if evaluation.unresolved != unresolved {
                    return Err(format!(
                        "expected unresolved {unresolved:?}, got {:?}",
                        evaluation.unresolved
                    ));
                }
            }
            // A template that evaluates strictly renders the same when evaluated leniently.
            let lenient = variables.evaluate_lenient(template);
            if lenient != expected {
                return Err(format!("lenient evaluation gave {lenient:?}"));
            }
        }
    }
    Ok(())
}

#[test]
fn every_corpus_case_renders_as_octostache_does() {
    let mut failures = Vec::new();
    let mut n_cases = 0;
    for file in corpus_files() {
        let content = fs::read_to_string(&file).unwrap_or_default();
        let parsed: Value = serde_json::from_str(&content)
            .unwrap_or_else(|error| panic!("{} is not JSON: {error}", file.display()));
        let cases = parsed
            .get("cases")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for case in &cases {
            n_cases += 1;
            if let Err(message) = run(case) {
                failures.push(format!(
                    "{} / {}\n    template: {:?}\n    rule: {}\n    {message}",
                    file.file_name()
                        .and_then(|name| name.to_str())
                        .unwrap_or_default(),
                    text(case, "name").unwrap_or_default(),
                    text(case, "template").unwrap_or_default(),
                    text(case, "rule").unwrap_or("-"),
                ));
            }
        }
    }
    assert!(n_cases >= 500, "the corpus shrank to {n_cases} cases");
    assert!(
        failures.is_empty(),
        "{} of {n_cases} corpus cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_case_names_are_unique_sentences() {
    let mut seen = std::collections::HashSet::new();
    for file in corpus_files() {
        let content = fs::read_to_string(&file).unwrap_or_default();
        let parsed: Value = serde_json::from_str(&content).unwrap_or_default();
        for case in parsed
            .get("cases")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = text(case, "name").unwrap_or_default();
            assert!(!name.is_empty(), "a case in {} has no name", file.display());
            assert!(
                seen.insert(name.to_owned()),
                "the case name {name:?} is used twice"
            );
        }
    }
}
