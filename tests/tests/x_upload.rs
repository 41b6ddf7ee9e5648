//! HTTP file upload (XEP-0363): slots over XMPP, then real HTTP requests to the signed URLs.

use std::net::SocketAddr;
use std::time::Duration;

use minidom::Element;
use starling_core::config::ListenerKind;
use starling_tests::{stanza_error_condition, Conn, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "urn:xmpp:http:upload:0";

/// A server with upload, served by its own HTTP listener on a loopback port.
async fn server(tweak: impl FnOnce(&mut starling_core::Config)) -> (TestServer, SocketAddr) {
    let srv = TestServer::start_with(|c| {
        c.listeners.push(starling_core::config::ListenerConfig {
            kind: ListenerKind::Http,
            address: "127.0.0.1:0".parse().unwrap(),
        });
        tweak(c);
    })
    .await;
    srv.add_user("alice", "secret").await;
    let addr = srv
        .running()
        .http
        .address(ListenerKind::Http)
        .expect("HTTP listener");
    // The slots name the listener the server bound, by its address.
    assert_eq!(
        srv.upload().expect("upload enabled").base_url(),
        Some(&*format!("http://{addr}"))
    );
    (srv, addr)
}

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over a fresh connection; `url` is what the slot handed out.
async fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
        .await
        .expect("HTTP answer in time")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

async fn request_slot(conn: &mut Conn, filename: &str, size: usize, content_type: &str) -> Element {
    conn.send(&format!(
        "<iq to='upload.localhost' type='get' id='s1'><request xmlns='{NS}' filename='{filename}' size='{size}' content-type='{content_type}'/></iq>"
    ))
    .await;
    conn.recv_until(|e| e.name() == "iq" && e.attr("id") == Some("s1"))
        .await
}

fn urls(answer: &Element) -> (String, String) {
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
    let slot = answer.get_child("slot", NS).expect("slot");
    let put = slot
        .get_child("put", NS)
        .unwrap()
        .attr("url")
        .unwrap()
        .to_owned();
    let get = slot
        .get_child("get", NS)
        .unwrap()
        .attr("url")
        .unwrap()
        .to_owned();
    (put, get)
}

#[tokio::test]
async fn the_service_describes_itself() {
    let (srv, _) = server(|_| {}).await;
    let mut alice = srv.login("alice", "secret", "desk").await;
    alice
        .send("<iq to='upload.localhost' type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let info = alice.recv_until(|e| e.attr("id") == Some("d1")).await;
    let q = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert!(q.children().any(|c| c.name() == "identity"
        && c.attr("category") == Some("store")
        && c.attr("type") == Some("file")));
    assert!(q
        .children()
        .any(|c| c.name() == "feature" && c.attr("var") == Some(NS)));
    let form = q.get_child("x", "jabber:x:data").expect("form");
    let max = form
        .children()
        .find(|f| f.attr("var") == Some("max-file-size"))
        .expect("max-file-size");
    assert_eq!(
        max.children().next().unwrap().text(),
        (50 * 1024 * 1024).to_string()
    );
}

#[tokio::test]
async fn a_file_goes_up_once_and_comes_back_down() {
    let (srv, _) = server(|_| {}).await;
    let mut alice = srv.login("alice", "secret", "desk").await;
    let content = b"\x89PNG not really a png, but bytes";
    let (put, get) =
        urls(&request_slot(&mut alice, "cat picture.png", content.len(), "image/png").await);
    assert!(put.contains("/cat%20picture.png?"), "{put}");

    let len = content.len().to_string();
    let up = http(
        "PUT",
        &put,
        &[("Content-Length", &len), ("Content-Type", "image/png")],
        content,
    )
    .await;
    assert_eq!(up.status, 201, "{:?}", String::from_utf8_lossy(&up.body));

    let down = http("GET", &get, &[], b"").await;
    assert_eq!(down.status, 200);
    assert_eq!(down.body, content);
    assert_eq!(down.header("content-type"), Some("image/png"));
    assert_eq!(down.header("x-content-type-options"), Some("nosniff"));
    assert!(down
        .header("content-security-policy")
        .unwrap()
        .contains("sandbox"));
    assert_eq!(down.header("access-control-allow-origin"), Some("*"));
    let head = http("HEAD", &get, &[], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(&*len));

    // The slot is used up: a second PUT conflicts and the file is unchanged.
    let again = http(
        "PUT",
        &put,
        &[("Content-Length", &len), ("Content-Type", "image/png")],
        content,
    )
    .await;
    assert_eq!(again.status, 409);
    // A GET URL with a changed signature or name is refused.
    let forged = get.replace("sig=", "sig=x");
    assert_eq!(http("GET", &forged, &[], b"").await.status, 403);
    let renamed = get.replace("cat%20picture.png", "dog.png");
    assert_eq!(http("GET", &renamed, &[], b"").await.status, 403);
}

#[tokio::test]
async fn a_tampered_put_url_or_a_wrong_body_is_refused() {
    let (srv, _) = server(|_| {}).await;
    let mut alice = srv.login("alice", "secret", "desk").await;
    let (put, get) = urls(&request_slot(&mut alice, "notes.txt", 5, "text/plain").await);

    let bigger = put.replace("size=5", "size=500");
    let r = http(
        "PUT",
        &bigger,
        &[("Content-Length", "500"), ("Content-Type", "text/plain")],
        &[b'a'; 500],
    )
    .await;
    assert_eq!(
        r.status, 403,
        "a size changed in the URL must break the signature"
    );

    let r = http(
        "PUT",
        &put,
        &[("Content-Length", "6"), ("Content-Type", "text/plain")],
        b"123456",
    )
    .await;
    assert_eq!(r.status, 400, "Content-Length other than the slot's size");
    let r = http(
        "PUT",
        &put,
        &[("Content-Length", "5"), ("Content-Type", "text/html")],
        b"12345",
    )
    .await;
    assert_eq!(r.status, 400, "Content-Type other than the slot's type");
    assert_eq!(
        http("GET", &get, &[], b"").await.status,
        404,
        "nothing was stored"
    );

    // Still usable with the right request.
    let r = http(
        "PUT",
        &put,
        &[("Content-Length", "5"), ("Content-Type", "text/plain")],
        b"hello",
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(http("GET", &get, &[], b"").await.body, b"hello");
}

#[tokio::test]
async fn an_expired_put_url_is_refused() {
    let (srv, _) = server(|c| c.upload.put_ttl_secs = 0).await;
    let mut alice = srv.login("alice", "secret", "desk").await;
    let (put, _) = urls(&request_slot(&mut alice, "late.txt", 4, "text/plain").await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = http(
        "PUT",
        &put,
        &[("Content-Length", "4"), ("Content-Type", "text/plain")],
        b"late",
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("expired"));
}

#[tokio::test]
async fn too_large_files_and_quota_are_refused_at_slot_time() {
    let (srv, _) = server(|c| {
        c.upload.max_file_bytes = 100;
        c.upload.quota_bytes = 150;
    })
    .await;
    let mut alice = srv.login("alice", "secret", "desk").await;
    let answer = request_slot(&mut alice, "big.bin", 101, "application/octet-stream").await;
    assert_eq!(answer.attr("type"), Some("error"));
    assert_eq!(
        stanza_error_condition(&answer).as_deref(),
        Some("not-acceptable")
    );
    let error = answer.get_child("error", "jabber:client").unwrap();
    let too_large = error
        .get_child("file-too-large", NS)
        .expect("file-too-large");
    assert_eq!(
        too_large.get_child("max-file-size", NS).unwrap().text(),
        "100"
    );

    let (put, _) = urls(&request_slot(&mut alice, "a.bin", 100, "application/octet-stream").await);
    let r = http(
        "PUT",
        &put,
        &[
            ("Content-Length", "100"),
            ("Content-Type", "application/octet-stream"),
        ],
        &[0u8; 100],
    )
    .await;
    assert_eq!(r.status, 201);
    let answer = request_slot(&mut alice, "b.bin", 60, "application/octet-stream").await;
    assert_eq!(
        stanza_error_condition(&answer).as_deref(),
        Some("resource-constraint")
    );
    // Within the quota still works.
    let answer = request_slot(&mut alice, "c.bin", 50, "application/octet-stream").await;
    urls(&answer);

    let answer = request_slot(&mut alice, "../../etc/passwd", 10, "text/plain").await;
    assert_eq!(
        stanza_error_condition(&answer).as_deref(),
        Some("bad-request")
    );
}

#[tokio::test]
async fn active_content_is_served_as_a_download() {
    let (srv, _) = server(|_| {}).await;
    let mut alice = srv.login("alice", "secret", "desk").await;
    let page = b"<script>alert(1)</script>";
    let (put, get) = urls(&request_slot(&mut alice, "page.html", page.len(), "text/html").await);
    let len = page.len().to_string();
    let r = http(
        "PUT",
        &put,
        &[("Content-Length", &len), ("Content-Type", "text/html")],
        page,
    )
    .await;
    assert_eq!(r.status, 201);
    let down = http("GET", &get, &[], b"").await;
    assert_eq!(
        down.header("content-type"),
        Some("application/octet-stream")
    );
    assert!(down
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));
}
