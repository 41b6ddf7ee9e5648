//! The HTTPS listener (server certificate, ALPN http/1.1) carrying WebSocket and BOSH, and the
//! limits that apply to HTTP-carried streams: the c2s connection caps and the BOSH session cap.

mod http_support;

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http_support::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use starling_core::config::{ListenerConfig, ListenerKind};
use starling_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A TLS client that trusts only the server's generated certificate, for "localhost".
async fn tls_connect(
    server: &TestServer,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let pem = server.data_dir().join("tls").join("cert.pem");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the server certificate");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN http/1.1"
    );
    tls
}

async fn start_https() -> (TestServer, std::net::SocketAddr) {
    let server = TestServer::start_with(|c| {
        c.listeners.push(ListenerConfig {
            kind: ListenerKind::Https,
            address: "127.0.0.1:0".parse().unwrap(),
        });
    })
    .await;
    let addr = server
        .running()
        .http
        .address(ListenerKind::Https)
        .expect("https listener");
    (server, addr)
}

#[tokio::test]
async fn wss_login_over_https() {
    let (server, addr) = start_https().await;
    server.add_user("alice", "alice-pw").await;
    let tls = tls_connect(&server, addr).await;
    let mut req = format!("wss://localhost:{}/xmpp-websocket", addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "xmpp".parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(req, tls)
        .await
        .expect("WebSocket over TLS");
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(format!(
        "<open xmlns='{FRAMING}' to='localhost' version='1.0'/>"
    )))
    .await
    .unwrap();
    let mut texts = Vec::new();
    while texts.len() < 2 {
        match tokio::time::timeout(STEP_TIMEOUT, rx.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => texts.push(t.to_string()),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    }
    assert!(parse(&texts[0]).is("open", FRAMING));
    let features = parse(&texts[1]);
    let mechs: Vec<String> = features
        .get_child("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl")
        .unwrap()
        .children()
        .map(|m| m.text())
        .collect();
    assert!(mechs.contains(&"PLAIN".into()), "{mechs:?}");
    assert!(
        !mechs.iter().any(|m| m.ends_with("-PLUS")),
        "the pipe has no channel binding: {mechs:?}"
    );
}

#[tokio::test]
async fn bosh_over_https_and_host_meta_says_https() {
    let (server, addr) = start_https().await;
    let mut tls = tls_connect(&server, addr).await;
    let body = format!("<body xmlns='{HTTPBIND}' rid='7' to='localhost' wait='2' hold='1'/>");
    tls.write_all(
        format!(
            "POST /http-bind HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            addr.port(),
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    let _ = tls.read_to_string(&mut raw).await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("sid='"), "{raw}");

    let mut tls = tls_connect(&server, addr).await;
    tls.write_all(
        format!(
            "GET /.well-known/host-meta.json HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            addr.port()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    let _ = tls.read_to_string(&mut raw).await;
    assert!(
        raw.contains(&format!("wss://localhost:{}/xmpp-websocket", addr.port())),
        "{raw}"
    );
    assert!(
        raw.contains(&format!("https://localhost:{}/http-bind", addr.port())),
        "{raw}"
    );
}

#[tokio::test]
async fn connection_caps_apply_to_websocket_and_bosh() {
    let (server, addr) = start_http(|c| {
        c.c2s.max_connections_per_ip = 1;
    })
    .await;
    let url = format!("ws://{addr}/xmpp-websocket");
    let mut first = ws_connect(&url, Some("xmpp"), None).await.expect("first");
    first.open().await;
    assert_eq!(
        ws_connect(&url, Some("xmpp"), None).await.err(),
        Some(503),
        "over the per-IP cap"
    );
    let resp = bosh_post(
        addr,
        &format!("<body xmlns='{HTTPBIND}' rid='1' to='localhost' wait='1' hold='1'/>"),
    )
    .await;
    assert_eq!(resp.attr("type"), Some("terminate"));
    assert_eq!(resp.attr("condition"), Some("remote-connection-failed"));
    // A TCP client is refused too: the caps are shared.
    let mut tcp = Conn::connect(server.c2s).await;
    tcp.expect_stream_error("policy-violation").await;
    drop(first);
}

#[tokio::test]
async fn bosh_session_cap() {
    let (_server, addr) = start_http(|c| c.http.bosh_max_sessions = 1).await;
    let (_first, _) = Bosh::create(addr, 1, 1).await;
    let resp = bosh_post(
        addr,
        &format!("<body xmlns='{HTTPBIND}' rid='1' to='localhost' wait='1' hold='1'/>"),
    )
    .await;
    assert_eq!(resp.attr("condition"), Some("remote-connection-failed"));
}
