//! The XML answers porter reads from S3, parsed with quick-xml's serde support.
//!
//! Every byte comes from a server porter does not control. The body has been read up
//! to a bound before it gets here (`S3::text`); elements are matched by local name
//! (S3-compatible stores differ on the namespace, and porter never asked for it);
//! only XML's five entities and character references are decoded (entities a DTD
//! declares are refused, and nothing is ever fetched); nesting is bounded; elements
//! porter does not read are skipped, however deep, without recursion; and an answer
//! whose root is not the one asked for is an error, never an empty result.

use super::client::S3Error;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// How deep the structures below go (root, record, field) with room to spare; the
/// depth of elements porter skips is not counted.
const MAX_DEPTH: usize = 8;

/// The roots porter expects, and S3's error document.
#[derive(Debug, Deserialize)]
enum Answer {
    ListBucketResult(ListBucket),
    InitiateMultipartUploadResult(Initiate),
    ListMultipartUploadsResult(ListUploads),
    CompleteMultipartUploadResult(IgnoredAny),
    Error(ErrorDoc),
}

#[derive(Debug, Deserialize)]
struct ListBucket {
    #[serde(rename = "Contents", default)]
    contents: Vec<Object>,
    #[serde(rename = "IsTruncated")]
    is_truncated: Option<bool>,
    #[serde(rename = "NextContinuationToken")]
    next_continuation_token: Option<String>,
    #[serde(rename = "EncodingType")]
    encoding_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Object {
    #[serde(rename = "Key")]
    key: String,
}

#[derive(Debug, Deserialize)]
struct Initiate {
    #[serde(rename = "UploadId")]
    upload_id: String,
}

#[derive(Debug, Deserialize)]
struct ListUploads {
    #[serde(rename = "Upload", default)]
    uploads: Vec<Upload>,
}

#[derive(Debug, Deserialize)]
struct Upload {
    #[serde(rename = "Key")]
    key: Option<String>,
    #[serde(rename = "UploadId")]
    upload_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorDoc {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

impl ErrorDoc {
    /// For the log: quoted, so a control character in it cannot forge a log line.
    fn describe(&self) -> String {
        format!(
            "S3 answered 200 with an error: {:?} {:?}",
            self.code.as_deref().unwrap_or(""),
            self.message.as_deref().unwrap_or("")
        )
    }
}

fn read(xml: &[u8]) -> Result<Answer, S3Error> {
    let text = std::str::from_utf8(xml)
        .map_err(|_| S3Error::Malformed("an XML answer that is not UTF-8".into()))?;
    let mut de = quick_xml::de::Deserializer::from_str(text);
    de.recursion_limit(MAX_DEPTH);
    Answer::deserialize(&mut de).map_err(|e| S3Error::Malformed(format!("XML answer: {e}")))
}

fn unexpected(answer: Answer, want: &str) -> S3Error {
    match answer {
        Answer::Error(e) => S3Error::Malformed(e.describe()),
        _ => S3Error::Malformed(format!("S3 answered something other than {want}")),
    }
}

/// A ListObjectsV2 page: its keys, and the token of the next page if there is one.
///
/// porter's requests ask for `encoding-type=url`, so keys come percent-encoded when
/// the answer says `EncodingType` is `url`: a `+` is a space there (AWS and MinIO
/// encode like HTML forms; Garage percent-encodes both), and a key that does not
/// decode to UTF-8 is kept as it came. A truncated page without a token is an error
/// rather than the silent end of the listing.
pub(super) fn list_objects(xml: &[u8]) -> Result<(Vec<String>, Option<String>), S3Error> {
    let page = match read(xml)? {
        Answer::ListBucketResult(page) => page,
        other => return Err(unexpected(other, "ListBucketResult")),
    };
    let encoded = page.encoding_type.as_deref() == Some("url");
    let keys = page
        .contents
        .into_iter()
        .map(|o| if encoded { url_decoded(o.key) } else { o.key })
        .collect();
    let next = match (page.is_truncated, page.next_continuation_token) {
        (Some(false), _) => None,
        (_, Some(token)) if !token.is_empty() => Some(token),
        (Some(true), _) => {
            return Err(S3Error::Malformed(
                "a truncated listing without a NextContinuationToken".into(),
            ));
        }
        (None, _) => None,
    };
    Ok((keys, next))
}

fn url_decoded(key: String) -> String {
    let spaced = key.replace('+', " ");
    match percent_encoding::percent_decode_str(&spaced).decode_utf8() {
        Ok(decoded) => decoded.into_owned(),
        Err(_) => key,
    }
}

/// The upload id of a CreateMultipartUpload answer.
pub(super) fn upload_id(xml: &[u8]) -> Result<String, S3Error> {
    match read(xml)? {
        Answer::InitiateMultipartUploadResult(i) => Ok(i.upload_id),
        other => Err(unexpected(other, "InitiateMultipartUploadResult")),
    }
}

/// `(Key, UploadId)` of each `<Upload>` in a ListMultipartUploads answer (one that
/// lacks either is skipped).
pub(super) fn multipart_uploads(xml: &[u8]) -> Result<Vec<(String, String)>, S3Error> {
    match read(xml)? {
        Answer::ListMultipartUploadsResult(list) => Ok(list
            .uploads
            .into_iter()
            .filter_map(|u| Some((u.key?, u.upload_id?)))
            .collect()),
        other => Err(unexpected(other, "ListMultipartUploadsResult")),
    }
}

/// What a successful (2xx) CompleteMultipartUpload answer says went wrong, if it is
/// S3's error document: S3 may answer 200 and fail the completion late. Any other
/// answer, even one porter cannot read, is the success its status says.
pub(super) fn completion_error(xml: &[u8]) -> Option<String> {
    match read(xml) {
        Ok(Answer::Error(e)) => Some(e.describe()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = r#"xmlns="http://s3.amazonaws.com/doc/2006-03-01/""#;

    #[test]
    fn reads_multipart_upload_listings() {
        let xml = "<ListMultipartUploadsResult><Bucket>b</Bucket><Upload><Key>p/a&amp;b</Key><UploadId>u1</UploadId></Upload><Upload><Key>p/c</Key><UploadId>u2</UploadId></Upload></ListMultipartUploadsResult>";
        assert_eq!(
            multipart_uploads(xml.as_bytes()).unwrap(),
            vec![("p/a&b".into(), "u1".into()), ("p/c".into(), "u2".into())]
        );
        let partial = "<ListMultipartUploadsResult><Upload><Key>k</Key></Upload><Upload><Key>j</Key><UploadId>u</UploadId><Initiator><ID>x</ID></Initiator></Upload></ListMultipartUploadsResult>";
        assert_eq!(
            multipart_uploads(partial.as_bytes()).unwrap(),
            vec![("j".into(), "u".into())]
        );
    }

    #[test]
    fn reads_listings_page_by_page() {
        let page = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult {NS}><Name>b</Name><Prefix>p/</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated><Contents><Key>p/a%20b</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>&quot;e&quot;</ETag><Size>3</Size><Owner><ID>o</ID></Owner></Contents><Contents><Key>p/c+d%2Be</Key></Contents><Contents><Key>p/%FF</Key></Contents><NextContinuationToken>tok</NextContinuationToken><EncodingType>url</EncodingType></ListBucketResult>"#
        );
        let (keys, next) = list_objects(page.as_bytes()).unwrap();
        assert_eq!(keys, ["p/a b", "p/c d+e", "p/%FF"]);
        assert_eq!(next.as_deref(), Some("tok"));
        // Not URL-encoded: the keys are what they say.
        let raw = "<ListBucketResult><Contents><Key>p/a%20b+c</Key></Contents></ListBucketResult>";
        assert_eq!(list_objects(raw.as_bytes()).unwrap().0, ["p/a%20b+c"]);
        // The last page: no token, or one a complete listing still carries.
        let last = "<ListBucketResult><IsTruncated>false</IsTruncated><NextContinuationToken>t</NextContinuationToken></ListBucketResult>";
        assert_eq!(list_objects(last.as_bytes()).unwrap(), (vec![], None));
        assert_eq!(
            list_objects(b"<ListBucketResult/>").unwrap(),
            (vec![], None)
        );
        let lost = "<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken></NextContinuationToken></ListBucketResult>";
        assert!(list_objects(lost.as_bytes()).is_err());
    }

    #[test]
    fn reads_upload_ids_with_or_without_a_namespace() {
        let plain = "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>u&amp;1&#x41;</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(upload_id(plain.as_bytes()).unwrap(), "u&1A");
        let ns = format!(
            "<InitiateMultipartUploadResult {NS}><UploadId><![CDATA[u<2]]></UploadId></InitiateMultipartUploadResult>"
        );
        assert_eq!(upload_id(ns.as_bytes()).unwrap(), "u<2");
        let prefixed = r#"<s3:InitiateMultipartUploadResult xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:UploadId>u3</s3:UploadId></s3:InitiateMultipartUploadResult>"#;
        assert_eq!(upload_id(prefixed.as_bytes()).unwrap(), "u3");
    }

    #[test]
    fn errors_are_errors() {
        let err = "<Error><Code>InternalError</Code><Message>late\nfailure</Message><RequestId>r</RequestId></Error>";
        let why = completion_error(err.as_bytes()).unwrap();
        assert!(why.contains(r#""InternalError" "late\nfailure""#), "{why}");
        assert!(upload_id(err.as_bytes()).is_err());
        assert!(list_objects(err.as_bytes()).is_err());
        assert!(multipart_uploads(err.as_bytes()).is_err());
        let done = format!(
            "<CompleteMultipartUploadResult {NS}><Location>l</Location><Bucket>b</Bucket><Key>k</Key><ETag>&quot;e-2&quot;</ETag></CompleteMultipartUploadResult>"
        );
        assert_eq!(completion_error(done.as_bytes()), None);
        assert_eq!(completion_error(b""), None, "a 200 is a 200");
    }

    /// What a hostile or broken server may send: an error, never a panic, never a
    /// result made up from the wrong document.
    #[test]
    fn hostile_answers() {
        let refused: &[&[u8]] = &[
            b"",
            b"not xml",
            b"\xff\xfe<ListBucketResult/>",
            b"<Unknown/>",
            b"<InitiateMultipartUploadResult></InitiateMultipartUploadResult>",
            b"<InitiateMultipartUploadResult><UploadId>a</UploadId><UploadId>b</UploadId></InitiateMultipartUploadResult>",
            b"<InitiateMultipartUploadResult><UploadId>a<x/>b</UploadId></InitiateMultipartUploadResult>",
            b"<InitiateMultipartUploadResult><UploadId>&x;</UploadId></InitiateMultipartUploadResult>",
            b"<InitiateMultipartUploadResult><UploadId>&#0;</UploadId></InitiateMultipartUploadResult>",
            b"<!DOCTYPE r [<!ENTITY a \"x\"><!ENTITY b \"&a;&a;&a;&a;\">]><InitiateMultipartUploadResult><UploadId>&b;</UploadId></InitiateMultipartUploadResult>",
            b"<ListBucketResult><Contents><Key>a</Key></Contents>",
            b"<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>",
            b"<ListBucketResult><Contents><Key>a</Key></Contents><X/><Contents><Key>b</Key></Contents></ListBucketResult>",
        ];
        for xml in refused {
            assert!(
                upload_id(xml).is_err() && list_objects(xml).is_err(),
                "{:?}",
                String::from_utf8_lossy(xml)
            );
        }
        // An external DTD is never fetched; the answer is read without it.
        let dtd = b"<!DOCTYPE r SYSTEM \"file:///etc/passwd\"><InitiateMultipartUploadResult><UploadId>u</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(upload_id(dtd).unwrap(), "u");
        // Deep nesting: skipped where porter reads nothing, refused where it reads.
        let skipped = format!(
            "<ListBucketResult><Junk>{}{}</Junk></ListBucketResult>",
            "<a>".repeat(100_000),
            "</a>".repeat(100_000)
        );
        assert_eq!(list_objects(skipped.as_bytes()).unwrap(), (vec![], None));
        let nested = format!(
            "<ListBucketResult>{}</ListBucketResult>",
            "<Contents>".repeat(100_000)
        );
        assert!(list_objects(nested.as_bytes()).is_err());
        let in_key = format!(
            "<ListBucketResult><Contents><Key>{}k{}</Key></Contents></ListBucketResult>",
            "<a>".repeat(100_000),
            "</a>".repeat(100_000)
        );
        assert!(list_objects(in_key.as_bytes()).is_err());
    }
}
