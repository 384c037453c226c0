//! Finished objects read back from the bucket, for downloads.

use super::S3Store;
use crate::store::{BoxFuture, ObjectInfo, Objects};

impl Objects for S3Store {
    fn serves(&self, key: &str) -> bool {
        !key.is_empty() && key.starts_with(&self.0.prefix)
    }

    fn info<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectInfo>, String>> {
        Box::pin(async move {
            let info = self.0.s3.head(key).await.map_err(|e| e.to_string())?;
            Ok(info.map(|i| ObjectInfo {
                size: i.size,
                etag: i.etag,
                modified: i.last_modified,
            }))
        })
    }

    fn read<'a>(
        &'a self,
        key: &'a str,
        (first, last): (u64, u64),
    ) -> BoxFuture<'a, Result<crate::http::Body, crate::http::BoxError>> {
        Box::pin(async move {
            let body = self.0.s3.get(key, Some((first, last))).await?;
            Ok(body)
        })
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let wait = std::time::Duration::from_secs(5);
            match tokio::time::timeout(wait, self.0.s3.probe()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("the S3 bucket: {e}")),
                Err(_) => Err("the S3 bucket does not answer".into()),
            }
        })
    }
}
