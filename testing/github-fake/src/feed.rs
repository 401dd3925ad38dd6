//! The live console websocket at `FeedStreamUrl`, served by hand from its own listener
//! (RFC 6455 server side, independent of the runner's client code): the opening
//! handshake with the job token, masked client frames, fragmented text messages
//! reassembled, pings answered, close echoed. Each message is a batch
//! `{count, value, stepId, startLine}` stored with the job's feed lines.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::Value;
use sha1::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Shared;

const HEAD_LIMIT: usize = 16 * 1024;
const MESSAGE_LIMIT: usize = 8 * 1024 * 1024;

/// Accepts websocket connections until the listener fails.
pub(crate) async fn serve(listener: TcpListener, state: Shared) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let state = state.clone();
        connections.spawn(async move {
            if let Err(e) = connection(stream, state).await {
                tracing::debug!(error = %e, "feed connection ended");
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> std::io::Result<bool> {
    while buf.len() < n {
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&chunk[..read]);
    }
    Ok(true)
}

async fn refuse(stream: &mut TcpStream, status: &str, extra: &str) -> std::io::Result<()> {
    let reply = format!("HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(reply.as_bytes()).await
}

fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    // Server frames are never masked; control payloads are short.
    let mut out = vec![0x80 | opcode, payload.len().min(125) as u8];
    out.extend_from_slice(&payload[..payload.len().min(125)]);
    out
}

async fn connection(mut stream: TcpStream, s: Shared) -> std::io::Result<()> {
    // The opening handshake.
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > HEAD_LIMIT {
            return refuse(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        let want = buf.len() + 1;
        if !fill(&mut stream, &mut buf, want).await? {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let request_line: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| headers.get(name).map(String::as_str).unwrap_or("");
    let path_job = match request_line.as_slice() {
        ["GET", path, "HTTP/1.1"] => path.strip_prefix("/feed/").map(str::to_owned),
        _ => None,
    };
    let Some(path_job) = path_job else {
        return refuse(&mut stream, "404 Not Found", "").await;
    };
    let key = header("sec-websocket-key").to_owned();
    if !header("upgrade").eq_ignore_ascii_case("websocket")
        || !header("connection").to_ascii_lowercase().contains("upgrade")
        || header("sec-websocket-version") != "13"
        || key.is_empty()
    {
        return refuse(&mut stream, "400 Bad Request", "").await;
    }
    let token = header("authorization").split_once(' ').filter(|(s, _)| s.eq_ignore_ascii_case("bearer")).map(|(_, t)| t.trim().to_owned());
    let job = {
        let data = s.data.lock().await;
        token.and_then(|t| data.job_by_token(&t)).filter(|j| *j == path_job)
    };
    let Some(job) = job else {
        return refuse(&mut stream, "401 Unauthorized", "WWW-Authenticate: Bearer\r\n").await;
    };
    let refused = {
        let mut data = s.data.lock().await;
        data.faults.feed_handshakes += 1;
        let refuse = data.faults.refuse_feed > 0;
        data.faults.refuse_feed = data.faults.refuse_feed.saturating_sub(1);
        refuse
    };
    if refused {
        return refuse(&mut stream, "503 Service Unavailable", "").await;
    }
    let mut hash = sha1::Sha1::new();
    hash.update(key.as_bytes());
    hash.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(hash.finalize());
    let reply = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
    stream.write_all(reply.as_bytes()).await?;

    // Frames, until the peer closes or the test drops the connection.
    let mut drops = s.feed_drops.subscribe();
    drops.mark_unchanged();
    tokio::select! {
        r = frames(&mut stream, buf, &s, &job) => r,
        _ = drops.changed() => Ok(()),
    }
}

async fn frames(stream: &mut TcpStream, mut buf: Vec<u8>, s: &Shared, job: &str) -> std::io::Result<()> {
    let mut message: Option<(Vec<u8>, usize)> = None;
    loop {
        if !fill(stream, &mut buf, 2).await? {
            return Ok(());
        }
        let (fin, rsv, opcode, masked) = (buf[0] & 0x80 != 0, buf[0] & 0x70, buf[0] & 0x0f, buf[1] & 0x80 != 0);
        let (len, header_len) = match buf[1] & 0x7f {
            126 => {
                if !fill(stream, &mut buf, 4).await? {
                    return Ok(());
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
            }
            127 => {
                if !fill(stream, &mut buf, 10).await? {
                    return Ok(());
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&buf[2..10]);
                (usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX), 10)
            }
            n => (n as usize, 2),
        };
        // RFC 6455 5.1: a server closes the connection on an unmasked client frame.
        if !masked || rsv != 0 || len > MESSAGE_LIMIT || (opcode >= 8 && (!fin || len > 125)) {
            let _ = stream.write_all(&server_frame(0x8, &1002u16.to_be_bytes())).await;
            return Ok(());
        }
        if !fill(stream, &mut buf, header_len + 4 + len).await? {
            return Ok(());
        }
        let mask = [buf[header_len], buf[header_len + 1], buf[header_len + 2], buf[header_len + 3]];
        let payload: Vec<u8> = buf[header_len + 4..header_len + 4 + len].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        buf.drain(..header_len + 4 + len);
        match opcode {
            0x1 | 0x0 => {
                // A text frame starts a message, continuations extend it; anything
                // else is a protocol error.
                match (opcode, message.take()) {
                    (0x1, None) => message = Some((payload, len)),
                    (0x0, Some((mut bytes, max))) => {
                        bytes.extend_from_slice(&payload);
                        message = Some((bytes, max.max(len)));
                    }
                    _ => {
                        let _ = stream.write_all(&server_frame(0x8, &1002u16.to_be_bytes())).await;
                        return Ok(());
                    }
                }
                if fin && let Some((bytes, max)) = message.take() {
                    let Ok(text) = String::from_utf8(bytes) else {
                        let _ = stream.write_all(&server_frame(0x8, &1007u16.to_be_bytes())).await;
                        return Ok(());
                    };
                    store(s, job, &text, max).await;
                }
            }
            0x8 => {
                let _ = stream.write_all(&server_frame(0x8, &payload)).await;
                return Ok(());
            }
            0x9 => stream.write_all(&server_frame(0xA, &payload)).await?,
            0xA => {}
            _ => {
                let _ = stream.write_all(&server_frame(0x8, &1003u16.to_be_bytes())).await;
                return Ok(());
            }
        }
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

async fn store(s: &Shared, job: &str, text: &str, max_frame: usize) {
    let Ok(batch) = serde_json::from_str::<Value>(text) else { return };
    let mut data = s.data.lock().await;
    let Some(job) = data.jobs.get_mut(job) else { return };
    job.feed_messages += 1;
    job.feed_max_frame = job.feed_max_frame.max(max_frame);
    let step = field(&batch, "stepId").and_then(Value::as_str).unwrap_or_default().to_owned();
    let start = field(&batch, "startLine").and_then(Value::as_i64).unwrap_or(1);
    let lines = job.feed.entry(step).or_default();
    for (i, line) in field(&batch, "value").and_then(Value::as_array).into_iter().flatten().enumerate() {
        lines.insert(start + i as i64, line.as_str().unwrap_or_default().to_owned());
    }
    drop(data);
    s.notify.notify_waiters();
}
