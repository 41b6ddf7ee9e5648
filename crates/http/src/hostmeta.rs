//! XEP-0156 connection discovery over HTTP: `/.well-known/host-meta` (XRD, RFC 6415) and
//! `/.well-known/host-meta.json` (JRD), announcing this server's WebSocket
//! (`urn:xmpp:alt-connections:websocket`) and BOSH (`urn:xmpp:alt-connections:xbosh`) URLs.
//!
//! The base URL is `http.public_url` when configured, else the scheme of the listener the
//! request came in on and the request's `Host` header (which must look like a host name).

use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use starling_core::config::HttpConfig;

const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";
const REL_BOSH: &str = "urn:xmpp:alt-connections:xbosh";

/// The (WebSocket, BOSH) URLs for a request.
fn urls(config: &HttpConfig, headers: &HeaderMap, tls: bool) -> Option<(String, String)> {
    let base = match &config.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let host = headers.get(header::HOST)?.to_str().ok()?;
            let plausible = !host.is_empty()
                && host.len() <= 300
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
            if !plausible {
                return None;
            }
            format!("{}://{host}", if tls { "https" } else { "http" })
        }
    };
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.clone()
    };
    Some((
        format!("{ws_base}{}", config.websocket_path),
        format!("{base}{}", config.bosh_path),
    ))
}

fn escape(s: &str) -> String {
    let mut out = String::new();
    crate::framing::escape_attr(s, &mut out);
    out
}

/// `GET /.well-known/host-meta` (`json`: the `.json` variant).
pub fn respond(
    config: &HttpConfig,
    headers: &HeaderMap,
    tls: bool,
    json: bool,
) -> Response<axum::body::Body> {
    let Some((ws, bosh)) = urls(config, headers, tls) else {
        let mut r = Response::new(axum::body::Body::from("bad Host header"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let (body, ctype) = if json {
        let doc = serde_json::json!({
            "links": [
                {"rel": REL_WEBSOCKET, "href": ws},
                {"rel": REL_BOSH, "href": bosh},
            ]
        });
        (doc.to_string(), "application/json")
    } else {
        (
            format!(
                "<?xml version='1.0' encoding='utf-8'?>\n\
                 <XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n\
                 <Link rel='{REL_WEBSOCKET}' href='{}'/>\n\
                 <Link rel='{REL_BOSH}' href='{}'/>\n\
                 </XRD>\n",
                escape(&ws),
                escape(&bosh)
            ),
            "application/xrd+xml",
        )
    };
    let mut r = Response::new(axum::body::Body::from(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    // Discovery documents are public: any page may read them (XEP-0156 §3.2.1).
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}
