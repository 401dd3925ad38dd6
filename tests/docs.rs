//! The documentation's workflow snippets are real workflows.
//!
//! Every fenced block in `docs/*.md` whose info string is `yaml` must be a complete
//! Actions workflow that `solstice-workflow` plans without errors; every block fenced as
//! `yaml-invalid` must be rejected (it shows what Solstice CI refuses). The `toml`
//! blocks are configuration files of the one vocabulary every program reads (but the
//! image catalogs of `docs/images.md`, checked by `solstice-vm`); other fences (`sh`, `text`, ...) are not
//! checked; YAML that is not a workflow belongs in a `text` fence. Relative links in the pages this test owns must point at files that
//! exist.

use std::path::{Path, PathBuf};

use solstice::workflow::{PlanOptions, plan_workflow};
use solstice_config::{Program, ServiceConfig, parse};

/// A fenced block: the page, its 1-based index among the page's checked blocks, the
/// line its fence opens on, its info string and its text.
#[derive(Debug)]
struct Snippet {
    file: String,
    index: usize,
    line: usize,
    info: String,
    text: String,
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
}

/// The Markdown pages directly under `docs/`, sorted.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(docs_dir())
        .expect("docs/ exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    pages
}

/// The fenced blocks of one page, with the first word of their info string; blocks
/// fenced as `yaml` or `yaml-invalid` are numbered from 1 in page order. Fences are lines starting with three or more backticks (after up to
/// three spaces); a block closes at a fence at least as long as the one that opened it.
fn snippets(file: &str, markdown: &str) -> Vec<Snippet> {
    let mut out = Vec::new();
    let mut open: Option<(usize, usize, String, Vec<&str>)> = None;
    for (n, raw) in markdown.lines().enumerate() {
        let line = raw.trim_start_matches(' ');
        let indent = raw.len() - line.len();
        let ticks = line.chars().take_while(|c| *c == '`').count();
        match &mut open {
            None if indent <= 3 && ticks >= 3 => {
                let info = line[ticks..].split_whitespace().next().unwrap_or("").to_owned();
                open = Some((n + 1, ticks, info, Vec::new()));
            }
            None => {}
            Some((start, fence, info, body)) => {
                if indent <= 3 && ticks >= *fence && line[ticks..].trim().is_empty() {
                    let checked = out.iter().filter(|s: &&Snippet| s.info.starts_with("yaml")).count();
                    out.push(Snippet {
                        file: file.to_owned(),
                        index: if info.starts_with("yaml") { checked + 1 } else { 0 },
                        line: *start,
                        info: info.clone(),
                        text: body.join("\n") + "\n",
                    });
                    open = None;
                } else {
                    body.push(raw);
                }
            }
        }
    }
    assert!(open.is_none(), "{file}: a code fence is never closed");
    out
}

fn all_snippets() -> Vec<Snippet> {
    pages()
        .iter()
        .flat_map(|page| {
            let name = format!("docs/{}", page.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
            let text = std::fs::read_to_string(page).unwrap_or_else(|e| panic!("reading {name}: {e}"));
            snippets(&name, &text)
        })
        .collect()
}

#[test]
fn the_snippet_extractor_finds_yaml_blocks_and_skips_others() {
    let page = "intro\n```yaml\non: push\n```\n\n```toml\nx = 1\n```\n  ````yaml-invalid\njobs: [\n```\nstill inside\n  ````\n```yaml title=\"x\"\na: 1\n```\n";
    let found: Vec<Snippet> = snippets("p.md", page).into_iter().filter(|s| s.info.starts_with("yaml")).collect();
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!((found[0].index, found[0].line, found[0].text.as_str()), (1, 2, "on: push\n"));
    assert_eq!((found[1].info.as_str(), found[1].text.as_str()), ("yaml-invalid", "jobs: [\n```\nstill inside\n"));
    assert_eq!((found[2].index, found[2].info.as_str()), (3, "yaml"));
}

/// Every `toml` block of the pages (but the image catalogs of docs/images.md) is a
/// configuration file in the one vocabulary of every program: it parses into
/// `ServiceConfig` (keys, types, durations), and some program accepts it with its
/// checks; docs/debug-ssh.md shows its section alone, so only the schema applies there.
#[test]
fn the_toml_blocks_of_the_pages_are_configuration_files() {
    let mut checked = 0;
    for s in all_snippets().iter().filter(|s| s.info == "toml" && s.file != "docs/images.md") {
        let name = format!("{} (block at line {})", s.file, s.line);
        parse::<ServiceConfig>(&s.text, &name).unwrap_or_else(|e| panic!("{e}"));
        if s.file != "docs/debug-ssh.md" {
            let errors: Vec<String> = Program::ALL.iter().filter_map(|p| p.parse(&s.text, &name).err()).map(|e| e.to_string()).collect();
            assert!(errors.len() < Program::ALL.len(), "no program accepts {name}: {errors:#?}");
        }
        checked += 1;
    }
    assert!(checked >= 6, "the pages show fewer configuration files than before: did they change?");
}

#[test]
fn every_yaml_snippet_in_the_docs_is_a_workflow_solstice_plans() {
    let snippets = all_snippets();
    let mut failures = Vec::new();
    let mut planned = 0;
    for s in snippets.iter().filter(|s| s.info == "yaml") {
        let name = format!("{} snippet #{} (line {})", s.file, s.index, s.line);
        match plan_workflow(&s.text, &name, &PlanOptions::new()) {
            Ok(plan) if plan.jobs.is_empty() => failures.push(format!("{name}: the workflow has no jobs")),
            Ok(plan) if plan.jobs.iter().any(|j| j.steps.is_empty()) => {
                failures.push(format!("{name}: a job has no steps"));
            }
            Ok(_) => planned += 1,
            Err(errors) => failures.push(format!(
                "{name} does not plan (fence YAML that is not a workflow as ```text, and deliberately \
                 rejected workflows as ```yaml-invalid):\n{errors}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(planned >= 10, "only {planned} workflow snippets were found in docs/; did the extractor break?");
}

/// Every `yaml-invalid` block must be rejected. When the page's next block is a `text`
/// block starting with `NAME (Line: `, it is the error Solstice CI prints for the
/// workflow saved as `NAME`, and must match it (whitespace may be wrapped differently).
#[test]
fn every_yaml_invalid_snippet_in_the_docs_is_rejected_as_documented() {
    let snippets = all_snippets();
    let mut checked = 0;
    for (i, s) in snippets.iter().enumerate().filter(|(_, s)| s.info == "yaml-invalid") {
        let name = format!("{} snippet #{} (line {})", s.file, s.index, s.line);
        let shown = snippets
            .get(i + 1)
            .filter(|next| next.file == s.file && next.info == "text")
            .and_then(|next| next.text.split_once(" (Line: ").map(|(file, _)| (file.trim().to_owned(), next)));
        let file_name = shown.as_ref().map_or(name.clone(), |(file, _)| file.clone());
        let Err(errors) = plan_workflow(&s.text, &file_name, &PlanOptions::new()) else {
            panic!("{name} is fenced as yaml-invalid but plans without errors; fence it as ```yaml");
        };
        if let Some((_, expected)) = shown {
            let words = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(
                words(&errors.to_string()),
                words(&expected.text),
                "{name}: the error shown after it (line {}) is not what Solstice CI prints",
                expected.line
            );
        }
        checked += 1;
    }
    assert!(checked > 0, "the FAQ shows rejected workflows as ```yaml-invalid blocks");
}

/// The pages written for users and operators; their relative links must resolve.
const OWN_PAGES: &[&str] =
    &["README.md", "getting-started.md", "illumos.md", "faq.md", "images.md", "operator-guide.md"];

#[test]
fn relative_links_in_the_user_and_operator_pages_resolve() {
    let dir = docs_dir();
    let mut broken = Vec::new();
    for page in OWN_PAGES {
        let path = dir.join(page);
        let Ok(text) = std::fs::read_to_string(&path) else {
            broken.push(format!("docs/{page} is missing"));
            continue;
        };
        let mut in_code = false;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if in_code {
                continue;
            }
            let mut rest = line;
            while let Some(start) = rest.find("](") {
                let after = &rest[start + 2..];
                let Some(end) = after.find(')') else { break };
                let target = &after[..end];
                rest = &after[end..];
                if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                    continue;
                }
                let file = target.split('#').next().unwrap_or("");
                if !dir.join(file).exists() {
                    broken.push(format!("docs/{page}:{}: link to `{target}` does not resolve", n + 1));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
