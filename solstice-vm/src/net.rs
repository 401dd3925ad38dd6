//! User-mode (SLIRP) networking: the loopback-only SSH forward, isolation from the
//! host's own services, and controlled egress.
//!
//! Plain SLIRP maps the gateway 10.0.2.2 to the host's 127.0.0.1, so a guest can reach
//! any service listening on the host's loopback (databases, message brokers). With
//! `restrict=on` the guest can send nothing out at all: host forwards (our SSH) still
//! work, and so do guest forwards (`guestfwd`), which is how egress is given back in a
//! controlled way: connections from the guest to [`EGRESS_PROXY_ADDR`] run a connector
//! program on the host that joins them to an HTTP proxy the operator chooses (one that
//! refuses loopback and private destinations), normally an [`crate::egress::EgressProxy`]. Steps on
//! such machines see `http_proxy` and friends set to [`EGRESS_PROXY_URL`].

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The address guests use for the egress proxy (`http_proxy=http://10.0.2.100:3128`).
pub const EGRESS_PROXY_ADDR: &str = "10.0.2.100:3128";

/// The proxy URL steps see in `http_proxy`, `https_proxy`, `HTTP_PROXY` and `HTTPS_PROXY`
/// on machines with egress.
pub const EGRESS_PROXY_URL: &str = "http://10.0.2.100:3128";

/// The variables steps get on machines with egress (the hypervisor puts them in
/// [`solstice_core::Machine::env`]).
pub(crate) fn egress_env() -> std::collections::BTreeMap<String, String> {
    ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"]
        .into_iter()
        .map(|k| (k.to_owned(), EGRESS_PROXY_URL.to_owned()))
        .collect()
}

/// Outbound access for guests through a proxy on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// The proxy's port on the host's `127.0.0.1`.
    pub proxy_port: u16,
    /// The program (and arguments) that joins its stdin/stdout to the proxy, with `{port}`
    /// for the port. Default: `busybox nc 127.0.0.1 {port}`.
    #[serde(default = "default_connector")]
    pub connector: Vec<String>,
}

fn default_connector() -> Vec<String> {
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "busybox".into());
    vec![busybox, "nc".into(), "127.0.0.1".into(), "{port}".into()]
}

impl EgressConfig {
    /// Egress through a proxy on `127.0.0.1:proxy_port`, with the default connector.
    pub fn new(proxy_port: u16) -> Self {
        Self { proxy_port, connector: default_connector() }
    }
}

/// A machine's network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    /// Host port of the SSH forward.
    pub ssh_port: u16,
    /// The address the forward binds on the host. Always `127.0.0.1` unless changed
    /// through a `dangerous_` setting.
    pub host_addr: Ipv4Addr,
    /// Cut the guest off from the host and the outside (`restrict=on`). Default: true.
    pub restrict: bool,
    /// Controlled egress, if any.
    pub egress: Option<EgressConfig>,
}

impl NetSpec {
    /// Isolated networking with only the SSH forward on `127.0.0.1:ssh_port`.
    pub fn isolated(ssh_port: u16) -> Self {
        Self { ssh_port, host_addr: Ipv4Addr::LOCALHOST, restrict: true, egress: None }
    }

    /// The value of QEMU's `-netdev` option for this network (one argument: it may
    /// contain spaces, and commas inside the connector are doubled as QEMU requires).
    pub fn netdev(&self, id: &str) -> String {
        let mut value = format!("user,id={id}");
        if self.restrict {
            value.push_str(",restrict=on");
        }
        value.push_str(&format!(",hostfwd=tcp:{}:{}-:22", self.host_addr, self.ssh_port));
        if let Some(egress) = &self.egress {
            let port = egress.proxy_port.to_string();
            let command: Vec<String> = egress.connector.iter().map(|w| w.replace("{port}", &port)).collect();
            value.push_str(&format!(",guestfwd=tcp:{EGRESS_PROXY_ADDR}-cmd:{}", command.join(" ").replace(',', ",,")));
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_loopback_only_and_restricted() {
        assert_eq!(NetSpec::isolated(42001).netdev("n0"), "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:42001-:22");
    }

    #[test]
    fn egress_adds_a_guest_forward_to_the_connector() {
        let mut net = NetSpec::isolated(42002);
        net.egress = Some(EgressConfig { proxy_port: 3999, connector: vec!["/bin/nc".into(), "127.0.0.1".into(), "{port}".into()] });
        assert_eq!(
            net.netdev("n0"),
            "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:42002-:22,guestfwd=tcp:10.0.2.100:3128-cmd:/bin/nc 127.0.0.1 3999"
        );
        net.egress = Some(EgressConfig { proxy_port: 1, connector: vec!["a,b".into()] });
        assert!(net.netdev("n0").ends_with("cmd:a,,b"));
    }
}
