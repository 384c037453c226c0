//! `server.proxy_protocol`: the client address comes from the PROXY header an L4
//! balancer sends first (curl's `--haproxy-protocol` for v1, raw bytes for v2).

use crate::support::*;

async fn porter(backend: &Backend) -> Porter {
    let config = Config::new()
        .set("server.proxy_protocol", true)
        .set("server.header_timeout", "2s");
    Porter::start(backend.addr, config).await
}

/// Sends `prefix` then a GET on a raw connection; returns what came back.
async fn raw(p: &Porter, prefix: &[u8]) -> String {
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(b"GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    wire::exchange(p.addr, &bytes).await
}

#[tokio::test]
async fn v1_from_curl_sets_the_client_address() {
    let backend = Backend::ok().await;
    let p = porter(&backend).await;
    let (code, _) = curl(&["--haproxy-protocol", "-d", "hello", &p.url("/v1")]).await;
    assert_eq!(code, 200);
    let r = &backend.requests()[0];
    assert_eq!(r.body, "hello", "the request after the header is intact");
    assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
    // A header naming another client: that address is the client.
    let got = raw(&p, b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(
        backend.requests()[1].header("x-forwarded-for"),
        Some("203.0.113.7")
    );
    p.stop().await;
}

#[tokio::test]
async fn v2_binary_header_sets_the_client_address() {
    let backend = Backend::ok().await;
    let p = porter(&backend).await;
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0, 36]);
    let src: std::net::Ipv6Addr = "2001:db8::7".parse().expect("ip");
    header.extend_from_slice(&src.octets());
    header.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    header.extend_from_slice(&4242u16.to_be_bytes());
    header.extend_from_slice(&443u16.to_be_bytes());
    let got = raw(&p, &header).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(
        backend.requests()[0].header("x-forwarded-for"),
        Some("2001:db8::7")
    );
    // LOCAL (a health check from the balancer itself): the socket's address stands.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let got = raw(&p, &local).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(
        backend.requests()[1].header("x-forwarded-for"),
        Some("127.0.0.1")
    );
    p.stop().await;
}

#[tokio::test]
async fn connections_without_a_valid_header_are_dropped() {
    let backend = Backend::ok().await;
    let p = porter(&backend).await;
    for prefix in [
        &b""[..],
        b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n",
        // Over the 107 bytes a v1 header may take, with no CRLF in them.
        format!("PROXY TCP4 1.2.3.4 10.0.0.1 1 2 {}\r\n", "x".repeat(100)).as_bytes(),
    ] {
        let got = raw(&p, prefix).await;
        assert_eq!(got, "", "{:?}", String::from_utf8_lossy(prefix));
    }
    assert_eq!(backend.count(), 0);
    p.stop().await;
}
