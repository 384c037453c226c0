//! The state of one resumable upload, persisted beside its data.

use crate::config::UploadRoute;
use crate::error::{Error, ErrorKind};
use crate::sink::hashes::{Hashes, SavedHashes};
use serde::{Deserialize, Serialize};

/// The protocol that created an upload (the engine is shared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tus,
    Chunked,
    NginxResumable,
    /// The IETF resumable-upload draft, on a tus route.
    IetfDraft,
}

/// tus concatenation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Concat {
    Partial,
    /// The ids of the partial uploads, in order.
    Final {
        parts: Vec<String>,
    },
}

/// Where an upload stands once its last byte is in (docs/reference/metadata.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum Completion {
    /// Stored; the app has not accepted it yet (its answer was 5xx, or none): the
    /// metadata is sent again on the client's retry until `until`.
    Pending { until: u64, status: u16 },
    /// The app accepted it; its answer is kept for repeated `complete` requests.
    Accepted {
        status: u16,
        content_type: String,
        body: String,
    },
    /// The app refused it with a 4xx: the files are gone; 410 from now on.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    /// 32 lowercase hex digits.
    pub id: String,
    pub protocol: Protocol,
    /// The `[[upload]]` route's path.
    pub route: String,
    /// Bytes stored and acknowledged, counted from the start of the file.
    pub offset: u64,
    /// Total size, once known.
    pub length: Option<u64>,
    /// Client metadata as name/value pairs (tus `Upload-Metadata`, chunked fields).
    pub metadata: Vec<(String, String)>,
    /// `Upload-Metadata` exactly as the client sent it (tus HEAD echoes it).
    pub raw_metadata: Option<String>,
    pub name: String,
    pub content_type: String,
    /// The type sniffed from the first bytes, once complete.
    #[serde(default)]
    pub detected_type: String,
    /// Hash state after `offset` bytes (in-order protocols).
    pub hashes: SavedHashes,
    /// Unix seconds after which the upload is expired.
    pub expires: u64,
    /// Unix seconds when it was created (0 in state written before this was kept).
    #[serde(default)]
    pub created: u64,
    /// Set once every byte is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<Completion>,
    /// Who created it, as `clients` counts them (empty in state written before).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// Where the finished file is, once the store has it (the store's part).
    #[serde(flatten)]
    pub file: FileAt,
    /// What only tus keeps (concatenation).
    #[serde(flatten)]
    pub tus: TusState,
    /// What only nginx-upload-module's segments keep.
    #[serde(flatten)]
    pub segments: SegmentState,
}

// The three parts below are flattened: their fields sit beside the others in the one
// JSON document, as they always have, so state written before they were split out
// reads the same.

/// Where a finished upload's file lives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAt {
    /// `ab/cd/<id>` (the key) and the absolute path (empty in an object store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<(String, String)>,
    /// The bucket of a finished file in S3 (empty on local disk).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bucket: String,
}

/// tus concatenation: what an upload is, and who waits for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TusState {
    pub concat: Option<Concat>,
    /// Final concatenations waiting for this partial upload to complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
}

/// nginx-upload-module's out-of-order segments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentState {
    /// Received byte ranges, merged, inclusive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<(u64, u64)>,
    /// A digest of the first segment's `Authorization` and `Cookie` (empty when it had
    /// neither); every later segment must bring the same.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

impl Upload {
    /// A new, empty upload of `protocol` on `route`: a fresh id unless the protocol
    /// names its own (nginx-resumable's session), hashes begun, the route's expiry.
    pub fn new(id: Option<String>, protocol: Protocol, route: &UploadRoute) -> Upload {
        Upload {
            id: id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            protocol,
            route: route.path.clone(),
            offset: 0,
            length: None,
            metadata: Vec::new(),
            raw_metadata: None,
            name: String::new(),
            content_type: String::new(),
            detected_type: String::new(),
            hashes: Hashes::new(&route.hashes).save(),
            expires: now() + route.expire.as_secs(),
            created: now(),
            completion: None,
            client: String::new(),
            file: FileAt::default(),
            tus: TusState::default(),
            segments: SegmentState::default(),
        }
    }

    /// Refuses an upload the app refused, or one that expired before it was complete.
    pub fn check_live(&self) -> Result<(), Error> {
        if self.completion == Some(Completion::Refused) {
            return Err(refused());
        }
        if self.completion.is_none() && self.expires <= now() {
            return Err(Error::new(ErrorKind::Expired, "the upload has expired"));
        }
        Ok(())
    }

    pub fn is_complete(&self) -> bool {
        self.length == Some(self.offset)
    }
}

/// The answer for an upload the app refused: it is over, as if expired.
pub fn refused() -> Error {
    Error::new(ErrorKind::Expired, "the app refused this upload")
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts are flattened: the state is one flat JSON document with the keys it
    /// has always had (`tests/it/old_state.rs` reads state an older build wrote).
    #[test]
    fn state_is_one_flat_document() {
        let route = crate::config::parse(
            "[backend]\nurl = \"http://127.0.0.1:9\"\n[[upload]]\npath = \"/f\"\nkind = \"tus\"\nnotify = \"/n\"\n",
            std::path::Path::new("/etc/porter.toml"),
        )
        .expect("config")
        .uploads
        .remove(0);
        let mut up = Upload::new(None, Protocol::Tus, &route);
        up.file.stored = Some(("ab/cd/x".into(), "/srv/ab/cd/x".into()));
        up.file.bucket = "b".into();
        up.tus.concat = Some(Concat::Partial);
        up.tus.waiting = vec!["f".into()];
        up.segments.ranges = vec![(0, 9)];
        up.segments.owner = "o".into();
        up.completion = Some(Completion::Refused);
        up.client = "ip:127.0.0.1".into();
        let json = serde_json::to_value(&up).expect("serialises");
        let mut keys: Vec<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut want = vec![
            "id",
            "protocol",
            "route",
            "offset",
            "length",
            "metadata",
            "raw_metadata",
            "name",
            "content_type",
            "detected_type",
            "concat",
            "hashes",
            "expires",
            "created",
            "ranges",
            "completion",
            "waiting",
            "stored",
            "bucket",
            "owner",
            "client",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        let back: Upload = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, up);
    }
}
