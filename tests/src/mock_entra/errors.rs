//! Error answers shaped like Entra's: `error`, an `AADSTSnnnn: ...` description ending in trace
//! and correlation ids and a timestamp, numeric `error_codes`, and sometimes a `suberror`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SSZ`, as Entra writes its timestamps.
pub fn entra_timestamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace('T', " ")
}

/// A random id in GUID form, for trace and correlation ids and object ids.
pub fn guid() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A token endpoint error as Entra sends it.
pub fn entra_error(
    status: StatusCode,
    error: &str,
    code: u32,
    description: &str,
    suberror: Option<&str>,
) -> Response {
    let trace = guid();
    let correlation = guid();
    let timestamp = entra_timestamp();
    let mut body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    if let Some(sub) = suberror {
        body["suberror"] = json!(sub);
    }
    json_response(status, &body)
}

/// A device-flow poll answer (`authorization_pending` and friends), which Entra also sends
/// with HTTP 400.
pub fn device_flow_error(error: &str, code: Option<u32>, description: &str) -> Response {
    match code {
        Some(code) => entra_error(StatusCode::BAD_REQUEST, error, code, description, None),
        None => json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": error,
                "error_description": description,
                "error_codes": [],
                "timestamp": entra_timestamp(),
                "trace_id": guid(),
                "correlation_id": guid(),
            }),
        ),
    }
}

/// JSON with the headers Entra's token endpoint sends.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::EXPIRES, HeaderValue::from_static("-1"));
    response
}

/// A small HTML page, for the endpoints a browser sees.
pub fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>"
    );
    let mut response = (status, page).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
