//! Guest profiles: what differs between operating systems once a machine has booted.

use serde::{Deserialize, Serialize};

/// How a guest OS family behaves: its login user, how to become root, its shell, where
/// the job's workspace goes, and how it reads the cloud-init seed.
///
/// The presets follow what the images really do:
/// - [`GuestProfile::linux`]: Debian/Ubuntu/Fedora cloud images run cloud-init, read the
///   NoCloud seed from a CD-ROM labelled `cidata`, create the configured user with `sudo`
///   and `/bin/bash`, and install `ssh_keys` as the host keys.
/// - [`GuestProfile::illumos`]: OmniOS and OpenIndiana. The original Solstice image map
///   boots the OpenIndiana cloud image with the NoCloud seed (`nocloud: true`); other
///   illumos images configure themselves with the illumos `metadata-agent`, which reads
///   SSH keys and the hostname from the hypervisor (check which one your image ships).
///   illumos uses `pfexec` instead of `sudo`, has bash as `/bin/bash` (ksh93 is
///   `/bin/sh`) and often no `git`, which is why the executor uploads the repository
///   instead of cloning it there.
/// - [`GuestProfile::tiny`]: the tiny test guest (`TestGuest`, feature `test-guest`): busybox, bash and
///   dropbear as root, reading only the keys from the seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestProfile {
    /// Short name (`linux`, `illumos`, `tiny`).
    pub name: String,
    /// The user to log in as.
    pub user: String,
    /// The user's login shell.
    pub shell: String,
    /// Supplementary groups for the user (e.g. `sudo`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The sudoers rule cloud-init writes (`None` where sudo is not used).
    #[serde(default)]
    pub sudo: Option<String>,
    /// How steps get root (`sudo`, `pfexec`, or empty when already root).
    #[serde(default)]
    pub elevate: String,
    /// Absolute path of the job's workspace in the guest.
    pub workspace: String,
    /// What the guest reports as `runner.os` unless its catalog entry says otherwise:
    /// GitHub's spelling for Linux (`Linux`), otherwise what the system's `uname -s`
    /// says (`SunOS` for illumos). Default: `Linux`.
    #[serde(default = "default_os")]
    pub os: String,
    /// `runner.temp` in the guest: a directory for the job's temporary files, outside the
    /// workspace. Default: `/tmp/runner-temp`.
    #[serde(default = "default_temp")]
    pub temp: String,
    /// `runner.tool_cache` in the guest. Default: `/tmp/runner-tool-cache`.
    #[serde(default = "default_tool_cache")]
    pub tool_cache: String,
    /// Directory for the executor's scripts and command files.
    pub scratch: String,
    /// A line on the serial console that says the guest is up (SSH is tried earlier
    /// anyway, so this only shortens the log).
    #[serde(default)]
    pub ready_marker: Option<String>,
}

fn default_os() -> String {
    "Linux".into()
}
fn default_temp() -> String {
    "/tmp/runner-temp".into()
}
fn default_tool_cache() -> String {
    "/tmp/runner-tool-cache".into()
}

impl GuestProfile {
    /// Linux cloud images with cloud-init.
    pub fn linux() -> Self {
        Self {
            name: "linux".into(),
            user: "runner".into(),
            shell: "/bin/bash".into(),
            groups: vec!["sudo".into()],
            sudo: Some("ALL=(ALL) NOPASSWD:ALL".into()),
            elevate: "sudo".into(),
            workspace: "/home/runner/work".into(),
            os: "Linux".into(),
            temp: "/home/runner/_temp".into(),
            tool_cache: "/home/runner/_tool".into(),
            scratch: "/tmp/solstice".into(),
            ready_marker: Some("Cloud-init".into()),
        }
    }

    /// OmniOS and OpenIndiana cloud images.
    pub fn illumos() -> Self {
        Self {
            name: "illumos".into(),
            user: "runner".into(),
            shell: "/bin/bash".into(),
            groups: Vec::new(),
            sudo: None,
            elevate: "pfexec".into(),
            workspace: "/export/home/runner/work".into(),
            os: "SunOS".into(),
            temp: "/export/home/runner/_temp".into(),
            tool_cache: "/export/home/runner/_tool".into(),
            scratch: "/tmp/solstice".into(),
            ready_marker: None,
        }
    }

    /// The busybox + dropbear test guest.
    pub fn tiny() -> Self {
        Self {
            name: "tiny".into(),
            user: "root".into(),
            shell: "/bin/sh".into(),
            groups: Vec::new(),
            sudo: None,
            elevate: String::new(),
            workspace: "/root/work".into(),
            os: "Linux".into(),
            temp: "/root/_temp".into(),
            tool_cache: "/root/_tool".into(),
            scratch: "/tmp/solstice".into(),
            ready_marker: Some("solstice-guest: sshd started".into()),
        }
    }

    /// The preset with this name (`linux`, `illumos`, `tiny`).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "linux" => Some(Self::linux()),
            "illumos" | "omnios" | "openindiana" => Some(Self::illumos()),
            "tiny" => Some(Self::tiny()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_found_by_name() {
        assert_eq!(GuestProfile::preset("openindiana").map(|p| p.elevate), Some("pfexec".into()));
        assert_eq!(GuestProfile::preset("linux").map(|p| p.user), Some("runner".into()));
        assert_eq!(GuestProfile::preset("tiny").map(|p| p.user), Some("root".into()));
        assert_eq!(GuestProfile::preset("windows"), None);
        assert_eq!(GuestProfile::preset("omnios").map(|p| p.os), Some("SunOS".into()), "what illumos' uname -s says");
    }
}
