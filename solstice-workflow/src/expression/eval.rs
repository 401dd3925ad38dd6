//! Tree-walking evaluator.

use std::borrow::Cow;
use std::cell::Cell;
use std::rc::Rc;

use super::error::ExpressionError;
use super::number::format_number;
use super::parser::{BinaryOp, Node};
use super::value::{Obj, Seq, Value, fold_string, loose_compare, loose_equals};
use super::{FileHasher, JobStatus};

/// GitHub's memory budget for one evaluation (strings built by functions count two bytes per
/// character, as .NET strings do).
const MAX_MEMORY: usize = 1024 * 1024;

pub(crate) struct Scope<'a> {
    pub(crate) contexts: &'a serde_json::Map<String, serde_json::Value>,
    pub(crate) status: JobStatus,
    pub(crate) hasher: Option<&'a dyn FileHasher>,
    memory: Cell<usize>,
}

impl<'a> Scope<'a> {
    pub(crate) fn new(
        contexts: &'a serde_json::Map<String, serde_json::Value>,
        status: JobStatus,
        hasher: Option<&'a dyn FileHasher>,
    ) -> Self {
        Scope { contexts, status, hasher, memory: Cell::new(0) }
    }

    fn charge(&self, text: &str) -> Result<(), ExpressionError> {
        let used = self.memory.get().saturating_add(text.len().saturating_mul(2));
        self.memory.set(used);
        if used > MAX_MEMORY {
            return Err(ExpressionError::evaluation("The maximum allowed memory size was exceeded"));
        }
        Ok(())
    }

    pub(crate) fn eval(&self, node: &Node) -> Result<Value<'a>, ExpressionError> {
        Ok(match node {
            Node::Null => Value::Null,
            Node::Boolean(b) => Value::Boolean(*b),
            Node::Number(n) => Value::Number(*n),
            Node::String(s) => Value::String(Cow::Owned(s.clone())),
            Node::NamedValue(name) => {
                let found = self
                    .contexts
                    .get(name.as_str())
                    .or_else(|| {
                        self.contexts.iter().find(|(k, _)| super::value::eq_ignore_case(k, name)).map(|(_, v)| v)
                    });
                found.map_or(Value::Null, Value::from_json)
            }
            Node::Index(target, key) => {
                let target = self.eval(target)?;
                let key = self.eval(key)?;
                index(&target, &key)
            }
            Node::Wildcard(target) => {
                let target = self.eval(target)?;
                let items = match &target {
                    Value::Array(Seq::Filtered(items)) => {
                        let mut out = Vec::new();
                        for item in items.iter() {
                            match item {
                                Value::Array(_) => out.extend(item.elements()),
                                Value::Object(_) => out.extend(item.property_values()),
                                _ => {}
                            }
                        }
                        out
                    }
                    Value::Array(_) => target.elements(),
                    Value::Object(_) => target.property_values(),
                    _ => Vec::new(),
                };
                Value::Array(Seq::Filtered(Rc::new(items)))
            }
            Node::Not(operand) => Value::Boolean(!self.eval(operand)?.truthy()),
            Node::Binary(op, left, right) => {
                let left = self.eval(left)?;
                let right = self.eval(right)?;
                let ordering = || loose_compare(&left, &right);
                Value::Boolean(match op {
                    BinaryOp::Equal => loose_equals(&left, &right),
                    BinaryOp::NotEqual => !loose_equals(&left, &right),
                    BinaryOp::Less => ordering().is_some_and(std::cmp::Ordering::is_lt),
                    BinaryOp::LessEqual => ordering().is_some_and(std::cmp::Ordering::is_le),
                    BinaryOp::Greater => ordering().is_some_and(std::cmp::Ordering::is_gt),
                    BinaryOp::GreaterEqual => ordering().is_some_and(std::cmp::Ordering::is_ge),
                })
            }
            Node::And(operands) => {
                let mut last = Value::Null;
                for operand in operands {
                    last = self.eval(operand)?;
                    if !last.truthy() {
                        break;
                    }
                }
                last
            }
            Node::Or(operands) => {
                let mut last = Value::Null;
                for operand in operands {
                    last = self.eval(operand)?;
                    if last.truthy() {
                        break;
                    }
                }
                last
            }
            Node::Call(name, args) => self.call(name, args)?,
        })
    }

    fn call(&self, name: &str, args: &[Node]) -> Result<Value<'a>, ExpressionError> {
        match name {
            "success" => Ok(Value::Boolean(self.status == JobStatus::Success)),
            "failure" => Ok(Value::Boolean(self.status == JobStatus::Failure)),
            "cancelled" => Ok(Value::Boolean(self.status == JobStatus::Cancelled)),
            "always" => Ok(Value::Boolean(true)),
            "contains" => {
                let haystack = self.eval(&args[0])?;
                let needle = self.eval(&args[1])?;
                Ok(Value::Boolean(match &haystack {
                    Value::Array(_) => haystack.elements().iter().any(|item| loose_equals(item, &needle)),
                    _ => fold_string(&haystack.to_display_string())
                        .contains(&fold_string(&needle.to_display_string())),
                }))
            }
            "startsWith" | "endsWith" => {
                let text = fold_string(&self.eval(&args[0])?.to_display_string());
                let affix = fold_string(&self.eval(&args[1])?.to_display_string());
                Ok(Value::Boolean(if name == "startsWith" {
                    text.starts_with(&affix)
                } else {
                    text.ends_with(&affix)
                }))
            }
            "format" => {
                let template = self.eval(&args[0])?.to_display_string();
                let mut values = Vec::with_capacity(args.len() - 1);
                for arg in &args[1..] {
                    values.push(self.eval(arg)?.to_display_string());
                }
                let text = format_template(&template, &values)?;
                self.charge(&text)?;
                Ok(Value::String(Cow::Owned(text)))
            }
            "join" => {
                let items = self.eval(&args[0])?;
                let separator = match args.get(1) {
                    Some(arg) => match self.eval(arg)? {
                        Value::Array(_) | Value::Object(_) => ",".to_owned(),
                        other => other.to_display_string().into_owned(),
                    },
                    None => ",".to_owned(),
                };
                let text = match &items {
                    Value::Array(_) => items
                        .elements()
                        .iter()
                        .map(|v| v.to_display_string())
                        .collect::<Vec<_>>()
                        .join(&separator),
                    Value::Object(_) => String::new(),
                    other => other.to_display_string().into_owned(),
                };
                self.charge(&text)?;
                Ok(Value::String(Cow::Owned(text)))
            }
            "toJSON" => {
                let value = self.eval(&args[0])?;
                let mut text = String::new();
                write_json(&value, 0, &mut text);
                self.charge(&text)?;
                Ok(Value::String(Cow::Owned(text)))
            }
            "fromJSON" => {
                let value = self.eval(&args[0])?;
                let text = value.to_display_string();
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(json) => Ok(Value::from_owned_json(json)),
                    Err(e) => Err(ExpressionError::evaluation(format!(
                        "Error parsing fromJSON: the text is not valid JSON ({e}): {text}"
                    ))),
                }
            }
            "hashFiles" => {
                let mut patterns = Vec::with_capacity(args.len());
                for arg in args {
                    patterns.push(self.eval(arg)?.to_display_string().into_owned());
                }
                match self.hasher {
                    Some(hasher) => match hasher.hash_files(&patterns) {
                        Ok(hash) => Ok(Value::String(Cow::Owned(hash))),
                        Err(e) => Err(ExpressionError::evaluation(format!("hashFiles failed: {e}"))),
                    },
                    None => Err(ExpressionError::evaluation(
                        "hashFiles() needs the job's files and can only be evaluated while the job runs",
                    )),
                }
            }
            "case" => {
                let mut i = 0;
                while i + 1 < args.len() {
                    match self.eval(&args[i])? {
                        Value::Boolean(true) => return self.eval(&args[i + 1]),
                        Value::Boolean(false) => {}
                        _ => {
                            return Err(ExpressionError::evaluation(
                                "case predicate must evaluate to a boolean value",
                            ));
                        }
                    }
                    i += 2;
                }
                self.eval(&args[args.len() - 1])
            }
            _ => Err(ExpressionError::evaluation(format!("Unrecognized function: '{name}'"))),
        }
    }
}

fn lookup<'a>(target: &Value<'a>, key: &Value<'a>) -> Option<Value<'a>> {
    match target {
        Value::Object(_) => {
            let name = match key {
                Value::Array(_) | Value::Object(_) => return None,
                other => other.to_display_string(),
            };
            target.property(&name)
        }
        Value::Array(_) => {
            let n = key.to_number();
            if n.is_nan() || n.is_infinite() || n < 0.0 {
                return None;
            }
            let n = n.floor();
            if n > 1e15 {
                return None;
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            target.element(n as usize)
        }
        _ => None,
    }
}

fn index<'a>(target: &Value<'a>, key: &Value<'a>) -> Value<'a> {
    match target {
        Value::Array(Seq::Filtered(items)) => {
            Value::Array(Seq::Filtered(Rc::new(items.iter().filter_map(|item| lookup(item, key)).collect())))
        }
        _ => lookup(target, key).unwrap_or(Value::Null),
    }
}

/// `format()`: `{N}` is argument N, `{{` and `}}` are literal braces.
fn format_template(template: &str, args: &[Cow<'_, str>]) -> Result<String, ExpressionError> {
    let invalid = || ExpressionError::evaluation(format!("The following format string is invalid: {template}"));
    let chars: Vec<char> = template.chars().collect();
    let mut out = String::with_capacity(template.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' if chars.get(i + 1) == Some(&'{') => {
                out.push('{');
                i += 2;
            }
            '{' => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && chars[end].is_ascii_digit() {
                    end += 1;
                }
                if end == start || chars.get(end) != Some(&'}') {
                    return Err(invalid());
                }
                let digits: String = chars[start..end].iter().collect();
                let index: usize = digits.parse().map_err(|_| invalid())?;
                let Some(value) = args.get(index) else {
                    return Err(ExpressionError::evaluation(format!(
                        "The following format string references more arguments than were supplied: {template}"
                    )));
                };
                out.push_str(value);
                i = end + 1;
            }
            '}' if chars.get(i + 1) == Some(&'}') => {
                out.push('}');
                i += 2;
            }
            '}' => return Err(invalid()),
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `toJSON()`: two-space indented JSON, as GitHub prints it.
pub(crate) fn write_json(value: &Value<'_>, indent: usize, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&format_number(*n)),
        Value::String(s) => out.push_str(&serde_json::Value::String(s.to_string()).to_string()),
        Value::Array(_) => {
            let items = value.elements();
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent + 1);
                write_json(item, indent + 1, out);
            }
            newline(out, indent);
            out.push(']');
        }
        Value::Object(obj) => {
            let pairs: Vec<(Cow<'_, str>, Value<'_>)> = match obj {
                Obj::Json(map) => map.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), Value::from_json(v))).collect(),
                Obj::Owned(pairs) => pairs.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), v.clone())).collect(),
            };
            if pairs.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (key, item)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent + 1);
                out.push_str(&serde_json::Value::String(key.to_string()).to_string());
                out.push_str(": ");
                write_json(item, indent + 1, out);
            }
            newline(out, indent);
            out.push('}');
        }
    }
}

fn newline(out: &mut String, indent: usize) {
    out.push('\n');
    for _ in 0..indent {
        out.push_str("  ");
    }
}
