//! Case-insensitive access to the JSON GitHub's services send.
//!
//! The .NET services write PascalCase or camelCase and read either; so do we.

use serde_json::Value;

/// The value of `name` in an object, matching the key case-insensitively.
pub(crate) fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    object.get(name).or_else(|| object.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// A string field (a number is converted to its text).
pub(crate) fn str_field(value: &Value, name: &str) -> Option<String> {
    match field(value, name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer field, written as a number or as a string.
pub(crate) fn i64_field(value: &Value, name: &str) -> Option<i64> {
    match field(value, name)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean field, written as a boolean or as `"True"`/`"false"`, or a
/// `PropertiesCollection` entry `{"$type": …, "$value": …}`.
pub(crate) fn bool_field(value: &Value, name: &str) -> Option<bool> {
    as_bool(field(value, name)?)
}

pub(crate) fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        Value::Object(_) => field(value, "$value").and_then(as_bool),
        _ => None,
    }
}

/// A `PropertiesCollection` value as text: `{"$type": …, "$value": "x"}` or a bare scalar.
pub(crate) fn property_str(properties: &Value, name: &str) -> Option<String> {
    let value = field(properties, name)?;
    let value = if value.is_object() { field(value, "$value")? } else { value };
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An enum written as a string (any casing) or an integer, as lowercase text, mapping
/// integers through `names`.
pub(crate) fn enum_name(value: &Value, names: &[&str]) -> Option<String> {
    match value {
        Value::String(s) => Some(s.to_ascii_lowercase()),
        Value::Number(n) => n.as_u64().and_then(|i| names.get(i as usize)).map(|s| s.to_ascii_lowercase()),
        _ => None,
    }
}

/// Joins a base URL and a relative path the way .NET's `new Uri(base, rel)` does after the
/// base has been normalised to end in `/`.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    let base = if base.ends_with('/') { base.to_owned() } else { format!("{base}/") };
    format!("{base}{}", path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_match_in_any_casing() {
        let v = json!({"MessageId": 5, "messagetype": "X", "iv": "", "Flag": "True", "P": {"$type": "System.Boolean", "$value": false}});
        assert_eq!(i64_field(&v, "messageId"), Some(5));
        assert_eq!(str_field(&v, "MessageType").as_deref(), Some("X"));
        assert_eq!(bool_field(&v, "flag"), Some(true));
        assert_eq!(bool_field(&v, "p"), Some(false));
        assert_eq!(property_str(&v, "P").as_deref(), Some("false"));
    }

    #[test]
    fn enums_accept_strings_and_numbers() {
        let names = ["succeeded", "succeededWithIssues", "failed"];
        assert_eq!(enum_name(&json!("Failed"), &names).as_deref(), Some("failed"));
        assert_eq!(enum_name(&json!(1), &names).as_deref(), Some("succeededwithissues"));
    }

    #[test]
    fn urls_join_like_dotnet_after_normalising() {
        assert_eq!(join_url("http://h/run", "acquirejob"), "http://h/run/acquirejob");
        assert_eq!(join_url("http://h/run/", "/acquirejob"), "http://h/run/acquirejob");
    }
}
