//! The protocol client against the fake: codecs, errors, gzip, timeouts, secrets.

use std::time::Duration;

use solstice_core::Secret;
use solstice_forgejo::proto::runner::v1 as pb;
use solstice_forgejo::{
    CallOptions, Codec, ConnectCode, Credentials, ForgeError, ForgejoClient, LabelSpec, Procedure, RegisterError,
    Registration,
};
use solstice_forgejo_fake::{FakeForgejo, JobSpec, Scope};
use tokio_util::sync::CancellationToken;

use crate::support::{payload, register};

#[tokio::test]
async fn ping_answers_and_gzip_responses_are_decoded() {
    let fake = FakeForgejo::start().await.unwrap();
    let client = ForgejoClient::builder(fake.url()).build().unwrap();
    assert_eq!(client.ping("solstice").await.unwrap(), "Hello, solstice!");
    let ping = &fake.requests_of(Procedure::Ping)[0];
    assert!(ping.header("accept-encoding").is_some_and(|v| v.contains("gzip")), "the fake gzips Ping answers");

    // A task over 1 KiB comes back gzipped.
    let file = register(&fake).await;
    let client = client.with_credentials(file.credentials());
    let big = format!("      - run: echo {}\n", "x".repeat(4000));
    fake.enqueue(JobSpec::new("build", &payload(&big)));
    let request = pb::FetchTaskRequest { tasks_version: 0, task_capacity: Some(1) };
    let response = client.fetch_task(&request, CallOptions::default()).await.unwrap();
    let task = response.task.expect("a task");
    assert!(String::from_utf8(task.workflow_payload.unwrap()).unwrap().contains(&"x".repeat(4000)));
    assert!(response.tasks_version > 0, "a real version is never 0");
}

#[tokio::test]
async fn an_invalid_registration_token_is_refused_with_forgejos_message() {
    let fake = FakeForgejo::start().await.unwrap();
    let client = ForgejoClient::builder(fake.url()).build().unwrap();
    let registration = Registration {
        name: "r".into(),
        token: Secret::new("not-a-token"),
        labels: vec![LabelSpec::parse("host:host").unwrap()],
        ephemeral: false,
    };
    let err = solstice_forgejo::register(&client, &registration, Duration::from_secs(1), &CancellationToken::new())
        .await
        .unwrap_err();
    let RegisterError::Refused(cause) = &err else { panic!("{err:?}") };
    assert_eq!(cause.code(), Some(ConnectCode::InvalidArgument));
    assert!(cause.to_string().contains("runner registration token not found"), "{cause}");
    assert!(!format!("{err:?} {err} {cause}").contains("not-a-token"));

    // A regenerated token invalidates the old one.
    let old = fake.registration_token(Scope::Instance);
    fake.registration_token(Scope::Instance);
    let registration = Registration { token: Secret::new(old), ..registration };
    let err = solstice_forgejo::register(&client, &registration, Duration::from_secs(1), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.source_message().contains("invalidated"), "{err:?}");
}

trait SourceMessage {
    fn source_message(&self) -> String;
}
impl SourceMessage for RegisterError {
    fn source_message(&self) -> String {
        std::error::Error::source(self).map(ToString::to_string).unwrap_or_default()
    }
}

#[tokio::test]
async fn wrong_credentials_are_an_auth_error_and_never_printed() {
    let fake = FakeForgejo::start().await.unwrap();
    let file = register(&fake).await;
    let client = ForgejoClient::builder(fake.url())
        .build()
        .unwrap()
        .with_credentials(Credentials { uuid: file.uuid.clone(), token: Secret::new("wrong-token-123") });
    let err = client.declare("v", &["host".into()]).await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    assert!(err.to_string().contains("unregistered runner"));
    let text = format!("{err} {err:?}");
    assert!(!text.contains("wrong-token-123") && !text.contains(file.token.expose()));
}

#[tokio::test]
async fn the_json_codec_speaks_canonical_proto3_json() {
    let fake = FakeForgejo::start().await.unwrap();
    let file = register(&fake).await;
    let client = ForgejoClient::builder(fake.url()).codec(Codec::Json).build().unwrap().with_credentials(file.credentials());
    let runner = client.declare("v9", &["host".into(), "omnios".into()]).await.unwrap();
    assert_eq!(runner.labels, ["host", "omnios"]);
    assert!(runner.token.is_empty(), "Declare never reveals the token");
    let declare = &fake.requests_of(Procedure::Declare)[0];
    assert_eq!(declare.header("content-type"), Some("application/json"));
    assert_eq!(String::from_utf8_lossy(&declare.body), r#"{"version":"v9","labels":["host","omnios"]}"#);
    assert_eq!(fake.runner(&file.uuid).unwrap().labels, ["host", "omnios"]);
}

#[tokio::test]
async fn connect_errors_map_to_codes_and_old_servers_to_unimplemented() {
    let fake = FakeForgejo::builder().legacy(true).start().await.unwrap();
    let file = register(&fake).await;
    let client = ForgejoClient::builder(fake.url()).build().unwrap().with_credentials(file.credentials());
    assert!(client.declare("v", &[]).await.unwrap_err().is_unimplemented());

    fake.fail_next(Procedure::UpdateLog, 1, ConnectCode::ResourceExhausted);
    let err = client.update_log(&pb::UpdateLogRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Some(ConnectCode::ResourceExhausted));
    assert!(err.is_transient());

    // Unknown task: Forgejo answers `internal`.
    let err = client.update_log(&pb::UpdateLogRequest { task_id: 999, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Some(ConnectCode::Internal));

    fake.set_unavailable(true);
    let err = client.ping("x").await.unwrap_err();
    assert!(err.is_unreachable() && err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let fake = FakeForgejo::start().await.unwrap();
    let file = register(&fake).await;
    let client = ForgejoClient::builder(fake.url()).build().unwrap().with_credentials(file.credentials());
    fake.delay(Procedure::FetchTask, Duration::from_secs(3));
    let options = CallOptions { timeout: Some(Duration::from_millis(200)), request_key: None };
    let err = client.fetch_task(&pb::FetchTaskRequest::default(), options).await.unwrap_err();
    assert!(matches!(err, ForgeError::Timeout { procedure: Procedure::FetchTask }), "{err:?}");
    let sent = &fake.requests_of(Procedure::FetchTask);
    assert!(sent.is_empty() || sent[0].header("connect-timeout-ms") == Some("200"));
}

#[tokio::test]
async fn a_sub_path_install_works() {
    let fake = FakeForgejo::builder().base_path("/forgejo").start().await.unwrap();
    assert!(fake.url().ends_with("/forgejo"));
    let file = register(&fake).await;
    assert_eq!(file.address, fake.url());
}

/// A server that answers every request with `head` and then `body_byte` forever (or until
/// the client goes), the way a hostile or broken forge could.
async fn endless_server(head: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 8192];
                let _ = socket.read(&mut request).await;
                socket.write_all(head.as_bytes()).await?;
                let block = vec![b'x'; 64 * 1024];
                let chunk = format!("{:x}\r\n", block.len());
                loop {
                    if head.contains("chunked") {
                        socket.write_all(chunk.as_bytes()).await?;
                        socket.write_all(&block).await?;
                        socket.write_all(b"\r\n").await?;
                    } else {
                        socket.write_all(&block).await?;
                    }
                }
                #[allow(unreachable_code)]
                Ok::<_, std::io::Error>(())
            });
        }
    });
    format!("http://{addr}")
}

/// Issue 16, item 14: a forge answer larger than the cap is an error, read no further than
/// the cap. The bodies here never end: a client that read them whole would never return
/// (and its memory would grow without bound), so returning at all shows the read stopped.
#[tokio::test]
async fn issue_16_answers_past_the_size_cap_are_refused_unread() {
    for head in [
        // Announced as larger than the cap.
        "HTTP/1.1 200 OK\r\ncontent-type: application/proto\r\ncontent-length: 400000000\r\n\r\n",
        // No length: the cap is found while reading.
        "HTTP/1.1 200 OK\r\ncontent-type: application/proto\r\ntransfer-encoding: chunked\r\n\r\n",
        // Error answers are capped as well.
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
    ] {
        let url = endless_server(head).await;
        let client = ForgejoClient::builder(url).max_response_bytes(1024 * 1024).build().unwrap();
        let result = tokio::time::timeout(Duration::from_secs(30), client.ping("x")).await.expect("the read stopped at the cap");
        let error = result.expect_err("an endless answer");
        assert!(matches!(error, ForgeError::TooLarge { procedure: Procedure::Ping, limit: 1_048_576 }), "{head}: {error:?}");
        assert!(!error.is_transient(), "a retry would fetch the same answer");
    }
}
