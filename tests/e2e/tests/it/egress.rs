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
