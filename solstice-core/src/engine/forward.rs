//! A TCP port forward that lives exactly as long as a debug machine is kept: from an
//! address people can reach to the machine's SSH port on loopback.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections one forward serves at once: one person debugging needs a few (a shell,
/// an scp), and the bound keeps a public port from being used to exhaust the host.
const MAX_CONNECTIONS: usize = 8;

/// A running forward `listen → target`. [`PortForward::close`] stops listening and cuts
/// every connection; dropping it does the same without waiting.
#[derive(Debug)]
pub(crate) struct PortForward {
    local: SocketAddr,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl PortForward {
    /// Starts forwarding connections accepted on `listener` to `target`.
    pub(crate) fn start(listener: TcpListener, target: SocketAddr) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let accept = {
            let (stop, tracker) = (stop.clone(), tracker.clone());
            async move {
                loop {
                    let permit = tokio::select! {
                        p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                        _ = stop.cancelled() => return,
                    };
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = stop.cancelled() => return,
                    };
                    let (client, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: wait instead of spinning.
                            tracing::warn!(listen = %local, error = %e, "debug SSH forward could not accept");
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    tracing::info!(listen = %local, %peer, "debug SSH connection");
                    let stop = stop.clone();
                    tracker.spawn(async move {
                        let _permit = permit;
                        tokio::select! {
                            r = pipe(client, target) => {
                                if let Err(e) = r {
                                    tracing::debug!(%peer, error = %e, "debug SSH connection ended");
                                }
                            }
                            _ = stop.cancelled() => {}
                        }
                    });
                }
            }
        };
        tracker.spawn(accept);
        Ok(Self { local, stop, tracker })
    }

    /// The address it listens on.
    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops listening, cuts every connection and waits until all of it is gone, so
    /// the port is free again when this returns.
    pub(crate) async fn close(self) {
        tracing::debug!(listen = %self.local, "closing the debug SSH forward");
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        // The tasks end at their next poll; nothing keeps the listener open after.
        self.stop.cancel();
    }
}

async fn pipe(mut client: TcpStream, target: SocketAddr) -> std::io::Result<()> {
    let mut server = TcpStream::connect(target).await?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server standing in for the machine's SSH port.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_until_close_frees_the_port() {
        let target = echo_server().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let forward = PortForward::start(listener, target).expect("forward");
        let addr = forward.local_addr();

        let mut a = TcpStream::connect(addr).await.expect("connect a");
        let mut b = TcpStream::connect(addr).await.expect("connect b");
        for (stream, text) in [(&mut a, b"hello".as_slice()), (&mut b, b"world".as_slice())] {
            stream.write_all(text).await.expect("write");
            let mut back = vec![0u8; text.len()];
            stream.read_exact(&mut back).await.expect("echo");
            assert_eq!(back, text);
        }

        forward.close().await;
        // Open connections are cut...
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), a.read(&mut buf)).await.expect("cut promptly");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        // ...nobody listens any more, and the port can be bound again at once.
        assert!(TcpStream::connect(addr).await.is_err(), "still listening on {addr}");
        TcpListener::bind(addr).await.expect("the port is free again");
    }

    #[tokio::test]
    async fn a_dead_target_only_ends_that_connection() {
        // A port nobody listens on.
        let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let forward = PortForward::start(listener, dead).expect("forward");
        for _ in 0..(MAX_CONNECTIONS + 2) {
            let mut c = TcpStream::connect(forward.local_addr()).await.expect("still accepting");
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut buf)).await.expect("closed");
            assert!(matches!(n, Ok(0) | Err(_)));
        }
        forward.close().await;
    }
}
