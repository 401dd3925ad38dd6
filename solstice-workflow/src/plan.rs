//! Stage 2: translate a [`Workflow`] into a validated [`WorkflowPlan`]: matrix expansion,
//! shells, defaults, env merging, the built-in checkout, and Solstice CI's restrictions.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Diagnostics, Pos, WorkflowErrorKind, WorkflowErrors};
use crate::expression::{Expression, JobStatus, TemplatePart, split_template};
use crate::pending::{MatrixNeeds, PendingJob, matrix_needs};
use crate::syntax::{Job, RunDefaults, Step, Workflow, parse_workflow};

/// GitHub's limit on the jobs one matrix may generate.
pub const MAX_MATRIX_JOBS: usize = 256;
/// GitHub's default job timeout.
pub const DEFAULT_TIMEOUT_MINUTES: u64 = 360;
/// The command line GitHub uses when a step names no shell (and no default applies) on a
/// machine with bash. [`PlanOptions::default_shell`] changes it, e.g. to `sh -e {0}` for
/// guests without bash.
pub const DEFAULT_SHELL: &str = "bash -e {0}";

/// The environment variable by which a job opts in to debug SSH into its machine when
/// it fails (see `docs/debug-ssh.md`). An env variable, not a new workflow key, because
/// GitHub validates workflow files and refuses keys it does not know, while any env
/// name passes; the KDL dialect's `debug-ssh #true` sets the same variable.
pub const DEBUG_SSH_ENV: &str = "SOLSTICE_DEBUG_SSH";

/// Settings for [`plan_workflow`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct PlanOptions {
    contexts: Map<String, Value>,
    default_shell: Option<String>,
    os_families: Vec<(String, String)>,
}

impl PlanOptions {
    /// Options with no translation-time contexts and GitHub's default shell.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a context known at translation time (typically `github`, `vars`, `inputs`; also
    /// `needs` when re-planning a job whose needs have finished). Expressions that use only
    /// known contexts (plus `matrix` and `strategy`, always known) are substituted in the plan;
    /// the others stay `${{ }}` for the engine. Default: no contexts.
    pub fn context(mut self, name: &str, value: Value) -> Self {
        self.contexts.insert(name.to_owned(), value);
        self
    }

    /// The shell command line for `run` steps that name no shell. Default: [`DEFAULT_SHELL`].
    pub fn default_shell(mut self, command_line: &str) -> Self {
        self.default_shell = Some(command_line.to_owned());
        self
    }

    /// Declares the OS family (`illumos`, `linux`, `freebsd`, or a name of the runner's own)
    /// of the guest a runs-on label boots, which decides the KDL dialect's
    /// `setup os="..."` scripts a job gets. Case does not matter; a later declaration of the
    /// same label wins. Default: none declared, so every label follows the naming convention
    /// of [`crate::label_os_family`].
    pub fn os_family(mut self, label: &str, family: &str) -> Self {
        let label = label.to_ascii_lowercase();
        self.os_families.retain(|(l, _)| *l != label);
        self.os_families.push((label, family.to_ascii_lowercase()));
        self
    }

    pub(crate) fn known_contexts(&self) -> &Map<String, Value> {
        &self.contexts
    }

    pub(crate) fn declared_os_family(&self, label: &str) -> Option<&str> {
        let label = label.to_ascii_lowercase();
        self.os_families.iter().find(|(l, _)| *l == label).map(|(_, f)| f.as_str())
    }

    pub(crate) fn declares_family(&self, family: &str) -> bool {
        self.os_families.iter().any(|(_, f)| f.eq_ignore_ascii_case(family))
    }

    pub(crate) fn declared_families(&self) -> impl Iterator<Item = &str> {
        self.os_families.iter().map(|(_, f)| f.as_str())
    }

    /// The contexts given, plus Forgejo's and Gitea's names for `github`
    /// ([`crate::GITHUB_CONTEXT_ALIASES`]) holding the `github` value wherever the caller
    /// gave `github` but not the alias itself.
    pub(crate) fn contexts_with_aliases(&self) -> Map<String, Value> {
        let mut contexts = self.contexts.clone();
        if let Some(github) = self.contexts.get("github") {
            for alias in crate::GITHUB_CONTEXT_ALIASES {
                contexts.entry(*alias).or_insert_with(|| github.clone());
            }
        }
        contexts
    }
}

/// A translated workflow: one [`JobPlan`] per job and matrix combination.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct WorkflowPlan {
    /// The workflow's `name:` (or the file name when absent).
    pub name: String,
    /// The jobs in file order, each matrix expanded in GitHub's order.
    pub jobs: Vec<JobPlan>,
    /// The jobs whose matrix uses contexts the planner was not given (typically
    /// `fromJSON(needs.setup.outputs.matrix)`): whoever runs the whole workflow plans them
    /// with [`PendingJob::plan`] once the jobs they need have finished. Empty for most
    /// workflows; not in the JSON when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingJob>,
}

/// One job to run (one matrix combination of a workflow job).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct JobPlan {
    /// The job's key under `jobs:` (the same for every combination of a matrix).
    pub id: String,
    /// The display name, GitHub's way: `name:` evaluated, or the id, followed by the matrix
    /// values in parentheses when the name does not use the matrix (`build (ubuntu, 1.2)`).
    pub name: String,
    /// `runs-on` labels, expressions resolved where possible.
    pub runs_on: Vec<String>,
    /// `runs-on.group`, if given.
    pub runner_group: Option<String>,
    /// This combination's matrix values, or null for a job without a matrix.
    pub matrix: Option<Map<String, Value>>,
    /// Ids of the jobs this one needs.
    pub needs: Vec<String>,
    /// The `if:` condition, normalized (`success()` when absent), without `${{ }}`; evaluate
    /// with [`crate::evaluate_condition`] against [`JobPlan::contexts`] plus `needs`.
    #[serde(rename = "if")]
    pub condition: String,
    /// `timeout-minutes`, default 360 (the default too while
    /// [`JobPlan::timeout_minutes_expression`] is pending).
    pub timeout_minutes: u64,
    /// `timeout-minutes` as written when it needs contexts known only once the jobs it
    /// needs have finished (`${{ needs.setup.outputs.minutes }}`): whoever starts the job
    /// evaluates it then with [`crate::timeout_minutes_at_run_time`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_minutes_expression: Option<String>,
    /// `continue-on-error`.
    pub continue_on_error: bool,
    /// `continue-on-error` as written when it needs contexts known only once the jobs it
    /// needs have finished; evaluate with [`crate::continue_on_error_at_run_time`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continue_on_error_expression: Option<String>,
    /// Workflow `env` then job `env` (job wins), as written: the engine evaluates the
    /// `${{ }}` in them when the job starts.
    pub env: Map<String, Value>,
    /// `outputs:` (expressions kept for the engine).
    pub outputs: Map<String, Value>,
    /// `strategy.fail-fast` (default true).
    pub fail_fast: bool,
    /// `strategy.max-parallel`, if given.
    pub max_parallel: Option<u64>,
    /// The job opted in to debug SSH: its merged env sets [`DEBUG_SSH_ENV`] to `true`
    /// (or `1`), after expressions known at planning time are resolved. Anything else,
    /// including a run-time expression, leaves it off: it is never on by default.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub debug_ssh: bool,
    /// The expression contexts known at translation time for this job: `matrix`, `strategy`
    /// and whatever [`PlanOptions::context`] supplied. The engine adds `env`, `job`,
    /// `runner`, `steps`, `needs`, `secrets` when it evaluates.
    pub contexts: Map<String, Value>,
    /// The steps, in order.
    pub steps: Vec<StepPlan>,
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum StepKind {
    /// A `run:` script executed with [`StepPlan::shell`].
    Run,
    /// The built-in checkout (`uses: actions/checkout@*`, or a URL whose path is
    /// `actions/checkout`), see [`StepPlan::checkout`].
    Checkout,
    /// An action step (`uses:`) the runner cannot run yet, see [`StepPlan::action`]. It is
    /// not an error in the workflow: the step fails with [`ActionPlan::message`] when, and
    /// only if, its `if:` lets it run.
    #[serde(rename = "unsupported_action")]
    UnsupportedAction,
}

/// The action reference of an action step: what `uses:` names and the `with:` inputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ActionPlan {
    /// `uses:` as written (`actions/setup-node@v4`, `./local`, `docker://alpine`,
    /// `https://code.example/org/action@v1`).
    pub uses: String,
    /// `with:`; translation-time expressions substituted, run-time ones kept as `${{ }}`.
    pub with: Map<String, Value>,
    /// Why the runner cannot run the action: the error the step reports when it runs.
    pub message: String,
}

/// Inputs of the built-in checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CheckoutPlan {
    /// `path:` relative to the workspace (default: the workspace itself, `null`).
    pub path: Option<String>,
    /// `ref:` (default: the ref that triggered the workflow, `null`).
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// `fetch-depth:`: commits to fetch, 0 for the whole history (default 1).
    pub fetch_depth: u64,
    /// `submodules:`: `false` (default), `true` or `recursive`.
    pub submodules: Submodules,
}

/// The `submodules:` input of checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Submodules {
    /// Do not fetch submodules.
    False,
    /// Fetch the first level of submodules.
    True,
    /// Fetch submodules recursively.
    Recursive,
}

/// One step of a [`JobPlan`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StepPlan {
    /// `id:` or GitHub's generated id (`__run`, `__actions_checkout`, `__run_2`).
    pub id: String,
    /// The display name: `name:`, else `Run <first line of the script>` or
    /// `Checkout` as GitHub shows them.
    pub name: String,
    /// `run` or `checkout`.
    pub kind: StepKind,
    /// The script of a run step, as written: its `${{ }}` are evaluated when the step
    /// runs ([`crate::interpolate`]), with the contexts of that moment.
    pub run: Option<String>,
    /// The full shell command line of a run step, `{0}` standing for the script file
    /// (`bash --noprofile --norc -eo pipefail {0}`, `sh -e {0}`, `python {0}`, ...).
    pub shell: Option<String>,
    /// The checkout inputs of a checkout step.
    pub checkout: Option<CheckoutPlan>,
    /// The action of an [`StepKind::UnsupportedAction`] step (absent from the JSON otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionPlan>,
    /// The `if:` condition, normalized, without `${{ }}`.
    #[serde(rename = "if")]
    pub condition: String,
    /// `working-directory` (step, else job default, else workflow default), as written
    /// (evaluated when the step runs).
    pub working_directory: Option<String>,
    /// The step's own `env:`, as written (evaluated when the step runs). The job's
    /// [`JobPlan::env`] and what earlier steps wrote to `$GITHUB_ENV` lie under it.
    pub env: Map<String, Value>,
    /// `continue-on-error`.
    pub continue_on_error: bool,
    /// `continue-on-error` as written when it needs contexts known only while the job runs
    /// (`steps`, `env`, `job`, `runner`, `secrets`): the engine evaluates it when the step
    /// has failed, as GitHub's runner does ([`crate::continue_on_error_at_run_time`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continue_on_error_expression: Option<String>,
    /// `timeout-minutes`, if given.
    pub timeout_minutes: Option<u64>,
    /// `timeout-minutes` as written when it needs contexts known only while the job runs:
    /// the engine evaluates it when the step starts ([`crate::timeout_minutes_at_run_time`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_minutes_expression: Option<String>,
}

/// Translates a GitHub Actions workflow into a plan: reads it ([`parse_workflow`]), then
/// expands matrices, resolves shells and defaults, merges env, maps `actions/checkout` to
/// the built-in checkout, plans other actions as [`StepKind::UnsupportedAction`] steps and
/// rejects the job-level features Solstice CI cannot run (`container:`, `services:`,
/// reusable workflows). `file_name` is only used in error messages; no file is read.
///
/// # Errors
/// Every problem found, each with file, line and column.
pub fn plan_workflow(source: &str, file_name: &str, options: &PlanOptions) -> Result<WorkflowPlan, WorkflowErrors> {
    let workflow = parse_workflow(source, file_name)?;
    plan_parsed(&workflow, file_name, options)
}

/// Stage 2 alone, for a workflow already read with [`parse_workflow`] or
/// [`crate::parse_kdl_workflow`]. A KDL workflow's `setup` scripts are placed before each
/// planned job's steps when their OS family matches the job's runs-on label (see
/// [`PlanOptions::os_family`]).
///
/// # Errors
/// Every problem found, each with file, line and column.
pub fn plan_parsed(workflow: &Workflow, file_name: &str, options: &PlanOptions) -> Result<WorkflowPlan, WorkflowErrors> {
    let mut diag = Diagnostics::new(file_name);
    crate::os::check_setup_families(workflow, options, &mut diag);
    let mut jobs = Vec::new();
    let mut pending = Vec::new();
    // Pending jobs share one copy of the workflow, made only when there is one.
    let mut shared = None;
    for job in &workflow.jobs {
        if let Some(waiting) = plan_job(workflow, job, options, &mut diag, &mut jobs) {
            let shared = shared.get_or_insert_with(|| std::sync::Arc::new(workflow.clone()));
            pending.push(PendingJob::new(shared, job, file_name, waiting, options));
        }
    }
    let name = workflow.name.clone().unwrap_or_else(|| file_name.to_owned());
    diag.into_result(WorkflowPlan { name, jobs, pending })
}

/// Substitutes the expressions that can be evaluated now.
pub(crate) struct Resolver<'a> {
    pub(crate) contexts: &'a Map<String, Value>,
}

impl Resolver<'_> {
    pub(crate) fn known(&self, expr: &Expression) -> bool {
        expr.referenced_contexts().iter().all(|c| self.contexts.contains_key(c))
            && !expr.called_functions().iter().any(|f| {
                matches!(*f, "hashFiles" | "success" | "failure" | "cancelled" | "always")
            })
    }

    /// Evaluates `text` fully when it is exactly one resolvable expression (keeping the
    /// value's type), otherwise substitutes what it can and returns a string.
    fn value(&self, text: &str) -> Result<Value, String> {
        if !text.contains("${{") {
            return Ok(Value::String(text.to_owned()));
        }
        let parts = split_template(text).map_err(|e| e.message().to_owned())?;
        if let [TemplatePart::Expression { text: inner, .. }] = parts.as_slice() {
            let expr = Expression::parse(inner).map_err(|e| e.message().to_owned())?;
            if self.known(&expr) {
                return expr.evaluate(self.contexts, JobStatus::Success).map(|v| v.value).map_err(|e| e.message().to_owned());
            }
            return Ok(Value::String(text.to_owned()));
        }
        self.text(text).map(Value::String)
    }

    fn text(&self, text: &str) -> Result<String, String> {
        if !text.contains("${{") {
            return Ok(text.to_owned());
        }
        let parts = split_template(text).map_err(|e| e.message().to_owned())?;
        let mut out = String::with_capacity(text.len());
        for part in parts {
            match part {
                TemplatePart::Literal(s) => out.push_str(s),
                TemplatePart::Expression { text: inner, .. } => {
                    let expr = Expression::parse(inner).map_err(|e| e.message().to_owned())?;
                    if self.known(&expr) {
                        let single = format!("${{{{ {inner} }}}}");
                        out.push_str(&crate::expression::interpolate(&single, self.contexts).map_err(|e| e.message().to_owned())?);
                    } else {
                        out.push_str("${{ ");
                        out.push_str(inner);
                        out.push_str(" }}");
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The key under which the reader keeps a `${{ insert }}` whose value is an expression
/// (a literal mapping under `${{ insert }}` is spliced in while reading).
pub(crate) const INSERT_KEY: &str = "${{ insert }}";

/// `map` with its `${{ insert }}` entry replaced by the pairs of the mapping its expression
/// yields, GitHub's insert directive (`env: { ${{ insert }}: ${{ fromJSON(vars.ENV) }} }`).
/// The expression must be known at planning, since the pairs decide the map's keys.
fn with_inserts(map: &Map<String, Value>, resolver: &Resolver<'_>) -> Result<Map<String, Value>, String> {
    if !map.contains_key(INSERT_KEY) {
        return Ok(map.clone());
    }
    let mut out = Map::new();
    for (key, value) in map {
        if key != INSERT_KEY {
            out.insert(key.clone(), value.clone());
            continue;
        }
        let text = value.as_str().unwrap_or_default();
        match resolver.value(text)? {
            Value::Object(pairs) => {
                for (k, v) in pairs {
                    out.insert(k, Value::String(value_text(&v)));
                }
            }
            Value::Null => {}
            Value::String(s) if s.contains("${{") => {
                return Err(format!("the {INSERT_KEY} value '{s}' depends on values known only while the workflow runs; Solstice CI must know the keys it inserts before the job starts"));
            }
            other => return Err(format!("the {INSERT_KEY} value must be a mapping, not '{}'", value_text(&other))),
        }
    }
    Ok(out)
}

pub(crate) fn value_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => crate::expression::format_number(n.as_f64().unwrap_or(f64::NAN)),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// Whether `uses:` names the checkout action Solstice CI runs itself: `actions/checkout@*`,
/// or a full URL on any host whose path is `actions/checkout`, as Forgejo spells it
/// (`https://data.forgejo.org/actions/checkout@v4`,
/// <https://forgejo.org/docs/latest/user/actions/reference/#jobsjob_idstepsuses>).
fn is_checkout(uses: &str) -> bool {
    let path = uses.split('@').next().unwrap_or_default();
    let path = crate::syntax::action_url_path(path).unwrap_or(path);
    path.eq_ignore_ascii_case("actions/checkout")
}

/// GitHub's command line for a named shell; custom shells must contain `{0}`.
pub(crate) fn shell_command_line(shell: &str) -> Result<String, String> {
    Ok(match shell {
        "bash" => "bash --noprofile --norc -eo pipefail {0}".to_owned(),
        "sh" => "sh -e {0}".to_owned(),
        "pwsh" => "pwsh -command \". '{0}'\"".to_owned(),
        "powershell" => "powershell -command \". '{0}'\"".to_owned(),
        "python" => "python {0}".to_owned(),
        "cmd" => "%ComSpec% /D /E:ON /V:OFF /S /C \"CALL \"{0}\"\"".to_owned(),
        custom if custom.contains("{0}") => custom.to_owned(),
        custom => {
            return Err(format!(
                "the shell '{custom}' is not one of bash, sh, pwsh, powershell, python, cmd, and a custom shell must contain {{0}} where the script file goes (for example 'perl {{0}}')"
            ));
        }
    })
}

/// Expands a matrix object with GitHub's rules.
pub(crate) fn expand_matrix(matrix: &Map<String, Value>) -> Result<Vec<Map<String, Value>>, String> {
    // `${{ insert }}: ${{ fromJSON(...) }}` adds the vectors of the mapping it yields, in
    // its place (the expression was evaluated with the rest of the matrix).
    let spliced;
    let matrix = match matrix.get(INSERT_KEY) {
        None => matrix,
        Some(Value::Object(_)) => {
            let mut out = Map::new();
            for (key, value) in matrix {
                match (key.as_str(), value) {
                    (INSERT_KEY, Value::Object(pairs)) => out.extend(pairs.clone()),
                    _ => {
                        out.insert(key.clone(), value.clone());
                    }
                }
            }
            spliced = out;
            &spliced
        }
        Some(other) => {
            return Err(format!(
                "the matrix's {INSERT_KEY} value must be a mapping known before the job starts, not '{}'",
                value_text(other)
            ));
        }
    };
    let vectors: Vec<(&String, Vec<Value>)> = matrix
        .iter()
        .filter(|(k, _)| k.as_str() != "include" && k.as_str() != "exclude")
        .map(|(k, v)| (k, v.as_array().cloned().unwrap_or_else(|| vec![v.clone()])))
        .collect();
    for (k, v) in &vectors {
        if v.is_empty() {
            return Err(format!("Matrix vector '{k}' does not contain any values"));
        }
    }
    let entries = |key: &str| -> Result<Vec<Map<String, Value>>, String> {
        let entry = |item: &Value| item.as_object().cloned().ok_or_else(|| format!("each matrix '{key}' entry must be a mapping"));
        match matrix.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            // An entry that is itself a sequence (an expression such as
            // `${{ fromJSON(needs.x.outputs.extra) }}` that yields an array) is spliced into
            // the list, as GitHub's template reader does with a sequence item evaluating to a
            // sequence (`SequenceItemBasicExpression` in actions/runner's
            // src/Sdk/DTObjectTemplating/ObjectTemplating/TemplateUnraveler.cs).
            Some(Value::Array(items)) => items
                .iter()
                .flat_map(|item| match item {
                    Value::Array(spliced) => spliced.iter().map(entry).collect::<Vec<_>>(),
                    single => vec![entry(single)],
                })
                .collect(),
            Some(_) => Err(format!("matrix '{key}' must be a sequence of mappings")),
        }
    };
    let includes = entries("include")?;
    let excludes = entries("exclude")?;
    let mut total: usize = 1;
    for (_, v) in &vectors {
        total = total.saturating_mul(v.len());
    }
    if total > MAX_MATRIX_JOBS * 64 {
        return Err(format!("the matrix expands to {total} jobs; at most {MAX_MATRIX_JOBS} are allowed"));
    }
    let mut combos: Vec<Map<String, Value>> = if vectors.is_empty() { Vec::new() } else { vec![Map::new()] };
    for (key, values) in &vectors {
        let mut next = Vec::with_capacity(combos.len() * values.len());
        for combo in &combos {
            for value in values {
                let mut c = combo.clone();
                c.insert((*key).clone(), value.clone());
                next.push(c);
            }
        }
        combos = next;
    }
    combos.retain(|combo| {
        !excludes.iter().any(|ex| ex.iter().all(|(k, v)| combo.get(k).is_some_and(|c| partial_match(c, v))))
    });
    let original: Vec<&String> = vectors.iter().map(|(k, _)| *k).collect();
    let base_len = combos.len();
    for entry in &includes {
        let mut added = false;
        for combo in combos.iter_mut().take(base_len) {
            let compatible = entry.iter().all(|(k, v)| !original.contains(&k) || combo.get(k) == Some(v));
            if compatible {
                for (k, v) in entry {
                    combo.insert(k.clone(), v.clone());
                }
                added = true;
            }
        }
        if !added {
            combos.push(entry.clone());
        }
    }
    if combos.len() > MAX_MATRIX_JOBS {
        return Err(format!(
            "the matrix expands to {} jobs; at most {MAX_MATRIX_JOBS} are allowed",
            combos.len()
        ));
    }
    Ok(combos)
}

/// An exclude value matches when equal, or (for objects) when every key it names matches.
fn partial_match(actual: &Value, pattern: &Value) -> bool {
    match (actual, pattern) {
        (Value::Object(a), Value::Object(p)) => p.iter().all(|(k, v)| a.get(k).is_some_and(|x| partial_match(x, v))),
        _ => actual == pattern,
    }
}

/// Plans one workflow job into `out` (one [`JobPlan`] per matrix combination). Returns the
/// contexts its matrix still waits for, planning nothing, when the matrix uses contexts
/// `options` does not hold (see [`PendingJob`]).
pub(crate) fn plan_job(
    workflow: &Workflow,
    job: &Job,
    options: &PlanOptions,
    diag: &mut Diagnostics,
    out: &mut Vec<JobPlan>,
) -> Option<Vec<String>> {
    let pos_of = |key: &str| job.key_pos.get(key).copied().unwrap_or(job.pos);
    if let Some(uses) = &job.uses {
        diag.push(
            WorkflowErrorKind::Unsupported,
            pos_of("uses"),
            format!("job '{}' calls the reusable workflow '{uses}', which Solstice CI does not support; copy that workflow's jobs into this file", job.id),
        );
        return None;
    }
    if !job.container.is_null() {
        diag.push(
            WorkflowErrorKind::Unsupported,
            pos_of("container"),
            format!("job '{}' uses 'container:', which Solstice CI does not support: jobs run directly in a virtual machine; pick an image with 'runs-on' instead", job.id),
        );
    }
    if !job.services.is_null() {
        diag.push(
            WorkflowErrorKind::Unsupported,
            pos_of("services"),
            format!("job '{}' uses 'services:', which Solstice CI does not support; start the service in a 'run' step instead", job.id),
        );
    }
    let mut base_contexts = options.contexts_with_aliases();
    // `github.job` is the key of the job being planned (a whole workflow is planned with
    // one `github` context for all its jobs).
    for name in ["github", "forge", "gitea"] {
        if let Some(Value::Object(github)) = base_contexts.get_mut(name) {
            github.insert("job".into(), Value::String(job.id.clone()));
        }
    }
    let strategy = job.strategy.as_ref();
    let combos: Vec<Option<Map<String, Value>>> = match strategy.and_then(|s| s.matrix.as_ref()) {
        None => vec![None],
        Some(matrix) => {
            let pos = strategy.map_or(job.pos, |s| s.matrix_pos);
            let resolver = Resolver { contexts: &base_contexts };
            // An expression the planner cannot evaluate must never reach a job unevaluated:
            // the job waits for the contexts it names, or the workflow is refused.
            match matrix_needs(&resolver, matrix) {
                Ok(MatrixNeeds::Nothing) => {}
                Ok(MatrixNeeds::Contexts(missing)) => return Some(missing),
                Err(message) => {
                    diag.push(WorkflowErrorKind::Matrix, pos, message);
                    return None;
                }
            }
            let resolved = resolve_matrix(&resolver, matrix);
            match resolved {
                Ok(Value::Object(m)) => match expand_matrix(&m) {
                    Ok(c) if c.is_empty() => vec![None],
                    Ok(c) => c.into_iter().map(Some).collect(),
                    Err(message) => {
                        diag.push(WorkflowErrorKind::Matrix, pos, message);
                        return None;
                    }
                },
                Ok(other) => {
                    diag.push(WorkflowErrorKind::Matrix, pos, format!("the matrix must be a mapping, not {other}"));
                    return None;
                }
                Err(message) => {
                    diag.push(WorkflowErrorKind::Expression, pos, message);
                    return None;
                }
            }
        }
    };
    let total = combos.len();
    let fail_fast_raw = strategy.map_or(Value::Bool(true), |s| s.fail_fast.clone());
    let max_parallel_raw = strategy.and_then(|s| s.max_parallel.clone());
    for (index, combo) in combos.into_iter().enumerate() {
        let mut contexts = base_contexts.clone();
        let resolver_base = Resolver { contexts: &base_contexts };
        let fail_fast = match &fail_fast_raw {
            Value::String(s) => resolver_base.value(s).map(|v| truthy(&v)).unwrap_or(true),
            other => truthy(other),
        };
        let max_parallel = match &max_parallel_raw {
            Some(Value::String(s)) => resolver_base.value(s).ok().and_then(|v| v.as_f64()).map(|f| f as u64),
            Some(v) => v.as_f64().map(|f| f as u64),
            None => None,
        };
        let mut strategy_ctx = Map::new();
        strategy_ctx.insert("fail-fast".into(), Value::Bool(fail_fast));
        strategy_ctx.insert("job-index".into(), Value::from(index));
        strategy_ctx.insert("job-total".into(), Value::from(total));
        strategy_ctx.insert("max-parallel".into(), Value::from(max_parallel.unwrap_or(total as u64)));
        contexts.insert("strategy".into(), Value::Object(strategy_ctx));
        contexts.insert("matrix".into(), combo.clone().map_or(Value::Object(Map::new()), Value::Object));
        let resolver = Resolver { contexts: &contexts };
        let mut fail = |pos: Pos, message: String| diag.push(WorkflowErrorKind::Expression, pos, message);

        let raw_name = job.name.clone().unwrap_or_else(|| job.id.clone());
        let mut name = resolver.text(&raw_name).unwrap_or_else(|m| {
            fail(pos_of("name"), m);
            raw_name.clone()
        });
        let name_uses_matrix = raw_name.contains("${{") && raw_name.to_ascii_lowercase().contains("matrix");
        if let Some(values) = &combo
            && !name_uses_matrix
            && !values.is_empty()
        {
            let shown: Vec<String> = values.values().map(value_text).collect();
            name = format!("{name} ({})", shown.join(", "));
        }
        let runs_on = job.runs_on.clone().unwrap_or_default();
        let mut labels = Vec::new();
        for label in &runs_on.labels {
            match resolver.value(label) {
                Ok(Value::Array(items)) => labels.extend(items.iter().map(value_text)),
                Ok(v) => labels.push(value_text(&v)),
                Err(m) => fail(pos_of("runs-on"), m),
            }
        }
        let (timeout_minutes, timeout_minutes_expression) = match &job.timeout_minutes {
            None => (DEFAULT_TIMEOUT_MINUTES, None),
            Some(raw) => match number_field(&resolver, raw) {
                Ok(Setting::Known(minutes)) => (minutes, None),
                Ok(Setting::RunTime(text)) if waits_for_needs(&text, &resolver) => (DEFAULT_TIMEOUT_MINUTES, Some(text)),
                Ok(Setting::RunTime(text)) => {
                    fail(pos_of("timeout-minutes"), format!("expected a number of minutes, got '{text}' (it must be known before the job starts)"));
                    (DEFAULT_TIMEOUT_MINUTES, None)
                }
                Err(m) => {
                    fail(pos_of("timeout-minutes"), m);
                    (DEFAULT_TIMEOUT_MINUTES, None)
                }
            },
        };
        let (continue_on_error, continue_on_error_expression) = match &job.continue_on_error {
            None => (false, None),
            Some(raw) => match bool_field(&resolver, raw) {
                Ok(Setting::Known(flag)) => (flag, None),
                Ok(Setting::RunTime(text)) if waits_for_needs(&text, &resolver) => (false, Some(text)),
                Ok(Setting::RunTime(text)) => {
                    fail(pos_of("continue-on-error"), format!("expected true or false, got '{text}' (it must be known before the job starts)"));
                    (false, None)
                }
                Err(m) => {
                    fail(pos_of("continue-on-error"), m);
                    (false, None)
                }
            },
        };
        // Kept as written: the engine evaluates the job's env when the job starts, with
        // the machine known (`github.workspace`, `runner.*`), as GitHub's runner does.
        let mut env = Map::new();
        let mut with_inserts = |map: &Map<String, Value>| {
            with_inserts(map, &resolver).unwrap_or_else(|m| {
                diag.push(WorkflowErrorKind::Expression, pos_of("env"), m);
                Map::new()
            })
        };
        let (workflow_env, job_env) = (with_inserts(&workflow.env), with_inserts(&job.env));
        for (k, v) in workflow_env.iter().chain(job_env.iter()) {
            env.insert(k.clone(), Value::String(v.as_str().unwrap_or_default().to_owned()));
        }
        let defaults = RunDefaults {
            shell: job.defaults.shell.clone().or_else(|| workflow.defaults.shell.clone()),
            working_directory: job
                .defaults
                .working_directory
                .clone()
                .or_else(|| workflow.defaults.working_directory.clone()),
        };
        // KDL `setup` scripts for this guest's OS family come first (none in YAML).
        let family = crate::os::job_family(&labels, options);
        let mut steps = Vec::new();
        for step in crate::os::setup_steps(workflow, job, family.as_deref()).chain(&job.steps) {
            if let Some(plan) = plan_step(step, &defaults, &resolver, options, diag) {
                steps.push(plan);
            }
        }
        // The opt-in is read now, with what is known now; a run-time expression leaves it off.
        let debug_ssh = env
            .get(DEBUG_SSH_ENV)
            .and_then(Value::as_str)
            .and_then(|text| resolver.value(text).ok())
            .is_some_and(|value| debug_ssh_on(&value));
        out.push(JobPlan {
            id: job.id.clone(),
            name,
            runs_on: labels,
            runner_group: runs_on.group.clone(),
            matrix: combo,
            needs: job.needs.clone(),
            condition: job.condition.clone(),
            timeout_minutes,
            timeout_minutes_expression,
            continue_on_error,
            continue_on_error_expression,
            env,
            outputs: job.outputs.clone(),
            fail_fast,
            max_parallel,
            debug_ssh,
            contexts,
            steps,
        });
    }
    None
}

/// Whether a value of [`DEBUG_SSH_ENV`] turns debug SSH on: only an explicit yes
/// (`true` in any case, or `1`). Sources that build jobs without the planner (the
/// GitHub runner gets its steps from GitHub) use it on the job's env, so both paths
/// read the opt-in the same way.
///
/// ```
/// assert!(solstice_workflow::debug_ssh_requested("TRUE"));
/// assert!(!solstice_workflow::debug_ssh_requested("${{ inputs.debug }}"));
/// ```
pub fn debug_ssh_requested(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("true") || value.trim() == "1"
}

fn debug_ssh_on(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::String(s) => debug_ssh_requested(s),
        Value::Number(n) => n.as_u64() == Some(1),
        _ => false,
    }
}

fn resolve_matrix(resolver: &Resolver<'_>, matrix: &Value) -> Result<Value, String> {
    Ok(match matrix {
        Value::String(s) => resolver.value(s)?,
        Value::Array(items) => {
            // An expression item that yields a sequence is spliced into the sequence, as
            // GitHub's template unraveler does ("sequence insertion"): `- ${{ fromJSON('[1,2]') }}`
            // adds two items, not one holding a list.
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match (item, resolve_matrix(resolver, item)?) {
                    (Value::String(text), Value::Array(spliced)) if text.contains("${{") => out.extend(spliced),
                    (_, resolved) => out.push(resolved),
                }
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                // The insert directive is a key, not an expression: its value is evaluated and,
                // when it is a mapping, spliced in its place at any depth, as GitHub's
                // template reader does (`matrix: { a: [ { env: { ${{ insert }}: ... } } ] }`).
                if k == INSERT_KEY {
                    match resolve_matrix(resolver, v)? {
                        Value::Object(pairs) => out.extend(pairs),
                        other => {
                            out.insert(k.clone(), other);
                        }
                    }
                    continue;
                }
                out.insert(resolver.text(k)?, resolve_matrix(resolver, v)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// Whether a job-level value left for later waits only for `needs` (the one context GitHub
/// allows there that is known once the jobs it needs have finished); any other unknown
/// context can never be known, so the value is an error now.
fn waits_for_needs(text: &str, resolver: &Resolver<'_>) -> bool {
    let Ok(parts) = split_template(text) else { return false };
    parts.iter().all(|part| match part {
        TemplatePart::Literal(_) => true,
        TemplatePart::Expression { text, .. } => Expression::parse(text).is_ok_and(|expr| {
            expr.referenced_contexts().iter().all(|c| c == "needs" || resolver.contexts.contains_key(c))
        }),
    })
}

/// A `timeout-minutes` or `continue-on-error` value: known now, or kept as written for
/// whoever runs the job, because it uses contexts known only then.
enum Setting<T> {
    Known(T),
    RunTime(String),
}

fn number_field(resolver: &Resolver<'_>, raw: &Value) -> Result<Setting<u64>, String> {
    let value = match raw {
        Value::String(s) => resolver.value(s)?,
        other => other.clone(),
    };
    let number = match &value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.contains("${{") => return Ok(Setting::RunTime(s.clone())),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match number {
        Some(n) if n >= 0.0 && n.is_finite() => Ok(Setting::Known(n.ceil() as u64)),
        _ => Err(format!("expected a number of minutes, got '{}'", value_text(&value))),
    }
}

fn bool_field(resolver: &Resolver<'_>, raw: &Value) -> Result<Setting<bool>, String> {
    let value = match raw {
        Value::String(s) => resolver.value(s)?,
        other => other.clone(),
    };
    match &value {
        Value::Bool(b) => Ok(Setting::Known(*b)),
        Value::String(s) if s.contains("${{") => Ok(Setting::RunTime(s.clone())),
        other => Ok(Setting::Known(truthy(other))),
    }
}

fn plan_step(
    step: &Step,
    defaults: &RunDefaults,
    resolver: &Resolver<'_>,
    options: &PlanOptions,
    diag: &mut Diagnostics,
) -> Option<StepPlan> {
    // `env`, `working-directory` and `run` are kept as written (their expressions were
    // checked when the workflow was read): the engine evaluates them when the step runs,
    // with the contexts of that moment, as GitHub's runner does. Only `${{ insert }}`
    // directives are resolved now: they change which keys there are.
    let step_env = with_inserts(&step.env, resolver).unwrap_or_else(|m| {
        diag.push(WorkflowErrorKind::Expression, step.pos, m);
        Map::new()
    });
    let env: Map<String, Value> =
        step_env.iter().map(|(k, v)| (k.clone(), Value::String(v.as_str().unwrap_or_default().to_owned()))).collect();
    let working_directory =
        step.working_directory.as_deref().or(defaults.working_directory.as_deref()).map(str::to_owned);
    // Kept as written when they use run-time contexts: the engine evaluates them with
    // the contexts of that moment, as GitHub's runner does.
    let (continue_on_error, continue_on_error_expression) = match &step.continue_on_error {
        None => (false, None),
        Some(raw) => match bool_field(resolver, raw) {
            Ok(Setting::Known(flag)) => (flag, None),
            Ok(Setting::RunTime(text)) => (false, Some(text)),
            Err(m) => {
                diag.push(WorkflowErrorKind::Expression, step.pos, m);
                (false, None)
            }
        },
    };
    let (timeout_minutes, timeout_minutes_expression) = match &step.timeout_minutes {
        None => (None, None),
        Some(raw) => match number_field(resolver, raw) {
            Ok(Setting::Known(n)) => (Some(n), None),
            Ok(Setting::RunTime(text)) => (None, Some(text)),
            Err(m) => {
                diag.push(WorkflowErrorKind::Expression, step.pos, m);
                (None, None)
            }
        },
    };
    let explicit_name = step.name.as_deref().map(|n| resolver.text(n).unwrap_or_else(|_| n.to_owned()));
    if let Some(run) = &step.run {
        let script = run.clone();
        // GitHub's schema lets `shell` read `matrix`, `needs`, `github`, `vars`, `inputs`
        // (`defaults.run.shell: ${{ matrix.shell }}`): resolved now, because the shell
        // decides how the script file is named and started.
        let shell = match step.shell.as_deref().or(defaults.shell.as_deref()).map(|shell| resolver.text(shell)) {
            Some(Ok(shell)) if shell.contains("${{") => {
                diag.push(
                    WorkflowErrorKind::Expression,
                    step.pos,
                    format!("the shell '{shell}' depends on values known only while the job runs; it may use matrix, strategy, needs, github, vars and inputs"),
                );
                return None;
            }
            Some(Ok(shell)) => match shell_command_line(shell.trim()) {
                Ok(line) => line,
                Err(m) => {
                    diag.push(WorkflowErrorKind::Syntax, step.pos, m);
                    return None;
                }
            },
            Some(Err(m)) => {
                diag.push(WorkflowErrorKind::Expression, step.pos, m);
                return None;
            }
            None => options.default_shell.clone().unwrap_or_else(|| DEFAULT_SHELL.to_owned()),
        };
        let name = explicit_name.unwrap_or_else(|| format!("Run {}", run.lines().next().unwrap_or_default().trim()));
        return Some(StepPlan {
            id: step.id.clone(),
            name,
            kind: StepKind::Run,
            run: Some(script),
            shell: Some(shell),
            checkout: None,
            action: None,
            condition: step.condition.clone(),
            working_directory,
            env,
            continue_on_error,
            continue_on_error_expression,
            timeout_minutes,
            timeout_minutes_expression,
        });
    }
    let uses = step.uses.as_deref()?;
    let name = explicit_name.unwrap_or_else(|| format!("Run {uses}"));
    // What the runner cannot do is reported by the step when, and only if, it runs: a step
    // guarded by `if: failure()` must not make a succeeding workflow invalid.
    let (kind, checkout, action) = match plan_checkout(step, resolver, diag) {
        Some(Ok(checkout)) => (StepKind::Checkout, Some(checkout), None),
        Some(Err(message)) => (StepKind::UnsupportedAction, None, Some(action_plan(step, uses, message, resolver, diag))),
        None if is_checkout(uses) => return None, // a malformed input, already reported
        None => {
            let message = format!("the action '{uses}' cannot run on Solstice CI yet: Solstice CI runs 'run' steps and the built-in checkout (actions/checkout) only; replace the action with 'run' commands that do the same work");
            (StepKind::UnsupportedAction, None, Some(action_plan(step, uses, message, resolver, diag)))
        }
    };
    Some(StepPlan {
        id: step.id.clone(),
        name,
        kind,
        run: None,
        shell: None,
        checkout,
        action,
        condition: step.condition.clone(),
        working_directory,
        env,
        continue_on_error,
        continue_on_error_expression,
        timeout_minutes,
        timeout_minutes_expression,
    })
}

/// Inputs of actions/checkout that change nothing for a runner that fetches the repository
/// itself.
const IGNORED_CHECKOUT_INPUTS: &[&str] =
    &["token", "persist-credentials", "clean", "show-progress", "set-safe-directory", "fetch-tags", "filter"];

/// The action reference of a step the runner cannot run, its `with:` resolved as far as
/// translation-time contexts allow.
fn action_plan(step: &Step, uses: &str, message: String, resolver: &Resolver<'_>, diag: &mut Diagnostics) -> ActionPlan {
    let mut with = Map::new();
    let inputs = with_inserts(&step.with, resolver).unwrap_or_else(|m| {
        diag.push(WorkflowErrorKind::Expression, step.pos, m);
        Map::new()
    });
    for (key, raw) in &inputs {
        let raw = raw.as_str().unwrap_or_default();
        let value = resolver.text(raw).unwrap_or_else(|m| {
            diag.push(WorkflowErrorKind::Expression, step.pos, m);
            raw.to_owned()
        });
        with.insert(key.clone(), Value::String(value));
    }
    ActionPlan { uses: uses.to_owned(), with, message }
}

/// The built-in checkout's inputs: `None` when `uses:` is not the checkout or an input is
/// malformed (reported to `diag`), `Some(Err(why))` when it asks for something the
/// built-in checkout cannot do.
fn plan_checkout(step: &Step, resolver: &Resolver<'_>, diag: &mut Diagnostics) -> Option<Result<CheckoutPlan, String>> {
    if !step.uses.as_deref().is_some_and(is_checkout) {
        return None;
    }
    let mut plan = CheckoutPlan { path: None, git_ref: None, fetch_depth: 1, submodules: Submodules::False };
    let mut ok = true;
    let mut unsupported = Vec::new();
    let inputs = with_inserts(&step.with, resolver).unwrap_or_else(|m| {
        diag.push(WorkflowErrorKind::Expression, step.pos, m);
        Map::new()
    });
    for (key, raw) in &inputs {
        let raw = raw.as_str().unwrap_or_default();
        let value = match resolver.text(raw) {
            Ok(v) => v,
            Err(m) => {
                diag.push(WorkflowErrorKind::Expression, step.pos, m);
                ok = false;
                continue;
            }
        };
        match key.as_str() {
            "path" => plan.path = Some(value),
            "ref" => plan.git_ref = Some(value).filter(|v| !v.is_empty()),
            "fetch-depth" => match value.trim().parse::<u64>() {
                Ok(n) => plan.fetch_depth = n,
                Err(_) => {
                    diag.push(WorkflowErrorKind::Syntax, step.pos, format!("checkout 'fetch-depth' must be a whole number (0 for the whole history), not '{value}'"));
                    ok = false;
                }
            },
            "submodules" => match value.trim().to_ascii_lowercase().as_str() {
                "false" | "" => plan.submodules = Submodules::False,
                "true" => plan.submodules = Submodules::True,
                "recursive" => plan.submodules = Submodules::Recursive,
                other => {
                    diag.push(WorkflowErrorKind::Syntax, step.pos, format!("checkout 'submodules' must be true, false or recursive, not '{other}'"));
                    ok = false;
                }
            },
            k if IGNORED_CHECKOUT_INPUTS.contains(&k) => {}
            other => unsupported.push(other.to_owned()),
        }
    }
    if !ok {
        return None;
    }
    Some(match unsupported.as_slice() {
        [] => Ok(plan),
        [one] => Err(format!("the built-in checkout does not support the input '{one}'; supported inputs are path, ref, fetch-depth and submodules")),
        many => Err(format!("the built-in checkout does not support the inputs '{}'; supported inputs are path, ref, fetch-depth and submodules", many.join("', '"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn an_expression_item_yielding_a_list_is_spliced_into_its_vector() {
        let contexts = Map::new();
        let resolver = Resolver { contexts: &contexts };
        let matrix = serde_json::json!({"a": [{"k": 1}, "${{ fromJSON('[{\"k\":2},{\"k\":3}]') }}"], "b": ["${{ fromJSON('[]') }}", "x"]});
        let resolved = resolve_matrix(&resolver, &matrix).expect("resolves");
        assert_eq!(resolved, serde_json::json!({"a": [{"k": 1}, {"k": 2}, {"k": 3}], "b": ["x"]}));
    }

    #[test]
    fn include_extends_or_adds_and_exclude_comes_first() {
        // GitHub's documented example.
        let matrix = m(serde_json::json!({
            "fruit": ["apple", "pear"],
            "animal": ["cat", "dog"],
            "include": [
                {"color": "green"},
                {"color": "pink", "animal": "cat"},
                {"fruit": "apple", "shape": "circle"},
                {"fruit": "banana"},
                {"fruit": "banana", "animal": "cat"}
            ]
        }));
        let combos = expand_matrix(&matrix).expect("expands");
        let expected = serde_json::json!([
            {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
            {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
            {"fruit": "pear", "animal": "cat", "color": "pink"},
            {"fruit": "pear", "animal": "dog", "color": "green"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"}
        ]);
        assert_eq!(Value::Array(combos.into_iter().map(Value::Object).collect()), expected);
    }

    #[test]
    fn exclude_partial_match_and_limit() {
        let matrix = m(serde_json::json!({
            "os": ["a", "b"], "v": [1, 2],
            "exclude": [{"os": "a", "v": 2}]
        }));
        assert_eq!(expand_matrix(&matrix).expect("expands").len(), 3);
        let big = m(serde_json::json!({"a": (0..16).collect::<Vec<_>>(), "b": (0..17).collect::<Vec<_>>()}));
        let err = expand_matrix(&big).expect_err("too big");
        assert!(err.contains("272"), "{err}");
    }

    #[test]
    fn a_sequence_valued_include_or_exclude_entry_is_spliced() {
        // `include: [{...}, ${{ fromJSON('[...]') }}]` after the expression is evaluated.
        let matrix = m(serde_json::json!({
            "os": ["a", "b"],
            "include": [{"os": "a", "extra": 1}, [{"os": "b", "extra": 2}, {"os": "c"}]],
            "exclude": [[{"os": "b"}]]
        }));
        let combos = expand_matrix(&matrix).expect("expands");
        let expected = serde_json::json!([{"os": "a", "extra": 1}, {"os": "b", "extra": 2}, {"os": "c"}]);
        assert_eq!(Value::Array(combos.into_iter().map(Value::Object).collect()), expected);
        let nested = m(serde_json::json!({"os": ["a"], "include": [["not a mapping"]]}));
        assert!(expand_matrix(&nested).expect_err("an entry must be a mapping").contains("mapping"));
    }

    #[test]
    fn shells_use_github_command_lines() {
        assert_eq!(shell_command_line("bash").as_deref(), Ok("bash --noprofile --norc -eo pipefail {0}"));
        assert_eq!(shell_command_line("perl {0}").as_deref(), Ok("perl {0}"));
        shell_command_line("perl").expect_err("needs {0}");
    }
}
