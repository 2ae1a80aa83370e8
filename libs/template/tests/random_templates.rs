//! A property test that runs in the normal suite: thousands of pseudo-random templates and
//! variable sets, built from Octostache syntax fragments, must evaluate without panicking,
//! overflowing the stack or running away, through every entry point.
//!
//! The generator is a seeded xorshift, so a failure always reproduces; the case number and
//! seed are in the failure message. The fuzzer in `libs/template/fuzz` explores further.

use std::thread;

use chrono::DateTime;
use cuttle_template::{Limits, TemplateError, VariableDictionary};

/// xorshift64*: small, deterministic and good enough to pick fragments.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap_or(1)).unwrap_or(0)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items
            .get(self.below(items.len()))
            .copied()
            .unwrap_or_default()
    }
}

const TEXT: &[&str] = &[
    "a", " ", "x y", "#", "##", "{", "}", "\n", "é", "🐙", "\"", "\\", ",", "[", "]", ".", "0",
];

const SYNTAX: &[&str] = &[
    "#{",
    "##{",
    "###{",
    "#{if ",
    "#{unless ",
    "#{elseif ",
    "#{else}",
    "#{/if}",
    "#{/unless}",
    "#{each i in ",
    "#{/each}",
    "#{calc ",
    "}",
    " | ",
    "|",
    " == ",
    " != ",
    "\"q\"",
    "\\\"e\\\"",
    "[",
    "]",
    "[#{",
    ".",
    "*",
    "(",
    ")",
    "+",
    "-",
    "/",
    "{",
    " in ",
];

const NAMES: &[&str] = &[
    "A",
    "B",
    "Foo",
    "Foo.Bar",
    "List",
    "i",
    "i.Name",
    "i.Value",
    "Config",
    "Config.a",
    "Config[0]",
    "Config.b[1]",
    "Octopus.Template.Each.Index",
    "Items[x].Name",
    "Items[*].Name",
    "N",
    "Missing",
    "A[#{B}]",
    "Date",
];

const FILTERS: &[&str] = &[
    "ToUpper",
    "ToLower",
    "Trim",
    "Trim end",
    "Replace a b",
    "Replace \"(.)\" \"$1$1\"",
    "Substring 1 2",
    "Truncate 3",
    "Indent 2",
    "Indent /3",
    "Append z",
    "Prepend #{A}",
    "Format N2",
    "Format Date yyyy",
    "Format \\\"#,##0.0\\\"",
    "Format DateTimeOffset O",
    "NowDate",
    "NowDateUtc \"HH:mm\"",
    "AddHours 2",
    "AddDays \"-1.5\"",
    "Match a",
    "StartsWith a",
    "Contains #{B}",
    "ToBase64",
    "FromBase64",
    "JsonEscape",
    "HtmlEscape",
    "YamlSingleQuoteEscape",
    "YamlDoubleQuoteEscape",
    "PropertiesKeyEscape",
    "UriEscape",
    "UriDataEscape",
    "Markdown",
    "Bogus",
];

const VALUES: &[&str] = &[
    "",
    "x",
    "a,b,c",
    "#{A}",
    "#{B}#{B}",
    "#{Foo} and #{A}",
    "#{Missing}",
    "{\"a\": \"#{A}\", \"b\": [1, 2, {\"c\": null}]}",
    "[1, 2, 3]",
    "{Name: 'x', Value: 12}",
    "2030-05-22 09:05:00",
    "12.5",
    "true",
    "False",
    "#{if A}yes#{else}no#{/if}",
    "#{each v in List}#{v};#{/each}",
    "#{calc N * 2}",
    "#{Config.a}",
    "#{i}",
    "50% #{",
    "QmF6",
];

/// A well-formed construct around smaller ones, so evaluation goes deep, not just parsing.
fn construct(random: &mut Random, depth: usize) -> String {
    let name = random.pick(NAMES);
    if depth == 0 {
        return format!("#{{{name}}}");
    }
    let inner = template(random, depth - 1, 4);
    match random.below(8) {
        0 => format!("#{{{name}}}"),
        1 => format!("#{{{name} | {}}}", random.pick(FILTERS)),
        2 => format!(
            "#{{{name} | {} | {}}}",
            random.pick(FILTERS),
            random.pick(FILTERS)
        ),
        3 => format!(
            "#{{if {name}}}{inner}#{{else}}{}#{{/if}}",
            random.pick(TEXT)
        ),
        4 => format!(
            "#{{if {name} == \"x\"}}{inner}#{{elseif {}}}b#{{/if}}",
            random.pick(NAMES)
        ),
        5 => format!("#{{unless {name}}}{inner}#{{/unless}}"),
        6 => format!("#{{each i in {name}}}{inner}#{{/each}}"),
        _ => format!("#{{calc {name} + {} * (2 - 1)}}", random.below(100)),
    }
}

fn template(random: &mut Random, depth: usize, max_parts: usize) -> String {
    let mut text = String::new();
    for _ in 0..=random.below(max_parts) {
        match random.below(4) {
            0 => text.push_str(random.pick(TEXT)),
            1 => text.push_str(random.pick(SYNTAX)),
            2 => text.push_str(random.pick(NAMES)),
            _ => text.push_str(&construct(random, depth)),
        }
    }
    text
}

fn variables(random: &mut Random) -> VariableDictionary {
    let mut variables = VariableDictionary::new();
    variables.set_limits(Limits {
        max_steps: 100_000,
        max_output_bytes: 1 << 20,
        ..Limits::default()
    });
    if let Ok(now) = DateTime::parse_from_rfc3339("2030-05-22T09:05:00+02:00") {
        variables.set_now(now);
    }
    for _ in 0..random.below(10) {
        let name = random.pick(NAMES);
        let value = if random.below(3) == 0 {
            template(random, 2, 3)
        } else {
            random.pick(VALUES).to_owned()
        };
        variables.set(name, value);
    }
    variables
}

/// Evaluates one case through every entry point and checks the invariants that hold for any
/// input.
/// Returns whether strict evaluation succeeded.
fn check(case: usize, seed: u64, template: &str, variables: &VariableDictionary) -> bool {
    let strict = variables.evaluate(template);
    let lenient = variables.evaluate_lenient(template);
    if let Ok(output) = &strict {
        assert_eq!(
            &lenient, output,
            "case {case} (seed {seed}): a template that evaluates strictly must render the same leniently: {template:?}"
        );
    }
    if !template.contains("#{") {
        assert_eq!(
            strict.as_deref(),
            Ok(template),
            "case {case}: plain text changed"
        );
    }
    match variables.evaluate_condition(template) {
        Ok(_)
        | Err(
            TemplateError::Parse { .. }
            | TemplateError::RecursiveDefinition { .. }
            | TemplateError::TooDeep { .. }
            | TemplateError::LimitExceeded { .. },
        ) => {}
        Err(other) => panic!("case {case}: unexpected error {other:?}"),
    }
    let names: Vec<String> = variables.iter().map(|(name, _)| name.to_owned()).collect();
    for name in &names {
        let _value = variables.get(name);
        let _indexes = variables.indexes(name);
    }
    strict.is_ok()
}

fn run_cases(seed: u64, n_cases: usize) {
    let mut random = Random(seed);
    let mut n_evaluated = 0;
    for case in 0..n_cases {
        let variables = variables(&mut random);
        let depth = random.below(4);
        let template = template(&mut random, depth, 12);
        if check(case, seed, &template, &variables) {
            n_evaluated += 1;
        }
    }
    // Guards the generator itself: most cases must get past the parser to test evaluation.
    assert!(
        n_evaluated * 4 >= n_cases,
        "only {n_evaluated} of {n_cases} random templates evaluated; the generator is too noisy"
    );
}

/// Runs on a thread with a deliberately small stack, so any unbounded recursion shows up here
/// rather than in production.
fn on_small_stack(work: impl FnOnce() + Send + 'static) {
    let outcome = thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(work)
        .map(|handle| handle.join());
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(error) => panic!("cannot start the test thread: {error}"),
    }
}

#[test]
fn thousands_of_random_templates_evaluate_without_panicking() {
    on_small_stack(|| run_cases(0x5EED_F0C7_0574_5EED, 4_000));
}

#[test]
fn random_byte_soup_evaluates_without_panicking() {
    on_small_stack(|| {
        let mut random = Random(0xB17E_50C9);
        let alphabet: Vec<char> = "#{}[]|.\"\\ ifelsuncachn=!*()+-/,:\n\u{e9}\u{1F419}aAxy0129"
            .chars()
            .collect();
        let variables = variables(&mut random);
        for case in 0..4_000 {
            let length = random.below(60);
            let template: String = (0..length)
                .map(|_| {
                    alphabet
                        .get(random.below(alphabet.len()))
                        .copied()
                        .unwrap_or('a')
                })
                .collect();
            let _evaluated = check(case, 0xB17E_50C9, &template, &variables);
        }
    });
}

#[test]
fn deeply_nested_and_long_inputs_end_with_an_error_not_a_crash() {
    on_small_stack(|| {
        let variables = VariableDictionary::new();
        let nested_ifs = "#{if a}".repeat(5_000) + &"#{/if}".repeat(5_000);
        let nested_indexes = "#{A[".repeat(5_000) + &"]}".repeat(5_000);
        let unclosed = "#{if a == \"b\"}x".repeat(2_000);
        let long_chain = format!("#{{A{}}}", " | Trim".repeat(20_000));
        let long_calc = format!("#{{calc 1{}}}", "+1".repeat(20_000));
        let many_elseifs = format!("#{{if a}}x{}#{{/if}}", "#{elseif b}y".repeat(5_000));
        for template in [
            nested_ifs,
            nested_indexes,
            unclosed,
            long_chain,
            long_calc,
            many_elseifs,
        ] {
            let _strict = variables.evaluate(&template);
            let _lenient = variables.evaluate_lenient(&template);
        }
    });
}
