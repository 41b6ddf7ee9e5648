//! Origin checks and CORS headers (Fetch standard §3.2) for the browser endpoints.
//!
//! `http.allowed_origins` lists the web origins whose pages may use WebSocket and BOSH (`*`:
//! any). A request with an `Origin` header that is not allowed is refused with 403; requests
//! without one come from non-browser clients, which are not subject to the same-origin policy
//! anyway. Allowed cross-origin requests get `Access-Control-Allow-Origin` naming the origin
//! (never with credentials: XMPP authenticates with SASL, not cookies), and preflight
//! `OPTIONS` requests are answered here.

use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use starling_core::config::HttpConfig;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "86400";

/// Whether the request's origin (if any) may use the endpoints.
pub fn origin_allowed(config: &HttpConfig, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => {
            let Ok(origin) = origin.to_str() else {
                return false;
            };
            config
                .allowed_origins
                .iter()
                .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        }
    }
}

/// Adds the CORS response headers for an allowed request.
pub fn decorate<B>(headers: &HeaderMap, response: &mut Response<B>) {
    let h = response.headers_mut();
    match headers.get(header::ORIGIN) {
        Some(origin) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        None => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
}

/// The answer to a preflight `OPTIONS` request.
pub fn preflight(config: &HttpConfig, headers: &HeaderMap) -> Response<axum::body::Body> {
    let mut r = Response::new(axum::body::Body::empty());
    if !origin_allowed(config, headers) {
        *r.status_mut() = StatusCode::FORBIDDEN;
        return r;
    }
    *r.status_mut() = StatusCode::NO_CONTENT;
    decorate(headers, &mut r);
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let mut c = HttpConfig {
            allowed_origins: vec!["https://chat.example.org".into()],
            ..HttpConfig::default()
        };
        let mut h = HeaderMap::new();
        assert!(origin_allowed(&c, &h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!origin_allowed(&c, &h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://chat.example.org"),
        );
        assert!(origin_allowed(&c, &h));
        c.allowed_origins = vec!["*".into()];
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(origin_allowed(&c, &h));
    }
}
