use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Secret;

/// GitHub's default job timeout: 360 minutes.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(360 * 60);

/// A job's identity inside Solstice CI, unique across sources.
///
/// A source that redelivers the same forge job must give it the same id: the id is what
/// makes redelivery harmless (see [`crate::JobQueue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub uuid::Uuid);

impl JobId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// A stable id derived from a source name and the forge's own job id, so that the
    /// same forge job always maps to the same [`JobId`].
    pub fn from_external(source: &str, external_id: &str) -> Self {
        let name = format!("{source}\u{0}{external_id}");
        Self(uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// Where a job came from, and where its events must go back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JobOrigin {
    /// The name of the source instance that owns the job (for example
    /// `forgejo:3f2a…` for one registered runner). Events are routed back by it.
    pub source: String,
    /// The forge's own identifier of the job (Forgejo task id, GitHub job id).
    pub external_id: String,
    /// The repository as `owner/name`, when known (debug-SSH limits are per repository).
    pub repository: Option<String>,
}

/// Where the built-in checkout fetches the repository from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CheckoutSource {
    /// A git remote, fetched at a commit.
    Git {
        /// Clone URL, without credentials.
        url: String,
        /// The commit (or ref) to check out.
        rev: String,
        /// A token for HTTP basic auth, if the repository is private.
        token: Option<Secret>,
    },
    /// A directory on the machine that runs the orchestrator (used by `solstice run`).
    LocalDir {
        /// The directory whose contents become the workspace.
        path: String,
    },
}

/// A `uses: actions/checkout` step, done by the executor itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CheckoutStep {
    /// Relative path under the workspace (`path:` input); empty for the workspace itself.
    pub path: String,
    /// A ref to check out instead of the job's commit (`ref:` input).
    pub git_ref: Option<String>,
    /// `fetch-depth:` (0 = full history). GitHub's default is 1.
    pub fetch_depth: u32,
    /// `submodules:` (`false`, `true` or `recursive`).
    pub submodules: Option<String>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum StepAction {
    /// A `run:` script.
    Run {
        /// The script text, expressions already substituted where they were known.
        script: String,
        /// The shell command line, with `{0}` standing for the script file, as GitHub
        /// writes it: `bash --noprofile --norc -eo pipefail {0}`, `sh -e {0}`, …
        shell: String,
    },
    /// The built-in checkout.
    Checkout(CheckoutStep),
    /// An action step (`uses:`): the engine resolves the action (from the job's
    /// workspace, or fetched from a forge through its [`crate::ActionFetcher`]), reads its
    /// `action.yml` and runs it.
    Action(ActionStep),
    /// An action step (`uses:`) this runner cannot run yet. The step fails with `message`
    /// when its `if:` lets it run, and is skipped like any other step otherwise. Kept with
    /// its action reference so that a runner able to run actions can run it instead.
    UnsupportedAction {
        /// `uses:` as written (`actions/setup-node@v4`, `./local`, `docker://alpine`, ...).
        uses: String,
        /// The `with:` inputs.
        #[serde(default)]
        with: BTreeMap<String, String>,
        /// Why the step cannot run, shown as the step's error.
        message: String,
    },
}

/// A `uses:` step the engine runs as an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionStep {
    /// `uses:` as written (`dtolnay/rust-toolchain@stable`, `./.github/actions/build`,
    /// `https://code.forgejo.org/actions/cache@v4`); see
    /// [`solstice_workflow::ActionReference`].
    pub uses: String,
    /// The `with:` inputs. Values may hold `${{ }}`, evaluated when the step runs.
    #[serde(default)]
    pub with: BTreeMap<String, String>,
}

/// One step of a job, ready to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCommand {
    /// The step's `id:`, used for the `steps` context.
    pub id: Option<String>,
    /// The name shown in logs and in the forge.
    pub name: String,
    /// What the step does.
    pub action: StepAction,
    /// The step's own `env:`, over the job's [`JobRequest::env`] and earlier steps'
    /// `$GITHUB_ENV` writes. Values may hold `${{ }}`, evaluated when the step runs.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the workspace, or absolute.
    pub working_directory: Option<String>,
    /// The `if:` expression, without `${{ }}`; `None` means `success()`.
    pub condition: Option<String>,
    /// `continue-on-error`: a failure of this step does not fail the job.
    #[serde(default)]
    pub continue_on_error: bool,
    /// `timeout-minutes`, as a duration.
    #[serde(default, with = "opt_duration_secs")]
    pub timeout: Option<std::time::Duration>,
    /// `continue-on-error` as written when only the running job can evaluate it
    /// (`${{ steps.probe.outputs.flaky }}`): the engine evaluates it once the step has
    /// failed, as GitHub's runner does, and it then decides instead of
    /// [`StepCommand::continue_on_error`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_on_error_expression: Option<String>,
    /// `timeout-minutes` as written when only the running job can evaluate it
    /// (`${{ fromJSON(env.MINUTES) }}`): the engine evaluates it when the step starts, and
    /// it then decides instead of [`StepCommand::timeout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_expression: Option<String>,
}

impl StepCommand {
    /// A `run:` step with the default shell (`bash`) and no other settings.
    pub fn run(name: impl Into<String>, script: impl Into<String>) -> Self {
        Self {
            id: None,
            name: name.into(),
            action: StepAction::Run {
                script: script.into(),
                shell: "bash --noprofile --norc -eo pipefail {0}".to_owned(),
            },
            env: BTreeMap::new(),
            working_directory: None,
            condition: None,
            continue_on_error: false,
            timeout: None,
            continue_on_error_expression: None,
            timeout_expression: None,
        }
    }
}

/// One job, as a source hands it to the queue and an orchestrator runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    /// Solstice's id of the job.
    pub id: JobId,
    /// Where it came from and where its events go.
    pub origin: JobOrigin,
    /// Display name (job name with matrix values).
    pub name: String,
    /// `runs-on` labels; the queue routes by the first one an orchestrator serves.
    pub runs_on: Vec<String>,
    /// The steps, in order.
    pub steps: Vec<StepCommand>,
    /// Job-level environment (workflow env merged with job env). Values may hold `${{ }}`,
    /// evaluated when the job starts, with the machine known.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Values that must be masked as `***` in every log line.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Where the built-in checkout gets the repository, if the job checks out.
    pub checkout: Option<CheckoutSource>,
    /// The whole job's time limit (`timeout-minutes`).
    #[serde(with = "duration_secs")]
    pub timeout: std::time::Duration,
    /// Keep a failed job's machine for debug SSH (opt-in, never the default).
    #[serde(default)]
    pub debug_ssh: bool,
    /// Public SSH keys (OpenSSH `authorized_keys` lines) of the user who started the
    /// run, as the forge publishes them: the only keys a kept debug machine accepts.
    /// Sources fill it for jobs with [`JobRequest::debug_ssh`] only; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub debug_keys: Vec<String>,
    /// Expression contexts known when the job was made (`github`, `matrix`, `needs`,
    /// `vars`, `inputs`, `strategy`, ...), as a JSON object. The engine adds `env`,
    /// `steps`, `job` and `runner` when it evaluates a step's `if:`.
    #[serde(default)]
    pub contexts: serde_json::Map<String, serde_json::Value>,
    /// What JavaScript actions get from the forge besides the step environment, as the
    /// official runners give it to them only: `ACTIONS_RUNTIME_URL`,
    /// `ACTIONS_RUNTIME_TOKEN`, `ACTIONS_RESULTS_URL`, `ACTIONS_CACHE_URL`,
    /// `ACTIONS_ID_TOKEN_REQUEST_URL`, `ACTIONS_ID_TOKEN_REQUEST_TOKEN`. Sources fill it
    /// from the job message; the tokens are in [`JobRequest::secrets`] too, so they are
    /// masked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub action_runtime: BTreeMap<String, String>,
}

impl JobRequest {
    /// The label the queue routes this job by: the first `runs-on` label that is not one
    /// of GitHub's generic self-hosted labels (`self-hosted`, `linux`, `x64`, ...), or
    /// the first label if all are generic. Sources check that they serve it.
    pub fn route_label(&self) -> &str {
        const GENERIC: [&str; 8] =
            ["self-hosted", "linux", "windows", "macos", "x64", "x86_64", "arm", "arm64"];
        self.runs_on
            .iter()
            .find(|label| !GENERIC.iter().any(|g| g.eq_ignore_ascii_case(label)))
            .or_else(|| self.runs_on.first())
            .map(String::as_str)
            .unwrap_or("")
    }

    /// A job with a fresh id, the given labels and steps, and defaults elsewhere.
    pub fn new(name: impl Into<String>, runs_on: Vec<String>, steps: Vec<StepCommand>) -> Self {
        Self {
            id: JobId::new(),
            origin: JobOrigin::default(),
            name: name.into(),
            runs_on,
            steps,
            env: BTreeMap::new(),
            secrets: Vec::new(),
            checkout: None,
            timeout: DEFAULT_JOB_TIMEOUT,
            debug_ssh: false,
            debug_keys: Vec::new(),
            contexts: serde_json::Map::new(),
            action_runtime: BTreeMap::new(),
        }
    }
}

mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

mod opt_duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|secs| Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_survives_a_json_round_trip() {
        let mut job = JobRequest::new("build", vec!["omnios".into()], vec![StepCommand::run("hi", "echo hi")]);
        job.secrets.push(Secret::new("s3cr3t"));
        job.steps[0].timeout = Some(std::time::Duration::from_secs(90));
        let text = serde_json::to_string(&job).expect("serialize");
        let back: JobRequest = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, job);
    }

    #[test]
    fn step_actions_keep_their_tagged_json_shape() {
        // Jobs queued before the `unsupported_action` kind existed still read, and the new
        // kind is one more tag, so the queue's JSON stays backwards compatible.
        let old = r#"{"kind":"run","script":"make","shell":"sh -e {0}"}"#;
        assert_eq!(
            serde_json::from_str::<StepAction>(old).expect("old json"),
            StepAction::Run { script: "make".into(), shell: "sh -e {0}".into() }
        );
        let action = StepAction::UnsupportedAction {
            uses: "actions/setup-node@v4".into(),
            with: BTreeMap::from([("node-version".to_owned(), "20".to_owned())]),
            message: "cannot run".into(),
        };
        let json = serde_json::to_value(&action).expect("json");
        assert_eq!(json["kind"], "unsupported_action");
        assert_eq!(json["with"]["node-version"], "20");
        assert_eq!(serde_json::from_value::<StepAction>(json).expect("back"), action);
        let without_inputs = r#"{"kind":"unsupported_action","uses":"./","message":"m"}"#;
        assert!(matches!(serde_json::from_str(without_inputs), Ok(StepAction::UnsupportedAction { with, .. }) if with.is_empty()));
    }

    #[test]
    fn the_route_label_skips_generic_labels() {
        let job = JobRequest::new("j", vec!["self-hosted".into(), "X64".into(), "omnios".into()], vec![]);
        assert_eq!(job.route_label(), "omnios");
        let job = JobRequest::new("j", vec!["self-hosted".into()], vec![]);
        assert_eq!(job.route_label(), "self-hosted");
        assert_eq!(JobRequest::new("j", vec![], vec![]).route_label(), "");
    }

    #[test]
    fn external_ids_map_to_stable_job_ids() {
        let a = JobId::from_external("forgejo:r1", "42");
        assert_eq!(a, JobId::from_external("forgejo:r1", "42"));
        assert_ne!(a, JobId::from_external("forgejo:r1", "43"));
        assert_ne!(a, JobId::from_external("forgejo:r2", "42"));
    }
}
