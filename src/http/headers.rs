//! Header hygiene (docs/reference/routing.md): hop-by-hop removal, `X-Forwarded-*`, one `Host`, and the
//! headers no client may send (`X-Porter-*`, names with `_`) or receive (`X-Accel-*`,
//! `X-Sendfile`).

use crate::config::Cidr;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::SocketAddr;

/// Who is on the other end of a client connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The connection is TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// `Upgrade` is removed too unless `keep_upgrade` (a WebSocket being tunnelled).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(keep_upgrade && name == header::UPGRADE) {
            h.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
    if !keep_upgrade {
        h.remove(header::UPGRADE);
    } else if h.contains_key(header::UPGRADE) {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn remove_matching(h: &mut HeaderMap, pred: impl Fn(&str) -> bool) {
    let names: Vec<HeaderName> = h.keys().filter(|n| pred(n.as_str())).cloned().collect();
    for n in names {
        h.remove(n);
    }
}

/// Headers no client may send on: `X-Porter-*` (they could forge a signature or
/// metadata), and every name with a character other than a letter, a digit or `-`:
/// CGI and WSGI map `_` (and gateways any other character) to the same variable as
/// `-` (`X_Porter_Signature` arrives as `HTTP_X_PORTER_SIGNATURE`, `X_Forwarded_For` as
/// `HTTP_X_FORWARDED_FOR`). nginx drops them by default too (`ignore_invalid_headers`,
/// `underscores_in_headers off`).
pub fn strip_client(h: &mut HeaderMap) {
    let odd = |n: &str| !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    remove_matching(h, |n| n.starts_with("x-porter-") || odd(n));
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`; none, or two, is a
/// 400. Whatever the version, two `Host` fields, or a `Host` naming another host than the
/// request target's authority (absolute form, HTTP/2 `:authority`), are refused too:
/// porter and the app would each take a different one.
pub fn check_host(
    version: http::Version,
    headers: &HeaderMap,
    uri: &http::Uri,
) -> Result<(), &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err("the request has two Host fields");
    }
    match (first, uri.authority()) {
        (None, None) if version == http::Version::HTTP_11 => {
            Err("an HTTP/1.1 request needs a Host field")
        }
        (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) => {
            Err("the Host field names another host than the request target")
        }
        _ => Ok(()),
    }
}

/// `X-Accel-*` and `X-Sendfile` are instructions to porter, never for a client.
pub fn strip_accel(h: &mut HeaderMap) {
    remove_matching(h, |n| n.starts_with("x-accel-") || n == "x-sendfile");
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest
/// hop of `X-Forwarded-For` (from the right) that is not itself a trusted proxy.
pub fn client_addr(h: &HeaderMap, peer: &Peer, trusted: &[Cidr]) -> std::net::IpAddr {
    let mut addr = peer.addr.ip();
    if !is_trusted(trusted, peer) {
        return addr;
    }
    let hops = h
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<std::net::IpAddr>() else {
            break;
        };
        addr = ip;
        if !trusted.iter().any(|c| c.contains(ip)) {
            break;
        }
    }
    addr
}

/// Whether `peer` is in `trusted_proxies`.
pub fn is_trusted(trusted: &[Cidr], peer: &Peer) -> bool {
    trusted.iter().any(|c| c.contains(peer.addr.ip()))
}

/// Sets `X-Forwarded-*` and `X-Real-IP` for the backend (docs/reference/routing.md). `host` is the
/// client's `Host` (or h2 `:authority`).
pub fn set_forwarded(h: &mut HeaderMap, peer: &Peer, trusted: bool, host: Option<&str>) {
    let ip = peer.addr.ip().to_string();
    if trusted {
        let prev: Vec<&str> = h
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let xff = prev
            .into_iter()
            .chain([ip.as_str()])
            .collect::<Vec<_>>()
            .join(", ");
        insert(h, "x-forwarded-for", &xff);
        if !h.contains_key("x-real-ip") {
            insert(h, "x-real-ip", &ip);
        }
        if !h.contains_key("x-forwarded-proto") {
            insert(h, "x-forwarded-proto", proto(peer));
        }
        if let Some(host) = host.filter(|_| !h.contains_key("x-forwarded-host")) {
            insert(h, "x-forwarded-host", host);
        }
        return;
    }
    for n in ["forwarded", "x-real-ip"] {
        h.remove(n);
    }
    remove_matching(h, |n| n.starts_with("x-forwarded-"));
    insert(h, "x-forwarded-for", &ip);
    insert(h, "x-real-ip", &ip);
    insert(h, "x-forwarded-proto", proto(peer));
    if let Some(host) = host {
        insert(h, "x-forwarded-host", host);
    }
}

fn proto(peer: &Peer) -> &'static str {
    if peer.tls { "https" } else { "http" }
}

fn insert(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// The client's host: the `Host` header, else the URI authority (HTTP/2).
pub fn client_host(headers: &HeaderMap, uri: &http::Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
}

/// HTTP/2 clients may split `Cookie` into several fields; an HTTP/1.1 app expects one,
/// joined with `"; "` (RFC 9113 §8.2.3).
fn merge_cookies(h: &mut HeaderMap) {
    let parts: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    if parts.len() > 1
        && let Ok(v) = HeaderValue::from_str(&parts.join("; "))
    {
        h.insert(header::COOKIE, v);
    }
}

/// Prepares a client's headers for the app: hop-by-hop headers removed (`Upgrade`
/// kept when tunnelling), `X-Forwarded-*` set, and `Host` present (from h2's
/// `:authority` when the client sent no `Host`).
pub fn for_backend(
    headers: &mut HeaderMap,
    uri: &http::Uri,
    peer: &Peer,
    trusted: &[Cidr],
    keep_upgrade: bool,
) {
    let host = client_host(headers, uri);
    strip_hop_by_hop(headers, keep_upgrade);
    merge_cookies(headers);
    set_forwarded(headers, peer, is_trusted(trusted, peer), host.as_deref());
    if let Some(h) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
        headers.insert(header::HOST, h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("cookie", "a=b"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("cookie"));
    }

    #[test]
    fn porter_and_accel() {
        let mut h = map(&[
            ("x-porter-signature", "x"),
            ("X-Porter-Nonce", "y"),
            ("x-portero", "keep"),
            ("x_porter_signature", "x"),
            ("X_Forwarded_For", "6.6.6.6"),
            ("x-forwarded_host", "evil"),
            ("_", "x"),
            ("x-porter.signature", "x"),
            ("x.porter.key-id", "x"),
            ("x~real~ip", "x"),
        ]);
        strip_client(&mut h);
        assert_eq!(h.len(), 1);
        let mut h = map(&[
            ("x-accel-redirect", "/p"),
            ("x-sendfile", "/x"),
            ("x-accel-limit-rate", "1"),
        ]);
        strip_accel(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn one_host_that_agrees_with_the_target() {
        use http::Version;
        let origin: http::Uri = "/a".parse().unwrap();
        let absolute: http::Uri = "http://Example.com/a".parse().unwrap();
        let one = map(&[("host", "example.com")]);
        let two = map(&[("host", "example.com"), ("host", "evil")]);
        let other = map(&[("host", "evil")]);
        let none = HeaderMap::new();
        assert!(check_host(Version::HTTP_11, &one, &origin).is_ok());
        assert!(check_host(Version::HTTP_11, &one, &absolute).is_ok());
        assert!(check_host(Version::HTTP_11, &none, &absolute).is_ok());
        assert!(check_host(Version::HTTP_10, &none, &origin).is_ok());
        assert!(check_host(Version::HTTP_2, &none, &absolute).is_ok());
        assert!(check_host(Version::HTTP_11, &none, &origin).is_err());
        assert!(check_host(Version::HTTP_11, &two, &origin).is_err());
        assert!(check_host(Version::HTTP_10, &two, &origin).is_err());
        assert!(check_host(Version::HTTP_11, &other, &absolute).is_err());
        assert!(check_host(Version::HTTP_2, &other, &absolute).is_err());
    }

    #[test]
    fn forwarded_untrusted_and_trusted() {
        let peer = Peer {
            addr: "10.0.0.9:4000".parse().unwrap(),
            tls: false,
        };
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil"),
            ("forwarded", "for=x"),
        ]);
        set_forwarded(&mut h, &peer, false, Some("example.com"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(!h.contains_key("forwarded"));
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(&mut h, &peer, true, Some("example.com"));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
