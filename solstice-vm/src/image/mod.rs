//! Base images: the catalog, the content-addressed download cache, and per-job
//! copy-on-write overlays.
//!
//! [`ImageCatalog`] and [`ImageEntry`] (both also at the crate root) are what a hypervisor
//! is configured with. The rest is for image tools (the `solstice image` commands):
//! [`ImageCache`] downloads, lists and prunes base images, and [`machine_dirs`] and
//! [`prune_machine_dirs`] find and remove the directories of machines that are gone.

mod cache;
mod catalog;
pub(crate) mod overlays;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use cache::{CachedImage, DownloadProgress, ImageCache, LogProgress};
pub use catalog::{BootMode, Decompress, ImageCatalog, ImageEntry, ImageFormat, ImageSource};
pub use overlays::{MachineDir, machine_dirs, prune_machine_dirs};

/// An image could not be found, fetched, verified or layered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The catalog file could not be read.
    #[error("could not read the image catalog {}", path.display())]
    ReadCatalog {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The catalog is invalid.
    #[error("invalid image catalog: {message}")]
    Catalog {
        /// What is wrong.
        message: String,
    },
    /// The download failed.
    #[error("could not download {url}")]
    Download {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("downloading {url} failed with HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The URL scheme is not supported.
    #[error("unsupported image URL {url} (use https://, http:// or file://)")]
    Scheme {
        /// The URL.
        url: String,
    },
    /// The file's SHA-256 did not match the catalog; nothing was cached.
    #[error("checksum mismatch for {url}: expected {expected}, got {actual}")]
    Checksum {
        /// The URL.
        url: String,
        /// The catalog's digest.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },
    /// Decompressing the image failed.
    #[error("could not decompress {url}: {message}")]
    Decompress {
        /// The URL.
        url: String,
        /// The decoder's message.
        message: String,
    },
    /// A file operation failed.
    #[error("I/O failed on {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `qemu-img` failed.
    #[error("qemu-img could not create the overlay {}: {stderr}", overlay.display())]
    Overlay {
        /// The overlay path.
        overlay: PathBuf,
        /// What qemu-img said.
        stderr: String,
    },
}

impl ImageError {
    /// Whether trying again later might succeed (network trouble).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Download { .. }) || matches!(self, Self::Status { status, .. } if *status >= 500)
    }
}

/// Creates a qcow2 overlay (mode 0600) on `base` with `qemu-img create -f qcow2 -F
/// <format> -b`, optionally with a larger virtual size. Takes milliseconds whatever the
/// base's size.
///
/// # Errors
/// [`ImageError::Io`] when the file cannot be made, [`ImageError::Overlay`] with
/// qemu-img's message.
pub(crate) async fn create_overlay(
    qemu_img: &Path,
    base: &Path,
    base_format: ImageFormat,
    overlay: &Path,
    size_gib: Option<u32>,
) -> Result<(), ImageError> {
    // Made 0600 first: qemu-img keeps the mode of a file that exists (it would make a
    // new one 0644), so the job's disk is never readable by other users.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(overlay)
        .map_err(|e| ImageError::Io { path: overlay.to_path_buf(), source: e })?;
    let mut command = tokio::process::Command::new(qemu_img);
    command.args(["create", "-q", "-f", "qcow2", "-F", base_format.as_str(), "-b"]).arg(base).arg(overlay);
    if let Some(size) = size_gib {
        command.arg(format!("{size}G"));
    }
    let out = command
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| ImageError::Overlay { overlay: overlay.to_path_buf(), stderr: format!("{}: {e}", qemu_img.display()) })?;
    if !out.status.success() {
        return Err(ImageError::Overlay {
            overlay: overlay.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
