//! A YAML tree with source positions, built from the event stream of `granit-parser`
//! (through serde-saphyr's re-export).
//!
//! Plain scalars resolve with the YAML 1.2 core schema as GitHub does (`true`, `0x10`, `.inf`,
//! `~`); quoted and block scalars are strings. Explicit tags outside the core schema are
//! errors. Anchors and aliases are supported (GitHub accepts them since 2025), with a budget
//! so an alias bomb cannot blow up memory. GitHub's [`ReadLimits`] on nesting and on the
//! memory of the tree are enforced while building it.
//!
//! Everything here is linear in the size of the file: duplicate keys are found through a
//! hash set per mapping, never by scanning the keys read so far.

use std::collections::{HashMap, HashSet};

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

use super::limits::{DEPTH_EXCEEDED, Memory, ReadLimits};
use crate::error::{Diagnostics, Pos, WorkflowErrorKind};

/// Upper bound on the nodes an aliased document may expand to: GitHub's `MaxParseEvents`.
const MAX_NODES: usize = 1_000_000;

/// A YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) pos: Pos,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Seq(Vec<Node>),
    /// Keys are strings (anything else is reported as an error while building).
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub(crate) name: String,
    pub(crate) pos: Pos,
}

impl Node {
    pub(crate) fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The scalar as text (`null` is empty), `None` for collections.
    pub(crate) fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Null => Some(String::new()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(crate::expression::format_number(*n)),
            Value::String(s) => Some(s.clone()),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    /// Converts to JSON. Non-finite numbers become the strings `NaN`, `Infinity`, `-Infinity`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => crate::expression::number_to_json(*n),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => serde_json::Value::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(pairs) => {
                serde_json::Value::Object(pairs.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect())
            }
        }
    }
}

/// Resolves a plain scalar with the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Number(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Number(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Number(f64::NAN),
        _ => {}
    }
    if let Some(n) = parse_core_number(text) {
        return Value::Number(n);
    }
    Value::String(text.to_owned())
}

fn parse_core_number(text: &str) -> Option<f64> {
    if let Some(hex) = text.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok().map(|v| v as f64);
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8).ok().map(|v| v as f64);
    }
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    if !crate::expression::is_decimal_literal(body) {
        return None;
    }
    text.parse::<f64>().ok()
}

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    /// A mapping: its pairs, the key waiting for its value, and the keys seen so far in
    /// lower case (GitHub compares keys case-insensitively: `OrdinalIgnoreCase` in
    /// `TemplateReader.HandleMappingWithWellKnownProperties`, actions/runner
    /// src/Sdk/DTObjectTemplating/ObjectTemplating/TemplateReader.cs).
    Map(Pos, usize, Vec<(Key, Node)>, Option<Node>, HashSet<String>),
}

/// Adds the memory of `node` and everything under it (an alias's copy) to `memory`.
fn add_memory(node: &Node, memory: &mut Memory) -> Result<(), super::limits::MemoryExceeded> {
    match &node.value {
        Value::String(s) => memory.string(s),
        Value::Seq(items) => {
            memory.object()?;
            items.iter().try_for_each(|item| add_memory(item, memory))
        }
        Value::Map(pairs) => {
            memory.object()?;
            pairs.iter().try_for_each(|(k, v)| {
                memory.string(&k.name)?;
                add_memory(v, memory)
            })
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => memory.object(),
    }
}

/// Parses `source` into a single-document tree. Problems go to `diag`; `None` when the text
/// is not usable YAML or exceeds `limits`.
pub(crate) fn parse(source: &str, limits: &ReadLimits, diag: &mut Diagnostics) -> Option<Node> {
    let mut memory = Memory::new(&diag.file, limits);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut documents = 0usize;
    let mut root: Option<Node> = None;
    let mut budget = 0usize;
    for event in Parser::new_from_str(source) {
        let (event, span) = match event {
            Ok(e) => e,
            Err(e) => {
                let pos = Pos { line: e.marker().line(), column: e.marker().col() + 1 };
                diag.push(WorkflowErrorKind::Yaml, pos, format!("invalid YAML: {}", e.info()));
                return None;
            }
        };
        let is_map = matches!(event, Event::MappingStart(..));
        let pos = Pos { line: span.start.line(), column: span.start.col() + 1 };
        let (node, anchor) = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    diag.push(
                        WorkflowErrorKind::Yaml,
                        pos,
                        "a workflow file must contain exactly one YAML document",
                    );
                    return None;
                }
                continue;
            }
            Event::Scalar(text, style, anchor, tag) => {
                // GitHub places a tag's errors at the tag (`!!int "300"`), not at the value.
                let tag_pos = || tag_start(source, span.start.byte_offset(), pos);
                let value = match (&tag, style) {
                    (Some(tag), _) => match tag.core_suffix() {
                        Some("str") => Value::String(text.to_string()),
                        Some("null") => Value::Null,
                        Some(kind @ ("bool" | "int" | "float")) => {
                            if style != ScalarStyle::Plain {
                                diag.push(
                                    WorkflowErrorKind::Yaml,
                                    tag_pos(),
                                    format!("The scalar style '{style:?}' is not valid with the tag 'tag:yaml.org,2002:{kind}'"),
                                );
                                Value::String(text.to_string())
                            } else {
                                match (kind, resolve_plain(&text)) {
                                    ("bool", v @ Value::Bool(_)) => v,
                                    ("float" | "int", v @ Value::Number(_)) => v,
                                    _ => {
                                        diag.push(
                                            WorkflowErrorKind::Yaml,
                                            tag_pos(),
                                            format!("The value '{text}' is invalid for the type 'tag:yaml.org,2002:{kind}'"),
                                        );
                                        Value::String(text.to_string())
                                    }
                                }
                            }
                        }
                        _ => {
                            diag.push(
                                WorkflowErrorKind::Yaml,
                                pos,
                                format!("Unexpected tag '{}{}'", tag.handle(), tag.suffix()),
                            );
                            Value::String(text.to_string())
                        }
                    },
                    (None, ScalarStyle::Plain) => resolve_plain(&text),
                    (None, _) => Value::String(text.to_string()),
                };
                let counted = match &value {
                    Value::String(s) => memory.string(s),
                    _ => memory.object(),
                };
                if counted.is_err() {
                    diag.push(WorkflowErrorKind::Limit, pos, Memory::EXCEEDED);
                    return None;
                }
                (Some(Node { value, pos }), anchor)
            }
            Event::SequenceStart(_, anchor, ref tag) | Event::MappingStart(_, anchor, ref tag) => {
                check_collection_tag(tag.as_deref(), if is_map { "map" } else { "seq" }, pos, diag);
                // GitHub counts the collections open, the document's mapping included, and
                // refuses one more than the limit (`TemplateMemory.IncrementDepth`).
                if stack.len() >= limits.max_depth {
                    diag.push(WorkflowErrorKind::Limit, pos, DEPTH_EXCEEDED);
                    return None;
                }
                if memory.object().is_err() {
                    diag.push(WorkflowErrorKind::Limit, pos, Memory::EXCEEDED);
                    return None;
                }
                stack.push(if is_map {
                    Frame::Map(pos, anchor, Vec::new(), None, HashSet::new())
                } else {
                    Frame::Seq(pos, anchor, Vec::new())
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(pos, anchor, items)) => (Some(Node { value: Value::Seq(items), pos }), anchor),
                _ => return None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(pos, anchor, pairs, _, _)) => (Some(Node { value: Value::Map(pairs), pos }), anchor),
                _ => return None,
            },
            Event::Alias(id) => match anchors.get(&id) {
                Some(node) => {
                    budget = budget.saturating_add(count_nodes(node));
                    if budget > MAX_NODES {
                        diag.push(WorkflowErrorKind::Yaml, pos, "the YAML aliases expand to too many nodes");
                        return None;
                    }
                    // The copy's nesting adds to the alias's own: deeper than allowed is the
                    // same error as written out.
                    if stack.len() + node_depth(node) > limits.max_depth {
                        diag.push(WorkflowErrorKind::Limit, pos, DEPTH_EXCEEDED);
                        return None;
                    }
                    if add_memory(node, &mut memory).is_err() {
                        diag.push(WorkflowErrorKind::Limit, pos, Memory::EXCEEDED);
                        return None;
                    }
                    (Some(node.clone()), 0)
                }
                None => {
                    diag.push(WorkflowErrorKind::Yaml, pos, "alias to an unknown anchor");
                    return None;
                }
            },
            _ => continue,
        };
        let Some(node) = node else { continue };
        budget += 1;
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, pairs, pending, seen)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    let name = match &key.value {
                        Value::String(s) => s.clone(),
                        Value::Bool(_) | Value::Number(_) => key.scalar_text().unwrap_or_default(),
                        _ => {
                            diag.syntax(key.pos, format!("Unexpected value '{}'", key.scalar_text().unwrap_or_default()));
                            continue;
                        }
                    };
                    if !seen.insert(name.to_lowercase()) {
                        diag.syntax(key.pos, format!("'{name}' is already defined"));
                        continue;
                    }
                    pairs.push((Key { name, pos: key.pos }, node));
                }
            },
        }
    }
    if root.is_none() {
        diag.push(WorkflowErrorKind::Yaml, Pos { line: 1, column: 1 }, "the workflow file is empty");
    }
    root
}

/// Where the tag of the scalar at `pos` (byte `offset`) starts: the `!` of the word before
/// the value on its line, or `pos` when there is none. Looks only at that word, so it costs
/// no more than the tag's length.
fn tag_start(source: &str, offset: Option<usize>, pos: Pos) -> Pos {
    let Some(before) = offset.and_then(|o| source.get(..o)) else { return pos };
    let word_end = before.trim_end_matches([' ', '\t']);
    let word_start = word_end.rfind([' ', '\t', '\n', '\r']).map_or(0, |i| i + 1);
    let word = &word_end[word_start..];
    if !word.starts_with('!') {
        return pos;
    }
    let back = before[word_start..].chars().count();
    Pos { line: pos.line, column: pos.column.saturating_sub(back).max(1) }
}

fn check_collection_tag(
    tag: Option<&serde_saphyr::granit_parser::Tag>,
    expected: &str,
    pos: Pos,
    diag: &mut Diagnostics,
) {
    if let Some(tag) = tag
        && tag.core_suffix() != Some(expected)
    {
        diag.push(WorkflowErrorKind::Yaml, pos, format!("Unexpected tag '{}{}'", tag.handle(), tag.suffix()));
    }
}

/// How many collections deep `node` nests (0 for a scalar).
fn node_depth(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(node_depth).max().unwrap_or(0),
        Value::Map(pairs) => 1 + pairs.iter().map(|(_, v)| node_depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

fn count_nodes(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Map(pairs) => 1 + pairs.iter().map(|(_, v)| count_nodes(v) + 1).sum::<usize>(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Node {
        let mut diag = Diagnostics::new("t.yml");
        let node = parse(text, &ReadLimits::default(), &mut diag);
        assert!(!diag.has_errors(), "{:?}", diag.errors);
        node.expect("a document")
    }

    #[test]
    fn resolves_core_schema_scalars() {
        let node = parse_ok("[true, 0x10, 0755, .inf, ~, '1', 1.5, yes]");
        let json = node.to_json();
        assert_eq!(json, serde_json::json!([true, 16, 755, "Infinity", null, "1", 1.5, "yes"]));
    }

    #[test]
    fn positions_are_one_based() {
        let node = parse_ok("a:\n  b: c\n");
        let b = node.get("a").and_then(|a| a.get("b")).expect("b");
        assert_eq!(b.pos, Pos { line: 2, column: 6 });
    }

    #[test]
    fn aliases_expand_and_bombs_stop() {
        let node = parse_ok("a: &x [1, 2]\nb: *x\n");
        assert_eq!(node.to_json(), serde_json::json!({"a": [1, 2], "b": [1, 2]}));
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let mut diag = Diagnostics::new("t.yml");
        assert!(parse(&bomb, &ReadLimits::default(), &mut diag).is_none());
    }
}
