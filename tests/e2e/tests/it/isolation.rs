//! The guest cannot reach the host's loopback services, but reaches the egress proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use solstice_e2e::{boot, builder, run_shell};
use solstice_vm::EgressConfig;
use tokio::io::AsyncWriteExt;

/// A server on the host's 127.0.0.1 that counts connections and greets each one.
async fn host_service(greeting: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(greeting.as_bytes()).await;
        }
    });
    (port, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_cannot_reach_host_loopback_but_reaches_the_egress_proxy() {
    let (db_port, db_hits) = host_service("database-secret\n").await;
    let (proxy_port, proxy_hits) = host_service("proxy-ok\n").await;
    let run_dir = tempfile::tempdir().expect("tempdir");
    let hypervisor = builder(run_dir.path()).egress(EgressConfig::new(proxy_port)).build();
    let (machine, _) = boot(&hypervisor).await;
    let script = format!(
        "echo probe | nc -w 3 10.0.2.2 {db_port} && echo db-reached || echo db-refused\n\
         echo probe | nc -w 3 10.0.2.2 22 && echo ssh-reached || echo ssh-refused\n\
         echo hello | nc -w 5 10.0.2.100 3128 || echo proxy-failed\n"
    );
    let (exit, lines) = run_shell(&machine, script).await;
    assert_eq!(exit.exit_code, Some(0), "{lines:?}");
    assert!(lines.contains(&"db-refused".to_owned()), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("database-secret")), "the guest read a host loopback service: {lines:?}");
    assert_eq!(db_hits.load(Ordering::SeqCst), 0, "the host service saw a connection from the guest");
    assert!(lines.contains(&"proxy-ok".to_owned()), "egress through the proxy failed: {lines:?}");
    assert!(proxy_hits.load(Ordering::SeqCst) >= 1);
    hypervisor.stop(&machine.id).await.expect("stop");
}
