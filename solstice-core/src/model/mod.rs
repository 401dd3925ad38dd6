//! The domain model: what a job is, what it says while it runs, and how it ends.

mod annotation;
mod event;
mod job;
mod result;
mod secret;
mod state;

pub use annotation::{Annotation, AnnotationLevel};
pub use event::{JobEvent, JobEventKind, LogStream};
pub use job::{
    CheckoutSource, CheckoutStep, JobId, JobOrigin, JobRequest, StepAction, StepCommand,
    DEFAULT_JOB_TIMEOUT,
};
pub use result::{JobResult, StepConclusion};
pub use secret::Secret;
pub use state::{InvalidTransition, JobState};
