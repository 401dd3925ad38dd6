//! `solstice workflow plan|eval`.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{Map, Value};
use solstice_workflow::{PlanOptions, evaluate_expression, plan_any};

use solstice_service::ProgramError;
use crate::read_workflow;
use crate::output::outln;

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Print the translated plan of a workflow as JSON (one entry per matrix combination).
    Plan {
        /// The workflow file (`.github/workflows/*.yml`, or `.solstice/workflow.kdl`).
        file: PathBuf,
    },
    /// Evaluate one expression (without `${{ }}`) and print `{"kind": ..., "value": ...}`.
    Eval {
        /// The expression, e.g. `format('{0}-{1}', github.ref, matrix.os)`.
        expression: String,
        /// A JSON object whose keys are context names (`github`, `matrix`, ...).
        #[arg(long)]
        contexts: Option<PathBuf>,
    },
}

pub fn run(command: WorkflowCommand) -> anyhow::Result<()> {
    match command {
        WorkflowCommand::Plan { file } => {
            let text = read_workflow(&file)?;
            match plan_any(&text, &file.display().to_string(), &PlanOptions::new()) {
                Ok(plan) => {
                    outln!("{}", serde_json::to_string_pretty(&plan)?)?;
                    Ok(())
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    Err(ProgramError::InvalidWorkflow.into())
                }
            }
        }
        WorkflowCommand::Eval { expression, contexts } => {
            let contexts: Map<String, Value> = match contexts {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("could not read {}: {e}", path.display()))?;
                    serde_json::from_str(&text)
                        .map_err(|e| anyhow::anyhow!("{} is not a JSON object: {e}", path.display()))?
                }
                None => Map::new(),
            };
            match evaluate_expression(&expression, &contexts) {
                Ok(value) => {
                    outln!("{}", serde_json::to_string(&value)?)?;
                    Ok(())
                }
                Err(e) => {
                    eprintln!("{}", serde_json::json!({ "kind": format!("{:?}", e.kind()), "error": e.to_string() }));
                    Err(ProgramError::InvalidWorkflow.into())
                }
            }
        }
    }
}
