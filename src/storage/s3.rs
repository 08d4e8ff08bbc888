//! The S3 side of [`super::Storage`], on its own tokio runtime.
//!
//! One client per bucket region: the SDK does not follow S3's cross-region
//! redirects, so each bucket's region is looked up once (`HeadBucket`'s
//! `x-amz-bucket-region`, else `GetBucketLocation`), checked against the
//! European list, and the bucket is then always spoken to in its region.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, EncodingType};
use aws_sdk_s3::Client;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::ConnectorBuilder;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use futures::StreamExt;
use tokio::sync::Semaphore;

use super::fetch::{too_large, Fetch, FetchLimits, Fetched};
use super::location::Location;
use super::region::{self, is_european, region_of_location_constraint};
use crate::error::{Error, Result, S3Failure};
use crate::image::{RejectKind, Rejection};

/// Files above this size are uploaded in parts of [`PART_SIZE`].
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
pub const PART_SIZE: usize = 8 << 20;

/// `--region`, `--s3-endpoint`, `--s3-concurrency`, shared by every command.
#[derive(Debug, Clone, clap::Args)]
pub struct S3Options {
    /// AWS region of the client; only European regions are accepted (see docs/GUIDE.md).
    /// Each bucket is then used in its own region.
    #[arg(long, global = true, default_value = region::DEFAULT_REGION, env = "AWS_REGION")]
    pub region: String,
    /// S3-compatible endpoint (path-style addressing), e.g. http://127.0.0.1:9000.
    /// Defaults to AWS_ENDPOINT_URL when set. A bucket whose location such a server
    /// leaves empty is taken to be in --region. Nothing else moves S3 away from AWS:
    /// AWS_ENDPOINT_URL_S3 and an AWS profile's endpoint_url are ignored.
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
    options: S3Options,
    sdk: aws_config::SdkConfig,
    /// One client per region.
    clients: Mutex<HashMap<String, Client>>,
    /// Buckets checked (European, reachable), with their region's client.
    buckets: Mutex<HashMap<String, Client>>,
}

type HttpResponse = aws_smithy_runtime_api::http::Response;

/// A slice of a listing: the keys strictly after `after` and strictly
/// before `before` (full keys; `None`: no bound); with `first`, only the
/// first keys of it, up to that many (one page in S3, at most 1000).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    pub after: Option<String>,
    pub before: Option<String>,
    pub first: Option<usize>,
}

/// A listed key, URL-decoded (see [`S3::list`]).
fn decoded_key(bucket: &str, prefix: &str, encoded: &str) -> Result<String> {
    url_decoded(encoded).ok_or_else(|| {
        Error::corrupt(
            format!("s3://{bucket}/{prefix}"),
            format!("listed a key that is not URL-encoded UTF-8: {encoded:?}"),
        )
    })
}

/// A key as S3 lists it with `encoding-type=url`: percent-encoded, a space
/// as `+` (a `+` of the key itself comes as `%2B`).
fn url_decoded(encoded: &str) -> Option<String> {
    let spaced = encoded.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8().ok().map(|k| k.into_owned())
}

/// An [`Error::S3`] for `action`, keeping the SDK's error as its source.
fn s3_err<E>(action: String, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    Error::S3 { action, source: failure(e) }
}

/// What S3 answered (its code and message only: never the request, it is
/// signed), or why no answer came, over the SDK's error.
fn failure<E>(e: SdkError<E, HttpResponse>) -> S3Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = match &e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            format!("{} ({})", err.code().unwrap_or("error"), err.message().unwrap_or("no message"))
        }
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(_) => "could not reach S3".into(),
        other => aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
    };
    let answered = e.raw_response().map(|r| r.status().as_u16());
    let code = e.as_service_error().and_then(|s| s.code()).map(str::to_string);
    S3Failure::new(answered, code, detail, Box::new(e))
}

/// A body that broke off mid-download: no status (the answer had begun),
/// the transport's error as the cause.
fn body_err(action: String, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    let detail = e.to_string();
    Error::S3 { action, source: S3Failure::new(None, None, detail, Box::new(e)) }
}

fn status<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// The SDK's default HTTPS client (hyper 1, a proxy from HTTPS_PROXY and
/// NO_PROXY, the timeouts and sleep of each request's config), with rustls
/// on ring instead of aws-lc: Cargo.toml says why.
fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
        connector.set_connector_settings(settings.cloned());
        connector.set_sleep_impl(components.and_then(|c| c.sleep_impl()));
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

fn code<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> &str {
    e.as_service_error().and_then(|s| s.code()).unwrap_or("")
}

impl S3 {
    pub fn connect(o: &S3Options) -> Result<Self> {
        if !is_european(&o.region) {
            return Err(Error::RegionOutsideEurope { region: o.region.clone() });
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
        let sdk = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(o.region.clone()))
                .retry_config(retry)
                .timeout_config(timeouts)
                .http_client(https_client())
                .load(),
        );
        Ok(Self {
            rt,
            options: o.clone(),
            sdk,
            clients: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The client that signs for `region`.
    fn client(&self, region: &str) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let mut conf =
                    aws_sdk_s3::config::Builder::from(&self.sdk).region(aws_config::Region::new(region.to_string()));
                conf = match &self.options.s3_endpoint {
                    Some(url) => conf.endpoint_url(url).force_path_style(true),
                    // Only --s3-endpoint (or AWS_ENDPOINT_URL, its documented
                    // default) moves S3 away from AWS. The endpoints the SDK
                    // would take from AWS_ENDPOINT_URL_S3 or a profile's
                    // endpoint_url are dropped: a server nobody named must not
                    // get the photos, nor answer the region guard.
                    None => {
                        conf.set_endpoint_url(None);
                        conf
                    }
                };
                Client::from_conf(conf.build())
            })
            .clone()
    }

    /// The client for `bucket`, after finding its region and refusing it
    /// outside Europe or when it cannot be reached (once per bucket).
    pub fn bucket(&self, bucket: &str) -> Result<Client> {
        if let Some(c) = self.buckets.lock().unwrap_or_else(|p| p.into_inner()).get(bucket) {
            return Ok(c.clone());
        }
        let region = self.rt.block_on(self.bucket_region(bucket))?;
        if !is_european(&region) {
            return Err(Error::BucketOutsideEurope { bucket: bucket.to_string(), region });
        }
        let client = self.client(&region);
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).insert(bucket.to_string(), client.clone());
        Ok(client)
    }

    /// `HeadBucket` answers with the bucket's region in a header, even when
    /// it redirects (301) or refuses (403); without that header (some
    /// S3-compatible servers), `GetBucketLocation`, whose empty answer
    /// means us-east-1 on AWS and the server's own region (`--region`)
    /// behind `--s3-endpoint`.
    async fn bucket_region(&self, bucket: &str) -> Result<String> {
        let home = self.client(&self.options.region);
        let head = home.head_bucket().bucket(bucket).send().await;
        let header = match &head {
            Ok(out) => out.bucket_region().map(str::to_string),
            Err(e) => e.raw_response().and_then(|r| r.headers().get("x-amz-bucket-region")).map(str::to_string),
        };
        if let Some(region) = header.filter(|r| !r.is_empty()) {
            return Ok(region);
        }
        if let Err(e) = head {
            return Err(match status(&e) {
                Some(404) => Error::NoSuchBucket { bucket: bucket.to_string() },
                Some(403) => Error::BucketDenied { bucket: bucket.to_string() },
                _ => s3_err(format!("cannot reach bucket {bucket}"), e),
            });
        }
        let loc = home.get_bucket_location().bucket(bucket).send().await.map_err(|e| match code(&e) {
            "NoSuchBucket" => Error::NoSuchBucket { bucket: bucket.to_string() },
            _ => s3_err(format!("cannot get the location of bucket {bucket}"), e),
        })?;
        let constraint = loc.location_constraint().map(|c| c.as_str()).filter(|c| !c.is_empty());
        Ok(match (constraint, &self.options.s3_endpoint) {
            (None, Some(_)) => self.options.region.clone(),
            (c, _) => region_of_location_constraint(c),
        })
    }

    /// Every key under `prefix` with its size and time, following
    /// pagination; with `range`, only the keys strictly between its ends
    /// (full keys), the listing starting after `after` and stopping at
    /// `before`, so a slice of a prefix costs its own pages only.
    pub fn list(&self, bucket: &str, prefix: &str, range: &KeyRange) -> Result<Vec<(String, u64, Option<SystemTime>)>> {
        let client = self.bucket(bucket)?;
        self.rt.block_on(async {
            // Keys come URL-encoded: XML cannot carry every character a key
            // may hold (control characters), and parsers rewrite some (\r).
            let mut pages = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_start_after(range.after.clone())
                .set_max_keys(range.first.map(|n| n.clamp(1, 1000) as i32))
                .encoding_type(EncodingType::Url)
                .into_paginator()
                .send();
            let mut keys = Vec::new();
            'pages: while let Some(page) = pages.next().await {
                if range.first.is_some_and(|n| keys.len() >= n) {
                    break;
                }
                let page = page.map_err(|e| s3_err(format!("cannot list s3://{bucket}/{prefix}"), e))?;
                for o in page.contents() {
                    let Some(encoded) = o.key() else { continue };
                    let key = decoded_key(bucket, prefix, encoded)?;
                    if range.before.as_ref().is_some_and(|b| key >= *b) {
                        break 'pages;
                    }
                    let modified = o.last_modified().and_then(|t| SystemTime::try_from(*t).ok());
                    keys.push((key, o.size().unwrap_or(0).max(0) as u64, modified));
                }
            }
            keys.sort();
            Ok(keys)
        })
    }

    /// The "folders" right under `prefix` (S3's common prefixes with the
    /// delimiter `/`), full keys ending in `/`, in byte order.
    pub fn folders(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let client = self.bucket(bucket)?;
        self.rt.block_on(async {
            let mut pages = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .delimiter("/")
                .encoding_type(EncodingType::Url)
                .into_paginator()
                .send();
            let mut folders = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| s3_err(format!("cannot list s3://{bucket}/{prefix}"), e))?;
                for p in page.common_prefixes() {
                    let Some(encoded) = p.prefix() else { continue };
                    folders.push(decoded_key(bucket, prefix, encoded)?);
                }
            }
            folders.sort();
            Ok(folders)
        })
    }

    /// One image object, refused unread when over `max_bytes`; its bytes
    /// are held against `memory` until the [`Fetched`] is dropped.
    async fn get_image(
        client: &Client,
        bucket: &str,
        key: &str,
        max_bytes: u64,
        memory: &Arc<Semaphore>,
        memory_permits: u32,
    ) -> std::result::Result<Fetched, Fetch> {
        let resp = match client.get_object().bucket(bucket).key(key).send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(match (code(&e), status(&e)) {
                    ("NoSuchKey", _) | (_, Some(404)) => {
                        Fetch::Rejected(Rejection::new(RejectKind::Unreadable, "no such object"))
                    }
                    ("AccessDenied", _) | (_, Some(403)) => {
                        Fetch::Rejected(Rejection::new(RejectKind::Unreadable, "access denied to this object"))
                    }
                    ("NoSuchBucket", _) => Fetch::fatal(Error::NoSuchBucket { bucket: bucket.to_string() }),
                    _ => Fetch::fatal(s3_err(format!("cannot read s3://{bucket}/{key}"), e)),
                });
            }
        };
        let size = resp.content_length().unwrap_or(0).max(0) as u64;
        if size > max_bytes {
            return Err(Fetch::Rejected(too_large(size, max_bytes)));
        }
        let hold =
            memory.clone().acquire_many_owned(FetchLimits::permits(size).min(memory_permits)).await.map_err(|e| {
                Fetch::fatal(Error::Threads { what: "the fetch's memory budget".into(), source: Box::new(e) })
            })?;
        let mut body = resp.body;
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Fetch::fatal(body_err(format!("cannot read s3://{bucket}/{key}"), e)))?;
            if bytes.len() as u64 + chunk.len() as u64 > max_bytes {
                return Err(Fetch::Rejected(too_large(bytes.len() as u64 + chunk.len() as u64, max_bytes)));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::held(bytes, hold))
    }

    /// A whole small object (a manifest, statistics); `None` if it does not exist.
    pub fn read(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let client = self.bucket(bucket)?;
        self.rt.block_on(async {
            match client.get_object().bucket(bucket).key(key).send().await {
                Ok(r) => {
                    let b =
                        r.body.collect().await.map_err(|e| body_err(format!("cannot read s3://{bucket}/{key}"), e))?;
                    Ok(Some(b.into_bytes().to_vec()))
                }
                Err(e) if status(&e) == Some(404) || code(&e) == "NoSuchKey" => Ok(None),
                Err(e) => Err(s3_err(format!("cannot read s3://{bucket}/{key}"), e)),
            }
        })
    }

    pub fn get_tail(&self, bucket: &str, key: &str, n: u64) -> Result<Vec<u8>> {
        let client = self.bucket(bucket)?;
        self.rt.block_on(async {
            let r = client.get_object().bucket(bucket).key(key).range(format!("bytes=-{n}")).send().await;
            let r = r.map_err(|e| s3_err(format!("cannot read s3://{bucket}/{key}"), e))?;
            let b = r.body.collect().await.map_err(|e| body_err(format!("cannot read s3://{bucket}/{key}"), e))?;
            Ok(b.into_bytes().to_vec())
        })
    }

    /// `len` bytes from `start`, in one ranged GET.
    pub fn get_range(&self, bucket: &str, key: &str, start: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let client = self.bucket(bucket)?;
        self.rt.block_on(async {
            let range = format!("bytes={start}-{}", start + len - 1);
            let r = client.get_object().bucket(bucket).key(key).range(range).send().await;
            let r = r.map_err(|e| s3_err(format!("cannot read s3://{bucket}/{key}"), e))?;
            let b = r.body.collect().await.map_err(|e| body_err(format!("cannot read s3://{bucket}/{key}"), e))?;
            let bytes = b.into_bytes().to_vec();
            if bytes.len() as u64 != len {
                let got = format!("bytes {start}..{} answered with {} bytes", start + len, bytes.len());
                return Err(Error::corrupt(format!("s3://{bucket}/{key}"), got));
            }
            Ok(bytes)
        })
    }

    pub fn exists(&self, bucket: &str, key: &str) -> Result<bool> {
        Ok(self.size(bucket, key)?.is_some())
    }

    /// The object's size (one HEAD); `None` if there is none.
    pub fn size(&self, bucket: &str, key: &str) -> Result<Option<u64>> {
        let client = self.bucket(bucket)?;
        self.rt.block_on(async {
            match client.head_object().bucket(bucket).key(key).send().await {
                Ok(h) => Ok(Some(h.content_length().unwrap_or(0).max(0) as u64)),
                Err(e) if status(&e) == Some(404) => Ok(None),
                Err(e) => Err(s3_err(format!("cannot check s3://{bucket}/{key}"), e)),
            }
        })
    }

    pub fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        let client = self.bucket(bucket)?;
        self.rt.block_on(async {
            client
                .delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_err(format!("cannot delete s3://{bucket}/{key}"), e))
        })
    }

    /// Puts `bytes` as one object, in one request.
    pub fn put_bytes(&self, bytes: Vec<u8>, bucket: &str, key: &str) -> Result<()> {
        let client = self.bucket(bucket)?;
        self.rt.block_on(async {
            client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(bytes))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_err(format!("cannot write s3://{bucket}/{key}"), e))
        })
    }

    /// Puts a local file whole: one PUT, or a multipart upload above
    /// [`MULTIPART_THRESHOLD`]; either way the object appears complete or not at all.
    pub fn put_file(&self, local: &Path, bucket: &str, key: &str) -> Result<()> {
        let client = self.bucket(bucket)?;
        let size = std::fs::metadata(local)?.len();
        let dest = format!("s3://{bucket}/{key}");
        if size <= MULTIPART_THRESHOLD {
            return self.rt.block_on(async {
                let body = ByteStream::from_path(local)
                    .await
                    .map_err(|e| Error::Input { path: local.to_path_buf(), source: std::io::Error::other(e) })?;
                client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(body)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| s3_err(format!("cannot write {dest}"), e))
            });
        }
        self.rt.block_on(Self::multipart(&client, local, bucket, key, &dest))
    }

    async fn multipart(client: &Client, local: &Path, bucket: &str, key: &str, dest: &str) -> Result<()> {
        let up = client
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
                let r = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&id)
                    .part_number(n)
                    .body(ByteStream::from(chunk.to_vec()))
                    .send()
                    .await
                    .map_err(|e| s3_err(format!("cannot upload part {n} of {dest}"), e))?;
                parts.push(CompletedPart::builder().part_number(n).set_e_tag(r.e_tag().map(str::to_string)).build());
            }
            client
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
            let _ = client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&id).send().await;
        }
        result
    }

    /// See [`super::Storage::fetch_all`]: every fetch is its own task, up to
    /// `concurrency` in flight, each started only once `window` lets it,
    /// sent on as soon as it is complete (in any order).
    pub fn fetch_all(
        &self,
        locs: &[Location],
        limits: &FetchLimits,
        window: &Arc<Semaphore>,
        send: &mut dyn FnMut(usize, std::result::Result<Fetched, Fetch>) -> bool,
    ) -> Result<()> {
        let mut clients = HashMap::new();
        for loc in locs {
            if let Location::S3 { bucket, .. } = loc {
                if !clients.contains_key(bucket) {
                    clients.insert(bucket.clone(), self.bucket(bucket)?);
                }
            }
        }
        let memory_permits = FetchLimits::permits(limits.memory);
        let memory = Arc::new(Semaphore::new(memory_permits as usize));
        let max_bytes = limits.max_image_bytes;
        let tasks = futures::stream::iter(locs.iter().cloned().enumerate())
            .then(|(i, loc)| {
                let window = window.clone();
                async move {
                    // Never more than the window ahead of the writer (the
                    // writer gives permits back); closed: the run stopped.
                    let permit = window.acquire_owned().await.ok()?;
                    permit.forget();
                    Some((i, loc))
                }
            })
            .take_while(|next| futures::future::ready(next.is_some()))
            .filter_map(futures::future::ready)
            .map(|(i, loc)| {
                let client = match &loc {
                    Location::S3 { bucket, .. } => clients.get(bucket).cloned(),
                    Location::Local(_) => None,
                };
                let memory = memory.clone();
                let task = self.rt.spawn(async move {
                    match (&loc, client) {
                        (Location::S3 { bucket, key }, Some(c)) => {
                            Self::get_image(&c, bucket, key, max_bytes, &memory, memory_permits).await
                        }
                        (Location::Local(p), _) => {
                            super::fetch::read_local(p, max_bytes).map(Fetched::new).map_err(Fetch::Rejected)
                        }
                        (Location::S3 { bucket, .. }, None) => {
                            unreachable!("a client was made for every bucket of {bucket:?}'s list")
                        }
                    }
                });
                async move {
                    let got = task.await.unwrap_or_else(|e| {
                        Err(Fetch::fatal(Error::Threads { what: "a fetch task".into(), source: Box::new(e) }))
                    });
                    (i, got)
                }
            });
        let mut stream = std::pin::pin!(tasks.buffer_unordered(self.options.s3_concurrency.max(1) as usize));
        while let Some((i, got)) = self.rt.block_on(stream.next()) {
            if !send(i, got) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::url_decoded;

    /// As S3 encodes keys with `encoding-type=url` (botocore decodes them
    /// with `unquote_plus`).
    #[test]
    fn listed_keys_are_url_decoded() {
        assert_eq!(url_decoded("a+b%2Bc%0Ad%C3%A9.jpg").as_deref(), Some("a b+c\nd\u{e9}.jpg"));
        assert_eq!(url_decoded("plain/key.jpg").as_deref(), Some("plain/key.jpg"));
        assert_eq!(url_decoded("%FF"), None, "not UTF-8");
    }
}
