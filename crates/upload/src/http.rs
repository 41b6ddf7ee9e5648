//! The HTTP side of XEP-0363 §5: `PUT` stores a file at a signed slot URL, `GET`/`HEAD`
//! serve it while its signed URL is valid, `OPTIONS` answers browsers' CORS preflight.
//!
//! Files are served so that they cannot become a script on the server's origin: types other
//! than plain media and text are sent as `application/octet-stream` attachments, always with
//! `X-Content-Type-Options: nosniff` and a sandboxing `Content-Security-Policy`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde::Deserialize;

use crate::slot::{get_parts, is_slot_id, PutGrant};
use crate::store::{now_ms, Meta, PutError};
use crate::Upload;

/// The routes of the upload service, to merge into the HTTP listener's router.
pub fn router(service: Arc<Upload>) -> Router {
    Router::new()
        .route("/upload/{slot}/{filename}", any(handle))
        .with_state(service)
}

#[derive(Debug, Deserialize)]
struct Params {
    owner: Option<String>,
    size: Option<u64>,
    #[serde(rename = "type")]
    content_type: Option<String>,
    expires: Option<u64>,
    sig: Option<String>,
}

fn status(code: StatusCode, text: &'static str) -> Response {
    (code, cors(), text).into_response()
}

fn cors() -> [(header::HeaderName, HeaderValue); 3] {
    [
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, PUT, OPTIONS"),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, Authorization"),
        ),
    ]
}

async fn handle(
    State(service): State<Arc<Upload>>,
    method: Method,
    Path((slot, filename)): Path<(String, String)>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !is_slot_id(&slot) {
        return status(StatusCode::NOT_FOUND, "no such file\n");
    }
    match method {
        Method::PUT => put(&service, slot, filename, params, headers, body).await,
        Method::GET | Method::HEAD => {
            get(&service, slot, filename, params, method == Method::HEAD).await
        }
        Method::OPTIONS => (StatusCode::NO_CONTENT, cors()).into_response(),
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    }
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

async fn put(
    service: &Upload,
    slot: String,
    filename: String,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (Some(owner), Some(size), Some(expires), Some(sig)) =
        (params.owner, params.size, params.expires, params.sig)
    else {
        return status(StatusCode::FORBIDDEN, "not a valid upload URL\n");
    };
    let grant = PutGrant {
        slot,
        filename,
        owner,
        size,
        content_type: params.content_type.unwrap_or_default(),
        expires,
    };
    if !grant.verify(&service.signer, &sig) {
        tracing::info!(slot = %grant.slot, "upload refused: bad signature");
        return status(StatusCode::FORBIDDEN, "not a valid upload URL\n");
    }
    if grant.expires < now_secs() {
        return status(StatusCode::FORBIDDEN, "this upload URL has expired\n");
    }
    // XEP-0363 §5: the size and type must be those of the slot request.
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length != Some(grant.size) {
        return status(
            StatusCode::BAD_REQUEST,
            "Content-Length must be the size of the slot\n",
        );
    }
    if !grant.content_type.is_empty() {
        let given = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if given != grant.content_type {
            return status(
                StatusCode::BAD_REQUEST,
                "Content-Type must be the type of the slot\n",
            );
        }
    }
    let meta = Meta {
        filename: grant.filename.clone(),
        content_type: grant.content_type.clone(),
        owner: grant.owner.clone(),
        size: grant.size,
        created_ms: now_ms(),
    };
    let stream = body.into_data_stream();
    match service
        .store
        .put(&grant.slot, meta, service.config.quota_bytes, stream)
        .await
    {
        Ok(()) => {
            tracing::info!(slot = %grant.slot, owner = %grant.owner, size = grant.size, "file uploaded");
            status(StatusCode::CREATED, "created\n")
        }
        Err(PutError::Exists) => status(StatusCode::CONFLICT, "this slot was already used\n"),
        Err(PutError::WrongSize) => status(
            StatusCode::BAD_REQUEST,
            "the body is not the size of the slot\n",
        ),
        Err(PutError::Quota) => {
            tracing::info!(owner = %grant.owner, "upload refused: quota exceeded");
            status(StatusCode::INSUFFICIENT_STORAGE, "upload quota exceeded\n")
        }
        Err(PutError::Io(e)) => {
            tracing::error!(error = %e, "storing an upload failed");
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not store the file\n",
            )
        }
    }
}

/// Content types served inline; anything else is a download.
fn inline_type(t: &str) -> bool {
    let t = t.split(';').next().unwrap_or_default().trim();
    (t.starts_with("image/") && t != "image/svg+xml")
        || t.starts_with("audio/")
        || t.starts_with("video/")
        || t == "text/plain"
}

async fn get(
    service: &Upload,
    slot: String,
    filename: String,
    params: Params,
    head: bool,
) -> Response {
    let (Some(expires), Some(sig)) = (params.expires, params.sig) else {
        return status(StatusCode::FORBIDDEN, "not a valid download URL\n");
    };
    let parts = get_parts(&slot, &filename, expires);
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    if !service.signer.verify(&parts, &sig) {
        return status(StatusCode::FORBIDDEN, "not a valid download URL\n");
    }
    if expires != 0 && expires < now_secs() {
        return status(StatusCode::GONE, "this file has expired\n");
    }
    let Some((meta, path)) = service.store.get(&slot).await else {
        return status(StatusCode::NOT_FOUND, "no such file\n");
    };
    if meta.filename != filename {
        return status(StatusCode::NOT_FOUND, "no such file\n");
    }
    let inline = inline_type(&meta.content_type);
    let content_type = if inline {
        meta.content_type.clone()
    } else {
        "application/octet-stream".to_owned()
    };
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        crate::slot::escape(&meta.filename)
    );
    let mut response = if head {
        Response::new(Body::empty())
    } else {
        match tokio::fs::File::open(&path).await {
            Ok(f) => Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(f))),
            Err(_) => return status(StatusCode::NOT_FOUND, "no such file\n"),
        }
    };
    let h = response.headers_mut();
    for (k, v) in cors() {
        h.insert(k, v);
    }
    let value = |s: &str| {
        HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("application/octet-stream"))
    };
    h.insert(header::CONTENT_TYPE, value(&content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment")),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400, immutable"),
    );
    response
}

/// Deletes expired files every `every` until the server shuts down.
pub(crate) async fn expiry_loop(
    service: Arc<Upload>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let ttl = (service.config.file_ttl_days > 0)
            .then(|| Duration::from_secs(service.config.file_ttl_days * 86_400));
        let stale = Duration::from_secs(service.config.put_ttl_secs.max(60) * 2);
        let n = service.store.expire(ttl, stale).await;
        if n > 0 {
            tracing::info!(files = n, "deleted expired uploads");
        }
    }
}
