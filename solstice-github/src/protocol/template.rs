//! The `TemplateToken` encoding of steps, env, defaults and outputs.

use serde_json::{Map, Value};

use crate::json::{field, i64_field, str_field};

/// A template token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Sequence(Vec<Token>),
    Mapping(Vec<(Token, Token)>),
    /// An expression, without `${{ }}`.
    Expression(String),
    /// `${{ insert }}` and friends (mapping keys).
    Directive(String),
}

impl Token {
    /// Reads a token; unknown shapes become `Null`.
    pub fn parse(value: &Value) -> Token {
        match value {
            Value::Null => Token::Null,
            Value::Bool(b) => Token::Bool(*b),
            Value::Number(n) => Token::Number(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => Token::String(s.clone()),
            Value::Array(items) => Token::Sequence(items.iter().map(Token::parse).collect()),
            Value::Object(_) => match i64_field(value, "type") {
                None | Some(0) => Token::String(str_field(value, "lit").unwrap_or_default()),
                Some(1) => Token::Sequence(field(value, "seq").and_then(Value::as_array).into_iter().flatten().map(Token::parse).collect()),
                Some(2) => Token::Mapping(
                    field(value, "map")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|pair| {
                            let key = field(pair, "Key").map(Token::parse).unwrap_or(Token::Null);
                            let value = field(pair, "Value").map(Token::parse).unwrap_or(Token::Null);
                            (key, value)
                        })
                        .collect(),
                ),
                Some(3) => Token::Expression(str_field(value, "expr").unwrap_or_default()),
                Some(4) => Token::Directive(str_field(value, "directive").unwrap_or_default()),
                Some(5) => Token::Bool(field(value, "bool").and_then(crate::json::as_bool).unwrap_or(false)),
                Some(6) => Token::Number(field(value, "num").and_then(Value::as_f64).unwrap_or(0.0)),
                Some(_) => Token::Null,
            },
        }
    }

    /// The literal text of a string token.
    pub fn as_literal(&self) -> Option<&str> {
        match self {
            Token::String(s) => Some(s),
            _ => None,
        }
    }

    /// The entry `key` of a mapping (keys compared case-insensitively).
    pub fn get(&self, key: &str) -> Option<&Token> {
        match self {
            Token::Mapping(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_literal().is_some_and(|k| k.eq_ignore_ascii_case(key)))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text to hand to the engine: a literal as is, an expression as `${{ expr }}`
    /// so that it is evaluated once, at run time, with the step's contexts.
    pub fn template_text(&self) -> String {
        match self {
            Token::Null => String::new(),
            Token::Bool(b) => b.to_string(),
            Token::Number(n) => format_number(*n),
            Token::String(s) => s.clone(),
            Token::Expression(e) => format!("${{{{ {e} }}}}"),
            Token::Directive(d) => format!("${{{{ {d} }}}}"),
            Token::Sequence(_) | Token::Mapping(_) => String::new(),
        }
    }

    /// Evaluates the token into JSON against `contexts`.
    pub fn evaluate(&self, contexts: &Map<String, Value>) -> Result<Value, String> {
        Ok(match self {
            Token::Null | Token::Directive(_) => Value::Null,
            Token::Bool(b) => Value::Bool(*b),
            Token::Number(n) => serde_json::Number::from_f64(*n).map(Value::Number).unwrap_or(Value::Null),
            Token::String(s) => Value::String(s.clone()),
            Token::Expression(e) => {
                solstice_workflow::evaluate_expression(e, contexts).map_err(|err| format!("`{e}`: {err}"))?.value
            }
            Token::Sequence(items) => {
                Value::Array(items.iter().map(|t| t.evaluate(contexts)).collect::<Result<_, _>>()?)
            }
            Token::Mapping(pairs) => {
                let mut map = Map::new();
                for (k, v) in pairs {
                    map.insert(k.evaluate_string(contexts)?, v.evaluate(contexts)?);
                }
                Value::Object(map)
            }
        })
    }

    /// Evaluates the token into a string the way GitHub substitutes a value in text.
    pub fn evaluate_string(&self, contexts: &Map<String, Value>) -> Result<String, String> {
        match self {
            Token::Expression(e) => solstice_workflow::interpolate(&format!("${{{{ {e} }}}}"), contexts)
                .map_err(|err| format!("`{e}`: {err}")),
            Token::String(s) => Ok(s.clone()),
            other => Ok(match other.evaluate(contexts)? {
                Value::Null => String::new(),
                Value::String(s) => s,
                Value::Number(n) => n.as_f64().map(format_number).unwrap_or_else(|| n.to_string()),
                v => v.to_string(),
            }),
        }
    }
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { n.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_token_form_parses() {
        let value = json!({"type": 2, "map": [
            {"Key": "script", "Value": {"type": 3, "expr": "format('echo {0}', github.sha)"}},
            {"key": {"type": 0, "lit": "shell", "line": 3}, "value": "bash"},
            {"Key": "n", "Value": {"type": 6, "num": 5}},
            {"Key": "b", "Value": {"type": 5, "bool": true}},
            {"Key": "nil", "Value": {"type": 7}},
            {"Key": "seq", "Value": {"type": 1, "seq": ["a", {"lit": "b"}]}},
        ]});
        let token = Token::parse(&value);
        assert_eq!(token.get("SCRIPT"), Some(&Token::Expression("format('echo {0}', github.sha)".into())));
        assert_eq!(token.get("shell"), Some(&Token::String("bash".into())));
        assert_eq!(token.get("n"), Some(&Token::Number(5.0)));
        assert_eq!(token.get("b"), Some(&Token::Bool(true)));
        assert_eq!(token.get("nil"), Some(&Token::Null));
        assert_eq!(token.get("seq"), Some(&Token::Sequence(vec![Token::String("a".into()), Token::String("b".into())])));
    }

    #[test]
    fn expressions_evaluate_with_format_escapes() {
        let contexts = json!({"github": {"sha": "abc"}});
        let contexts = contexts.as_object().expect("object");
        let token = Token::Expression("format('echo \"{0}\" {{x}} ''q''', github.sha)".into());
        assert_eq!(token.evaluate_string(contexts).expect("eval"), "echo \"abc\" {x} 'q'");
        assert_eq!(token.template_text(), "${{ format('echo \"{0}\" {{x}} ''q''', github.sha) }}");
        assert_eq!(
            solstice_workflow::interpolate(&token.template_text(), contexts).expect("interpolate"),
            "echo \"abc\" {x} 'q'"
        );
    }
}
