//! Unfinished resumable uploads per client: a client who opens uploads and never
//! finishes them costs a state and a data file each, so one client may hold at most
//! `limits.max_incomplete_per_client` at once (429 beyond).
//!
//! A client is who `authorize` says it is (the app's 2xx answer may name it in
//! `X-Porter-Client-Id`, e.g. a user id), else its address: the peer, or the address
//! trusted proxies report, with IPv6 counted per /64 (one host holds a whole /64).
//! Counts live in this process: each instance holds its own, and a restart starts them
//! afresh. An upload leaves the count when its last byte is in, when it is cancelled,
//! or when it would have expired.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The header in which `authorize`'s answer names the client.
pub const CLIENT_ID_HEADER: &str = "x-porter-client-id";

/// Who a client is, for counting.
pub fn identity(app_given: Option<&str>, addr: IpAddr) -> String {
    if let Some(id) = app_given.map(str::trim).filter(|s| !s.is_empty()) {
        return format!("app:{id}");
    }
    match addr {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The unfinished uploads of each client, with when each would expire.
#[derive(Default)]
pub struct ClientUploads {
    map: Mutex<HashMap<String, HashMap<String, u64>>>,
}

/// The client already holds its limit of unfinished uploads.
#[derive(Debug)]
pub struct TooMany(pub usize);

impl ClientUploads {
    /// Counts upload `id` (expiring at `expires`, Unix seconds) against `client`,
    /// unless the client already holds `max` unfinished ones.
    pub fn open(
        &self,
        client: &str,
        id: &str,
        expires: u64,
        now: u64,
        max: usize,
    ) -> Result<(), TooMany> {
        let Ok(mut map) = self.map.lock() else {
            return Ok(());
        };
        let uploads = map.entry(client.to_string()).or_default();
        if uploads.len() >= max {
            uploads.retain(|_, e| *e > now);
        }
        if uploads.len() >= max && !uploads.contains_key(id) {
            return Err(TooMany(max));
        }
        uploads.insert(id.to_string(), expires);
        Ok(())
    }

    /// Upload `id` is finished, cancelled or gone.
    pub fn close(&self, client: &str, id: &str) {
        if client.is_empty() {
            return;
        }
        if let Ok(mut map) = self.map.lock()
            && let Some(uploads) = map.get_mut(client)
        {
            uploads.remove(id);
            if uploads.is_empty() {
                map.remove(client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities() {
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(identity(None, v4), "ip:203.0.113.9");
        assert_eq!(identity(Some(" user-7 "), v4), "app:user-7");
        assert_eq!(identity(Some(""), v4), "ip:203.0.113.9");
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(identity(None, a), identity(None, b), "one /64");
        let mapped: IpAddr = "::ffff:198.51.100.4".parse().unwrap();
        assert_eq!(identity(None, mapped), "ip:198.51.100.4");
    }

    #[test]
    fn counts_expire_and_close() {
        let c = ClientUploads::default();
        assert!(c.open("ip:a", "1", 100, 0, 2).is_ok());
        assert!(c.open("ip:a", "2", 100, 0, 2).is_ok());
        assert!(c.open("ip:a", "3", 100, 0, 2).is_err());
        assert!(c.open("ip:b", "3", 100, 0, 2).is_ok(), "per client");
        assert!(
            c.open("ip:a", "2", 100, 0, 2).is_ok(),
            "the same upload again"
        );
        c.close("ip:a", "1");
        assert!(c.open("ip:a", "3", 100, 0, 2).is_ok());
        assert!(c.open("ip:a", "4", 100, 0, 2).is_err());
        assert!(c.open("ip:a", "4", 200, 150, 2).is_ok(), "expired ones go");
    }
}
