//! Stage 1: the workflow as written, decoded from YAML into a model that mirrors GitHub's
//! workflow syntax, validated the way GitHub's reader validates it (ids, `needs`, required
//! keys, unknown keys, expressions). Nothing Solstice-specific is rejected here; that is
//! stage 2's job ([`crate::plan_workflow`]).

pub(crate) mod kdl;
mod limits;
mod triggers;
pub(crate) mod yaml;

pub use self::kdl::parse_kdl_workflow;
pub use self::limits::ReadLimits;

use serde::Serialize;

use crate::error::{Diagnostics, Pos, WorkflowErrors};
use crate::expression::{Expression, TemplatePart, is_legal_identifier, split_template};
use yaml::{Key, Node, Value};

/// A parsed workflow file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Workflow {
    /// `name:`, if given.
    pub name: Option<String>,
    /// `run-name:`, if given.
    pub run_name: Option<String>,
    /// `on:` as written (triggers are the forge's business).
    pub on: serde_json::Value,
    /// Workflow-level `env:`.
    pub env: serde_json::Map<String, serde_json::Value>,
    /// Workflow-level `defaults.run`.
    pub defaults: RunDefaults,
    /// `permissions:` as written (null when absent).
    pub permissions: serde_json::Value,
    /// `concurrency:` as written (null when absent).
    pub concurrency: serde_json::Value,
    /// The jobs, in file order.
    pub jobs: Vec<Job>,
    /// Setup scripts for every job (KDL dialect only; always empty for YAML).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<Setup>,
}

/// A setup script of the KDL dialect: steps run before a job's own steps, on guests of one
/// OS family (`setup os="illumos" { run "pfexec pkg install ..." }`) or on every guest when
/// `os` is absent. Stage 2 keeps the scripts whose family matches the planned job's runs-on
/// label (see [`crate::label_os_family`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Setup {
    /// The OS family the script is for (`illumos`, `linux`, `freebsd`, ...); `None` for all.
    pub os: Option<String>,
    /// The script's steps, in order.
    pub steps: Vec<Step>,
    #[serde(skip)]
    pub(crate) pos: Pos,
}

/// `defaults.run`: the shell and working directory of `run` steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RunDefaults {
    /// `shell:`.
    pub shell: Option<String>,
    /// `working-directory:`.
    pub working_directory: Option<String>,
}

/// `runs-on:` normalized: a label list and an optional runner group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RunsOn {
    /// The labels (a single string becomes one label). May contain `${{ }}`.
    pub labels: Vec<String>,
    /// `group:` of the object form.
    pub group: Option<String>,
}

/// `strategy:`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Strategy {
    /// `matrix:` as written: an object of vectors plus `include`/`exclude`, or a string
    /// expression such as `${{ fromJSON(needs.setup.outputs.matrix) }}`.
    pub matrix: Option<serde_json::Value>,
    /// `fail-fast:` (boolean or expression), default true.
    pub fail_fast: serde_json::Value,
    /// `max-parallel:` (number or expression), if given.
    pub max_parallel: Option<serde_json::Value>,
    #[serde(skip)]
    pub(crate) matrix_pos: Pos,
}

/// A job as written.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Job {
    /// The job's key under `jobs:`.
    pub id: String,
    /// `name:` as written.
    pub name: Option<String>,
    /// `needs:` normalized to a list.
    pub needs: Vec<String>,
    /// `runs-on:`; `None` only for reusable-workflow jobs (`uses:`).
    pub runs_on: Option<RunsOn>,
    /// `if:` normalized GitHub's way, without `${{ }}`: `success()` when absent, and
    /// `success() && (cond)` when the condition calls no status function.
    pub condition: String,
    /// Job-level `env:`.
    pub env: serde_json::Map<String, serde_json::Value>,
    /// Job-level `defaults.run`.
    pub defaults: RunDefaults,
    /// `timeout-minutes:` (number or expression).
    pub timeout_minutes: Option<serde_json::Value>,
    /// `continue-on-error:` (boolean or expression).
    pub continue_on_error: Option<serde_json::Value>,
    /// `outputs:`.
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// `strategy:`.
    pub strategy: Option<Strategy>,
    /// `environment:` as written.
    pub environment: serde_json::Value,
    /// `concurrency:` as written.
    pub concurrency: serde_json::Value,
    /// `permissions:` as written.
    pub permissions: serde_json::Value,
    /// `container:` as written (Solstice CI rejects it at planning).
    pub container: serde_json::Value,
    /// `services:` as written (Solstice CI rejects it at planning).
    pub services: serde_json::Value,
    /// `uses:` of a reusable-workflow job (Solstice CI rejects it at planning).
    pub uses: Option<String>,
    /// The steps.
    pub steps: Vec<Step>,
    /// Setup scripts of this job (KDL dialect only), run after the workflow's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<Setup>,
    #[serde(skip)]
    pub(crate) pos: Pos,
    #[serde(skip)]
    pub(crate) key_pos: std::collections::HashMap<&'static str, Pos>,
}

/// A step as written.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Step {
    /// `id:`, or the id GitHub generates (`__run`, `__actions_checkout`, `__run_2`, ...).
    pub id: String,
    /// `name:`.
    pub name: Option<String>,
    /// `if:` normalized like [`Job::condition`].
    pub condition: String,
    /// `run:`.
    pub run: Option<String>,
    /// `uses:`.
    pub uses: Option<String>,
    /// `with:` (values as text).
    pub with: serde_json::Map<String, serde_json::Value>,
    /// `env:`.
    pub env: serde_json::Map<String, serde_json::Value>,
    /// `shell:`.
    pub shell: Option<String>,
    /// `working-directory:`.
    pub working_directory: Option<String>,
    /// `continue-on-error:` (boolean or expression).
    pub continue_on_error: Option<serde_json::Value>,
    /// `timeout-minutes:` (number or expression).
    pub timeout_minutes: Option<serde_json::Value>,
    #[serde(skip)]
    pub(crate) pos: Pos,
    #[serde(skip)]
    pub(crate) uses_pos: Pos,
}

const WORKFLOW_KEYS: &[&str] =
    &["name", "run-name", "description", "on", "env", "defaults", "permissions", "concurrency", "jobs"];
const JOB_KEYS: &[&str] = &[
    "name",
    "needs",
    "runs-on",
    "permissions",
    "environment",
    "concurrency",
    "outputs",
    "env",
    "defaults",
    "if",
    "steps",
    "timeout-minutes",
    "cancel-timeout-minutes",
    "strategy",
    "continue-on-error",
    "container",
    "services",
    "uses",
    "with",
    "secrets",
    "snapshot",
];
const STEP_KEYS: &[&str] = &[
    "id",
    "if",
    "name",
    "uses",
    "run",
    "working-directory",
    "shell",
    "with",
    "env",
    "continue-on-error",
    "timeout-minutes",
];

/// GitHub's limit on the length of one expression.
const MAX_EXPRESSION_LENGTH: usize = 21_000;

/// Reads a GitHub Actions workflow (stage 1 only): YAML decoding and GitHub's own validation,
/// without Solstice-specific restrictions or matrix expansion. `file_name` is only used in
/// error messages.
///
/// # Errors
/// Every problem found, each with file, line and column.
pub fn parse_workflow(source: &str, file_name: &str) -> Result<Workflow, WorkflowErrors> {
    parse_workflow_with_limits(source, file_name, &ReadLimits::default())
}

/// [`parse_workflow`] with other limits than GitHub's on the file's size, nesting and memory.
///
/// # Errors
/// Every problem found, each with file, line and column; a file over a limit gives one
/// [`crate::WorkflowErrorKind::Limit`] error with GitHub's message.
pub fn parse_workflow_with_limits(source: &str, file_name: &str, limits: &ReadLimits) -> Result<Workflow, WorkflowErrors> {
    let mut diag = Diagnostics::new(file_name);
    if !limits::check_file_size(source, limits, &mut diag) {
        return diag.into_result(empty_workflow());
    }
    let Some(mut root) = yaml::parse(source, limits, &mut diag) else {
        return diag.into_result(empty_workflow());
    };
    splice_inserts(&mut root, &mut diag);
    let workflow = read_workflow(&root, &mut diag);
    diag.into_result(workflow)
}

/// Whether `text` is exactly GitHub's `${{ insert }}` directive.
fn is_insert_directive(text: &str) -> bool {
    let trimmed = text.trim();
    trimmed
        .strip_prefix("${{")
        .and_then(|t| t.strip_suffix("}}"))
        .is_some_and(|inner| inner.trim().eq_ignore_ascii_case("insert"))
}

/// GitHub's `${{ insert }}` mapping key: a literal mapping under it is spliced into the
/// enclosing mapping in its place; an expression under it is kept, under
/// [`crate::plan::INSERT_KEY`], for the planner to evaluate (it may read contexts such as
/// `vars`). Anything else under it is an error. GitHub's template reader does the same
/// (`StartMappingInsertion` in actions/runner's
/// src/Sdk/DTObjectTemplating/ObjectTemplating/TemplateUnraveler.cs).
fn splice_inserts(node: &mut Node, diag: &mut Diagnostics) {
    match &mut node.value {
        Value::Seq(items) => items.iter_mut().for_each(|item| splice_inserts(item, diag)),
        Value::Map(pairs) => {
            let mut out = Vec::with_capacity(pairs.len());
            for (mut key, mut value) in std::mem::take(pairs) {
                splice_inserts(&mut value, diag);
                if !is_insert_directive(&key.name) {
                    out.push((key, value));
                    continue;
                }
                match value.value {
                    Value::Map(inserted) => out.extend(inserted),
                    Value::String(ref s) if s.contains("${{") => {
                        key.name = crate::plan::INSERT_KEY.to_owned();
                        out.push((key, value));
                    }
                    _ => diag.syntax(value.pos, "Expected a mapping"),
                }
            }
            *pairs = out;
        }
        _ => {}
    }
}

pub(crate) fn empty_workflow() -> Workflow {
    Workflow {
        name: None,
        run_name: None,
        on: serde_json::Value::Null,
        env: serde_json::Map::new(),
        defaults: RunDefaults::default(),
        permissions: serde_json::Value::Null,
        concurrency: serde_json::Value::Null,
        jobs: Vec::new(),
        setup: Vec::new(),
    }
}

/// The contexts an expression may use in each workflow key, from GitHub's workflow schema
/// (`"context"` of each definition in workflow-v1.0.json, actions/languageservices
/// workflow-parser/src/workflow-v1.0.json), plus Forgejo's and Gitea's names for `github`
/// wherever `github` is allowed. Anything else is GitHub's "Unrecognized named-value" error,
/// so that, for example, a secret cannot reach a job's name or concurrency group.
pub(crate) mod contexts {
    /// `run-name`, workflow `concurrency`.
    pub(crate) const WORKFLOW: &[&str] = &["github", "forge", "gitea", "inputs", "vars"];
    /// Workflow `env`.
    pub(crate) const WORKFLOW_ENV: &[&str] = &["github", "forge", "gitea", "inputs", "vars", "secrets"];
    /// Job `if`.
    pub(crate) const JOB_IF: &[&str] = &["github", "forge", "gitea", "inputs", "vars", "needs"];
    /// Job `strategy` (the matrix, `fail-fast`, `max-parallel`).
    pub(crate) const STRATEGY: &[&str] = JOB_IF;
    /// Job `name`, `runs-on`, `timeout-minutes`, `continue-on-error`, `concurrency`,
    /// `environment`, `container`, `services`, and a reusable workflow's `with`.
    pub(crate) const JOB: &[&str] = &["github", "forge", "gitea", "inputs", "vars", "needs", "strategy", "matrix"];
    /// Job `env`, and a reusable workflow's `secrets`.
    pub(crate) const JOB_ENV: &[&str] = &["github", "forge", "gitea", "inputs", "vars", "needs", "strategy", "matrix", "secrets"];
    /// Job `defaults.run`.
    pub(crate) const JOB_DEFAULTS: &[&str] = &["github", "forge", "gitea", "inputs", "vars", "needs", "strategy", "matrix", "env"];
    /// Step `if`: everything a step sees but `secrets`.
    pub(crate) const STEP_IF: &[&str] =
        &["github", "forge", "gitea", "inputs", "vars", "needs", "strategy", "matrix", "steps", "job", "runner", "env"];
    /// Every other step key, and job `outputs`.
    pub(crate) const STEP: &[&str] =
        &["github", "forge", "gitea", "inputs", "vars", "needs", "strategy", "matrix", "secrets", "steps", "job", "runner", "env"];
}

struct Reader<'d> {
    diag: &'d mut Diagnostics,
    /// The contexts expressions may use in the key being read.
    contexts: &'static [&'static str],
}

impl<'d> Reader<'d> {
    fn new(diag: &'d mut Diagnostics) -> Self {
        Reader { diag, contexts: crate::expression::STANDARD_CONTEXTS }
    }

    /// Runs `read` with expressions restricted to `contexts`.
    fn within<T>(&mut self, contexts: &'static [&'static str], read: impl FnOnce(&mut Self) -> T) -> T {
        let outer = std::mem::replace(&mut self.contexts, contexts);
        let out = read(self);
        self.contexts = outer;
        out
    }

    fn mapping<'n>(&mut self, node: &'n Node) -> &'n [(Key, Node)] {
        match &node.value {
            Value::Map(pairs) => pairs,
            Value::Seq(_) => {
                self.diag.syntax(node.pos, "A sequence was not expected");
                &[]
            }
            _ => {
                self.diag.syntax(node.pos, format!("Unexpected value '{}'", node.scalar_text().unwrap_or_default()));
                &[]
            }
        }
    }

    fn check_keys(&mut self, pairs: &[(Key, Node)], allowed: &[&str]) {
        for (key, _) in pairs {
            if !allowed.contains(&key.name.as_str()) {
                self.diag.syntax(key.pos, format!("Unexpected value '{}'", key.name));
            }
        }
    }

    /// A scalar as a string; a collection is an error.
    fn string(&mut self, node: &Node) -> Option<String> {
        match node.scalar_text() {
            Some(s) => {
                self.check_template(&s, node.pos);
                Some(s)
            }
            None => {
                let what = if matches!(node.value, Value::Seq(_)) { "sequence" } else { "mapping" };
                self.diag.syntax(node.pos, format!("A {what} was not expected"));
                None
            }
        }
    }

    /// A string without expressions (ids, keys GitHub evaluates before any context exists).
    fn literal_string(&mut self, node: &Node) -> Option<String> {
        let s = self.string(node)?;
        if s.contains("${{") {
            self.diag.syntax(node.pos, "A template expression is not allowed in this context");
        }
        Some(s)
    }

    /// Validates every `${{ }}` in `text`.
    fn check_template(&mut self, text: &str, pos: Pos) {
        if !text.contains("${{") {
            return;
        }
        if text.len() > MAX_EXPRESSION_LENGTH {
            self.diag.syntax(pos, format!("Exceeded max expression length {MAX_EXPRESSION_LENGTH}"));
            return;
        }
        match split_template(text) {
            Ok(parts) => {
                for part in parts {
                    if let TemplatePart::Expression { text: expr, .. } = part {
                        if expr.trim().eq_ignore_ascii_case("insert") {
                            // GitHub's message (errors-insert in its workflow-reader data).
                            self.diag.syntax(pos, "The directive 'insert' is not allowed in this context. Directives are not supported for expressions that are embedded within a string. Directives are only supported when the entire value is an expression.");
                            continue;
                        }
                        if expr.len() > MAX_EXPRESSION_LENGTH {
                            self.diag
                                .syntax(pos, format!("Exceeded max expression length {MAX_EXPRESSION_LENGTH}"));
                            continue;
                        }
                        if let Err(e) = Expression::parse_with_contexts(expr, self.contexts) {
                            self.diag.push(crate::WorkflowErrorKind::Expression, pos, e.message().to_owned());
                        }
                    }
                }
            }
            Err(e) => self.diag.push(crate::WorkflowErrorKind::Expression, pos, e.message().to_owned()),
        }
    }

    /// A scalar or collection kept as JSON (strings checked for expressions).
    fn json(&mut self, node: &Node) -> serde_json::Value {
        self.check_node_templates(node);
        node.to_json()
    }

    fn check_node_templates(&mut self, node: &Node) {
        match &node.value {
            Value::String(s) => self.check_template(s, node.pos),
            Value::Seq(items) => items.iter().for_each(|i| self.check_node_templates(i)),
            Value::Map(pairs) => pairs.iter().for_each(|(_, v)| self.check_node_templates(v)),
            _ => {}
        }
    }

    /// A mapping of names to scalar strings (`env:`, `with:`, `outputs:`); an expression
    /// string is accepted in place of the whole mapping.
    fn string_map(&mut self, node: &Node) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        if let Value::String(s) = &node.value
            && s.contains("${{")
        {
            self.check_template(s, node.pos);
            out.insert("${{}}".to_owned(), serde_json::Value::String(s.clone()));
            return out;
        }
        for (key, value) in self.mapping(node) {
            if let Some(text) = self.string(value) {
                out.insert(key.name.clone(), serde_json::Value::String(text));
            }
        }
        out
    }

    /// `permissions:` validated as GitHub's workflow schema does: `read-all`, `write-all`, or
    /// a mapping of known scopes to `read`, `write` or `none` (GitHub docs, "Assigning
    /// permissions to jobs": <https://docs.github.com/en/actions/writing-workflows/choosing-what-your-workflow-does/controlling-permissions-for-github_token>).
    fn permissions(&mut self, node: &Node) -> serde_json::Value {
        const SCOPES: &[&str] = &[
            "actions", "attestations", "checks", "contents", "deployments", "discussions", "id-token", "issues",
            "models", "packages", "pages", "pull-requests", "repository-projects", "security-events", "statuses",
        ];
        let unexpected = |r: &mut Self, n: &Node| {
            r.diag.syntax(n.pos, format!("Unexpected value '{}'", n.scalar_text().unwrap_or_default()));
        };
        match &node.value {
            Value::String(s) if s.contains("${{") => self.diag.syntax(node.pos, "A template expression is not allowed in this context"),
            Value::String(s) if matches!(s.as_str(), "read-all" | "write-all") => {}
            Value::Map(pairs) => {
                for (key, value) in pairs {
                    if !SCOPES.contains(&key.name.as_str()) {
                        self.diag.syntax(key.pos, format!("Unexpected value '{}'", key.name));
                    } else if !matches!(&value.value, Value::String(v) if matches!(v.as_str(), "read" | "write" | "none")) {
                        unexpected(self, value);
                    }
                }
            }
            _ => unexpected(self, node),
        }
        node.to_json()
    }

    fn defaults(&mut self, node: &Node) -> RunDefaults {
        let mut defaults = RunDefaults::default();
        let pairs = self.mapping(node);
        self.check_keys(pairs, &["run"]);
        if let Some(run) = node.get("run") {
            let pairs = self.mapping(run);
            self.check_keys(pairs, &["shell", "working-directory"]);
            if let Some(shell) = run.get("shell") {
                defaults.shell = self.string(shell);
            }
            if let Some(dir) = run.get("working-directory") {
                defaults.working_directory = self.string(dir);
            }
        }
        defaults
    }

    /// Normalizes an `if:` the way GitHub does.
    fn condition(&mut self, node: Option<&Node>) -> String {
        let Some(node) = node else {
            return "success()".to_owned();
        };
        let Some(text) = node.scalar_text() else {
            self.diag.syntax(node.pos, "A mapping was not expected");
            return "success()".to_owned();
        };
        normalize_condition(&text, self.contexts).unwrap_or_else(|message| {
            self.diag.push(crate::WorkflowErrorKind::Expression, node.pos, message);
            "success()".to_owned()
        })
    }
}

/// GitHub's normalization of `if:` text: strip one surrounding `${{ }}`, default to
/// `success()`, wrap conditions that call no status function in `success() && (...)`.
/// `contexts` are those the condition may use.
pub(crate) fn normalize_condition(text: &str, contexts: &[&str]) -> Result<String, String> {
    let trimmed = text.trim();
    let inner = match crate::expression::strip_condition(trimmed) {
        Some(inner) => inner.to_owned(),
        None if trimmed.contains("${{") => {
            // Text mixed with expressions: keep it as a format() over the parts.
            let parts = split_template(trimmed).map_err(|e| e.message().to_owned())?;
            template_to_format(&parts)
        }
        None => trimmed.to_owned(),
    };
    if inner.is_empty() {
        return Ok("success()".to_owned());
    }
    if inner.len() > MAX_EXPRESSION_LENGTH {
        return Err(format!("Exceeded max expression length {MAX_EXPRESSION_LENGTH}"));
    }
    let expr = Expression::parse_with_contexts(&inner, contexts).map_err(|e| e.message().to_owned())?;
    if expr.uses_status_function() { Ok(inner) } else { Ok(format!("success() && ({inner})")) }
}

/// `a ${{ x }} b` as `format('a {0} b', x)`, GitHub's representation of a template.
pub(crate) fn template_to_format(parts: &[TemplatePart<'_>]) -> String {
    if let [TemplatePart::Expression { text, .. }] = parts {
        return (*text).to_owned();
    }
    let mut fmt = String::new();
    let mut args = Vec::new();
    for part in parts {
        match part {
            TemplatePart::Literal(s) => {
                fmt.push_str(&s.replace('\'', "''").replace('{', "{{").replace('}', "}}"));
            }
            TemplatePart::Expression { text, .. } => {
                fmt.push_str(&format!("{{{}}}", args.len()));
                args.push(*text);
            }
        }
    }
    let mut out = format!("format('{fmt}'");
    for arg in args {
        out.push_str(", ");
        out.push_str(arg);
    }
    out.push(')');
    out
}

fn id_error(id: &str) -> Option<String> {
    if id.starts_with("__") {
        return Some(format!("The identifier '{id}' is invalid. IDs starting with '__' are reserved."));
    }
    if !is_legal_identifier(id) || id.len() >= 100 {
        return Some(format!(
            "The identifier '{id}' is invalid. IDs may only contain alphanumeric characters, '_', and '-'. IDs must start with a letter or '_' and and must be less than 100 characters."
        ));
    }
    None
}

fn read_workflow(root: &Node, diag: &mut Diagnostics) -> Workflow {
    let mut r = Reader::new(diag);
    let mut workflow = empty_workflow();
    let pairs = r.mapping(root);
    r.check_keys(pairs, WORKFLOW_KEYS);
    for (key, value) in pairs {
        match key.name.as_str() {
            "name" => workflow.name = r.literal_string(value),
            "run-name" => workflow.run_name = r.within(contexts::WORKFLOW, |r| r.string(value)),
            "on" => {
                check_workflow_call(&mut r, value);
                triggers::check_workflow_dispatch(&mut r, value);
                triggers::check_schedule(&mut r, value);
                workflow.on = value.to_json();
            }
            "env" => workflow.env = r.within(contexts::WORKFLOW_ENV, |r| r.string_map(value)),
            // GitHub's schema gives workflow `defaults.run` no contexts: no expressions.
            "defaults" => workflow.defaults = r.within(&[], |r| r.defaults(value)),
            "permissions" => workflow.permissions = r.permissions(value),
            "concurrency" => {
                require_key(&mut r, value, "group");
                workflow.concurrency = r.within(contexts::WORKFLOW, |r| r.json(value));
            }
            _ => {}
        }
    }
    if root.get("on").is_none() && root.as_map().is_some() {
        // GitHub requires `on`; a missing trigger is harmless for a runner, so it is accepted.
    }
    let Some(jobs) = root.get("jobs") else {
        if root.as_map().is_some() {
            r.diag.syntax(Pos { line: 1, column: 1 }, "Required property is missing: jobs");
        }
        return workflow;
    };
    let job_pairs = r.mapping(jobs);
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (key, value) in job_pairs {
        if key.name.is_empty() {
            r.diag.syntax(key.pos, "Unexpected value ''");
            continue;
        }
        if let Some(message) = id_error(&key.name) {
            r.diag.syntax(key.pos, message);
        }
        if !seen.insert(key.name.to_ascii_lowercase()) {
            r.diag.syntax(key.pos, format!("'{}' is already defined", key.name));
            continue;
        }
        workflow.jobs.push(read_job(&mut r, key, value));
    }
    check_needs(&workflow.jobs, jobs, r.diag);
    workflow
}

fn read_job(r: &mut Reader<'_>, key: &Key, node: &Node) -> Job {
    let mut job = Job {
        id: key.name.clone(),
        name: None,
        needs: Vec::new(),
        runs_on: None,
        condition: "success()".to_owned(),
        env: serde_json::Map::new(),
        defaults: RunDefaults::default(),
        timeout_minutes: None,
        continue_on_error: None,
        outputs: serde_json::Map::new(),
        strategy: None,
        environment: serde_json::Value::Null,
        concurrency: serde_json::Value::Null,
        permissions: serde_json::Value::Null,
        container: serde_json::Value::Null,
        services: serde_json::Value::Null,
        uses: None,
        steps: Vec::new(),
        setup: Vec::new(),
        pos: key.pos,
        key_pos: std::collections::HashMap::new(),
    };
    let pairs = r.mapping(node);
    r.check_keys(pairs, JOB_KEYS);
    for (k, value) in pairs {
        if let Some(name) = JOB_KEYS.iter().find(|n| **n == k.name) {
            job.key_pos.insert(name, value.pos);
        }
        match k.name.as_str() {
            "name" => job.name = r.within(contexts::JOB, |r| r.string(value)),
            "needs" => {
                job.needs = match &value.value {
                    Value::Seq(items) => items.iter().filter_map(|i| r.literal_string(i)).collect(),
                    _ => r.literal_string(value).into_iter().collect(),
                }
            }
            "runs-on" => job.runs_on = Some(r.within(contexts::JOB, |r| read_runs_on(r, value))),
            "if" => job.condition = r.within(contexts::JOB_IF, |r| r.condition(Some(value))),
            "env" => job.env = r.within(contexts::JOB_ENV, |r| r.string_map(value)),
            "defaults" => job.defaults = r.within(contexts::JOB_DEFAULTS, |r| r.defaults(value)),
            "timeout-minutes" | "continue-on-error" => {
                let v = match &value.value {
                    Value::Number(_) | Value::Bool(_) => Some(value.to_json()),
                    Value::String(s) if s.contains("${{") => {
                        r.within(contexts::JOB, |r| r.check_template(s, value.pos));
                        Some(value.to_json())
                    }
                    _ => {
                        r.diag.syntax(value.pos, format!("Unexpected value '{}'", value.scalar_text().unwrap_or_default()));
                        None
                    }
                };
                if k.name == "timeout-minutes" {
                    job.timeout_minutes = v;
                } else {
                    job.continue_on_error = v;
                }
            }
            "outputs" => job.outputs = r.within(contexts::STEP, |r| r.string_map(value)),
            "strategy" => job.strategy = Some(r.within(contexts::STRATEGY, |r| read_strategy(r, value))),
            "environment" => {
                // `url` is evaluated when the job ends, so it may use what steps produced
                // (but no secrets): `string-runner-context-no-secrets` in GitHub's schema.
                for (key, v) in value.as_map().unwrap_or_default() {
                    let contexts = if key.name == "url" { contexts::STEP_IF } else { contexts::JOB };
                    r.within(contexts, |r| r.check_node_templates(v));
                }
                if value.as_map().is_none() {
                    r.within(contexts::JOB, |r| r.check_node_templates(value));
                }
                require_key(r, value, "name");
                job.environment = value.to_json();
            }
            "concurrency" => {
                require_key(r, value, "group");
                job.concurrency = r.within(contexts::JOB, |r| r.json(value));
            }
            "permissions" => job.permissions = r.permissions(value),
            "container" => {
                r.within(contexts::JOB, |r| read_container(r, value, false));
                job.container = value.to_json();
            }
            "services" => {
                r.within(contexts::JOB, |r| {
                    for (_, service) in r.mapping(value) {
                        read_container(r, service, true);
                    }
                });
                job.services = value.to_json();
            }
            "uses" => job.uses = r.literal_string(value),
            "steps" => job.steps = r.within(contexts::STEP, |r| read_steps(r, value)),
            _ => {}
        }
    }
    if job.uses.is_some() {
        if pairs.iter().any(|(k, _)| k.name == "runs-on" || k.name == "steps")
            && let Some((k, _)) = pairs.iter().find(|(k, _)| k.name == "uses")
        {
            r.diag.syntax(k.pos, format!("Unexpected value '{}'", k.name));
        }
    } else if job.runs_on.is_none() {
        r.diag.syntax(node.pos, "Required property is missing: runs-on");
    }
    job
}

/// GitHub's "Required property is missing" when `node` is a mapping without `key` (a
/// `concurrency` without `group`, an `environment` without `name`).
fn require_key(r: &mut Reader<'_>, node: &Node, key: &str) {
    if node.as_map().is_some() && node.get(key).is_none() {
        r.diag.syntax(node.pos, format!("Required property is missing: {key}"));
    }
}

/// Checks `on.workflow_call` against GitHub's schema (`workflow-call-mapping` and what it
/// names in workflow-v1.0.json): `inputs` of a `type` among boolean, number and string, with
/// only `description`, `type`, `required` and `default`; `secrets` with only `description`
/// and `required`; `outputs` each with a `value`. Other triggers are kept as written.
fn check_workflow_call(r: &mut Reader<'_>, on: &Node) {
    let Some(call) = on.get("workflow_call") else { return };
    if matches!(call.value, Value::Null) {
        return;
    }
    let pairs = r.mapping(call);
    r.check_keys(pairs, &["inputs", "secrets", "outputs"]);
    let definitions = |r: &mut Reader<'_>, name: &str| -> Vec<(Key, Node)> {
        match call.get(name) {
            Some(node) if !matches!(node.value, Value::Null) => r.mapping(node).to_vec(),
            _ => Vec::new(),
        }
    };
    for (_, input) in definitions(r, "inputs") {
        let pairs = r.mapping(&input);
        r.check_keys(pairs, &["description", "type", "required", "default"]);
        match input.get("type") {
            Some(t) if matches!(&t.value, Value::String(s) if matches!(s.as_str(), "boolean" | "number" | "string")) => {}
            Some(t) => r.diag.syntax(t.pos, format!("Unexpected value '{}'", t.scalar_text().unwrap_or_default())),
            None if input.as_map().is_some() => r.diag.syntax(input.pos, "Required property is missing: type"),
            None => {}
        }
        if let Some(default) = input.get("default") {
            r.within(contexts::WORKFLOW, |r| r.check_node_templates(default));
        }
    }
    for (_, secret) in definitions(r, "secrets") {
        if !matches!(secret.value, Value::Null) {
            let pairs = r.mapping(&secret);
            r.check_keys(pairs, &["description", "required"]);
        }
    }
    for (_, output) in definitions(r, "outputs") {
        let pairs = r.mapping(&output);
        r.check_keys(pairs, &["description", "value"]);
        require_key(r, &output, "value");
    }
}

/// Checks a job's `container:` or one of its `services:` against GitHub's schema
/// (`container-mapping` and `service-container-mapping` in workflow-v1.0.json): an image
/// name, or a mapping of known keys whose `image` is not empty; `credentials` may use
/// `secrets` and `env`, the container's `env` what steps see. Solstice CI refuses both at
/// planning; checking their shape here reports what GitHub would, where GitHub would.
fn read_container(r: &mut Reader<'_>, node: &Node, service: bool) {
    const KEYS: &[&str] = &["image", "options", "env", "ports", "volumes", "credentials", "entrypoint", "command"];
    let keys = if service { KEYS } else { &KEYS[..6] };
    if let Value::String(s) = &node.value {
        r.check_template(s, node.pos);
        return;
    }
    let pairs = r.mapping(node);
    r.check_keys(pairs, keys);
    let mut image = false;
    for (key, value) in pairs {
        match key.name.as_str() {
            "image" => {
                image = true;
                match &value.value {
                    Value::Null => r.diag.syntax(value.pos, "Unexpected value ''"),
                    Value::String(s) if s.is_empty() => r.diag.syntax(value.pos, "Unexpected value ''"),
                    _ => {
                        r.string(value);
                    }
                }
            }
            "credentials" => {
                const CREDENTIALS: &[&str] = &["github", "forge", "gitea", "inputs", "vars", "secrets", "env"];
                r.within(CREDENTIALS, |r| {
                    let pairs = r.mapping(value);
                    r.check_keys(pairs, &["username", "password"]);
                    pairs.iter().for_each(|(_, v)| {
                        r.string(v);
                    });
                });
            }
            "env" => {
                r.within(contexts::STEP, |r| r.string_map(value));
            }
            "ports" | "volumes" => {
                if let Value::Seq(items) = &value.value {
                    items.iter().for_each(|i| {
                        r.string(i);
                    });
                } else {
                    r.string(value);
                }
            }
            _ => {
                r.string(value);
            }
        }
    }
    if !image && node.as_map().is_some() {
        r.diag.syntax(node.pos, "Container image cannot be empty");
    }
}

fn read_runs_on(r: &mut Reader<'_>, node: &Node) -> RunsOn {
    let mut runs_on = RunsOn::default();
    match &node.value {
        Value::Seq(items) => runs_on.labels = items.iter().filter_map(|i| r.string(i)).collect(),
        Value::Map(pairs) => {
            r.check_keys(pairs, &["group", "labels"]);
            if let Some(group) = node.get("group") {
                runs_on.group = r.string(group);
                if let Some(g) = &runs_on.group
                    && let Some((prefix, rest)) = g.split_once('/')
                {
                    if !matches!(prefix, "organization" | "enterprise" | "org" | "ent") || rest.contains('/') {
                        r.diag.syntax(group.pos, format!("Invalid runs-on group name '{g}'. Please use 'organization/' or 'enterprise/' prefix to target a single runner group."));
                    } else if rest.is_empty() {
                        r.diag.syntax(group.pos, format!("Invalid runs-on group name '{g}'."));
                    }
                }
            }
            if let Some(labels) = node.get("labels") {
                runs_on.labels = match &labels.value {
                    Value::Seq(items) => items.iter().filter_map(|i| r.string(i)).collect(),
                    _ => r.string(labels).into_iter().collect(),
                };
            }
        }
        _ => runs_on.labels = r.string(node).into_iter().collect(),
    }
    runs_on
}

fn read_strategy(r: &mut Reader<'_>, node: &Node) -> Strategy {
    let mut strategy = Strategy {
        matrix: None,
        fail_fast: serde_json::Value::Bool(true),
        max_parallel: None,
        matrix_pos: node.pos,
    };
    if let Value::String(s) = &node.value {
        r.check_template(s, node.pos);
        strategy.matrix = Some(serde_json::Value::String(s.clone()));
        return strategy;
    }
    let pairs = r.mapping(node);
    r.check_keys(pairs, &["matrix", "fail-fast", "max-parallel"]);
    for (k, value) in pairs {
        match k.name.as_str() {
            "matrix" => {
                strategy.matrix_pos = value.pos;
                if let Some(pairs) = value.as_map() {
                    for (mk, mv) in pairs {
                        match (mk.name.as_str(), &mv.value) {
                            ("include" | "exclude", Value::Seq(_) | Value::String(_)) => {}
                            ("include" | "exclude", _) => r.diag.syntax(mv.pos, "A mapping was not expected"),
                            (_, Value::Seq(items)) if items.is_empty() => r
                                .diag
                                .push(crate::WorkflowErrorKind::Matrix, mv.pos, format!("Matrix vector '{}' does not contain any values", mk.name)),
                            (_, Value::Seq(_)) => {}
                            (_, Value::String(s)) if s.contains("${{") => {}
                            _ => r.diag.syntax(mv.pos, format!("Unexpected value '{}'", mv.scalar_text().unwrap_or_default())),
                        }
                    }
                } else if !matches!(&value.value, Value::String(s) if s.contains("${{")) {
                    r.diag.syntax(value.pos, format!("Unexpected value '{}'", value.scalar_text().unwrap_or_default()));
                }
                strategy.matrix = Some(r.json(value));
            }
            "fail-fast" => strategy.fail_fast = r.json(value),
            "max-parallel" => strategy.max_parallel = Some(r.json(value)),
            _ => {}
        }
    }
    strategy
}

fn generated_id_base(step_uses: Option<&str>) -> String {
    let Some(uses) = step_uses else {
        return "run".to_owned();
    };
    let uses = uses.strip_prefix("docker://").unwrap_or(uses);
    let uses = uses.strip_prefix("https://").or_else(|| uses.strip_prefix("http://")).unwrap_or(uses);
    let uses = match uses.rfind('@') {
        Some(at) if !uses.starts_with("./") || at > 0 => &uses[..at],
        _ => uses,
    };
    uses.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

fn read_steps(r: &mut Reader<'_>, node: &Node) -> Vec<Step> {
    let Value::Seq(items) = &node.value else {
        r.diag.syntax(node.pos, "A mapping was not expected");
        return Vec::new();
    };
    let mut steps = Vec::new();
    // Lower case: GitHub compares step ids case-insensitively.
    let mut user_ids: std::collections::HashSet<String> = std::collections::HashSet::new();
    for item in items {
        let pairs = r.mapping(item);
        if pairs.is_empty() && item.as_map().is_none() {
            continue;
        }
        r.check_keys(pairs, STEP_KEYS);
        let mut step = Step {
            id: String::new(),
            name: None,
            condition: "success()".to_owned(),
            run: None,
            uses: None,
            with: serde_json::Map::new(),
            env: serde_json::Map::new(),
            shell: None,
            working_directory: None,
            continue_on_error: None,
            timeout_minutes: None,
            pos: item.pos,
            uses_pos: item.pos,
        };
        for (k, value) in pairs {
            match k.name.as_str() {
                "id" => {
                    if let Some(id) = r.literal_string(value) {
                        if let Some(message) = id_error(&id) {
                            r.diag.syntax(value.pos, message);
                        } else if !user_ids.insert(id.to_ascii_lowercase()) {
                            r.diag.syntax(
                                value.pos,
                                format!("The identifier '{id}' may not be used more than once within the same scope."),
                            );
                        }
                        step.id = id;
                    }
                }
                "name" => step.name = r.string(value),
                "if" => step.condition = r.within(contexts::STEP_IF, |r| r.condition(Some(value))),
                "run" => step.run = r.string(value),
                "uses" => {
                    step.uses_pos = value.pos;
                    step.uses = r.literal_string(value);
                    if let Some(u) = &step.uses
                        && !valid_uses(u)
                    {
                        r.diag.syntax(value.pos, format!("Expected format {{org}}/{{repo}}[/path]@ref. Actual '{u}'"));
                    }
                }
                "with" => step.with = r.string_map(value),
                "env" => step.env = r.string_map(value),
                "shell" => step.shell = r.string(value),
                "working-directory" => step.working_directory = r.string(value),
                "continue-on-error" => step.continue_on_error = Some(r.json(value)),
                "timeout-minutes" => step.timeout_minutes = Some(r.json(value)),
                _ => {}
            }
        }
        match (&step.run, &step.uses) {
            (Some(_), Some(_)) => {
                r.diag.syntax(item.pos, "A step may have either 'run' or 'uses', not both");
            }
            (None, None) if pairs.iter().all(|(k, _)| STEP_KEYS.contains(&k.name.as_str())) => {
                r.diag.syntax(
                    item.pos,
                    "There's not enough info to determine what you meant. Add one of these properties: run, shell, uses, with, working-directory",
                );
            }
            _ => {}
        }
        steps.push(step);
    }
    // Generated ids, counted per base name, skipping ids the user took.
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for step in &mut steps {
        if !step.id.is_empty() {
            continue;
        }
        let base = format!("__{}", generated_id_base(step.uses.as_deref()));
        let n = counts.entry(base.to_ascii_lowercase()).or_insert(0);
        *n += 1;
        step.id = if *n == 1 { base } else { format!("{base}_{n}") };
    }
    steps
}

/// The path of an action named by a full URL (`https://code.example/org/action` gives
/// `org/action`), the way Forgejo and Gitea let `uses:` name an action on any host
/// (<https://forgejo.org/docs/latest/user/actions/reference/#jobsjob_idstepsuses>); `None` when
/// `uses` is not an `http(s)://` URL with a host.
pub(crate) fn action_url_path(uses: &str) -> Option<&str> {
    let rest = uses.strip_prefix("https://").or_else(|| uses.strip_prefix("http://"))?;
    let (host, path) = rest.split_once('/')?;
    (!host.is_empty()).then_some(path)
}

fn valid_uses(uses: &str) -> bool {
    if uses.starts_with("docker://") || uses.starts_with("./") || uses.contains("${{") {
        return true;
    }
    // A full URL (Forgejo's dialect) must name `{org}/{repo}[/path]@ref` on its host.
    let uses = match uses.split_once('@') {
        Some((path, _)) => match action_url_path(path) {
            Some(url_path) => &uses[path.len() - url_path.len()..],
            None if path.contains("://") => return false,
            None => uses,
        },
        None => return false,
    };
    match uses.split_once('@') {
        Some((path, reference)) => {
            !reference.is_empty()
                && path.split('/').count() >= 2
                && path.split('/').all(|p| !p.is_empty())
                && path.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        }
        None => false,
    }
}

fn check_needs(jobs: &[Job], jobs_node: &Node, diag: &mut Diagnostics) {
    // Job nodes by id, so that positions are found without scanning the jobs each time.
    let job_nodes: std::collections::HashMap<&str, &Node> =
        jobs_node.as_map().unwrap_or_default().iter().map(|(k, v)| (k.name.as_str(), v)).collect();
    let needs_pos = |job: usize, index: usize| -> Pos {
        let job = &jobs[job];
        let job_node = job_nodes.get(job.id.as_str());
        match job_node.and_then(|n| n.get("needs")) {
            Some(n) => match &n.value {
                Value::Seq(items) => items.get(index).map_or(n.pos, |i| i.pos),
                _ => n.pos,
            },
            None => job.pos,
        }
    };
    check_needs_at(jobs, &needs_pos, jobs_node.pos, diag);
}

/// Unknown and cyclic `needs`, whatever the front end: `needs_pos(j, i)` is where the i-th
/// need of `jobs[j]` is written, `jobs_pos` where the job list is.
pub(crate) fn check_needs_at(jobs: &[Job], needs_pos: &dyn Fn(usize, usize) -> Pos, jobs_pos: Pos, diag: &mut Diagnostics) {
    // Ids compare case-insensitively, as GitHub's; the first job of an id wins.
    let mut by_id: std::collections::HashMap<String, usize> = std::collections::HashMap::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        by_id.entry(job.id.to_ascii_lowercase()).or_insert(i);
    }
    let index_of = |id: &str| by_id.get(&id.to_ascii_lowercase()).copied();
    let mut unknown = false;
    for (j, job) in jobs.iter().enumerate() {
        for (i, need) in job.needs.iter().enumerate() {
            if index_of(need).is_none() {
                unknown = true;
                diag.syntax(needs_pos(j, i), format!("Job '{}' depends on unknown job '{need}'.", job.id));
            }
        }
    }
    if unknown || jobs.is_empty() {
        if jobs.is_empty() {
            diag.syntax(jobs_pos, "The workflow must contain at least one job with no dependencies.");
        }
        return;
    }
    if jobs.iter().all(|j| !j.needs.is_empty()) {
        diag.syntax(jobs_pos, "The workflow must contain at least one job with no dependencies.");
        return;
    }
    // Cycle detection, depth-first in a deterministic order, with an explicit stack so that a
    // long chain of `needs` cannot overflow the thread's stack. The edges of the cycles found
    // are reported, at most MAX_CYCLE_EDGES of them (GitHub records at most 10 errors:
    // `ParseOptions.MaxErrors` in actions/runner), which also keeps the work linear.
    const MAX_CYCLE_EDGES: usize = 10;
    const UNSEEN: usize = usize::MAX;
    const DONE: usize = usize::MAX - 1;
    // For each job: UNSEEN, DONE, or its frame's index on the stack while it is on it.
    let mut frame_of = vec![UNSEEN; jobs.len()];
    // Frames: a job and the index of its next need to follow.
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let mut cycles: Vec<(usize, usize)> = Vec::new();
    let mut reported: std::collections::HashSet<(usize, usize)> = std::collections::HashSet::new();
    for root in 0..jobs.len() {
        if frame_of[root] != UNSEEN {
            continue;
        }
        frame_of[root] = 0;
        stack.push((root, 0));
        while let Some(&(i, n)) = stack.last() {
            let Some(need) = jobs[i].needs.get(n) else {
                frame_of[i] = DONE;
                stack.pop();
                continue;
            };
            if let Some(top) = stack.last_mut() {
                top.1 += 1;
            }
            let Some(j) = index_of(need) else { continue };
            match frame_of[j] {
                UNSEEN => {
                    frame_of[j] = stack.len();
                    stack.push((j, 0));
                }
                DONE => {}
                on_stack => {
                    // Every frame from j's to this one follows the edge it took last.
                    for &(from, next) in &stack[on_stack..] {
                        if cycles.len() >= MAX_CYCLE_EDGES {
                            break;
                        }
                        if reported.insert((from, next - 1)) {
                            cycles.push((from, next - 1));
                        }
                    }
                }
            }
        }
    }
    for (job, need) in cycles {
        diag.syntax(
            needs_pos(job, need),
            format!(
                "Job '{}' depends on job '{}' which creates a cycle in the dependency graph.",
                jobs[job].id, jobs[job].needs[need]
            ),
        );
    }
}
