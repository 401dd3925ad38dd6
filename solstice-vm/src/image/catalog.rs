//! The image catalog: which image serves which `runs-on` label.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::GuestProfile;
use crate::image::ImageError;

/// Where a base image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSource {
    /// `https://…`, `http://…` or `file:///…`.
    pub url: String,
    /// SHA-256 of the file at `url` (before decompression), lowercase hex.
    pub sha256: String,
    /// The disk format after decompression. Default: `qcow2`.
    #[serde(default)]
    pub format: ImageFormat,
    /// How the file is compressed. Default: none.
    #[serde(default)]
    pub decompress: Decompress,
}

/// The disk format of a base image, as `qemu-img` names it (`-F` of the overlay).
///
/// A closed set: the name becomes part of the cached file's name and of `qemu-img`'s
/// arguments, so a catalog cannot put a path or an option there, and a format QEMU would
/// probe (and could be fooled by) is never left unnamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ImageFormat {
    /// QEMU's copy-on-write format, what most cloud images ship as.
    #[default]
    Qcow2,
    /// A plain disk image.
    Raw,
    /// VMware's format.
    Vmdk,
    /// VirtualBox's format.
    Vdi,
    /// Hyper-V's format.
    Vhdx,
    /// Virtual PC's VHD (`qemu-img` calls it `vpc`).
    Vpc,
}

impl ImageFormat {
    /// Every supported format, in the order error messages list them.
    pub const ALL: [Self; 6] = [Self::Qcow2, Self::Raw, Self::Vmdk, Self::Vdi, Self::Vhdx, Self::Vpc];

    /// The name `qemu-img` and the catalog use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qcow2 => "qcow2",
            Self::Raw => "raw",
            Self::Vmdk => "vmdk",
            Self::Vdi => "vdi",
            Self::Vhdx => "vhdx",
            Self::Vpc => "vpc",
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compression of a downloaded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decompress {
    /// Not compressed.
    #[default]
    None,
    /// xz.
    Xz,
    /// zstd.
    Zstd,
}

/// How a machine of this image boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum BootMode {
    /// From the image's disk.
    Disk,
    /// A kernel and initrd booted directly (the disk, if any, is attached too).
    Kernel {
        /// The kernel image.
        kernel: PathBuf,
        /// The initial ramdisk.
        #[serde(default)]
        initrd: Option<PathBuf>,
        /// The kernel command line.
        #[serde(default)]
        append: String,
    },
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    /// More labels served by this image besides its key.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The base disk image; `None` for diskless kernel boots.
    #[serde(default)]
    pub source: Option<ImageSource>,
    /// A guest profile preset name (`linux`, `illumos`, `tiny`). Default: `linux`.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// What machines of this image report as `runner.os` and `RUNNER_OS`: GitHub's
    /// spelling for `Linux`, `macOS` and `Windows`, otherwise what the system's own
    /// `uname -s` says (`FreeBSD`, `OpenBSD`, `NetBSD`, `DragonFly`, `SunOS` for illumos
    /// and Solaris, `Haiku`). Default: the guest profile's ([`GuestProfile::os`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// What machines of this image report as `runner.arch` and `RUNNER_ARCH` (`X64`,
    /// `ARM64`, `X86`, `ARM`). Default: `X64`, the architecture of
    /// `qemu-system-x86_64`, which the hypervisor runs unless told otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Virtual CPUs. Default: 2.
    #[serde(default = "default_vcpus")]
    pub vcpus: u16,
    /// Memory in MiB. Default: 2048.
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    /// Virtual disk size of the job's overlay in GiB; `None` keeps the base's size.
    #[serde(default)]
    pub disk_gib: Option<u32>,
    /// How it boots. Default: from disk.
    #[serde(default = "default_boot")]
    pub boot: BootMode,
}

fn default_profile() -> String {
    "linux".into()
}
fn default_vcpus() -> u16 {
    2
}
fn default_memory() -> u32 {
    2048
}
fn default_boot() -> BootMode {
    BootMode::Disk
}

/// The parser's message for a catalog that does not decode, prefixed with the label of
/// the entry at fault when one entry alone fails to decode (the parser names the line,
/// not the entry, and a format or key may be far below its `[images.…]` header).
fn name_the_entry(text: &str, error: toml::de::Error) -> String {
    let message = error.to_string();
    let Ok(table) = toml::from_str::<toml::Table>(text) else { return message };
    let Some(toml::Value::Table(images)) = table.get("images") else { return message };
    let faulty = images.iter().find(|(_, value)| ImageEntry::deserialize((*value).clone()).is_err());
    match faulty {
        Some((label, _)) => format!("image `{label}`: {message}"),
        None => message,
    }
}

/// `runner.arch` of images that do not declare one.
const DEFAULT_ARCH: &str = "X64";

impl ImageEntry {
    /// The guest profile named by [`ImageEntry::profile`].
    ///
    /// # Errors
    /// [`ImageError::Catalog`] for an unknown profile name.
    pub fn guest_profile(&self) -> Result<GuestProfile, ImageError> {
        GuestProfile::preset(&self.profile)
            .ok_or_else(|| ImageError::Catalog { message: format!("unknown guest profile `{}`", self.profile) })
    }

    /// The `runner.os` of its machines: [`ImageEntry::os`], else the profile's.
    ///
    /// # Errors
    /// [`ImageError::Catalog`] for an unknown profile name.
    pub fn runner_os(&self) -> Result<String, ImageError> {
        match &self.os {
            Some(os) => Ok(os.clone()),
            None => Ok(self.guest_profile()?.os),
        }
    }

    /// The `runner.arch` of its machines: [`ImageEntry::arch`], else `X64`.
    pub fn runner_arch(&self) -> String {
        self.arch.clone().unwrap_or_else(|| DEFAULT_ARCH.to_owned())
    }
}

/// Labels mapped to images, read from TOML:
///
/// ```toml
/// [images.omnios-r151056]
/// aliases = ["illumos-latest"]
/// profile = "illumos"   # runner.os is the profile's, SunOS; `os = "..."` sets another
/// vcpus = 4
/// memory_mib = 4096
/// disk_gib = 20
/// source = { url = "https://example.org/omnios.qcow2.zst", sha256 = "…", decompress = "zstd" }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageCatalog {
    /// Entries by their main label.
    #[serde(default)]
    pub images: BTreeMap<String, ImageEntry>,
}

impl ImageCatalog {
    /// Parses a catalog and checks it (profiles exist, digests are 64 hex digits, no label
    /// is served twice).
    ///
    /// # Errors
    /// [`ImageError::Catalog`] with the parser's message.
    pub fn from_toml(text: &str) -> Result<Self, ImageError> {
        let catalog: Self = toml::from_str(text).map_err(|e| ImageError::Catalog { message: name_the_entry(text, e) })?;
        let mut seen = std::collections::HashSet::new();
        for (label, entry) in &catalog.images {
            entry.guest_profile()?;
            for (key, value) in [("os", &entry.os), ("arch", &entry.arch)] {
                if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
                    return Err(ImageError::Catalog { message: format!("image `{label}`: `{key}` must not be empty") });
                }
            }
            if let Some(source) = &entry.source {
                if source.sha256.len() != 64 || !source.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(ImageError::Catalog { message: format!("image `{label}`: sha256 must be 64 hex digits") });
                }
            } else if entry.boot == BootMode::Disk {
                return Err(ImageError::Catalog { message: format!("image `{label}` boots from disk but has no source") });
            }
            for name in std::iter::once(label).chain(&entry.aliases) {
                if !seen.insert(name.clone()) {
                    return Err(ImageError::Catalog { message: format!("label `{name}` is served twice") });
                }
            }
        }
        Ok(catalog)
    }

    /// Reads and checks the catalog file at `path` (see [`ImageCatalog::from_toml`]).
    ///
    /// # Errors
    /// [`ImageError::ReadCatalog`] if the file cannot be read, [`ImageError::Catalog`]
    /// (naming the file) if it is invalid.
    pub fn load(path: &std::path::Path) -> Result<Self, ImageError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ImageError::ReadCatalog { path: path.to_path_buf(), source })?;
        Self::from_toml(&text).map_err(|e| match e {
            ImageError::Catalog { message } => ImageError::Catalog { message: format!("{}: {message}", path.display()) },
            other => other,
        })
    }

    /// Adds or replaces an entry.
    pub fn insert(&mut self, label: impl Into<String>, entry: ImageEntry) {
        self.images.insert(label.into(), entry);
    }

    /// The entry serving `label`, by key or alias.
    pub fn lookup(&self, label: &str) -> Option<&ImageEntry> {
        self.images
            .get(label)
            .or_else(|| self.images.values().find(|e| e.aliases.iter().any(|a| a == label)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &str = r#"
[images.omnios]
aliases = ["illumos-latest"]
profile = "illumos"
vcpus = 4
memory_mib = 4096
disk_gib = 20
source = { url = "https://example.org/omnios.qcow2.zst", sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", decompress = "zstd" }

[images.tiny-linux]
profile = "tiny"
memory_mib = 512
boot = { mode = "kernel", kernel = "/c/vmlinuz", initrd = "/c/initrd.gz", append = "console=ttyS0" }
"#;

    #[test]
    fn labels_and_aliases_resolve() {
        let catalog = ImageCatalog::from_toml(CATALOG).expect("valid");
        let omnios = catalog.lookup("illumos-latest").expect("alias");
        assert_eq!(omnios.vcpus, 4);
        assert_eq!(omnios.source.as_ref().map(|s| s.decompress), Some(Decompress::Zstd));
        assert_eq!(omnios.source.as_ref().map(|s| s.format.as_str()), Some("qcow2"));
        let tiny = catalog.lookup("tiny-linux").expect("key");
        assert_eq!(tiny.vcpus, 2);
        assert!(matches!(&tiny.boot, BootMode::Kernel { append, .. } if append == "console=ttyS0"));
        assert!(catalog.lookup("windows").is_none());
    }

    #[test]
    fn os_and_arch_come_from_the_entry_else_from_the_profile() {
        let catalog = ImageCatalog::from_toml(CATALOG).expect("valid");
        let omnios = catalog.lookup("omnios").expect("omnios");
        assert_eq!((omnios.runner_os().expect("os"), omnios.runner_arch()), ("SunOS".into(), "X64".into()));
        let tiny = catalog.lookup("tiny-linux").expect("tiny");
        assert_eq!(tiny.runner_os().expect("os"), "Linux");
        let declared = CATALOG.replace("profile = \"tiny\"", "profile = \"tiny\"\nos = \"FreeBSD\"\narch = \"ARM64\"");
        let catalog = ImageCatalog::from_toml(&declared).expect("valid");
        let tiny = catalog.lookup("tiny-linux").expect("tiny");
        assert_eq!((tiny.runner_os().expect("os"), tiny.runner_arch()), ("FreeBSD".into(), "ARM64".into()));
        let empty = CATALOG.replace("profile = \"tiny\"", "profile = \"tiny\"\nos = \"\"");
        assert!(matches!(ImageCatalog::from_toml(&empty), Err(ImageError::Catalog { .. })));
    }

    /// Tests write catalogs by serializing one (`solstice_e2e::catalog_declaring_freebsd`):
    /// what serde writes must read back as the same catalog, unset options included.
    #[test]
    fn a_serialized_catalog_reads_back_the_same() {
        let catalog = ImageCatalog::from_toml(CATALOG).expect("valid");
        let text = toml::to_string(&catalog).expect("serialize");
        assert_eq!(ImageCatalog::from_toml(&text).expect("reads back"), catalog, "{text}");
    }

    #[test]
    fn bad_catalogs_are_rejected() {
        let bad_digest = CATALOG.replace("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", "abc");
        assert!(matches!(ImageCatalog::from_toml(&bad_digest), Err(ImageError::Catalog { .. })));
        let unknown_key = format!("{CATALOG}\n[images.x]\nsourse = 1\n");
        assert!(matches!(ImageCatalog::from_toml(&unknown_key), Err(ImageError::Catalog { .. })));
        let twice = CATALOG.replace("aliases = [\"illumos-latest\"]", "aliases = [\"tiny-linux\"]");
        assert!(matches!(ImageCatalog::from_toml(&twice), Err(ImageError::Catalog { .. })));
        let profile = CATALOG.replace("profile = \"illumos\"", "profile = \"beos\"");
        assert!(matches!(ImageCatalog::from_toml(&profile), Err(ImageError::Catalog { .. })));
    }

    /// Issue 16, item 9: `format` names the cached file (`<sha256>.<format>`) and goes to
    /// `qemu-img create -F`, so only formats qemu-img knows by these names are accepted
    /// (QEMU's "Disk Images" documentation lists them), and the error names the entry.
    #[test]
    fn issue_16_an_unknown_or_path_like_format_is_refused_naming_the_entry() {
        let raw = CATALOG.replace("decompress = \"zstd\" }", "decompress = \"zstd\", format = \"raw\" }");
        let catalog = ImageCatalog::from_toml(&raw).expect("raw is supported");
        assert_eq!(catalog.lookup("omnios").and_then(|e| e.source.as_ref()).map(|s| s.format), Some(ImageFormat::Raw));
        for format in ["../../../etc/passwd", "qcow2 -o backing_file=/etc/shadow", "QCOW2", "", "iso"] {
            let bad = CATALOG.replace("decompress = \"zstd\" }", &format!("decompress = \"zstd\", format = {format:?} }}"));
            let error = ImageCatalog::from_toml(&bad).expect_err(format).to_string();
            assert!(error.contains("image `omnios`"), "{format:?}: {error}");
            assert!(error.contains("qcow2") && error.contains("vmdk"), "the supported formats are listed: {error}");
        }
        // The entry is named also when its source is a table of its own, far from the header.
        let spread = "[images.far]\nprofile = \"linux\"\n\n[images.far.source]\nurl = \"file:///i\"\nsha256 = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\nformat = \"cow\"\n";
        let error = ImageCatalog::from_toml(spread).expect_err("cow").to_string();
        assert!(error.contains("image `far`"), "{error}");
    }

    #[test]
    fn the_documented_catalog_example_parses() {
        let doc = include_str!("../../../docs/images.md");
        let start = doc.find("```toml\n").expect("docs/images.md has a ```toml block") + "```toml\n".len();
        let end = start + doc[start..].find("```").expect("closed block");
        let catalog = ImageCatalog::from_toml(&doc[start..end]).expect("the catalog in docs/images.md is valid");
        assert!(catalog.lookup("omnios").is_some(), "aliases resolve");
        assert!(catalog.lookup("tiny-linux").is_some());
    }

    #[test]
    fn load_names_the_file_it_could_not_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.toml");
        let err = ImageCatalog::load(&missing).expect_err("no file");
        assert!(matches!(&err, ImageError::ReadCatalog { path, .. } if *path == missing), "{err}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[images.x]\nprofile = \"nonesuch\"\n").expect("write");
        let err = ImageCatalog::load(&bad).expect_err("bad profile");
        assert!(err.to_string().contains("bad.toml") && err.to_string().contains("nonesuch"), "{err}");
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "[images.tiny]\nprofile = \"tiny\"\nboot = { mode = \"kernel\", kernel = \"/k\", append = \"\" }\n").expect("write");
        assert!(ImageCatalog::load(&good).expect("valid").lookup("tiny").is_some());
    }
}
