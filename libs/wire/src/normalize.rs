//! Case-insensitive input: request JSON keys are mapped to the canonical PascalCase field names
//! before deserialising, because Octopus clients send camelCase (Go), PascalCase (C#) and a mix
//! of both in one body (TypeScript). Free-form maps such as action `Properties` keep their keys.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Keys whose object values are user data, not resource fields.
const FREE_FORM: &[&str] = &[
    "Properties",
    "CustomFields",
    "FormValues",
    "Links",
    "Arguments",
    "Variables",
    "Details",
    "ExtensionSettings",
];

/// A body that is not JSON of the expected shape.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NormalizeError(pub String);

fn canonical_names() -> &'static HashMap<String, String> {
    static NAMES: OnceLock<HashMap<String, String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names = HashMap::new();
        for sample in crate::resources::field_samples() {
            collect_keys(&sample, &mut names);
        }
        names
    })
}

fn collect_keys(value: &Value, names: &mut HashMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                names.insert(key.to_ascii_lowercase(), key.clone());
                collect_keys(child, names);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_keys(item, names)),
        _ => {}
    }
}

/// Returns the canonical spelling of a field name.
pub fn canonical_key(key: &str) -> String {
    if let Some(known) = canonical_names().get(&key.to_ascii_lowercase()) {
        return known.clone();
    }
    let mut chars = key.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Rewrites every resource key of `value` to its canonical PascalCase spelling.
pub fn normalize_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (key, child) in map {
                let key = canonical_key(&key);
                let child = if FREE_FORM.contains(&key.as_str()) && child.is_object() {
                    child
                } else {
                    normalize_keys(child)
                };
                out.insert(key, child);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalize_keys).collect()),
        other => other,
    }
}

/// Deserialises a request body in any key case into `T`, naming the field at fault on error.
pub fn from_request_json<T: DeserializeOwned>(value: Value) -> Result<T, NormalizeError> {
    serde_json::from_value(normalize_keys(value)).map_err(|err| NormalizeError(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn camel_lower_and_pascal_keys_all_reach_the_canonical_name() {
        let value = normalize_keys(json!({
            "projectname": "a", "environmentNames": ["x"], "SpaceId": "Spaces-1",
            "Properties": {"Octopus.Action.RunOnServer": "true", "lower.key": "1"},
            "steps": [{"actions": [{"actionType": "Octopus.Script"}]}]
        }));
        assert_eq!(value["ProjectName"], "a");
        assert_eq!(value["EnvironmentNames"][0], "x");
        assert_eq!(value["SpaceId"], "Spaces-1");
        assert_eq!(value["Properties"]["lower.key"], "1");
        assert_eq!(
            value["Steps"][0]["Actions"][0]["ActionType"],
            "Octopus.Script"
        );
    }
}
