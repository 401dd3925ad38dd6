//! `solstice image pull|list|prune`: the image catalog and the local image cache.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use solstice_vm::image::{DownloadProgress, ImageCache, machine_dirs, prune_machine_dirs};
use solstice_vm::{ImageCatalog, ImageEntry};

use solstice_service::ProgramError;
use crate::output::outln;

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The image catalog (TOML, see docs/images.md).
    #[arg(long, global = true, env = "SOLSTICE_CATALOG")]
    catalog: Option<PathBuf>,
    /// The cache directory: images are kept in its `images/`, machines' files in its
    /// `run/` (default: $SOLSTICE_CACHE_DIR, else ~/.cache/solstice).
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Download and verify (SHA-256) the images of these labels, or of every catalog
    /// entry; images already in the cache are not downloaded again.
    Pull {
        /// Catalog labels or aliases (default: every image of the catalog).
        labels: Vec<String>,
    },
    /// List the catalog's images (labels, OS, architecture, cached or not, size) and
    /// cached images the catalog no longer names.
    List,
    /// Remove cached images the catalog does not name, and the files of machines that
    /// no longer run (left in `run/` by a crashed process).
    Prune {
        /// Say what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A progress bar on stderr (drawn only on a terminal) for one download.
struct Bar(ProgressBar);

impl Bar {
    fn new(label: &str) -> Self {
        // Hidden until the download starts and its size is known.
        let bar = ProgressBar::hidden();
        let style = ProgressStyle::with_template("{prefix} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_owned());
        Self(bar)
    }
}

impl DownloadProgress for Bar {
    fn started(&self, _url: &str, total: Option<u64>) {
        match total {
            Some(total) => self.0.set_length(total),
            None => self.0.set_style(ProgressStyle::default_spinner()),
        }
        self.0.set_draw_target(ProgressDrawTarget::stderr());
    }
    fn advanced(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finished(&self) {
        self.0.finish_and_clear();
    }
}

pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    let cache_dir = args.cache_dir.clone().unwrap_or_else(crate::machines::cache_dir);
    let cache = ImageCache::new(cache_dir.join("images"));
    let catalog = match &args.catalog {
        Some(path) => Some(ImageCatalog::load(path).map_err(ProgramError::invalid)?),
        None => None,
    };
    match args.command {
        ImageCommand::Pull { labels } => {
            let catalog = catalog.ok_or_else(|| ProgramError::invalid(anyhow::anyhow!("pull needs an image catalog: --catalog FILE")))?;
            pull(&catalog, &cache, &labels).await.map_err(|e| if e.is::<ProgramError>() { e } else { ProgramError::failed(e).into() })
        }
        ImageCommand::List => list(catalog.as_ref(), &cache),
        ImageCommand::Prune { dry_run } => {
            let catalog = catalog.ok_or_else(|| {
                ProgramError::invalid(anyhow::anyhow!("prune needs the image catalog (--catalog FILE): it keeps the images the catalog names"))
            })?;
            prune(&catalog, &cache, &cache_dir.join("run"), dry_run)
        }
    }
}

async fn pull(catalog: &ImageCatalog, cache: &ImageCache, labels: &[String]) -> anyhow::Result<()> {
    let wanted: Vec<(&str, &ImageEntry)> = if labels.is_empty() {
        catalog.images.iter().map(|(label, entry)| (label.as_str(), entry)).collect()
    } else {
        labels
            .iter()
            .map(|label| {
                catalog
                    .lookup(label)
                    .map(|entry| (label.as_str(), entry))
                    .ok_or_else(|| ProgramError::invalid(anyhow::anyhow!("the catalog has no image for `{label}`")))
            })
            .collect::<Result<_, _>>()?
    };
    let cached: Vec<String> = cache.list()?.into_iter().map(|c| c.sha256).collect();
    for (label, entry) in wanted {
        let Some(source) = &entry.source else {
            println!("○ {label}: boots a kernel directly; nothing to download");
            continue;
        };
        let was_cached = cached.iter().any(|c| c.eq_ignore_ascii_case(&source.sha256));
        let bar = Bar::new(label);
        let path = cache.ensure(source, &bar).await.with_context(|| format!("pulling `{label}`"))?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or_default();
        let note = if was_cached { "already cached" } else { "downloaded, checksum verified" };
        outln!("✓ {label}: {note}, {} at {}", HumanBytes(size), path.display())?;
    }
    Ok(())
}

fn list(catalog: Option<&ImageCatalog>, cache: &ImageCache) -> anyhow::Result<()> {
    let cached = cache.list()?;
    let mut rows = vec![["LABEL", "ALIASES", "OS", "ARCH", "CACHED", "SIZE"].map(str::to_owned)];
    for (label, entry) in catalog.map(|c| &c.images).into_iter().flatten() {
        let hit = entry.source.as_ref().and_then(|s| cached.iter().find(|c| c.sha256.eq_ignore_ascii_case(&s.sha256)));
        let (state, size) = match (&entry.source, hit) {
            (None, _) => ("kernel boot".to_owned(), "-".to_owned()),
            (Some(_), Some(hit)) => ("yes".to_owned(), HumanBytes(hit.size).to_string()),
            (Some(_), None) => ("no".to_owned(), "-".to_owned()),
        };
        let aliases = if entry.aliases.is_empty() { "-".to_owned() } else { entry.aliases.join(",") };
        // Guests are x86_64: the machines are `qemu-system-x86_64`.
        rows.push([label.clone(), aliases, entry.profile.clone(), "x86_64".to_owned(), state, size]);
    }
    let named = |sha: &str| {
        catalog.is_some_and(|c| c.images.values().any(|e| e.source.as_ref().is_some_and(|s| s.sha256.eq_ignore_ascii_case(sha))))
    };
    for image in cached.iter().filter(|c| !named(&c.sha256)) {
        let name = image.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        rows.push([name, "-".into(), "-".into(), "-".into(), "not in the catalog".into(), HumanBytes(image.size).to_string()]);
    }
    let widths: Vec<usize> = (0..6).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for row in &rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        outln!("{}", line.join("  ").trim_end())?;
    }
    if catalog.is_none() {
        outln!("(no --catalog: only the cache is shown)")?;
    }
    Ok(())
}

fn prune(catalog: &ImageCatalog, cache: &ImageCache, run_dir: &std::path::Path, dry_run: bool) -> anyhow::Result<()> {
    let keep: Vec<&str> = catalog.images.values().filter_map(|e| e.source.as_ref()).map(|s| s.sha256.as_str()).collect();
    let verb = if dry_run { "would remove" } else { "removed" };
    let (images, machines) = if dry_run {
        let images: Vec<_> =
            cache.list()?.into_iter().filter(|c| !keep.iter().any(|k| k.eq_ignore_ascii_case(&c.sha256))).collect();
        (images, machine_dirs(run_dir)?.into_iter().filter(|d| !d.in_use).collect())
    } else {
        (cache.prune(&keep)?, prune_machine_dirs(run_dir)?)
    };
    let mut freed = 0;
    for image in &images {
        outln!("{verb} image {} ({})", image.path.display(), HumanBytes(image.size))?;
        freed += image.size;
    }
    for dir in &machines {
        outln!("{verb} machine files {} ({})", dir.path.display(), HumanBytes(dir.size))?;
        freed += dir.size;
    }
    outln!("{verb} {} images and {} machine directories, {}", images.len(), machines.len(), HumanBytes(freed))?;
    Ok(())
}
