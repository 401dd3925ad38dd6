//! Runtime values of the expression language.
//!
//! Values borrow from the caller's JSON contexts wherever possible, so evaluating
//! `github.event.pull_request.title` copies nothing but the final string.

use std::borrow::Cow;
use std::rc::Rc;

use super::number::{format_number, parse_js_number};

/// A value during evaluation.
#[derive(Debug, Clone)]
pub(crate) enum Value<'a> {
    Null,
    Boolean(bool),
    Number(f64),
    String(Cow<'a, str>),
    Array(Seq<'a>),
    Object(Obj<'a>),
}

/// An array: borrowed from the contexts, built by the evaluator, or the result of a
/// wildcard (a "filtered array" to which later property accesses apply element by element).
#[derive(Debug, Clone)]
pub(crate) enum Seq<'a> {
    Json(&'a Vec<serde_json::Value>),
    Owned(Rc<Vec<Value<'a>>>),
    Filtered(Rc<Vec<Value<'a>>>),
}

/// An object: borrowed from the contexts or built by the evaluator (`fromJSON`).
#[derive(Debug, Clone)]
pub(crate) enum Obj<'a> {
    Json(&'a serde_json::Map<String, serde_json::Value>),
    Owned(Rc<Vec<(String, Value<'a>)>>),
}

impl<'a> Value<'a> {
    pub(crate) fn from_json(json: &'a serde_json::Value) -> Value<'a> {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Boolean(*b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(Cow::Borrowed(s)),
            serde_json::Value::Array(a) => Value::Array(Seq::Json(a)),
            serde_json::Value::Object(o) => Value::Object(Obj::Json(o)),
        }
    }

    pub(crate) fn from_owned_json(json: serde_json::Value) -> Value<'a> {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Boolean(b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(Cow::Owned(s)),
            serde_json::Value::Array(a) => {
                Value::Array(Seq::Owned(Rc::new(a.into_iter().map(Value::from_owned_json).collect())))
            }
            serde_json::Value::Object(o) => Value::Object(Obj::Owned(Rc::new(
                o.into_iter().map(|(k, v)| (k, Value::from_owned_json(v))).collect(),
            ))),
        }
    }

    /// GitHub's truthiness: `null`, `false`, `0`, `-0`, `NaN` and `''` are falsy.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Boolean(b) => *b,
            Value::Number(n) => *n != 0.0 && !n.is_nan(),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    /// Coercion to a number for comparisons and indexes.
    pub(crate) fn to_number(&self) -> f64 {
        match self {
            Value::Null => 0.0,
            Value::Boolean(b) => {
                if *b {
                    1.0
                } else {
                    0.0
                }
            }
            Value::Number(n) => *n,
            Value::String(s) => parse_js_number(s).unwrap_or(f64::NAN),
            Value::Array(_) | Value::Object(_) => f64::NAN,
        }
    }

    /// Coercion to a string as `format` and `join` do it (arrays are `Array`, objects `Object`).
    pub(crate) fn to_display_string(&self) -> Cow<'a, str> {
        match self {
            Value::Null => Cow::Borrowed(""),
            Value::Boolean(true) => Cow::Borrowed("true"),
            Value::Boolean(false) => Cow::Borrowed("false"),
            Value::Number(n) => Cow::Owned(format_number(*n)),
            Value::String(s) => s.clone(),
            Value::Array(_) => Cow::Borrowed("Array"),
            Value::Object(_) => Cow::Borrowed("Object"),
        }
    }

    /// The elements of an array (empty for other values).
    pub(crate) fn elements(&self) -> Vec<Value<'a>> {
        match self {
            Value::Array(Seq::Json(items)) => items.iter().map(Value::from_json).collect(),
            Value::Array(Seq::Owned(items) | Seq::Filtered(items)) => items.as_ref().clone(),
            _ => Vec::new(),
        }
    }

    /// The values of an object's properties, in order (empty for other values).
    pub(crate) fn property_values(&self) -> Vec<Value<'a>> {
        match self {
            Value::Object(Obj::Json(map)) => map.values().map(Value::from_json).collect(),
            Value::Object(Obj::Owned(pairs)) => pairs.iter().map(|(_, v)| v.clone()).collect(),
            _ => Vec::new(),
        }
    }

    /// Case-insensitive property lookup; `None` when this is not an object or has no such key.
    pub(crate) fn property(&self, name: &str) -> Option<Value<'a>> {
        match self {
            Value::Object(Obj::Json(map)) => {
                if let Some(v) = map.get(name) {
                    return Some(Value::from_json(v));
                }
                map.iter().find(|(k, _)| eq_ignore_case(k, name)).map(|(_, v)| Value::from_json(v))
            }
            Value::Object(Obj::Owned(pairs)) => pairs
                .iter()
                .find(|(k, _)| k == name)
                .or_else(|| pairs.iter().find(|(k, _)| eq_ignore_case(k, name)))
                .map(|(_, v)| v.clone()),
            _ => None,
        }
    }

    /// Element `index` of an array; `None` when out of range or not an array.
    pub(crate) fn element(&self, index: usize) -> Option<Value<'a>> {
        match self {
            Value::Array(Seq::Json(items)) => items.get(index).map(Value::from_json),
            Value::Array(Seq::Owned(items) | Seq::Filtered(items)) => items.get(index).cloned(),
            _ => None,
        }
    }

    /// The kind name used by the conformance data and `solstice workflow eval`.
    pub(crate) fn kind(&self) -> super::ValueKind {
        match self {
            Value::Null => super::ValueKind::Null,
            Value::Boolean(_) => super::ValueKind::Boolean,
            Value::Number(_) => super::ValueKind::Number,
            Value::String(_) => super::ValueKind::String,
            Value::Array(_) => super::ValueKind::Array,
            Value::Object(_) => super::ValueKind::Object,
        }
    }

    /// Converts into JSON. Non-finite numbers become the strings `NaN`, `Infinity`, `-Infinity`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Boolean(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => number_to_json(*n),
            Value::String(s) => serde_json::Value::String(s.to_string()),
            Value::Array(Seq::Json(items)) => serde_json::Value::Array(items.to_vec()),
            Value::Array(Seq::Owned(items) | Seq::Filtered(items)) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
            Value::Object(Obj::Json(map)) => serde_json::Value::Object((*map).clone()),
            Value::Object(Obj::Owned(pairs)) => {
                serde_json::Value::Object(pairs.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// Reference identity for arrays and objects (GitHub compares them by reference).
    fn identity(&self) -> Option<*const ()> {
        match self {
            Value::Array(Seq::Json(items)) => Some(std::ptr::from_ref(*items).cast()),
            Value::Array(Seq::Owned(items) | Seq::Filtered(items)) => Some(Rc::as_ptr(items).cast()),
            Value::Object(Obj::Json(map)) => Some(std::ptr::from_ref(*map).cast()),
            Value::Object(Obj::Owned(pairs)) => Some(Rc::as_ptr(pairs).cast()),
            _ => None,
        }
    }
}

/// A number as JSON: integers without a fraction, non-finite values as strings.
pub(crate) fn number_to_json(n: f64) -> serde_json::Value {
    if !n.is_finite() {
        return serde_json::Value::String(format_number(n));
    }
    if n == n.trunc() && n.abs() < 9.007_199_254_740_992e15 {
        #[allow(clippy::cast_possible_truncation)]
        let i = n as i64;
        return serde_json::Value::Number(i.into());
    }
    serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Simple per-character uppercase used for GitHub's case-insensitive comparisons
/// (ordinal-ignore-case: the dotless and dotted Turkish i keep their identity).
pub(crate) fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    if c == '\u{0131}' || c == '\u{0130}' || c == '\u{017f}' {
        return c;
    }
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

pub(crate) fn eq_ignore_case(a: &str, b: &str) -> bool {
    let mut a = a.chars().map(fold_char);
    let mut b = b.chars().map(fold_char);
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

pub(crate) fn cmp_ignore_case(a: &str, b: &str) -> std::cmp::Ordering {
    a.chars().map(fold_char).cmp(b.chars().map(fold_char))
}

pub(crate) fn fold_string(s: &str) -> String {
    s.chars().map(fold_char).collect()
}

/// GitHub's `==`: same kind compares by value (strings ignoring case, arrays and objects by
/// reference); different kinds are both coerced to numbers.
pub(crate) fn loose_equals(left: &Value<'_>, right: &Value<'_>) -> bool {
    match (left, right) {
        (Value::Null, Value::Null) => true,
        (Value::Boolean(a), Value::Boolean(b)) => a == b,
        (Value::Number(a), Value::Number(b)) => a == b,
        (Value::String(a), Value::String(b)) => eq_ignore_case(a, b),
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
            left.identity() == right.identity()
        }
        _ => {
            let (a, b) = (left.to_number(), right.to_number());
            a == b
        }
    }
}

/// GitHub's ordering for `<`, `<=`, `>`, `>=`; `None` when the values are not comparable
/// (a `NaN`, arrays or objects), which makes every ordering operator false.
pub(crate) fn loose_compare(left: &Value<'_>, right: &Value<'_>) -> Option<std::cmp::Ordering> {
    match (left, right) {
        (Value::String(a), Value::String(b)) => Some(cmp_ignore_case(a, b)),
        (Value::Boolean(a), Value::Boolean(b)) => Some(a.cmp(b)),
        (Value::Null, Value::Null) => Some(std::cmp::Ordering::Equal),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => None,
        _ => left.to_number().partial_cmp(&right.to_number()),
    }
}
