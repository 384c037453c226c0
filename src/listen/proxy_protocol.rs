//! The PROXY protocol (HAProxy's v1 text and v2 binary headers), for porter behind an
//! L4 load balancer: with `server.proxy_protocol = true` every connection must start
//! with one, and the client address it carries replaces the socket's peer address.
//!
//! Exactly the header's bytes are consumed (v1 is found by peeking, v2 states its
//! length), so the request that follows is untouched.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (the spec's figure).
const V1_MAX: usize = 107;

/// Why a connection was dropped.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("connection closed before a PROXY header")]
    Closed,
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads the header; `Some(address)` of the original client, or `None` when the
/// balancer says the connection is its own (v1 `UNKNOWN`, v2 `LOCAL`, or a family
/// other than TCP over IPv4/IPv6), in which case the socket's peer stands.
pub async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    let mut first = [0u8; 12];
    let n = peek_at_least(stream, &mut first, 12).await?;
    if n >= 6 && first.starts_with(b"PROXY ") {
        return read_v1(stream).await;
    }
    if n == 12 && &first == V2_SIGNATURE {
        return read_v2(stream).await;
    }
    Err(ProxyError::Missing)
}

/// How long to wait before peeking again at a header that arrives in pieces. A peek
/// returns at once while unread bytes wait, so this is what keeps it from spinning;
/// the caller bounds the whole wait with `header_timeout`.
const REPEEK: std::time::Duration = std::time::Duration::from_millis(10);

/// Peeks until `buf` holds `want` bytes, or what came cannot start a header.
async fn peek_at_least(
    stream: &TcpStream,
    buf: &mut [u8],
    want: usize,
) -> Result<usize, ProxyError> {
    loop {
        let n = stream.peek(buf).await?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        if n >= want || !could_be_header(&buf[..n]) {
            return Ok(n);
        }
        tokio::time::sleep(REPEEK).await;
    }
}

/// Whether `seen` is a prefix of either header's start.
fn could_be_header(seen: &[u8]) -> bool {
    b"PROXY ".starts_with(&seen[..seen.len().min(6)])
        || V2_SIGNATURE.starts_with(&seen[..seen.len().min(12)])
}

async fn read_v1(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    let mut buf = [0u8; V1_MAX];
    let len = loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        if let Some(end) = buf[..n].windows(2).position(|w| w == b"\r\n") {
            break end + 2;
        }
        if n == V1_MAX {
            return Err(ProxyError::Malformed("v1 header longer than 107 bytes"));
        }
        tokio::time::sleep(REPEEK).await;
    };
    let mut line = vec![0u8; len];
    stream.read_exact(&mut line).await?;
    parse_v1(&line[..len - 2])
}

/// `PROXY TCP4 <src> <dst> <sport> <dport>` (or TCP6, or UNKNOWN ...), without CRLF.
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let text = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("v1 not ASCII"))?;
    let parts: Vec<&str> = text.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        [
            "PROXY",
            family @ ("TCP4" | "TCP6"),
            src,
            _dst,
            sport,
            _dport,
        ] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| ProxyError::Malformed("v1 source address"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(ProxyError::Malformed("v1 address family"));
            }
            let port: u16 = sport
                .parse()
                .map_err(|_| ProxyError::Malformed("v1 source port"))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(ProxyError::Malformed("v1 fields")),
    }
}

async fn read_v2(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    let mut head = [0u8; 16];
    stream.read_exact(&mut head).await?;
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    let mut rest = vec![0u8; len];
    stream.read_exact(&mut rest).await?;
    parse_v2(head[12], head[13], &rest)
}

/// The v2 header after its signature: version/command, family/transport, and the
/// address block (TLVs after the addresses are ignored).
pub fn parse_v2(ver_cmd: u8, family: u8, block: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version"));
    }
    match ver_cmd & 0x0f {
        0 => return Ok(None),
        1 => {}
        _ => return Err(ProxyError::Malformed("v2 command")),
    }
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    match family {
        // TCP over IPv4: src(4) dst(4) sport(2) dport(2).
        0x11 if block.len() >= 12 => {
            let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port(8))))
        }
        // TCP over IPv6: src(16) dst(16) sport(2) dport(2).
        0x21 if block.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&block[..16]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port(32),
            )))
        }
        0x11 | 0x21 => Err(ProxyError::Malformed("v2 address block too short")),
        // UDP, Unix sockets, unspecified: keep the socket's peer.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines() {
        let a = parse_v1(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443").unwrap();
        assert_eq!(a, Some("203.0.113.7:5555".parse().unwrap()));
        let a = parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 6000 443").unwrap();
        assert_eq!(a, Some("[2001:db8::1]:6000".parse().unwrap()));
        assert_eq!(parse_v1(b"PROXY UNKNOWN").unwrap(), None);
        for bad in [
            &b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2"[..],
            b"PROXY TCP4 1.2.3.4 10.0.0.1 99999 2",
            b"PROXY TCP4 1.2.3.4",
            b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2",
        ] {
            assert!(parse_v1(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn v2_blocks() {
        let mut v4 = vec![203, 0, 113, 7, 10, 0, 0, 1];
        v4.extend_from_slice(&5555u16.to_be_bytes());
        v4.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(
            parse_v2(0x21, 0x11, &v4).unwrap(),
            Some("203.0.113.7:5555".parse().unwrap())
        );
        assert_eq!(parse_v2(0x20, 0x00, &[]).unwrap(), None, "LOCAL");
        assert!(parse_v2(0x21, 0x11, &v4[..6]).is_err());
        assert!(
            parse_v2(0x11, 0x11, &v4).is_err(),
            "version 1 in a v2 header"
        );
    }
}
