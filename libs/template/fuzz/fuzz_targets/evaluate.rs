//! Feeds arbitrary bytes to every evaluation entry point.
//!
//! The input is split on NUL bytes: the first part is the template, each further part a
//! variable written `name=value` (the variables may reference each other, form cycles, hold
//! JSON...). Nothing may panic, overflow the stack or run away; the tight limits below keep
//! each run fast while still exercising the limit checks.

#![no_main]

use chrono::DateTime;
use cuttle_template::{Limits, VariableDictionary};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let template = parts.next().unwrap_or_default();
    let mut variables = VariableDictionary::new();
    variables.set_limits(Limits {
        max_steps: 50_000,
        max_output_bytes: 1 << 20,
        ..Limits::default()
    });
    if let Ok(now) = DateTime::parse_from_rfc3339("2030-05-22T09:05:00+02:00") {
        variables.set_now(now);
    }
    for part in parts.take(16) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        variables.set(name, value);
    }
    let _strict = variables.evaluate(template);
    let _lenient = variables.evaluate_lenient(template);
    let _condition = variables.evaluate_condition(template);
    let names: Vec<String> = variables.iter().map(|(name, _)| name.to_owned()).collect();
    for name in &names {
        let _value = variables.get(name);
        let _indexes = variables.indexes(name);
    }
});
