//! The S3 side of [`super::Storage`], on its own tokio runtime.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::StreamExt;

use super::region::{self, is_european, region_of_location_constraint};
use super::{Fetch, Location};
use crate::error::{Error, Result};
use crate::image::{RejectKind, Rejection};

/// Files above this size are uploaded in parts of [`PART_SIZE`].
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
pub const PART_SIZE: usize = 8 << 20;

/// `--region`, `--s3-endpoint`, `--s3-concurrency`, shared by every command.
#[derive(Debug, Clone, clap::Args)]
pub struct S3Options {
    /// AWS region; only European regions are accepted (see docs/GUIDE.md).
    #[arg(long, global = true, default_value = region::DEFAULT_REGION, env = "AWS_REGION")]
    pub region: String,
    /// S3-compatible endpoint (path-style addressing), e.g. http://127.0.0.1:9000.
    /// Defaults to AWS_ENDPOINT_URL when set.
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// S3 requests in flight when fetching images.
    #[arg(long, global = true, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub s3_concurrency: u32,
}

impl Default for S3Options {
    fn default() -> Self {
        Self { region: region::DEFAULT_REGION.into(), s3_endpoint: None, s3_concurrency: 64 }
    }
}

pub struct S3 {
    rt: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
    checked: Mutex<HashSet<String>>,
}

fn s3_err<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    what: String,
    e: SdkError<E, R>,
) -> Error {
    // The error's code and message only: never the request (it is signed).
    let detail = match &e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            format!("{} ({})", err.code().unwrap_or("error"), err.message().unwrap_or("no message"))
        }
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(d) => {
            format!("could not reach S3: {:?}", d.as_connector_error().map(|c| c.to_string()))
        }
        other => aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
    };
    Error::Storage(format!("{what}: {detail}"))
}

fn status<E, R: std::fmt::Debug + HasStatus>(e: &SdkError<E, R>) -> Option<u16> {
    match e {
        SdkError::ServiceError(s) => Some(s.raw().status_code()),
        _ => None,
    }
}

trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

impl S3 {
    pub fn connect(o: &S3Options) -> Result<Self> {
        if !is_european(&o.region) {
            return Err(Error::Region(format!(
                "region {} is outside Europe; fruits keeps data in {} (see docs/GUIDE.md)",
                o.region,
                region::european_list()
            )));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("fruits-s3")
            .build()?;
        let retry = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(10)
            .with_initial_backoff(Duration::from_millis(50))
            .with_max_backoff(Duration::from_secs(5));
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(60))
            .build();
        let region = aws_config::Region::new(o.region.clone());
        let sdk = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(region)
                .retry_config(retry)
                .timeout_config(timeouts)
                .load(),
        );
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk);
        if let Some(url) = &o.s3_endpoint {
            conf = conf.endpoint_url(url).force_path_style(true);
        }
        Ok(Self { rt, client: aws_sdk_s3::Client::from_conf(conf.build()), checked: Mutex::new(HashSet::new()) })
    }

    /// Refuses a bucket outside Europe, or one we cannot reach, once per bucket.
    pub fn check_bucket(&self, bucket: &str) -> Result<()> {
        if self.checked.lock().expect("not poisoned").contains(bucket) {
            return Ok(());
        }
        let loc = self.rt.block_on(self.client.get_bucket_location().bucket(bucket).send());
        let loc = loc.map_err(|e| {
            let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
            match code {
                "NoSuchBucket" => Error::Storage(format!("bucket {bucket} does not exist")),
                _ => s3_err(format!("cannot get the location of bucket {bucket}"), e),
            }
        })?;
        let region = region_of_location_constraint(loc.location_constraint().map(|c| c.as_str()));
        if !is_european(&region) {
            return Err(Error::Region(format!(
                "bucket {bucket} is in {region}, outside Europe; fruits keeps data in {}",
                region::european_list()
            )));
        }
        self.checked.lock().expect("not poisoned").insert(bucket.to_string());
        Ok(())
    }

    /// Every key under `prefix`, following pagination.
    pub fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        self.rt.block_on(async {
            let mut pages = self.client.list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
            let mut keys = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| s3_err(format!("cannot list s3://{bucket}/{prefix}"), e))?;
                keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
            }
            keys.sort();
            Ok(keys)
        })
    }

    async fn get_async(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> std::result::Result<Vec<u8>, Fetch> {
        let resp = client.get_object().bucket(bucket).key(key).send().await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("").to_string();
                let st = status(&e);
                return Err(match (code.as_str(), st) {
                    ("NoSuchKey", _) | (_, Some(404)) => {
                        Fetch::Rejected(Rejection::new(RejectKind::Unreadable, "no such object"))
                    }
                    ("AccessDenied", _) | (_, Some(403)) => {
                        Fetch::Rejected(Rejection::new(RejectKind::Unreadable, "access denied to this object"))
                    }
                    ("NoSuchBucket", _) => Fetch::Fatal(Error::Storage(format!("bucket {bucket} does not exist"))),
                    _ => Fetch::Fatal(s3_err(format!("cannot read s3://{bucket}/{key}"), e)),
                });
            }
        };
        resp.body
            .collect()
            .await
            .map(|b| b.into_bytes().to_vec())
            .map_err(|e| Fetch::Fatal(Error::Storage(format!("cannot read s3://{bucket}/{key}: {e}"))))
    }

    pub fn get(&self, bucket: &str, key: &str) -> std::result::Result<Vec<u8>, Fetch> {
        self.rt.block_on(Self::get_async(&self.client, bucket, key))
    }

    pub fn get_tail(&self, bucket: &str, key: &str, n: u64) -> Result<Vec<u8>> {
        self.rt.block_on(async {
            let r = self.client.get_object().bucket(bucket).key(key).range(format!("bytes=-{n}")).send().await;
            let r = r.map_err(|e| s3_err(format!("cannot read s3://{bucket}/{key}"), e))?;
            let b =
                r.body.collect().await.map_err(|e| Error::Storage(format!("cannot read s3://{bucket}/{key}: {e}")))?;
            Ok(b.into_bytes().to_vec())
        })
    }

    pub fn exists(&self, bucket: &str, key: &str) -> Result<bool> {
        self.rt.block_on(async {
            match self.client.head_object().bucket(bucket).key(key).send().await {
                Ok(_) => Ok(true),
                Err(e) if status(&e) == Some(404) => Ok(false),
                Err(e) => Err(s3_err(format!("cannot check s3://{bucket}/{key}"), e)),
            }
        })
    }

    pub fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.rt.block_on(async {
            self.client
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_err(format!("cannot delete s3://{bucket}/{key}"), e))
        })
    }

    pub fn put_file(&self, local: &Path, bucket: &str, key: &str) -> Result<()> {
        let size = std::fs::metadata(local)?.len();
        let dest = format!("s3://{bucket}/{key}");
        self.rt.block_on(async {
            if size <= MULTIPART_THRESHOLD {
                let body = ByteStream::from_path(local).await.map_err(|e| Error::Storage(format!("{dest}: {e}")))?;
                self.client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| s3_err(format!("cannot write {dest}"), e))?;
                return Ok(());
            }
            let up = self
                .client
                .create_multipart_upload()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| s3_err(format!("cannot start a multipart upload to {dest}"), e))?;
            let id = up.upload_id().unwrap_or_default().to_string();
            let result = async {
                let data = std::fs::read(local)?;
                let mut parts = Vec::new();
                for (i, chunk) in data.chunks(PART_SIZE).enumerate() {
                    let n = i as i32 + 1;
                    let r = self
                        .client
                        .upload_part()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(&id)
                        .part_number(n)
                        .body(ByteStream::from(chunk.to_vec()))
                        .send()
                        .await
                        .map_err(|e| s3_err(format!("cannot upload part {n} of {dest}"), e))?;
                    parts
                        .push(CompletedPart::builder().part_number(n).set_e_tag(r.e_tag().map(str::to_string)).build());
                }
                self.client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&id)
                    .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                    .send()
                    .await
                    .map_err(|e| s3_err(format!("cannot complete the upload of {dest}"), e))?;
                Ok::<(), Error>(())
            }
            .await;
            if result.is_err() {
                // Leave no invisible half-upload behind (best effort).
                let _ = self.client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&id).send().await;
            }
            result
        })
    }

    /// See [`super::Storage::fetch_all`]: every fetch is its own task, so up to
    /// `concurrency` requests stay in flight while the caller works.
    pub fn fetch_all(
        &self,
        locs: &[Location],
        concurrency: usize,
        send: &mut dyn FnMut(usize, std::result::Result<Vec<u8>, Fetch>) -> bool,
    ) -> Result<()> {
        let client = self.client.clone();
        for loc in locs {
            if let Location::S3 { bucket, .. } = loc {
                self.check_bucket(bucket)?;
            }
        }
        let tasks = locs.iter().cloned().map(|loc| {
            let client = client.clone();
            let handle = self.rt.spawn(async move {
                match &loc {
                    Location::S3 { bucket, key } => Self::get_async(&client, bucket, key).await,
                    Location::Local(p) => std::fs::read(p)
                        .map_err(|e| Fetch::Rejected(Rejection::new(RejectKind::Unreadable, e.to_string()))),
                }
            });
            async move {
                handle.await.unwrap_or_else(|e| Err(Fetch::Fatal(Error::Storage(format!("fetch task failed: {e}")))))
            }
        });
        let mut stream = futures::stream::iter(tasks).buffered(concurrency.max(1));
        let mut i = 0;
        while let Some(r) = self.rt.block_on(stream.next()) {
            if !send(i, r) {
                break;
            }
            i += 1;
        }
        Ok(())
    }
}
