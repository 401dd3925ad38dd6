//! A guest with egress reaches allowed destinations through the host's egress proxy,
//! is refused (403) elsewhere, and still cannot reach the host's loopback directly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use solstice_e2e::{boot, builder, run_shell};
use solstice_vm::egress::EgressProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP server on the host's 127.0.0.1 that answers every request with `body` and
/// counts the connections it saw.
async fn http_server(body: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_gets_egress_only_through_the_proxy_and_only_to_allowed_destinations() {
    let (allowed, allowed_hits) = http_server("allowed-ok\n").await;
    let (other, other_hits) = http_server("other-secret\n").await;
    let run_dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = builder(run_dir.path())
        .start_egress_proxy(EgressProxy::builder().dangerous_allow_destination(allowed))
        .build();
    let (machine, _) = boot(&hypervisor).await;
    let (a, o) = (allowed.port(), other.port());
    let script = format!(
        "echo \"proxy-env=$http_proxy $https_proxy $HTTP_PROXY $HTTPS_PROXY\"\n\
         wget -Y on -q -O - http://127.0.0.1:{a}/wget && echo wget-allowed-done\n\
         printf 'CONNECT 127.0.0.1:{a} HTTP/1.1\\r\\n\\r\\nGET /tunnel HTTP/1.0\\r\\n\\r\\n' | nc -w 10 10.0.2.100 3128\n\
         wget -Y on -q -O - http://127.0.0.1:{o}/wget 2>&1 || echo wget-other-failed\n\
         printf 'CONNECT 127.0.0.1:{o} HTTP/1.1\\r\\n\\r\\n' | nc -w 10 10.0.2.100 3128\n\
         echo probe | nc -w 3 10.0.2.2 {o} && echo direct-reached || echo direct-refused\n"
    );
    let (exit, lines) = run_shell(&machine, script).await;
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert_eq!(exit.exit_code, Some(0), "{lines:?}");
    let url = "http://10.0.2.100:3128";
    assert!(lines.contains(&format!("proxy-env={url} {url} {url} {url}")), "steps did not get the proxy variables: {lines:?}");
    // (a) through the proxy to the allowlisted host server: plain HTTP and a CONNECT tunnel.
    assert!(has("wget-allowed-done"), "wget through the proxy failed: {lines:?}");
    assert!(has("HTTP/1.1 200 Connection established"), "the CONNECT tunnel was not opened: {lines:?}");
    assert!(lines.iter().filter(|l| l.as_str() == "allowed-ok").count() >= 2, "{lines:?}");
    assert!(allowed_hits.load(Ordering::SeqCst) >= 2);
    // (b) through the proxy to a loopback port nobody allowed: 403 for both kinds.
    assert!(has("wget-other-failed"), "{lines:?}");
    assert!(has("403"), "the proxy did not refuse with 403: {lines:?}");
    assert!(has("HTTP/1.1 403 Forbidden"), "{lines:?}");
    assert!(has("loopback address"), "the refusal does not say why: {lines:?}");
    // (c) the host's loopback through the SLIRP gateway stays closed.
    assert!(lines.contains(&"direct-refused".to_owned()), "{lines:?}");
    assert!(!has("other-secret"), "the guest read a host loopback service: {lines:?}");
    assert_eq!(other_hits.load(Ordering::SeqCst), 0, "the refused host service saw a connection");
    hypervisor.stop(&machine.id).await.expect("stop");
}

/// The host's own addresses, from the kernel's tables (IPv4 local routes, IPv6 interface
/// addresses), loopback left out: the addresses a guest would try to reach host services
/// bound to `0.0.0.0` or `::` through.
fn host_addresses() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let trie = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
    let mut last = None;
    for line in trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ").and_then(|a| a.parse::<std::net::Ipv4Addr>().ok()) {
            last = Some(addr);
        } else if line == "/32 host LOCAL"
            && let Some(addr) = last
            && !addr.is_loopback()
            && !out.contains(&std::net::IpAddr::V4(addr))
        {
            out.push(std::net::IpAddr::V4(addr));
        }
    }
    let inet6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    for hex in inet6.lines().filter_map(|l| l.split_whitespace().next()) {
        if let Ok(bits) = u128::from_str_radix(hex, 16) {
            let addr = std::net::Ipv6Addr::from(bits);
            if !addr.is_loopback() {
                out.push(std::net::IpAddr::V6(addr));
            }
        }
    }
    out
}

/// Issue 16, items 10 and 11, from inside a guest: through the proxy, the host's own
/// non-loopback addresses and the special-purpose ranges are refused (403); then the
/// guest opens 300 connections at once and gets 64 of them (the per-machine limit) and
/// `503` for the rest, while another machine's listener on the same proxy still tunnels
/// and at most about 64 connector processes stay alive on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_the_guest_is_refused_special_ranges_and_cannot_starve_others() {
    let (allowed, _hits) = http_server("allowed-ok\n").await;
    // A service on every host address, as a database bound to 0.0.0.0 would be.
    let exposed = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let exposed_port = exposed.local_addr().expect("addr").port();
    let proxy = EgressProxy::builder()
        .dangerous_allow_destination(allowed)
        // Held connections must stay held while the guest opens the rest (slow under TCG).
        .head_timeout(std::time::Duration::from_secs(600))
        .start()
        .await
        .expect("proxy");
    let run_dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = builder(run_dir.path()).egress_proxy(proxy.clone()).build();
    let (machine, _) = boot(&hypervisor).await;

    let mut targets: Vec<String> = host_addresses()
        .into_iter()
        .map(|ip| std::net::SocketAddr::new(ip, exposed_port).to_string())
        .collect();
    assert!(!targets.is_empty(), "the host has no address besides loopback");
    targets.extend(
        ["10.0.2.2:22", "192.0.2.1:80", "198.18.0.1:80", "203.0.113.5:443", "[64:ff9b::7f00:1]:80", "[2002:7f00:1::1]:80", "[2001::1]:80", "[fec0::1]:80", "[::ffff:127.0.0.1]:22"]
            .map(str::to_owned),
    );
    let probes: String = targets
        .iter()
        .map(|t| format!("printf 'CONNECT {t} HTTP/1.1\\r\\n\\r\\n' | nc -w 10 10.0.2.100 3128 | head -n 1 | sed 's|^|{t} => |'\n"))
        .collect();
    let flood = "i=0; while [ $i -lt 300 ]; do i=$((i+1)); (sleep 600 </dev/null 2>/dev/null | nc 10.0.2.100 3128 >/tmp/c$i 2>&1 &); done\n\
                 sleep 10; echo flood-started\n";
    let (exit, lines) = run_shell(&machine, format!("{probes}{flood}")).await;
    assert_eq!(exit.exit_code, Some(0), "{lines:?}");
    for target in &targets {
        let answer = lines.iter().find(|l| l.starts_with(&format!("{target} => "))).unwrap_or_else(|| panic!("{target}: {lines:?}"));
        assert!(answer.contains("HTTP/1.1 403 Forbidden"), "{answer}");
    }
    assert!(lines.iter().any(|l| l == "flood-started"), "{lines:?}");

    // Another machine's listener on the same proxy is not starved.
    let other = proxy.open_for("another-vm").await.expect("lease");
    let mut s = tokio::net::TcpStream::connect(other.local_addr()).await.expect("connect");
    s.write_all(format!("CONNECT {allowed} HTTP/1.1\r\n\r\nGET / HTTP/1.0\r\n\r\n").as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut reply)).await.expect("answer").expect("read");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200 ") && reply.contains("allowed-ok"), "{reply}");

    // The host keeps about the limit of connector processes for this guest, not 300.
    // QEMU starts them detached (they are not its children), so they are found by their
    // command line: the connector of this machine's listener, read from QEMU's own.
    let qemu = hypervisor.machine_pid(&machine.id).expect("pid");
    let qemu_args = std::fs::read(format!("/proc/{qemu}/cmdline")).expect("QEMU's command line");
    let qemu_args = String::from_utf8_lossy(&qemu_args).into_owned();
    let connector = qemu_args
        .split("-cmd:")
        .nth(1)
        .and_then(|rest| rest.split('\0').next())
        .expect("a guest forward to a connector")
        .to_owned();
    let connectors = std::fs::read_dir("/proc")
        .expect("proc")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|args| String::from_utf8_lossy(args).trim_end_matches('\0').replace('\0', " ") == connector)
        .count();
    assert!(connectors <= 64 + 8, "{connectors} connector processes `{connector}` alive");
    assert!(connectors >= 32, "only {connectors} connector processes `{connector}` found: the count looks in the wrong place");
    let count = "held=0; refused=0; for f in /tmp/c*; do if grep -q ' 503 ' $f; then refused=$((refused+1)); elif [ ! -s $f ]; then held=$((held+1)); fi; done; echo \"held=$held refused=$refused\"\n";
    let (_, lines) = run_shell(&machine, count.to_owned()).await;
    assert!(lines.contains(&"held=64 refused=236".to_owned()), "{lines:?} ({connectors} connector processes)");
    println!("connector processes during the flood: {connectors} (`{connector}`)");
    hypervisor.stop(&machine.id).await.expect("stop");
    proxy.shutdown().await;
}
