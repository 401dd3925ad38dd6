//! Stage 1 for the KDL dialect (`.solstice/workflow.kdl`): KDL 2.0 text, parsed with the
//! `kdl` crate and walked by hand into the same [`Workflow`] model the YAML reader builds.
//!
//! The dialect is the Actions model plus two things: `setup` scripts run before a job's
//! steps on guests of one OS family, and jobs fanned out over several images
//! (`runs-on "omnios-r151056" "tiny-linux"`). A fan-out becomes a matrix axis named
//! `runs-on` (first, so planned jobs are named `build (omnios-r151056)` like matrix jobs),
//! which lets stage 2 plan it unchanged. The syntax is documented in `docs/workflow-kdl.md`.

mod scan;

use ::kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use serde_json::{Map, Value};

use super::{
    Job, ReadLimits, Reader, RunDefaults, RunsOn, Setup, Step, Strategy, Workflow, check_needs_at, empty_workflow,
    generated_id_base, id_error, normalize_condition,
};
use crate::error::{Diagnostics, Pos, WorkflowErrorKind, WorkflowErrors};

/// The matrix key a multi-image `runs-on` becomes.
pub(crate) const FAN_OUT_KEY: &str = "runs-on";
/// The `uses:` a `checkout` step stands for.
const CHECKOUT_USES: &str = "actions/checkout@v4";

const WORKFLOW_NODES: &[&str] =
    &["name", "run-name", "on", "env", "defaults", "debug-ssh", "permissions", "concurrency", "setup", "job"];
const JOB_NODES: &[&str] = &[
    "name",
    "runs-on",
    "needs",
    "if",
    "env",
    "defaults",
    "timeout-minutes",
    "continue-on-error",
    "debug-ssh",
    "outputs",
    "matrix",
    "fail-fast",
    "max-parallel",
    "environment",
    "concurrency",
    "permissions",
    "setup",
    "steps",
    "container",
    "services",
    "uses",
];
const STEP_PROPS: &[&str] = &["id", "name", "if", "continue-on-error", "timeout-minutes"];
const RUN_PROPS: &[&str] = &["shell", "working-directory"];
const CHECKOUT_PROPS: &[&str] = &["path", "ref", "fetch-depth", "submodules"];

/// Reads a workflow written in Solstice CI's KDL dialect (stage 1 only) into the same
/// [`Workflow`] model as [`crate::parse_workflow`]: jobs fanned out over several images
/// carry a `runs-on` matrix axis, and `setup` scripts are in [`Workflow::setup`] and
/// [`Job::setup`]. `file_name` is only used in error messages.
///
/// # Errors
/// Every problem found, each with file, line and column: KDL syntax errors as the `kdl` crate
/// reports them, and nodes, arguments or properties the dialect does not allow. A file longer
/// than GitHub's limit for workflow files (1 MiB, see [`ReadLimits`]) is refused unread.
pub fn parse_kdl_workflow(source: &str, file_name: &str) -> Result<Workflow, WorkflowErrors> {
    let mut diag = Diagnostics::new(file_name);
    // GitHub's file-size limit for YAML workflows holds for KDL too: the `kdl` parser keeps
    // every token's formatting, so a bigger file costs far more memory than its size.
    if !super::limits::check_file_size(source, &ReadLimits::default(), &mut diag) {
        return diag.into_result(empty_workflow());
    }
    let lines = Lines::new(source);
    let prepared = match scan::prepare(source) {
        Ok(text) => text,
        Err(refusal) => {
            diag.push(WorkflowErrorKind::Kdl, lines.pos(refusal.offset), refusal.message);
            return diag.into_result(empty_workflow());
        }
    };
    let document = match KdlDocument::parse_v2(&prepared) {
        Ok(document) => document,
        Err(error) => {
            for d in &error.diagnostics {
                let mut message = d.message.clone().unwrap_or_else(|| "invalid KDL".to_owned());
                let word: String = source.get(d.span.offset()..).unwrap_or_default().chars().take_while(|c| c.is_ascii_alphabetic()).collect();
                if matches!(word.as_str(), "true" | "false" | "null" | "inf" | "nan") {
                    message = format!("'{word}' is not a KDL 2.0 value; write #{word}");
                } else if let Some(help) = &d.help {
                    message.push_str(" (");
                    message.push_str(help);
                    message.push(')');
                }
                diag.push(WorkflowErrorKind::Kdl, lines.pos(d.span.offset()), message);
            }
            if diag.errors.is_empty() {
                diag.push(WorkflowErrorKind::Kdl, Pos { line: 1, column: 1 }, "invalid KDL");
            }
            return diag.into_result(empty_workflow());
        }
    };
    let mut reader = KdlReader { lines, r: Reader::new(&mut diag) };
    let workflow = reader.workflow(&document);
    diag.into_result(workflow)
}

/// Byte offsets to 1-based line and column (in characters), counting KDL's newlines.
///
/// Each lookup is a binary search: a file of one long line (a hostile one, or a minified
/// one) must not cost a scan of the line per position asked for.
struct Lines<'s> {
    src: &'s str,
    starts: Vec<usize>,
    /// Byte offsets of the characters longer than one byte, and for each the bytes beyond the
    /// first of it and all before it, so that a column counts characters without decoding.
    wide: Vec<(usize, usize)>,
}

impl<'s> Lines<'s> {
    fn new(src: &'s str) -> Self {
        let mut starts = vec![0];
        let mut wide = Vec::new();
        let mut extra = 0;
        let mut chars = src.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c.len_utf8() > 1 {
                extra += c.len_utf8() - 1;
                wide.push((i, extra));
            }
            if scan::is_newline(c) {
                if c == '\r' && chars.peek().is_some_and(|(_, n)| *n == '\n') {
                    chars.next();
                    starts.push(i + 2);
                } else {
                    starts.push(i + c.len_utf8());
                }
            }
        }
        Lines { src, starts, wide }
    }

    /// Bytes beyond one per character in the text before `offset`.
    fn extra_before(&self, offset: usize) -> usize {
        match self.wide.partition_point(|(at, _)| *at < offset) {
            0 => 0,
            n => self.wide[n - 1].1,
        }
    }

    fn pos(&self, offset: usize) -> Pos {
        let mut offset = offset.min(self.src.len());
        while !self.src.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|s| *s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = (offset - start) - (self.extra_before(offset) - self.extra_before(start)) + 1;
        Pos { line, column }
    }
}

/// Ids used in one job: its steps and every setup step that may run before them. The
/// workflow's setup ids are shared by every job through `inherited`, not copied into each.
#[derive(Default, Clone)]
struct IdScope {
    inherited: std::rc::Rc<std::collections::HashSet<String>>,
    /// Lower case: ids compare case-insensitively, as on GitHub.
    user: std::collections::HashSet<String>,
    setup_count: usize,
}

impl IdScope {
    /// Whether `id` is taken (in any case).
    fn contains(&self, id: &str) -> bool {
        let id = id.to_ascii_lowercase();
        self.user.contains(&id) || self.inherited.contains(&id)
    }

    /// The scope each job starts from: these ids, shared rather than copied.
    fn freeze(self) -> IdScope {
        let mut all = std::rc::Rc::unwrap_or_clone(self.inherited);
        all.extend(self.user);
        IdScope { inherited: std::rc::Rc::new(all), user: Default::default(), setup_count: self.setup_count }
    }
}

struct KdlReader<'s, 'd> {
    lines: Lines<'s>,
    r: Reader<'d>,
}

fn is_arg(e: &&KdlEntry) -> bool {
    e.name().is_none()
}

fn describe(value: &KdlValue) -> String {
    match value {
        KdlValue::String(s) => format!("the string \"{s}\""),
        KdlValue::Integer(i) => format!("the number {i}"),
        KdlValue::Float(f) => format!("the number {f}"),
        KdlValue::Bool(b) => format!("#{b}"),
        KdlValue::Null => "#null".to_owned(),
    }
}

impl KdlReader<'_, '_> {
    fn at(&self, offset: usize) -> Pos {
        self.lines.pos(offset)
    }

    fn node_pos(&self, node: &KdlNode) -> Pos {
        self.at(node.name().span().offset())
    }

    fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.r.diag.syntax(pos, message);
    }

    /// Rejects type annotations, which the dialect gives no meaning.
    fn no_types(&mut self, node: &KdlNode) {
        if node.ty().is_some() {
            let pos = self.at(node.span().offset());
            self.error(pos, format!("'{}' has a type annotation, which workflows do not use", node.name().value()));
        }
        for e in node.entries() {
            if let Some(ty) = e.ty() {
                let pos = self.at(ty.span().offset());
                self.error(pos, format!("the type annotation '({})' means nothing in a workflow; remove it", ty.value()));
            }
        }
    }

    fn args<'n>(&self, node: &'n KdlNode) -> Vec<&'n KdlEntry> {
        node.entries().iter().filter(is_arg).collect()
    }

    fn props<'n>(&self, node: &'n KdlNode) -> Vec<(&'n str, &'n KdlEntry)> {
        node.entries().iter().filter_map(|e| e.name().map(|n| (n.value(), e))).collect()
    }

    fn no_args(&mut self, node: &KdlNode, hint: &str) {
        if let Some(e) = self.args(node).first() {
            let pos = self.at(e.span().offset());
            self.error(pos, format!("'{}' takes no arguments; {hint}", node.name().value()));
        }
    }

    fn no_props(&mut self, node: &KdlNode, hint: &str) {
        if let Some((name, e)) = self.props(node).first() {
            let pos = self.at(e.span().offset());
            self.error(pos, format!("'{}' takes no property '{name}'; {hint}", node.name().value()));
        }
    }

    fn no_children(&mut self, node: &KdlNode, hint: &str) {
        if let Some(children) = node.children() {
            let pos = self.at(children.span().offset());
            self.error(pos, format!("'{}' takes no {{ }} block; {hint}", node.name().value()));
        }
    }

    /// A JSON scalar from a KDL value (numbers must fit JSON: no `#inf`, `#nan`, 128-bit).
    fn scalar(&mut self, entry: &KdlEntry) -> Option<Value> {
        let pos = self.at(entry.span().offset());
        match entry.value() {
            KdlValue::String(s) => {
                self.r.check_template(s, pos);
                Some(Value::String(s.clone()))
            }
            KdlValue::Integer(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(n), _) => Some(Value::from(n)),
                (_, Ok(n)) => Some(Value::from(n)),
                _ => {
                    self.error(pos, format!("the number {i} is too large"));
                    None
                }
            },
            KdlValue::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => Some(Value::Number(n)),
                None => {
                    self.error(pos, "#inf, #-inf and #nan are not allowed in a workflow");
                    None
                }
            },
            KdlValue::Bool(b) => Some(Value::Bool(*b)),
            KdlValue::Null => Some(Value::Null),
        }
    }

    /// A value used as text (env, checkout inputs): strings, numbers and booleans.
    fn text(&mut self, entry: &KdlEntry, what: &str) -> Option<String> {
        let pos = self.at(entry.span().offset());
        match self.scalar(entry)? {
            Value::String(s) => Some(s),
            Value::Null => {
                self.error(pos, format!("{what} must be a string, a number or #true/#false, not #null"));
                None
            }
            other => Some(crate::plan::value_text(&other)),
        }
    }

    /// A string argument or property value; other types are errors.
    fn string(&mut self, entry: &KdlEntry, what: &str) -> Option<String> {
        let pos = self.at(entry.span().offset());
        match entry.value() {
            KdlValue::String(s) => {
                self.r.check_template(s, pos);
                Some(s.clone())
            }
            other => {
                self.error(pos, format!("{what} must be a string, not {}", describe(other)));
                None
            }
        }
    }

    /// The one argument of a node that takes one and nothing else, with its position. Shared by
    /// [`Self::single_string`] and [`Self::single_value`] so both report a wrong shape alike;
    /// `kind` ("string", "value") names the argument in that error.
    fn single_arg<'n>(&mut self, node: &'n KdlNode, example: &str, kind: &str) -> Option<(&'n KdlEntry, Pos)> {
        let hint = format!("write it as: {example}");
        self.no_props(node, &hint);
        self.no_children(node, &hint);
        match self.args(node).as_slice() {
            [one] => Some((*one, self.at(one.span().offset()))),
            _ => {
                let pos = self.node_pos(node);
                self.error(pos, format!("'{}' takes exactly one {kind}; {hint}", node.name().value()));
                None
            }
        }
    }

    /// The one string argument of a node such as `name "CI"`.
    fn single_string(&mut self, node: &KdlNode, example: &str) -> Option<(String, Pos)> {
        let (one, pos) = self.single_arg(node, example, "string")?;
        self.string(one, &format!("'{}'", node.name().value())).map(|s| (s, pos))
    }

    /// The one argument of a node such as `timeout-minutes 30`, as JSON.
    fn single_value(&mut self, node: &KdlNode, example: &str) -> Option<(Value, Pos)> {
        let (one, pos) = self.single_arg(node, example, "value")?;
        self.scalar(one).map(|v| (v, pos))
    }

    /// `timeout-minutes`: a number or an expression.
    fn minutes(&mut self, value: Value, pos: Pos, name: &str) -> Option<Value> {
        match &value {
            Value::Number(n) if n.as_f64().is_some_and(|f| f >= 0.0) => Some(value),
            Value::String(s) if s.contains("${{") => Some(value),
            _ => {
                self.error(pos, format!("'{name}' must be a number of minutes or a ${{{{ }}}} expression, not {value}"));
                None
            }
        }
    }

    /// `debug-ssh #true`: the opt-in to debug SSH into a failed job's machine. It is
    /// written as the env variable YAML workflows use ([`crate::DEBUG_SSH_ENV`]), so both
    /// dialects reach the planner the same way and the job's steps can see it.
    fn debug_ssh(&mut self, node: &KdlNode, env: &mut Map<String, Value>) {
        let Some((value, pos)) = self.single_value(node, "debug-ssh #true") else { return };
        match value {
            Value::Bool(on) => {
                env.insert(crate::DEBUG_SSH_ENV.to_owned(), Value::String(on.to_string()));
            }
            other => self.error(pos, format!("'debug-ssh' must be #true or #false, not {other}")),
        }
    }

    /// `continue-on-error`, `fail-fast`: a boolean or an expression.
    fn flag(&mut self, value: Value, pos: Pos, name: &str) -> Option<Value> {
        match &value {
            Value::Bool(_) => Some(value),
            Value::String(s) if s.contains("${{") => Some(value),
            _ => {
                self.error(pos, format!("'{name}' must be #true, #false or a ${{{{ }}}} expression, not {value}"));
                None
            }
        }
    }

    /// `if`: a string (with or without `${{ }}`) or a boolean, normalized GitHub's way.
    fn condition(&mut self, entry: &KdlEntry) -> String {
        let pos = self.at(entry.span().offset());
        let text = match entry.value() {
            KdlValue::String(s) => s.clone(),
            KdlValue::Bool(b) => b.to_string(),
            other => {
                self.error(pos, format!("'if' must be a condition string, not {}", describe(other)));
                return "success()".to_owned();
            }
        };
        normalize_condition(&text, crate::expression::STANDARD_CONTEXTS).unwrap_or_else(|message| {
            self.r.diag.push(WorkflowErrorKind::Expression, pos, message);
            "success()".to_owned()
        })
    }

    /// Properties as a map of texts: `env CI="true" RUST_LOG="debug"`.
    fn text_props(&mut self, node: &KdlNode, into: &mut Map<String, Value>, example: &str) {
        let hint = format!("write it as: {example}");
        self.no_args(node, &hint);
        self.no_children(node, &hint);
        for (name, entry) in self.props(node) {
            if let Some(text) = self.text(entry, &format!("'{name}'")) {
                into.insert(name.to_owned(), Value::String(text));
            }
        }
    }

    /// Any node as JSON, for values kept as written (`on`, `permissions`, `concurrency`,
    /// `environment`) and matrix values: one argument is a scalar, several an array,
    /// properties and child nodes an object, children all named `-` an array.
    fn json(&mut self, node: &KdlNode) -> Value {
        let args = self.args(node);
        let props = self.props(node);
        if let Some(children) = node.children() {
            if let Some(first) = args.first() {
                let pos = self.at(first.span().offset());
                self.error(pos, format!("'{}' has both arguments and a {{ }} block; use one or the other", node.name().value()));
            }
            let nodes = children.nodes();
            if !nodes.is_empty() && props.is_empty() && nodes.iter().all(|n| n.name().value() == "-") {
                return Value::Array(nodes.iter().map(|n| self.json(n)).collect());
            }
            let mut object = Map::new();
            for (name, entry) in props {
                if let Some(v) = self.scalar(entry) {
                    object.insert(name.to_owned(), v);
                }
            }
            for child in nodes {
                self.no_types(child);
                let value = self.json(child);
                object.insert(child.name().value().to_owned(), value);
            }
            return Value::Object(object);
        }
        if !props.is_empty() {
            if let Some(first) = args.first() {
                let pos = self.at(first.span().offset());
                self.error(pos, format!("'{}' has both arguments and properties; use one or the other", node.name().value()));
            }
            let mut object = Map::new();
            for (name, entry) in props {
                if let Some(v) = self.scalar(entry) {
                    object.insert(name.to_owned(), v);
                }
            }
            return Value::Object(object);
        }
        match args.as_slice() {
            [] => Value::Null,
            [one] => self.scalar(one).unwrap_or(Value::Null),
            many => Value::Array(many.iter().filter_map(|e| self.scalar(e)).collect()),
        }
    }

    fn workflow(&mut self, document: &KdlDocument) -> Workflow {
        let mut workflow = empty_workflow();
        // Ids of the workflow's setup steps, shared by every job.
        let mut shared = IdScope::default();
        let mut seen: Vec<(&str, Pos)> = Vec::new();
        let mut job_nodes = Vec::new();
        for node in document.nodes() {
            self.no_types(node);
            let name = node.name().value();
            let pos = self.node_pos(node);
            if name != "job" && name != "setup" && name != "env" {
                if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                    let message = format!("'{name}' is already set on line {}", first.line);
                    self.error(pos, message);
                    continue;
                }
                seen.push((name, pos));
            }
            match name {
                "name" => workflow.name = self.single_string(node, "name \"CI\"").map(|(s, _)| s),
                "run-name" => workflow.run_name = self.single_string(node, "run-name \"Deploy ${{ github.ref }}\"").map(|(s, _)| s),
                "on" => workflow.on = self.json(node),
                "env" => self.text_props(node, &mut workflow.env, "env CI=\"true\" RUST_LOG=\"debug\""),
                "defaults" => workflow.defaults = self.defaults(node),
                "debug-ssh" => self.debug_ssh(node, &mut workflow.env),
                "permissions" => workflow.permissions = self.json(node),
                "concurrency" => workflow.concurrency = self.json(node),
                "setup" => {
                    if let Some(setup) = self.setup(node, &mut shared) {
                        workflow.setup.push(setup);
                    }
                }
                "job" => job_nodes.push(node),
                "jobs" => self.error(pos, "write each job as its own node: job \"build\" { ... }"),
                other => self.error(
                    pos,
                    format!("unknown node '{other}' at the top of the workflow; expected one of: {}", WORKFLOW_NODES.join(", ")),
                ),
            }
        }
        for setup in &mut workflow.setup {
            self.assign_ids(&mut setup.steps, &mut shared);
        }
        let shared = shared.freeze();
        let mut needs_positions: Vec<Vec<Pos>> = Vec::new();
        let mut job_ids = std::collections::HashSet::new();
        for node in job_nodes {
            if let Some((job, needs)) = self.job(node, &mut job_ids, &shared) {
                workflow.jobs.push(job);
                needs_positions.push(needs);
            }
        }
        let jobs_pos = document.nodes().iter().find(|n| n.name().value() == "job").map_or(Pos { line: 1, column: 1 }, |n| self.node_pos(n));
        let jobs = &workflow.jobs;
        let needs_pos = |job: usize, index: usize| -> Pos {
            needs_positions.get(job).and_then(|p| p.get(index).copied()).unwrap_or(jobs[job].pos)
        };
        check_needs_at(jobs, &needs_pos, jobs_pos, self.r.diag);
        workflow
    }

    fn defaults(&mut self, node: &KdlNode) -> RunDefaults {
        let hint = "write it as: defaults shell=\"bash\" working-directory=\"src\"";
        self.no_args(node, hint);
        self.no_children(node, hint);
        let mut defaults = RunDefaults::default();
        for (name, entry) in self.props(node) {
            match name {
                "shell" => defaults.shell = self.string(entry, "'shell'"),
                "working-directory" => defaults.working_directory = self.string(entry, "'working-directory'"),
                other => {
                    let pos = self.at(entry.span().offset());
                    self.error(pos, format!("'defaults' has no property '{other}'; it takes shell and working-directory"));
                }
            }
        }
        defaults
    }

    fn setup(&mut self, node: &KdlNode, ids: &mut IdScope) -> Option<Setup> {
        let hint = "write it as: setup os=\"illumos\" { run \"pfexec pkg install gcc13\" }";
        self.no_args(node, hint);
        let mut os = None;
        for (name, entry) in self.props(node) {
            match name {
                "os" => os = self.string(entry, "'os'").map(|s| s.to_ascii_lowercase()),
                other => {
                    let pos = self.at(entry.span().offset());
                    self.error(pos, format!("'setup' has no property '{other}'; it takes os, the OS family it is for"));
                }
            }
        }
        let pos = self.node_pos(node);
        let Some(children) = node.children() else {
            self.error(pos, format!("'setup' needs a {{ }} block of steps; {hint}"));
            return None;
        };
        let steps = self.steps(children, ids);
        Some(Setup { os, steps, pos })
    }

    /// Reads a job; returns it with the positions of its `needs`.
    /// Reads a job; `job_ids` holds the (lower-case) ids of the jobs read before it.
    fn job(&mut self, node: &KdlNode, job_ids: &mut std::collections::HashSet<String>, shared: &IdScope) -> Option<(Job, Vec<Pos>)> {
        let pos = self.node_pos(node);
        let hint = "write it as: job \"build\" { runs-on \"omnios\"; steps { run \"make\" } }";
        self.no_props(node, hint);
        let args = self.args(node);
        let id = match args.as_slice() {
            [one] => {
                let id_pos = self.at(one.span().offset());
                let id = match one.value() {
                    KdlValue::String(s) => s.clone(),
                    other => {
                        self.error(id_pos, format!("a job id must be a string, not {}", describe(other)));
                        return None;
                    }
                };
                if let Some(message) = id_error(&id) {
                    self.error(id_pos, message);
                }
                if !job_ids.insert(id.to_ascii_lowercase()) {
                    self.error(id_pos, format!("'{id}' is already defined"));
                    return None;
                }
                id
            }
            _ => {
                self.error(pos, format!("'job' takes exactly one id; {hint}"));
                return None;
            }
        };
        let Some(children) = node.children() else {
            self.error(pos, format!("job '{id}' needs a {{ }} block; {hint}"));
            return None;
        };
        let mut job = Job {
            id,
            name: None,
            needs: Vec::new(),
            runs_on: None,
            condition: "success()".to_owned(),
            env: Map::new(),
            defaults: RunDefaults::default(),
            timeout_minutes: None,
            continue_on_error: None,
            outputs: Map::new(),
            strategy: None,
            environment: Value::Null,
            concurrency: Value::Null,
            permissions: Value::Null,
            container: Value::Null,
            services: Value::Null,
            uses: None,
            steps: Vec::new(),
            setup: Vec::new(),
            pos,
            key_pos: std::collections::HashMap::new(),
        };
        let mut needs_pos = Vec::new();
        let mut fan_out: Option<Vec<String>> = None;
        let mut runs_on_pos = pos;
        let mut matrix: Option<(Value, Pos)> = None;
        let mut fail_fast: Option<Value> = None;
        let mut max_parallel: Option<Value> = None;
        let mut ids = shared.clone();
        let mut steps_node: Option<&KdlNode> = None;
        let mut setup_nodes = Vec::new();
        let mut seen: Vec<(&str, Pos)> = Vec::new();
        for child in children.nodes() {
            self.no_types(child);
            let name = child.name().value();
            let child_pos = self.node_pos(child);
            if !matches!(name, "setup" | "env") {
                if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                    let message = format!("'{name}' is already set on line {}", first.line);
                    self.error(child_pos, message);
                    continue;
                }
                seen.push((name, child_pos));
            }
            if let Some(key) = JOB_NODES.iter().find(|k| **k == name) {
                let value_pos = self.args(child).first().map_or(child_pos, |e| self.at(e.span().offset()));
                job.key_pos.insert(key, value_pos);
            }
            match name {
                "name" => job.name = self.single_string(child, "name \"Build ${{ matrix.version }}\"").map(|(s, _)| s),
                "runs-on" => {
                    runs_on_pos = child_pos;
                    let (runs_on, several) = self.runs_on(child);
                    job.runs_on = Some(runs_on);
                    fan_out = several;
                }
                "needs" => {
                    self.no_props(child, "write it as: needs \"lint\" \"test\"");
                    self.no_children(child, "write it as: needs \"lint\" \"test\"");
                    for e in self.args(child) {
                        let p = self.at(e.span().offset());
                        if let Some(need) = self.string(e, "a need") {
                            if need.contains("${{") {
                                self.error(p, "A template expression is not allowed in this context");
                            }
                            job.needs.push(need);
                            needs_pos.push(p);
                        }
                    }
                    if job.needs.is_empty() && needs_pos.is_empty() {
                        self.error(child_pos, "'needs' takes the ids of the jobs this one waits for: needs \"lint\" \"test\"");
                    }
                }
                "if" => {
                    self.no_props(child, "write it as: if \"github.ref == 'refs/heads/main'\"");
                    self.no_children(child, "write it as: if \"github.ref == 'refs/heads/main'\"");
                    match self.args(child).as_slice() {
                        [one] => job.condition = self.condition(one),
                        _ => self.error(child_pos, "'if' takes exactly one condition"),
                    }
                }
                "env" => self.text_props(child, &mut job.env, "env CI=\"true\""),
                "defaults" => job.defaults = self.defaults(child),
                "timeout-minutes" => {
                    if let Some((v, p)) = self.single_value(child, "timeout-minutes 30") {
                        job.timeout_minutes = self.minutes(v, p, name);
                    }
                }
                "continue-on-error" => {
                    if let Some((v, p)) = self.single_value(child, "continue-on-error #true") {
                        job.continue_on_error = self.flag(v, p, name);
                    }
                }
                "debug-ssh" => self.debug_ssh(child, &mut job.env),
                "outputs" => self.text_props(child, &mut job.outputs, "outputs version=\"${{ steps.v.outputs.version }}\""),
                "matrix" => matrix = self.matrix(child).map(|m| (m, child_pos)),
                "fail-fast" => {
                    if let Some((v, p)) = self.single_value(child, "fail-fast #false") {
                        fail_fast = self.flag(v, p, name);
                    }
                }
                "max-parallel" => {
                    if let Some((v, p)) = self.single_value(child, "max-parallel 2") {
                        max_parallel = match &v {
                            Value::Number(n) if n.as_u64().is_some_and(|n| n > 0) => Some(v),
                            Value::String(s) if s.contains("${{") => Some(v),
                            _ => {
                                self.error(p, format!("'max-parallel' must be a positive whole number, not {v}"));
                                None
                            }
                        };
                    }
                }
                "environment" => job.environment = self.json(child),
                "concurrency" => job.concurrency = self.json(child),
                "permissions" => job.permissions = self.json(child),
                "container" => job.container = self.json(child),
                "services" => job.services = self.json(child),
                "uses" => job.uses = self.single_string(child, "uses \"./.github/workflows/build.yml\"").map(|(s, _)| s),
                "setup" => setup_nodes.push(child),
                "steps" => steps_node = Some(child),
                "run" | "checkout" => self.error(
                    child_pos,
                    format!("'{name}' is a step: put it in the job's steps block: steps {{ {name} ... }}"),
                ),
                other => self.error(
                    child_pos,
                    format!("unknown node '{other}' in job '{}'; expected one of: {}", job.id, JOB_NODES.join(", ")),
                ),
            }
        }
        for node in setup_nodes {
            if let Some(mut setup) = self.setup(node, &mut ids) {
                self.assign_ids(&mut setup.steps, &mut ids);
                job.setup.push(setup);
            }
        }
        if let Some(node) = steps_node {
            let hint = "write it as: steps { run \"make\"; checkout }";
            self.no_args(node, hint);
            self.no_props(node, hint);
            match node.children() {
                Some(children) => job.steps = self.steps(children, &mut ids),
                None => {
                    let p = self.node_pos(node);
                    self.error(p, format!("'steps' needs a {{ }} block; {hint}"));
                }
            }
            generate_step_ids(&mut job.steps);
        }
        if job.uses.is_none() && job.runs_on.is_none() {
            self.error(pos, format!("job '{}' has no runs-on; add a runs-on node such as: runs-on \"omnios-r151056\"", job.id));
        }
        // The strategy: matrix, fan-out, fail-fast, max-parallel.
        let mut matrix_pos = matrix.as_ref().map_or(runs_on_pos, |(_, p)| *p);
        let mut matrix = matrix.map(|(m, _)| m);
        if let Some(labels) = fan_out {
            let axis = Value::Array(labels.into_iter().map(Value::String).collect());
            match matrix.take() {
                None => {
                    let mut m = Map::new();
                    m.insert(FAN_OUT_KEY.to_owned(), axis);
                    matrix = Some(Value::Object(m));
                    matrix_pos = runs_on_pos;
                }
                Some(Value::Object(user)) => {
                    if user.contains_key(FAN_OUT_KEY) {
                        self.error(matrix_pos, format!("the matrix of job '{}' has a '{FAN_OUT_KEY}' key, but runs-on already lists several images; list the images in one place", job.id));
                    }
                    let mut m = Map::new();
                    m.insert(FAN_OUT_KEY.to_owned(), axis);
                    m.extend(user);
                    matrix = Some(Value::Object(m));
                }
                Some(_) => self.error(
                    matrix_pos,
                    format!("job '{}' runs on several images, so its matrix must be written out, not taken from an expression", job.id),
                ),
            }
            if let Some(runs_on) = &mut job.runs_on {
                runs_on.labels = vec![format!("${{{{ matrix['{FAN_OUT_KEY}'] }}}}")];
            }
        }
        if matrix.is_some() || fail_fast.is_some() || max_parallel.is_some() {
            job.strategy = Some(Strategy {
                matrix,
                fail_fast: fail_fast.unwrap_or(Value::Bool(true)),
                max_parallel,
                matrix_pos,
            });
        }
        Some((job, needs_pos))
    }

    /// `runs-on "label"`, `runs-on "a" "b"` (one job per label), `runs-on group="g" "label"`
    /// or `runs-on { labels "self-hosted" "omnios"; group "g" }` (one runner with all
    /// labels). Returns the runs-on and, for a fan-out, its labels.
    fn runs_on(&mut self, node: &KdlNode) -> (RunsOn, Option<Vec<String>>) {
        let mut runs_on = RunsOn::default();
        let hint = "write it as: runs-on \"omnios-r151056\" (one image), runs-on \"omnios-r151056\" \"tiny-linux\" (one job per image) or runs-on { labels \"self-hosted\" \"omnios\" } (one runner with all labels)";
        for (name, entry) in self.props(node) {
            match name {
                "group" => runs_on.group = self.string(entry, "'group'"),
                other => {
                    let pos = self.at(entry.span().offset());
                    self.error(pos, format!("'runs-on' has no property '{other}'; {hint}"));
                }
            }
        }
        let args = self.args(node);
        if let Some(children) = node.children() {
            if let Some(first) = args.first() {
                let pos = self.at(first.span().offset());
                self.error(pos, format!("'runs-on' has both labels and a {{ }} block; {hint}"));
            }
            for child in children.nodes() {
                self.no_types(child);
                match child.name().value() {
                    "labels" => {
                        self.no_props(child, hint);
                        self.no_children(child, hint);
                        for e in self.args(child) {
                            if let Some(label) = self.string(e, "a runs-on label") {
                                runs_on.labels.push(label);
                            }
                        }
                    }
                    "group" => runs_on.group = self.single_string(child, "group \"org/linux\"").map(|(s, _)| s),
                    other => {
                        let pos = self.node_pos(child);
                        self.error(pos, format!("'runs-on' blocks hold labels and group, not '{other}'"));
                    }
                }
            }
            if runs_on.labels.is_empty() {
                let pos = self.node_pos(node);
                self.error(pos, format!("'runs-on' names no label; {hint}"));
            }
            return (runs_on, None);
        }
        let labels: Vec<String> = args.iter().filter_map(|e| self.string(e, "a runs-on label")).collect();
        if args.is_empty() {
            let pos = self.node_pos(node);
            self.error(pos, format!("'runs-on' names no label; {hint}"));
        }
        if labels.len() > 1 {
            let mut unique: Vec<&String> = Vec::new();
            for (label, entry) in labels.iter().zip(&args) {
                if unique.contains(&label) {
                    let pos = self.at(entry.span().offset());
                    self.error(pos, format!("the image '{label}' is listed twice in runs-on"));
                }
                unique.push(label);
            }
            runs_on.labels = labels.clone();
            return (runs_on, Some(labels));
        }
        runs_on.labels = labels;
        (runs_on, None)
    }

    /// `matrix { version "1.2" "1.3"; include version="1.4" experimental=#true }` or
    /// `matrix "${{ fromJSON(vars.MATRIX) }}"`.
    fn matrix(&mut self, node: &KdlNode) -> Option<Value> {
        let hint = "write it as: matrix { version \"1.2\" \"1.3\"; include version=\"1.4\" }";
        self.no_props(node, hint);
        let pos = self.node_pos(node);
        let Some(children) = node.children() else {
            let (text, text_pos) = self.single_string(node, "matrix \"${{ fromJSON(vars.MATRIX) }}\" or matrix { version \"1.2\" \"1.3\" }")?;
            if !text.contains("${{") {
                self.error(text_pos, format!("a matrix given as a string must be a ${{{{ }}}} expression; {hint}"));
                return None;
            }
            return Some(Value::String(text));
        };
        self.no_args(node, hint);
        let mut matrix = Map::new();
        let mut include = Vec::new();
        let mut exclude = Vec::new();
        for child in children.nodes() {
            self.no_types(child);
            let name = child.name().value();
            let child_pos = self.node_pos(child);
            match name {
                "include" | "exclude" => {
                    if !self.args(child).is_empty() {
                        let p = self.at(self.args(child)[0].span().offset());
                        self.error(p, format!("'{name}' takes key=value properties (and key blocks), not arguments: {name} os=\"omnios\" version=\"1.4\""));
                    }
                    let entry = match self.json(child) {
                        Value::Object(o) if !o.is_empty() => Value::Object(o),
                        _ => {
                            self.error(child_pos, format!("'{name}' names no key: {name} os=\"omnios\" version=\"1.4\""));
                            continue;
                        }
                    };
                    if name == "include" { include.push(entry) } else { exclude.push(entry) }
                }
                _ if matrix.contains_key(name) => {
                    self.error(child_pos, format!("the matrix key '{name}' is already defined"));
                }
                _ => {
                    let args = self.args(child);
                    let value = if child.children().is_some() {
                        match self.json(child) {
                            Value::Array(items) => Value::Array(items),
                            _ => {
                                self.error(child_pos, format!("matrix key '{name}': a block lists its values as '-' nodes: {name} {{ - arch=\"x86_64\"; - arch=\"aarch64\" }}"));
                                continue;
                            }
                        }
                    } else if !self.props(child).is_empty() {
                        self.error(child_pos, format!("matrix key '{name}' takes values as arguments ({name} \"a\" \"b\"), or objects as '-' nodes in a block"));
                        continue;
                    } else {
                        match args.as_slice() {
                            [] => {
                                self.r.diag.push(WorkflowErrorKind::Matrix, child_pos, format!("Matrix vector '{name}' does not contain any values"));
                                continue;
                            }
                            [one] if matches!(one.value(), KdlValue::String(s) if s.contains("${{")) => {
                                self.scalar(one).unwrap_or(Value::Null)
                            }
                            many => Value::Array(many.iter().filter_map(|e| self.scalar(e)).collect()),
                        }
                    };
                    matrix.insert(name.to_owned(), value);
                }
            }
        }
        if !include.is_empty() {
            matrix.insert("include".to_owned(), Value::Array(include));
        }
        if !exclude.is_empty() {
            matrix.insert("exclude".to_owned(), Value::Array(exclude));
        }
        if matrix.is_empty() {
            self.r.diag.push(WorkflowErrorKind::Matrix, pos, "the matrix is empty; give it at least one key with values");
            return None;
        }
        Some(Value::Object(matrix))
    }

    /// The nodes of a `steps` or `setup` block.
    fn steps(&mut self, children: &KdlDocument, ids: &mut IdScope) -> Vec<Step> {
        let mut steps = Vec::new();
        for node in children.nodes() {
            self.no_types(node);
            let pos = self.node_pos(node);
            match node.name().value() {
                "run" => steps.extend(self.run_step(node, ids)),
                "checkout" => steps.extend(self.checkout_step(node, ids)),
                "uses" => self.r.diag.push(
                    WorkflowErrorKind::Unsupported,
                    pos,
                    "Solstice CI runs 'run' steps and the built-in 'checkout' only; replace the action with run steps that do the same work",
                ),
                other => self.error(pos, format!("unknown step '{other}'; a step is 'run \"script\"' or 'checkout'")),
            }
        }
        if children.nodes().is_empty() {
            let pos = self.at(children.span().offset());
            self.error(pos, "this block has no steps; add run \"...\" or checkout");
        }
        steps
    }

    fn new_step(&self, node: &KdlNode) -> Step {
        let pos = self.node_pos(node);
        Step {
            id: String::new(),
            name: None,
            condition: "success()".to_owned(),
            run: None,
            uses: None,
            with: Map::new(),
            env: Map::new(),
            shell: None,
            working_directory: None,
            continue_on_error: None,
            timeout_minutes: None,
            pos,
            uses_pos: pos,
        }
    }

    /// The properties every step takes, and the `env` block.
    fn step_common(&mut self, node: &KdlNode, step: &mut Step, extra: &[&str], ids: &mut IdScope) {
        let kind = node.name().value().to_owned();
        for (name, entry) in self.props(node) {
            let pos = self.at(entry.span().offset());
            match name {
                "id" => {
                    if let Some(id) = self.string(entry, "a step id") {
                        if id.contains("${{") {
                            self.error(pos, "A template expression is not allowed in this context");
                        } else if let Some(message) = id_error(&id) {
                            self.error(pos, message);
                        } else if ids.contains(&id) {
                            self.error(pos, format!("The identifier '{id}' may not be used more than once within the same scope."));
                        } else {
                            ids.user.insert(id.to_ascii_lowercase());
                        }
                        step.id = id;
                    }
                }
                "name" => step.name = self.string(entry, "a step name"),
                "if" => step.condition = self.condition(entry),
                "continue-on-error" => {
                    if let Some(v) = self.scalar(entry) {
                        step.continue_on_error = self.flag(v, pos, name);
                    }
                }
                "timeout-minutes" => {
                    if let Some(v) = self.scalar(entry) {
                        step.timeout_minutes = self.minutes(v, pos, name);
                    }
                }
                "shell" if extra.contains(&"shell") => step.shell = self.string(entry, "'shell'"),
                "working-directory" if extra.contains(&"working-directory") => {
                    step.working_directory = self.string(entry, "'working-directory'");
                }
                other if extra.contains(&other) => {
                    if let Some(text) = self.text(entry, &format!("'{other}'")) {
                        step.with.insert(other.to_owned(), Value::String(text));
                    }
                }
                other => {
                    let allowed: Vec<&str> = STEP_PROPS.iter().chain(extra).copied().collect();
                    self.error(pos, format!("a {kind} step has no property '{other}'; it takes {}", allowed.join(", ")));
                }
            }
        }
        if let Some(children) = node.children() {
            for child in children.nodes() {
                self.no_types(child);
                match child.name().value() {
                    "env" => {
                        let mut env = std::mem::take(&mut step.env);
                        self.text_props(child, &mut env, "env CI=\"true\"");
                        step.env = env;
                    }
                    other => {
                        let pos = self.node_pos(child);
                        self.error(pos, format!("a step's block holds only env, not '{other}'; give the other settings as properties: {kind} ... name=\"...\""));
                    }
                }
            }
        }
    }

    fn run_step(&mut self, node: &KdlNode, ids: &mut IdScope) -> Option<Step> {
        let mut step = self.new_step(node);
        let args = self.args(node);
        match args.as_slice() {
            [one] => step.run = self.string(one, "a run step's script"),
            _ => {
                self.error(step.pos, "a run step takes exactly one script: run \"make test\" (use a \"\"\" multi-line string for several lines)");
                return None;
            }
        }
        self.step_common(node, &mut step, RUN_PROPS, ids);
        Some(step)
    }

    fn checkout_step(&mut self, node: &KdlNode, ids: &mut IdScope) -> Option<Step> {
        let mut step = self.new_step(node);
        self.no_args(node, "give checkout's inputs as properties: checkout path=\"src\" fetch-depth=0");
        step.uses = Some(CHECKOUT_USES.to_owned());
        self.step_common(node, &mut step, CHECKOUT_PROPS, ids);
        if step.name.is_none() {
            step.name = Some("Checkout".to_owned());
        }
        Some(step)
    }

    /// Generated ids for setup steps (`__setup`, `__setup_2`, ... across the scope).
    fn assign_ids(&mut self, steps: &mut [Step], ids: &mut IdScope) {
        for step in steps.iter_mut().filter(|s| s.id.is_empty()) {
            ids.setup_count += 1;
            step.id = if ids.setup_count == 1 { "__setup".to_owned() } else { format!("__setup_{}", ids.setup_count) };
        }
    }
}

/// GitHub's generated ids for a job's own steps (`__run`, `__actions_checkout`, `__run_2`).
fn generate_step_ids(steps: &mut [Step]) {
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for step in steps.iter_mut() {
        if !step.id.is_empty() {
            continue;
        }
        let base = format!("__{}", generated_id_base(step.uses.as_deref()));
        let n = counts.entry(base.to_ascii_lowercase()).or_insert(0);
        *n += 1;
        step.id = if *n == 1 { base } else { format!("{base}_{n}") };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters_and_kdl_newlines() {
        let lines = Lines::new("é a\r\nb\u{2028}c");
        assert_eq!(lines.pos(0), Pos { line: 1, column: 1 });
        assert_eq!(lines.pos(3), Pos { line: 1, column: 3 });
        assert_eq!(lines.pos(6), Pos { line: 2, column: 1 });
        assert_eq!(lines.pos(10), Pos { line: 3, column: 1 });
    }

    #[test]
    fn fan_out_becomes_the_first_matrix_axis() {
        let source = "job \"b\" {\n  runs-on \"x\" \"y\"\n  matrix { v 1 2 }\n  steps { run \"make\" }\n}\n";
        let workflow = parse_kdl_workflow(source, "w.kdl").expect("valid");
        let job = &workflow.jobs[0];
        assert_eq!(job.runs_on.as_ref().map(|r| r.labels.clone()), Some(vec!["${{ matrix['runs-on'] }}".to_owned()]));
        let matrix = job.strategy.as_ref().and_then(|s| s.matrix.clone());
        assert_eq!(matrix, Some(serde_json::json!({"runs-on": ["x", "y"], "v": [1, 2]})));
        assert_eq!(job.strategy.as_ref().map(|s| s.matrix_pos), Some(Pos { line: 3, column: 3 }));
    }
}
