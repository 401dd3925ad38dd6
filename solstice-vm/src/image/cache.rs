//! The content-addressed base image cache.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{Decompress, ImageError, ImageSource};

/// Told how a download advances (the CLI draws a progress bar with it).
pub trait DownloadProgress: Send + Sync {
    /// A download of `total` bytes (if known) began.
    fn started(&self, url: &str, total: Option<u64>);
    /// `bytes` more bytes arrived.
    fn advanced(&self, bytes: u64);
    /// The download ended (successfully or not).
    fn finished(&self);
}

/// Progress as `tracing` lines, one per tenth of the file.
#[derive(Debug, Default)]
pub struct LogProgress {
    state: Mutex<(u64, Option<u64>, u64)>,
}

impl DownloadProgress for LogProgress {
    fn started(&self, url: &str, total: Option<u64>) {
        tracing::info!(url, total, "downloading image");
        if let Ok(mut s) = self.state.lock() {
            *s = (0, total, 0);
        }
    }
    fn advanced(&self, bytes: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.0 += bytes;
            if let Some(total) = s.1.filter(|t| *t > 0) {
                let tenth = s.0 * 10 / total;
                if tenth > s.2 {
                    s.2 = tenth;
                    tracing::info!(percent = tenth * 10, "download progress");
                }
            }
        }
    }
    fn finished(&self) {}
}

/// One image in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedImage {
    /// The file.
    pub path: PathBuf,
    /// The SHA-256 it was verified against.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Base images kept under one directory, named by the SHA-256 the catalog pins.
///
/// A download goes to a temporary file in the same directory, is hashed while it
/// streams, and is renamed into place only once the digest matches and decompression
/// succeeded, so a partial or corrupted file is never taken for a cached one. Concurrent
/// requests for the same image in one process wait for a single download; across
/// processes the atomic rename keeps the cache consistent. Cloning is cheap.
#[derive(Clone)]
pub struct ImageCache {
    dir: PathBuf,
    client: reqwest::Client,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io { path: path.to_path_buf(), source }
}

impl ImageCache {
    /// A cache in `dir` (created when needed).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), client: reqwest::Client::new(), locks: Arc::default() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, source: &ImageSource) -> PathBuf {
        self.dir.join(format!("{}.{}", source.sha256.to_ascii_lowercase(), source.format))
    }

    /// The cached file for `source`, downloading and verifying it first if needed.
    ///
    /// # Errors
    /// [`ImageError`]: download, checksum (nothing is cached then), decompression, I/O.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled download leaves only a temporary file, removed on drop.
    pub async fn ensure(&self, source: &ImageSource, progress: &dyn DownloadProgress) -> Result<PathBuf, ImageError> {
        // The digest names the cached file: a source made in code, not read from a
        // catalog, must not put a path there either.
        if source.sha256.len() != 64 || !source.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ImageError::Catalog { message: format!("sha256 of {} must be 64 hex digits", source.url) });
        }
        let target = self.path_for(source);
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(source.sha256.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if target.exists() {
            return Ok(target);
        }
        tokio::fs::create_dir_all(&self.dir).await.map_err(io(&self.dir))?;
        let download = tempfile::Builder::new().prefix(".download-").tempfile_in(&self.dir).map_err(io(&self.dir))?;
        let actual = self.fetch(&source.url, download.path(), progress).await;
        progress.finished();
        let actual = actual?;
        if !actual.eq_ignore_ascii_case(&source.sha256) {
            return Err(ImageError::Checksum { url: source.url.clone(), expected: source.sha256.clone(), actual });
        }
        let finished = match source.decompress {
            Decompress::None => download,
            kind => {
                let out = tempfile::Builder::new().prefix(".unpack-").tempfile_in(&self.dir).map_err(io(&self.dir))?;
                let (input, output, url) = (download.path().to_path_buf(), out.path().to_path_buf(), source.url.clone());
                tokio::task::spawn_blocking(move || decompress(kind, &input, &output, &url))
                    .await
                    .map_err(|e| ImageError::Decompress { url: source.url.clone(), message: e.to_string() })??;
                out
            }
        };
        finished.persist(&target).map_err(|e| ImageError::Io { path: target.clone(), source: e.error })?;
        tracing::info!(path = %target.display(), "image cached");
        Ok(target)
    }

    async fn fetch(&self, url: &str, dest: &Path, progress: &dyn DownloadProgress) -> Result<String, ImageError> {
        let mut hasher = Sha256::new();
        let mut file = std::fs::File::create(dest).map_err(io(dest))?;
        if let Some(path) = url.strip_prefix("file://") {
            let path = PathBuf::from(path);
            let total = std::fs::metadata(&path).map(|m| m.len()).ok();
            progress.started(url, total);
            let mut src = std::fs::File::open(&path).map_err(io(&path))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = src.read(&mut buf).map_err(io(&path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n]).map_err(io(dest))?;
                progress.advanced(n as u64);
            }
        } else if url.starts_with("https://") || url.starts_with("http://") {
            let response = self
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| ImageError::Download { url: url.to_owned(), source: e.without_url() })?;
            if !response.status().is_success() {
                return Err(ImageError::Status { url: url.to_owned(), status: response.status().as_u16() });
            }
            progress.started(url, response.content_length());
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| ImageError::Download { url: url.to_owned(), source: e.without_url() })?;
                hasher.update(&chunk);
                file.write_all(&chunk).map_err(io(dest))?;
                progress.advanced(chunk.len() as u64);
            }
        } else {
            return Err(ImageError::Scheme { url: url.to_owned() });
        }
        file.sync_all().map_err(io(dest))?;
        Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The images in the cache.
    ///
    /// # Errors
    /// [`ImageError::Io`] when the directory cannot be read.
    pub fn list(&self) -> Result<Vec<CachedImage>, ImageError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ImageError::Io { path: self.dir.clone(), source: e }),
        };
        let mut images: Vec<CachedImage> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let (digest, _) = name.split_once('.')?;
                (digest.len() == 64 && !name.starts_with('.')).then(|| CachedImage {
                    path: e.path(),
                    sha256: digest.to_owned(),
                    size: e.metadata().map(|m| m.len()).unwrap_or_default(),
                })
            })
            .collect();
        images.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        Ok(images)
    }

    /// Removes every cached image whose digest is not in `keep` (and leftover temporary
    /// files); returns what was removed. Running machines keep their base open, so
    /// prune only digests no catalog entry uses.
    ///
    /// # Errors
    /// [`ImageError::Io`] when a file cannot be removed.
    pub fn prune(&self, keep: &[&str]) -> Result<Vec<CachedImage>, ImageError> {
        let mut removed = Vec::new();
        for image in self.list()? {
            if !keep.iter().any(|k| k.eq_ignore_ascii_case(&image.sha256)) {
                std::fs::remove_file(&image.path).map_err(io(&image.path))?;
                removed.push(image);
            }
        }
        Ok(removed)
    }
}

fn decompress(kind: Decompress, input: &Path, output: &Path, url: &str) -> Result<(), ImageError> {
    let error = |message: String| ImageError::Decompress { url: url.to_owned(), message };
    let src = std::fs::File::open(input).map_err(io(input))?;
    let mut reader = std::io::BufReader::new(src);
    let mut writer = std::io::BufWriter::new(std::fs::File::create(output).map_err(io(output))?);
    match kind {
        Decompress::None => {
            std::io::copy(&mut reader, &mut writer).map_err(io(output))?;
        }
        Decompress::Xz => lzma_rs::xz_decompress(&mut reader, &mut writer).map_err(|e| error(e.to_string()))?,
        Decompress::Zstd => {
            let mut decoder = ruzstd::decoding::StreamingDecoder::new(reader).map_err(|e| error(e.to_string()))?;
            std::io::copy(&mut decoder, &mut writer).map_err(|e| error(e.to_string()))?;
        }
    }
    writer.flush().map_err(io(output))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageFormat;

    fn sha256_hex(data: &[u8]) -> String {
        Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Serves `body` at `/image` on 127.0.0.1 and counts requests.
    async fn serve(body: Vec<u8>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/image",
            axum::routing::get(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = body.clone();
                async move { body }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/image"), hits)
    }

    #[tokio::test]
    async fn a_verified_download_is_cached_once() {
        let body = b"qcow2 pretend image".repeat(1000);
        let (url, hits) = serve(body.clone()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ImageCache::new(dir.path());
        let source = ImageSource { url, sha256: sha256_hex(&body), format: ImageFormat::Qcow2, decompress: Decompress::None };
        let path = cache.ensure(&source, &LogProgress::default()).await.expect("download");
        assert_eq!(std::fs::read(&path).expect("read"), body);
        let again = cache.ensure(&source, &LogProgress::default()).await.expect("cached");
        assert_eq!(again, path);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "the second call must not download");
        let listed = cache.list().expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].sha256, source.sha256);
        assert_eq!(cache.prune(&[&source.sha256]).expect("prune").len(), 0);
        assert_eq!(cache.prune(&[]).expect("prune").len(), 1);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_corrupted_download_is_rejected_and_not_cached() {
        let body = b"corrupted in transit".to_vec();
        let (url, _) = serve(body).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ImageCache::new(dir.path());
        let expected = sha256_hex(b"the real image");
        let source = ImageSource { url, sha256: expected.clone(), format: ImageFormat::Qcow2, decompress: Decompress::None };
        match cache.ensure(&source, &LogProgress::default()).await {
            Err(ImageError::Checksum { expected: e, actual, .. }) => {
                assert_eq!(e, expected);
                assert_eq!(actual, sha256_hex(b"corrupted in transit"));
            }
            other => panic!("expected a checksum error, got {other:?}"),
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").filter_map(Result::ok).collect();
        assert!(left.is_empty(), "nothing may stay in the cache: {left:?}");
    }

    /// Issue 16, item 9: the digest names the cached file, so a source made in code (not
    /// read from a checked catalog) cannot aim it outside the cache either.
    #[tokio::test]
    async fn issue_16_a_digest_that_is_a_path_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ImageCache::new(dir.path().join("cache"));
        let source = ImageSource {
            url: "file:///dev/null".into(),
            sha256: "../../escaped".into(),
            format: ImageFormat::Raw,
            decompress: Decompress::None,
        };
        let error = cache.ensure(&source, &LogProgress::default()).await.expect_err("not a digest");
        assert!(matches!(error, ImageError::Catalog { .. }), "{error:?}");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0, "nothing was made");
    }

    #[tokio::test]
    async fn file_urls_and_overlays_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("base.raw");
        std::fs::write(&base, vec![0u8; 1 << 20]).expect("write");
        let digest = sha256_hex(&std::fs::read(&base).expect("read"));
        let cache = ImageCache::new(dir.path().join("cache"));
        let source = ImageSource {
            url: format!("file://{}", base.display()),
            sha256: digest,
            format: ImageFormat::Raw,
            decompress: Decompress::None,
        };
        let cached = cache.ensure(&source, &LogProgress::default()).await.expect("copy");
        let overlay = dir.path().join("overlay.qcow2");
        crate::image::create_overlay(Path::new("qemu-img"), &cached, ImageFormat::Raw, &overlay, Some(2))
            .await
            .expect("qemu-img (Debian package `qemu-utils`) must be installed");
        let info = std::process::Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&overlay)
            .output()
            .expect("qemu-img info");
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["virtual-size"], 2u64 << 30);
        assert_eq!(info["backing-filename"], cached.to_string_lossy().as_ref());
    }
}
