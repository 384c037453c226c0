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

/// Where an upload stands once its last byte is in (SPEC §4.3).
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
    pub concat: Option<Concat>,
    /// Hash state after `offset` bytes (in-order protocols).
    pub hashes: SavedHashes,
    /// Unix seconds after which the upload is expired.
    pub expires: u64,
    /// Unix seconds when it was created (0 in state written before this was kept).
    #[serde(default)]
    pub created: u64,
    /// nginx-resumable: received byte ranges, merged, inclusive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<(u64, u64)>,
    /// Set once every byte is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<Completion>,
    /// Final concatenations waiting for this partial upload to complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
    /// Where the finished file lives (`ab/cd/<id>` and the absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<(String, String)>,
    /// The bucket of a finished file in S3 (empty on local disk).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bucket: String,
    /// nginx-resumable: a digest of the first segment's `Authorization` and `Cookie`
    /// (empty when it had neither); every later segment must bring the same.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Who created it, as `clients` counts them (empty in state written before).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
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
            concat: None,
            hashes: Hashes::new(&route.hashes).save(),
            expires: now() + route.expire.as_secs(),
            created: now(),
            ranges: Vec::new(),
            completion: None,
            waiting: Vec::new(),
            stored: None,
            bucket: String::new(),
            owner: String::new(),
            client: String::new(),
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
