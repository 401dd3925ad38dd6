//! The cloud-init NoCloud seed: a small ISO 9660 image labelled `cidata` holding
//! `meta-data` and `user-data`, written in Rust.
//!
//! [`crate::QemuHypervisor`] writes one for every machine; use [`SeedConfig`] directly to
//! boot a cloud image by hand (with [`crate::qemu`]) or to inspect what a guest is given.

use std::io::Cursor;
use std::sync::Arc;

use hadris_iso::read::PathSeparator;
use hadris_iso::write::options::{CreationFeatures, IsoFormatOptions};
use hadris_iso::write::{File as IsoFile, InputFiles, IsoImageWriter};
use solstice_core::Secret;

/// The seed image could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeedError {
    /// The ISO writer failed.
    #[error("could not write the cidata ISO image")]
    Iso(#[source] hadris_iso::write::IsoCreationError),
    /// A value would break the YAML it goes into.
    #[error("the seed's {field} contains characters that are not allowed: {value:?}")]
    InvalidValue {
        /// Which setting.
        field: &'static str,
        /// The value (never a secret).
        value: String,
    },
}

/// What goes into a machine's seed.
#[derive(Debug, Clone, Default)]
pub struct SeedConfig {
    /// `instance-id` in `meta-data`; a new one makes cloud-init run again.
    pub instance_id: String,
    /// `local-hostname` in `meta-data`.
    pub hostname: String,
    /// The user to create (or `root`, whose keys are set directly).
    pub user: String,
    /// The user's login shell, e.g. `/bin/bash`.
    pub shell: Option<String>,
    /// Supplementary groups, e.g. `sudo` on Linux.
    pub groups: Vec<String>,
    /// A sudoers rule for the user, e.g. `ALL=(ALL) NOPASSWD:ALL`.
    pub sudo: Option<String>,
    /// Public keys allowed to log in (OpenSSH format).
    pub authorized_keys: Vec<String>,
    /// The machine's ed25519 host key: private half (OpenSSH PEM) and public half.
    pub host_key: Option<(Secret, String)>,
}

impl SeedConfig {
    /// The `meta-data` file.
    pub fn meta_data(&self) -> String {
        format!("instance-id: {}\nlocal-hostname: {}\n", self.instance_id, self.hostname)
    }

    /// The `user-data` file: a `#cloud-config` document.
    ///
    /// # Errors
    /// [`SeedError::InvalidValue`] when a name or key holds characters that could change
    /// the document's meaning (quotes, newlines, `#`, `:` in names).
    pub fn user_data(&self) -> Result<String, SeedError> {
        check("instance id", &self.instance_id, |c| c.is_ascii_alphanumeric() || "-_.".contains(c))?;
        check("hostname", &self.hostname, |c| c.is_ascii_alphanumeric() || c == '-')?;
        check("user", &self.user, |c| c.is_ascii_alphanumeric() || "-_.".contains(c))?;
        let plain = |c: char| !matches!(c, '\n' | '\r' | '"' | '\'' | '#' | '\\');
        for key in &self.authorized_keys {
            check("authorized key", key, plain)?;
        }
        if let Some(shell) = &self.shell {
            check("shell", shell, plain)?;
        }
        if let Some(sudo) = &self.sudo {
            check("sudo rule", sudo, plain)?;
        }
        let mut doc = String::from("#cloud-config\n");
        let keys: String = self.authorized_keys.iter().map(|k| format!("      - {k}\n")).collect();
        if self.user == "root" {
            doc.push_str("disable_root: false\n");
            doc.push_str("users:\n  - name: root\n");
        } else {
            doc.push_str("disable_root: true\n");
            doc.push_str(&format!("users:\n  - name: {}\n    lock_passwd: true\n", self.user));
            if let Some(shell) = &self.shell {
                doc.push_str(&format!("    shell: {shell}\n"));
            }
            if !self.groups.is_empty() {
                doc.push_str(&format!("    groups: [{}]\n", self.groups.join(", ")));
            }
            if let Some(sudo) = &self.sudo {
                doc.push_str(&format!("    sudo: \"{sudo}\"\n"));
            }
        }
        doc.push_str("    ssh_authorized_keys:\n");
        doc.push_str(&keys);
        doc.push_str("ssh_pwauth: false\n");
        if let Some((private, public)) = &self.host_key {
            check("host key", public, plain)?;
            doc.push_str("ssh_deletekeys: true\nssh_genkeytypes: []\nssh_keys:\n  ed25519_private: |\n");
            for line in private.expose().lines() {
                doc.push_str("    ");
                doc.push_str(line);
                doc.push('\n');
            }
            doc.push_str(&format!("  ed25519_public: {public}\n"));
        }
        Ok(doc)
    }

    /// The seed as an ISO 9660 image (Joliet and Rock Ridge, volume label `cidata`).
    ///
    /// # Errors
    /// [`SeedError`] when a value is invalid or the image cannot be written.
    pub fn to_iso(&self) -> Result<Vec<u8>, SeedError> {
        let files = InputFiles {
            path_separator: PathSeparator::ForwardSlash,
            files: vec![
                IsoFile::File { name: Arc::new("meta-data".into()), contents: self.meta_data().into_bytes() },
                IsoFile::File { name: Arc::new("user-data".into()), contents: self.user_data()?.into_bytes() },
            ],
        };
        let options = IsoFormatOptions {
            volume_name: "cidata".into(),
            system_id: None,
            volume_set_id: None,
            publisher_id: None,
            preparer_id: None,
            application_id: Some("solstice-ci".into()),
            sector_size: 2048,
            features: CreationFeatures::extensions(),
            path_separator: PathSeparator::ForwardSlash,
            strict_charset: false,
        };
        let image = IsoImageWriter::create(Cursor::new(Vec::new()), files, options).map_err(SeedError::Iso)?;
        Ok(image.into_inner())
    }
}

fn check(field: &'static str, value: &str, allowed: impl Fn(char) -> bool) -> Result<(), SeedError> {
    if value.chars().all(allowed) {
        Ok(())
    } else {
        Err(SeedError::InvalidValue { field, value: value.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SeedConfig {
        SeedConfig {
            instance_id: "vm-1".into(),
            hostname: "solstice-vm-1".into(),
            user: "runner".into(),
            shell: Some("/bin/bash".into()),
            groups: vec!["sudo".into()],
            sudo: Some("ALL=(ALL) NOPASSWD:ALL".into()),
            authorized_keys: vec!["ssh-ed25519 AAAAC3Nz job".into()],
            host_key: Some((Secret::new("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"), "ssh-ed25519 AAAAhost host".into())),
        }
    }

    #[test]
    fn user_data_is_cloud_config_with_keys() {
        let doc = config().user_data().expect("valid");
        assert!(doc.starts_with("#cloud-config\n"));
        assert!(doc.contains("  - name: runner\n"));
        assert!(doc.contains("      - ssh-ed25519 AAAAC3Nz job\n"));
        assert!(doc.contains("    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n"));
        assert!(doc.contains("  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n    abc\n"));
        assert!(doc.contains("  ed25519_public: ssh-ed25519 AAAAhost host\n"));
    }

    #[test]
    fn injection_through_names_is_refused() {
        let mut bad = config();
        bad.user = "x\nruncmd: [reboot]".into();
        assert!(matches!(bad.user_data(), Err(SeedError::InvalidValue { field: "user", .. })));
        let mut bad = config();
        bad.authorized_keys = vec!["ssh-ed25519 A\"B".into()];
        assert!(matches!(bad.user_data(), Err(SeedError::InvalidValue { field: "authorized key", .. })));
    }

    /// Reads the image back with xorriso, a real ISO tool (Debian package `xorriso`).
    #[test]
    fn the_image_reads_back_with_xorriso() {
        let iso = config().to_iso().expect("iso");
        assert_eq!(iso.len() % 2048, 0);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seed.iso");
        std::fs::write(&path, &iso).expect("write");
        let out = std::process::Command::new("xorriso")
            .args(["-indev"])
            .arg(&path)
            .args(["-pvd_info", "-osirrox", "on", "-extract", "/user-data"])
            .arg(dir.path().join("user-data"))
            .args(["-ls", "/", "--"])
            .output()
            .expect("xorriso must be installed (Debian package `xorriso`) to check the seed ISO");
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "xorriso failed: {report}");
        assert!(report.contains("Volume Id    : cidata"), "{report}");
        assert!(report.contains("'meta-data'") && report.contains("'user-data'"), "{report}");
        let extracted = std::fs::read_to_string(dir.path().join("user-data")).expect("extracted");
        assert_eq!(extracted, config().user_data().expect("valid"));
    }
}
