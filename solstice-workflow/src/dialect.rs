//! The two workflow formats and the entry points that pick between them.

use crate::error::{Diagnostics, Pos, WorkflowErrorKind, WorkflowErrors};
use crate::plan::{PlanOptions, WorkflowPlan, plan_parsed, plan_workflow};
use crate::syntax::kdl::FAN_OUT_KEY;
use crate::syntax::parse_kdl_workflow;

/// The format of a workflow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkflowFormat {
    /// GitHub Actions YAML (`.yml`, `.yaml`).
    Yaml,
    /// Solstice CI's KDL dialect (`.kdl`, such as `.solstice/workflow.kdl`).
    Kdl,
}

impl WorkflowFormat {
    /// The format a file name's extension names (case does not matter): `.yml` and `.yaml`
    /// are YAML, `.kdl` is KDL; anything else is `None`.
    ///
    /// ```
    /// use solstice_workflow::WorkflowFormat;
    /// assert_eq!(WorkflowFormat::from_file_name(".solstice/workflow.kdl"), Some(WorkflowFormat::Kdl));
    /// assert_eq!(WorkflowFormat::from_file_name("ci.YML"), Some(WorkflowFormat::Yaml));
    /// assert_eq!(WorkflowFormat::from_file_name("Makefile"), None);
    /// ```
    pub fn from_file_name(file_name: &str) -> Option<WorkflowFormat> {
        let (_, extension) = file_name.rsplit_once('.')?;
        if extension.contains(['/', '\\']) {
            return None;
        }
        match extension.to_ascii_lowercase().as_str() {
            "yml" | "yaml" => Some(WorkflowFormat::Yaml),
            "kdl" => Some(WorkflowFormat::Kdl),
            _ => None,
        }
    }
}

/// Translates a workflow written in Solstice CI's KDL dialect into a plan: reads it with
/// [`parse_kdl_workflow`](crate::parse_kdl_workflow), then plans it with
/// [`plan_parsed`](crate::plan_parsed) exactly as a YAML workflow. A job whose `runs-on` lists
/// several images becomes one planned job per image (a matrix axis named `runs-on`), and
/// `setup` scripts come before the steps of the jobs whose OS family they name.
/// `file_name` is only used in error messages; no file is read.
///
/// ```
/// use solstice_workflow::{PlanOptions, plan_kdl_workflow};
///
/// let source = r#"
/// setup os="illumos" {
///     run "pfexec pkg install developer/gcc13"
/// }
/// job "build" {
///     runs-on "omnios-r151056" "tiny-linux"
///     steps {
///         checkout
///         run "make test"
///     }
/// }
/// "#;
/// let plan = plan_kdl_workflow(source, "workflow.kdl", &PlanOptions::new())?;
/// assert_eq!(plan.jobs[0].name, "build (omnios-r151056)");
/// assert_eq!(plan.jobs[0].steps.len(), 3); // setup, checkout, make test
/// assert_eq!(plan.jobs[1].name, "build (tiny-linux)");
/// assert_eq!(plan.jobs[1].steps.len(), 2); // no illumos setup on Linux
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// Every problem found, each with file, line and column.
pub fn plan_kdl_workflow(source: &str, file_name: &str, options: &PlanOptions) -> Result<WorkflowPlan, WorkflowErrors> {
    let workflow = parse_kdl_workflow(source, file_name)?;
    let plan = plan_parsed(&workflow, file_name, options)?;
    // A matrix `include` entry that adds a combination to a fanned-out job must name its
    // image; otherwise that copy would have no runs-on label at all.
    let mut diag = Diagnostics::new(file_name);
    for job in &workflow.jobs {
        let fanned_out = job
            .strategy
            .as_ref()
            .and_then(|s| s.matrix.as_ref())
            .and_then(|m| m.as_object())
            .is_some_and(|m| m.contains_key(FAN_OUT_KEY));
        if !fanned_out {
            continue;
        }
        let unlabeled = plan.jobs.iter().filter(|p| p.id == job.id).find(|p| p.runs_on.iter().any(String::is_empty));
        if let Some(planned) = unlabeled {
            let pos: Pos = job.key_pos.get("runs-on").copied().unwrap_or(job.pos);
            diag.push(
                WorkflowErrorKind::Matrix,
                pos,
                format!(
                    "the matrix of job '{}' adds the combination '{}' without an image; give that include entry {FAN_OUT_KEY}=\"<label>\"",
                    job.id, planned.name
                ),
            );
        }
    }
    diag.into_result(plan)
}

/// Plans a workflow in the format its file name's extension names
/// ([`WorkflowFormat::from_file_name`]): [`plan_workflow`](crate::plan_workflow) for `.yml`
/// and `.yaml`, [`plan_kdl_workflow`] for `.kdl`.
///
/// # Errors
/// Every problem found, each with file, line and column; a file name with another extension
/// is one error without a position.
pub fn plan_any(source: &str, file_name: &str, options: &PlanOptions) -> Result<WorkflowPlan, WorkflowErrors> {
    match WorkflowFormat::from_file_name(file_name) {
        Some(WorkflowFormat::Yaml) => plan_workflow(source, file_name, options),
        Some(WorkflowFormat::Kdl) => plan_kdl_workflow(source, file_name, options),
        None => {
            let mut diag = Diagnostics::new(file_name);
            diag.push(
                WorkflowErrorKind::Syntax,
                Pos::default(),
                "cannot tell the workflow's format from its file name: use .yml or .yaml for GitHub Actions YAML, .kdl for the Solstice CI KDL dialect",
            );
            diag.into_result(WorkflowPlan { name: file_name.to_owned(), jobs: Vec::new(), pending: Vec::new() })
        }
    }
}
