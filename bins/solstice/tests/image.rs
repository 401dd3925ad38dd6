//! `solstice image pull|list|prune` through the real binary, against a local HTTP
//! server (never the internet).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

/// Serves `body` for every GET on 127.0.0.1 until the test process ends; returns the
/// base URL.
fn serve(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut stream = &stream;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
        }
    });
    url
}

fn sha256(data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, data).unwrap();
    let out = Command::new("sha256sum").arg(&path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

fn solstice(cache: &Path, catalog: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_solstice"))
        .arg("image")
        .args(args)
        .arg("--catalog")
        .arg(catalog)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn pull_verifies_list_shows_and_prune_removes_what_the_catalog_dropped() {
    let image = b"not really a qcow2, but bytes with a digest".repeat(1000);
    let digest = sha256(&image);
    let url = serve(image.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let catalog = dir.path().join("images.toml");
    let wrong = "0".repeat(64);
    std::fs::write(
        &catalog,
        format!(
            "[images.good]\naliases = [\"good-latest\"]\nprofile = \"illumos\"\nsource = {{ url = \"{url}/good.qcow2\", sha256 = \"{digest}\" }}\n\n\
             [images.bad]\nsource = {{ url = \"{url}/bad.qcow2\", sha256 = \"{wrong}\" }}\n"
        ),
    )
    .unwrap();

    let out = solstice(&cache, &catalog, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listing.lines().any(|l| l.starts_with("good ") && l.contains("good-latest") && l.contains("illumos") && l.contains("x86_64") && l.contains(" no")), "{listing}");

    let out = solstice(&cache, &catalog, &["pull", "good-latest"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("✓ good-latest: downloaded, checksum verified"), "{}", text(&out));
    let cached = cache.join("images").join(format!("{digest}.qcow2"));
    assert_eq!(std::fs::read(&cached).unwrap(), image);
    let again = solstice(&cache, &catalog, &["pull", "good"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already cached"), "{}", text(&again));

    let out = solstice(&cache, &catalog, &["pull", "bad"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("checksum mismatch for {url}/bad.qcow2: expected {wrong}, got {digest}")), "{stderr}");
    assert_eq!(std::fs::read_dir(cache.join("images")).unwrap().count(), 1, "the bad download was kept");

    let out = solstice(&cache, &catalog, &["pull", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no image for `nope`"));

    let out = solstice(&cache, &catalog, &["list"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listing.lines().any(|l| l.starts_with("good ") && l.contains(" yes ") && l.contains("41.99 KiB")), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with("bad ") && l.contains(" no")), "{listing}");

    // The catalog drops `good`; a crashed run left a machine directory in run/.
    std::fs::write(&catalog, format!("[images.bad]\nsource = {{ url = \"{url}/bad.qcow2\", sha256 = \"{wrong}\" }}\n")).unwrap();
    let orphan = cache.join("run").join("vm-12345678-abcdef-x");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("overlay.qcow2"), b"overlay").unwrap();
    std::fs::File::open(&orphan).unwrap().set_modified(SystemTime::now() - Duration::from_secs(3600)).unwrap();
    let out = solstice(&cache, &catalog, &["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("not in the catalog"), "{}", text(&out));
    let out = solstice(&cache, &catalog, &["prune", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("would remove 1 images and 1 machine directories"), "{}", text(&out));
    assert!(cached.exists() && orphan.exists());
    let out = solstice(&cache, &catalog, &["prune"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 1 images and 1 machine directories"), "{}", text(&out));
    assert!(!cached.exists() && !orphan.exists());
}
