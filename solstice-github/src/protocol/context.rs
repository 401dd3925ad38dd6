//! The compact `PipelineContextData` encoding of `contextData`.

use serde_json::{Map, Value};

use crate::json::{field, i64_field};

/// Decodes context data into plain JSON.
///
/// Bare scalars stand for themselves; objects carry a type `t`: 0 string (`s`), 1 array
/// (`a`), 2 and 5 dictionary (`d`: `[{k, v}]`), 3 boolean (`b`), 4 number (`n`). An object
/// without `t` is a string.
pub(crate) fn decode(value: &Value) -> Value {
    let Value::Object(_) = value else { return value.clone() };
    match i64_field(value, "t").unwrap_or(0) {
        1 => Value::Array(field(value, "a").and_then(Value::as_array).into_iter().flatten().map(decode).collect()),
        2 | 5 => {
            let mut map = Map::new();
            for entry in field(value, "d").and_then(Value::as_array).into_iter().flatten() {
                if let Some(key) = field(entry, "k").and_then(Value::as_str) {
                    map.insert(key.to_owned(), field(entry, "v").map(decode).unwrap_or(Value::Null));
                }
            }
            Value::Object(map)
        }
        3 => Value::Bool(field(value, "b").and_then(crate::json::as_bool).unwrap_or(false)),
        4 => field(value, "n").cloned().filter(Value::is_number).unwrap_or(Value::from(0)),
        _ => field(value, "s").cloned().unwrap_or(Value::String(String::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_scalar_forms_and_nested_containers_decode() {
        let data = json!({"t": 2, "d": [
            {"k": "repository", "v": "octo/demo"},
            {"k": "run_id", "v": {"t": 0, "s": "123"}},
            {"k": "check_run_id", "v": 90005817181u64},
            {"k": "flag", "v": {"t": 3, "b": true}},
            {"k": "n", "v": {"t": 4, "n": 1.5}},
            {"k": "list", "v": {"t": 1, "a": ["a", {"t": 0, "s": "b"}]}},
            {"k": "empty", "v": {"t": 2}},
            {"k": "nothing", "v": null},
        ]});
        assert_eq!(
            decode(&data),
            json!({"repository": "octo/demo", "run_id": "123", "check_run_id": 90005817181u64, "flag": true,
                   "n": 1.5, "list": ["a", "b"], "empty": {}, "nothing": null})
        );
    }
}
