//! The protocol's message types, generated from `proto/` by prost (binary codec) and
//! pbjson (canonical proto3 JSON codec).
//!
//! Field names and numbers are Forgejo's (`runner.v1`, `ping.v1`); well-known types
//! (`Struct`, `Timestamp`) come from [`pbjson_types`].

/// `ping.v1`: the unauthenticated liveness service.
pub mod ping {
    /// Version 1.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ping.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/ping.v1.serde.rs"));
    }
}

/// `runner.v1`: registration, task fetch, state and log upload.
pub mod runner {
    /// Version 1.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/runner.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/runner.v1.serde.rs"));
    }
}

pub use pbjson_types::{ListValue, Struct, Timestamp, Value};

use pbjson_types::value::Kind;

/// A `google.protobuf.Struct` as a JSON object. Whole numbers (Struct numbers are
/// doubles) become JSON integers, so `run_id: 42` does not turn into `42.0`.
pub fn struct_to_json(value: &Struct) -> serde_json::Map<String, serde_json::Value> {
    value.fields.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect()
}

/// A `google.protobuf.Value` as JSON.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                J::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(J::Null, J::Number)
            }
        }
        Some(Kind::StructValue(s)) => J::Object(struct_to_json(s)),
        Some(Kind::ListValue(l)) => J::Array(l.values.iter().map(value_to_json).collect()),
    }
}

/// A JSON object as a `google.protobuf.Struct` (numbers become doubles).
pub fn json_to_struct(map: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct { fields: map.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect() }
}

/// JSON as a `google.protobuf.Value`.
pub fn json_to_value(value: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match value {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(ListValue { values: a.iter().map(json_to_value).collect() }),
        J::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_convert_to_json_with_whole_numbers_as_integers() {
        let json = serde_json::json!({"run_id": 42, "ratio": 0.5, "ok": true, "event": {"list": ["a", null]}});
        let serde_json::Value::Object(map) = json.clone() else { unreachable!() };
        let s = json_to_struct(&map);
        assert_eq!(serde_json::Value::Object(struct_to_json(&s)), json);
    }
}
