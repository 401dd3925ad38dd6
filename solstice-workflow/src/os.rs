//! OS families of runs-on labels: which guests a KDL `setup os="..."` script runs on.
//!
//! A runner knows what each label boots (its image catalog has a guest profile) and declares
//! it with [`PlanOptions::os_family`](crate::PlanOptions::os_family). Labels it does not
//! declare follow a naming convention, [`label_os_family`].

use crate::error::{Diagnostics, WorkflowErrorKind};
use crate::plan::PlanOptions;
use crate::syntax::{Job, Step, Workflow};

/// The OS families the naming convention knows. A runner may add others with
/// [`PlanOptions::os_family`](crate::PlanOptions::os_family).
pub const OS_FAMILIES: &[&str] = &["illumos", "linux", "freebsd", "openbsd", "netbsd", "macos", "windows"];

/// Label prefixes of each family (checked on the lowercased label, in this order).
const PREFIXES: &[(&str, &[&str])] = &[
    ("illumos", &["omnios", "openindiana", "illumos", "smartos", "tribblix"]),
    ("freebsd", &["freebsd"]),
    ("openbsd", &["openbsd"]),
    ("netbsd", &["netbsd"]),
    ("macos", &["macos", "osx"]),
    ("windows", &["windows"]),
    (
        "linux",
        &["ubuntu", "debian", "fedora", "alpine", "centos", "rocky", "alma", "rhel", "opensuse", "sles", "nixos", "gentoo", "void"],
    ),
];

/// The OS family a runs-on label names by convention: a label starting with `omnios`,
/// `openindiana`, `illumos`, `smartos` or `tribblix` is `illumos`; `freebsd*`, `openbsd*`,
/// `netbsd*` are their own families; `macos*`/`osx*` is `macos`; `windows*` is `windows`; a
/// label starting with a Linux distribution's name (`ubuntu`, `debian`, `fedora`, `alpine`,
/// `centos`, `rocky`, `alma`, `rhel`, `opensuse`, `sles`, `nixos`, `gentoo`, `void`) or
/// containing `linux` is `linux`. Case does not matter. Anything else has no known family.
///
/// ```
/// use solstice_workflow::label_os_family;
/// assert_eq!(label_os_family("omnios-r151056"), Some("illumos"));
/// assert_eq!(label_os_family("tiny-linux"), Some("linux"));
/// assert_eq!(label_os_family("self-hosted"), None);
/// ```
pub fn label_os_family(label: &str) -> Option<&'static str> {
    let label = label.trim().to_ascii_lowercase();
    for (family, prefixes) in PREFIXES {
        if prefixes.iter().any(|p| label.starts_with(p)) {
            return Some(family);
        }
    }
    label.contains("linux").then_some("linux")
}

/// The family of a planned job: the first of its labels with a family, the runner's
/// declarations first.
pub(crate) fn job_family(labels: &[String], options: &PlanOptions) -> Option<String> {
    labels.iter().find_map(|label| {
        options
            .declared_os_family(label)
            .map(str::to_owned)
            .or_else(|| label_os_family(label).map(str::to_owned))
    })
}

/// The setup steps that run before `job`'s steps on a guest of `family`: the workflow's
/// scripts, then the job's, each kept when it names no family or this one.
pub(crate) fn setup_steps<'w>(workflow: &'w Workflow, job: &'w Job, family: Option<&str>) -> impl Iterator<Item = &'w Step> {
    let family = family.map(str::to_ascii_lowercase);
    workflow
        .setup
        .iter()
        .chain(&job.setup)
        .filter(move |s| match (&s.os, &family) {
            (None, _) => true,
            (Some(os), Some(f)) => os.eq_ignore_ascii_case(f),
            (Some(_), None) => false,
        })
        .flat_map(|s| &s.steps)
}

/// Rejects `setup os="..."` naming a family neither the convention nor the runner knows.
pub(crate) fn check_setup_families(workflow: &Workflow, options: &PlanOptions, diag: &mut Diagnostics) {
    let setups = workflow.setup.iter().chain(workflow.jobs.iter().flat_map(|j| &j.setup));
    for setup in setups {
        let Some(os) = &setup.os else { continue };
        let known = OS_FAMILIES.iter().any(|f| f.eq_ignore_ascii_case(os)) || options.declares_family(os);
        if !known {
            let mut families: Vec<String> = OS_FAMILIES.iter().map(|f| (*f).to_owned()).collect();
            for f in options.declared_families() {
                if !families.iter().any(|k| k.eq_ignore_ascii_case(f)) {
                    families.push(f.to_owned());
                }
            }
            diag.push(
                WorkflowErrorKind::Syntax,
                setup.pos,
                format!("setup is for the unknown OS family '{os}'; the known families are {}", families.join(", ")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convention_and_declarations() {
        assert_eq!(label_os_family("OpenIndiana-Hipster"), Some("illumos"));
        assert_eq!(label_os_family("freebsd-14"), Some("freebsd"));
        assert_eq!(label_os_family("ubuntu-24.04"), Some("linux"));
        assert_eq!(label_os_family("macos-14"), Some("macos"));
        let options = PlanOptions::new().os_family("big-box", "illumos");
        let labels = ["self-hosted".to_owned(), "big-box".to_owned()];
        assert_eq!(job_family(&labels, &options).as_deref(), Some("illumos"));
        let options = PlanOptions::new().os_family("tiny-linux", "busybox");
        assert_eq!(job_family(&["tiny-linux".to_owned()], &options).as_deref(), Some("busybox"));
    }
}
