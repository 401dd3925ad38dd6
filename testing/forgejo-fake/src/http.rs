//! The Connect unary transport: content types, compression, Connect errors, auth,
//! fault injection and request recording around the model's procedures.

use std::io::{Read, Write};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use solstice_forgejo::connect::{self, Codec, ConnectCode, Procedure};

use crate::procedures::Failure;
use crate::{RecordedRequest, Shared};

/// What a handled call produced.
struct Handled {
    body: Vec<u8>,
    request: Value,
    response: Value,
}

fn connect_error(code: ConnectCode, message: &str) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], connect::error_body(code, message)).into_response()
}

fn call<Req, Resp>(codec: Codec, body: &[u8], f: impl FnOnce(Req) -> Result<Resp, Failure>) -> Result<Handled, (Failure, Value)>
where
    Req: prost::Message + Default + DeserializeOwned + Serialize,
    Resp: prost::Message + Serialize,
{
    let req: Req = codec.decode(body).map_err(|e| ((ConnectCode::InvalidArgument, e.to_string()), Value::Null))?;
    let request = serde_json::to_value(&req).unwrap_or(Value::Null);
    let resp = f(req).map_err(|failure| (failure, request.clone()))?;
    let response = serde_json::to_value(&resp).unwrap_or(Value::Null);
    let body = codec
        .encode(&resp)
        .map_err(|e| ((ConnectCode::Internal, e.to_string()), request.clone()))?;
    Ok(Handled { body, request, response })
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) async fn handle(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path();
    let Some(rest) = path.strip_prefix(shared.base_path.as_str()).and_then(|p| p.strip_prefix("/api/actions")) else {
        return (StatusCode::NOT_FOUND, "404 page not found").into_response();
    };
    let Some(procedure) = Procedure::from_path(rest) else {
        return (StatusCode::NOT_FOUND, "404 page not found").into_response();
    };
    let recorded_headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let record = |status: u16, code: Option<ConnectCode>, raw: &[u8], request: Value, response: Value| {
        let bodies = shared.model().options.record_bodies;
        shared.record(RecordedRequest {
            procedure,
            headers: recorded_headers.clone(),
            body: if bodies { raw.to_vec() } else { Vec::new() },
            request: if bodies { request } else { Value::Null },
            status,
            code,
            response: if bodies { response } else { Value::Null },
        });
    };

    let legacy = shared.model().options.legacy;
    if legacy && matches!(procedure, Procedure::Declare | Procedure::FetchSingleTask) {
        record(404, None, &body, Value::Null, Value::Null);
        return (StatusCode::NOT_FOUND, "404 page not found").into_response();
    }
    let Some(codec) = header_text(&headers, "content-type").and_then(Codec::from_content_type) else {
        record(415, None, &body, Value::Null, Value::Null);
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, [("accept-post", "application/json, application/proto")]).into_response();
    };
    if let Some(version) = header_text(&headers, connect::PROTOCOL_VERSION_HEADER)
        && version != "1"
    {
        record(400, Some(ConnectCode::InvalidArgument), &body, Value::Null, Value::Null);
        return connect_error(ConnectCode::InvalidArgument, "connect-protocol-version must be \"1\"");
    }
    let raw: Vec<u8> = match header_text(&headers, "content-encoding") {
        None | Some("identity") => body.to_vec(),
        Some("gzip") => {
            let mut out = Vec::new();
            if flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).is_err() {
                record(400, Some(ConnectCode::InvalidArgument), &body, Value::Null, Value::Null);
                return connect_error(ConnectCode::InvalidArgument, "invalid gzip body");
            }
            out
        }
        Some(other) => {
            record(501, Some(ConnectCode::Unimplemented), &body, Value::Null, Value::Null);
            return connect_error(ConnectCode::Unimplemented, &format!("unknown compression \"{other}\""));
        }
    };

    let delay = shared.faults().delays.get(&procedure).copied();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some((code, message)) = shared.take_fault(procedure) {
        record(code.http_status(), Some(code), &raw, Value::Null, Value::Null);
        return connect_error(code, &message);
    }

    let now = shared.now();
    let outcome = {
        let mut model = shared.model();
        let auth = if procedure.is_authenticated() {
            let active = matches!(procedure, Procedure::UpdateTask | Procedure::UpdateLog);
            model
                .authenticate(header_text(&headers, connect::RUNNER_UUID_HEADER), header_text(&headers, connect::RUNNER_TOKEN_HEADER), active, now)
                .map(Some)
        } else {
            Ok(None)
        };
        let key = header_text(&headers, connect::REQUEST_KEY_HEADER);
        match auth {
            Err(failure) => Err((failure, Value::Null)),
            Ok(runner) => {
                let runner = runner.unwrap_or_default();
                match procedure {
                    Procedure::Ping => call(codec, &raw, |req: solstice_forgejo::proto::ping::v1::PingRequest| {
                        Ok(solstice_forgejo::proto::ping::v1::PingResponse { data: format!("Hello, {}!", req.data) })
                    }),
                    Procedure::Register => call(codec, &raw, |req| model.register(req)),
                    Procedure::Declare => call(codec, &raw, |req| model.declare(&runner, req)),
                    Procedure::FetchTask => call(codec, &raw, |req| model.fetch_task(&runner, req, key, now)),
                    Procedure::FetchSingleTask => call(codec, &raw, |req| model.fetch_single_task(&runner, req, key, now)),
                    Procedure::UpdateTask => call(codec, &raw, |req| model.update_task(&runner, req, now)),
                    Procedure::UpdateLog => call(codec, &raw, |req| model.update_log(&runner, req)),
                    _ => Err(((ConnectCode::Unimplemented, "unknown procedure".into()), Value::Null)),
                }
            }
        }
    };
    let handled = match outcome {
        Ok(handled) => handled,
        Err(((code, message), request)) => {
            record(code.http_status(), Some(code), &raw, request, Value::Null);
            return connect_error(code, &message);
        }
    };
    if procedure == Procedure::FetchTask && shared.take_lost_fetch() {
        record(503, Some(ConnectCode::Unavailable), &raw, handled.request, handled.response);
        return connect_error(ConnectCode::Unavailable, "fake: the answer was lost");
    }
    record(200, None, &raw, handled.request, handled.response);

    let gzip_ok = header_text(&headers, "accept-encoding").is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(codec.content_type()));
    response_headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    let mut body = handled.body;
    if gzip_ok && (body.len() >= 1024 || procedure == Procedure::Ping) {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if encoder.write_all(&body).is_ok()
            && let Ok(compressed) = encoder.finish()
        {
            body = compressed;
            response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
    }
    (StatusCode::OK, response_headers, body).into_response()
}
