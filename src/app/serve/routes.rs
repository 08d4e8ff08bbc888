//! The HTTP surface: `POST /v1/identify`, `GET /`, `GET /healthz`,
//! `GET /metrics`. A photo is read into memory, decoded, answered and
//! dropped: it is never written anywhere nor logged (GDPR).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Json, Router};
use serde::Serialize;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;

use super::batcher::{Batcher, Busy};
use super::metrics::{Metrics, RequestLabels};
use crate::app::identify::{Answer, Identifier};
use crate::image::RejectKind;

const PAGE: &str = include_str!("page.html");

/// What a client may ask of the server (see the module doc of
/// [`super`]); each refusal goes through [`Refused`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest upload (413 beyond).
    pub max_body: usize,
    /// Time for the whole answer (408 beyond).
    pub request_timeout: Duration,
    /// Time for an upload to arrive (408 beyond).
    pub upload_timeout: Duration,
    /// Photos being received at once (503 beyond).
    pub max_in_flight: usize,
    /// Photos being decoded at once (more wait).
    pub max_decoding: usize,
    /// Largest photo, in pixels, read from its header before decoding (413 beyond).
    pub max_pixels: u64,
    /// Answers name the indexed photos' files (paths on the server's disk).
    pub show_paths: bool,
}

pub struct AppState {
    pub engine: Arc<Identifier>,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    /// Decodes at once. A permit goes with its decode onto the blocking
    /// thread: a request that times out drops its future, not the work it
    /// started, and the permit is freed when that work ends.
    pub decoding: Arc<Semaphore>,
    pub limits: Limits,
}

/// The routes and, as layers, every limit a request meets, outermost
/// first: security headers on every answer; the count by route and status;
/// the whole answer's deadline (408). On the API only: a body declared
/// larger than the limit refused unread (413), photos received at once
/// (503 at once beyond: load shedding, not a queue), the body limit the
/// `Bytes` extractor applies (413). What axum lacks: a deadline on the
/// whole upload (tower-http's body timeout is per frame, so a client
/// trickling a byte at a time never meets it); that one is in
/// [`read_photo`]. Every refusal is worded by [`Refused`].
pub fn router(state: Arc<AppState>) -> Router {
    let limits = state.limits.clone();
    let api = Router::new()
        .route("/v1/identify", post(identify))
        .layer(DefaultBodyLimit::max(limits.max_body))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(refused_by_layer))
                .load_shed()
                .concurrency_limit(limits.max_in_flight),
        )
        .layer(axum::middleware::from_fn_with_state(limits.max_body, declared_size));
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .merge(api)
        .fallback(not_found)
        .layer(ServiceBuilder::new().layer(HandleErrorLayer::new(refused_by_layer)).timeout(limits.request_timeout))
        .layer(axum::middleware::from_fn_with_state(state.clone(), record))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// `GET /metrics` alone, for its own address.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(|State(m): State<Arc<Metrics>>| async move { encode_metrics(&m) }))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(metrics)
}

/// An error answer: `{"error": "..."}` with its status.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        let mut r = (self.0, Json(Body { error: self.1 })).into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

fn err(status: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(status, msg.into())
}

/// Which limit refused a request: the one mapping to 408, 413 and 503.
enum Refused {
    /// Too slow: the answer or the upload took longer than its deadline.
    TooSlow(String),
    /// Too large: the upload, or the photo's pixels.
    TooLarge(String),
    /// Too many at once: try again in a moment.
    Busy(String),
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::TooSlow(m) => err(StatusCode::REQUEST_TIMEOUT, m),
            Refused::TooLarge(m) => err(StatusCode::PAYLOAD_TOO_LARGE, m),
            Refused::Busy(m) => err(StatusCode::SERVICE_UNAVAILABLE, m),
        }
    }
}

/// The errors tower's layers give: a deadline passed, or no slot free.
async fn refused_by_layer(e: BoxError) -> ApiError {
    if e.is::<tower::timeout::error::Elapsed>() {
        Refused::TooSlow("the request took too long: try again".into()).into()
    } else if e.is::<tower::load_shed::error::Overloaded>() {
        Refused::Busy("too many photos in flight: try again in a moment".into()).into()
    } else {
        err(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected: {e}"))
    }
}

/// A body declared larger than the limit is refused before it is read.
async fn declared_size(State(max): State<usize>, req: Request, next: Next) -> Response {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return ApiError::from(Refused::TooLarge(too_large(max))).into_response();
    }
    next.run(req).await
}

fn too_large(max: usize) -> String {
    format!("the upload is larger than {max} bytes")
}

/// The page's own script and style, by hash: the only code it may run.
fn page_policy() -> &'static str {
    static POLICY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        let hash = |tag: &str| {
            let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
            let start = PAGE.find(&open).map(|i| i + open.len()).expect("the page has its element");
            let end = start + PAGE[start..].find(&close).expect("closed");
            use base64::Engine as _;
            let digest = <sha2::Sha256 as sha2::Digest>::digest(&PAGE.as_bytes()[start..end]);
            format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; img-src 'self' blob:; connect-src 'self'; \
             base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
            hash("script"),
            hash("style")
        )
    })
}

/// On every answer: no sniffing of types, no framing, no referrer; the
/// API's answers are not to be cached.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    r
}

async fn page() -> impl IntoResponse {
    let policy = HeaderValue::from_str(page_policy()).expect("ASCII");
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store")), (header::CONTENT_SECURITY_POLICY, policy)],
        Html(PAGE),
    )
}

async fn not_found() -> ApiError {
    err(StatusCode::NOT_FOUND, "no such route: GET /, POST /v1/identify, GET /healthz")
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    model: String,
    weights: String,
    /// Which index answers (it changes when a new one is taken up).
    index_version: String,
    index_rows: usize,
    labels: usize,
}

async fn healthz(State(s): State<Arc<AppState>>) -> Json<Health> {
    let index = s.engine.index();
    let m = &index.meta;
    Json(Health {
        status: "ok",
        model: s.engine.model.which.name().into(),
        weights: s.engine.model.weights_id.clone(),
        index_version: index.version(),
        index_rows: m.rows,
        labels: m.classes.len(),
    })
}

fn encode_metrics(m: &Metrics) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode())
}

/// Counts every answer by route and status, and its latency.
async fn record(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = match req.uri().path() {
        p @ ("/" | "/healthz" | "/v1/identify") => p.to_string(),
        _ => "other".to_string(),
    };
    let t = Instant::now();
    let response = next.run(req).await;
    let labels = RequestLabels { route, status: response.status().as_u16() };
    s.metrics.requests.get_or_create(&labels).inc();
    s.metrics.latency.get_or_create(&labels).observe(t.elapsed().as_secs_f64());
    response
}

#[derive(Serialize)]
struct Timings {
    read: f64,
    decode: f64,
    queue: f64,
    model: f64,
    search: f64,
    total: f64,
    batch: usize,
}

#[derive(Serialize)]
struct Identified {
    #[serde(flatten)]
    answer: Answer,
    timings_ms: Timings,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// The photo: the raw body, or the first file of a multipart form. The
/// body limit is the layer's ([`DefaultBodyLimit`], which the `Bytes`
/// extractor applies); the whole upload must arrive within its deadline.
async fn read_photo(limits: &Limits, req: Request) -> Result<Bytes, ApiError> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let deadline = limits.upload_timeout;
    let bytes = tokio::time::timeout(deadline, Bytes::from_request(req, &()))
        .await
        .map_err(|_| Refused::TooSlow(format!("the upload took longer than {} s", deadline.as_secs_f64())))?
        .map_err(|r| match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Refused::TooLarge(too_large(limits.max_body)).into(),
            status => err(status, format!("could not read the upload: {}", r.body_text())),
        })?;
    let bytes =
        if content_type.starts_with("multipart/form-data") { first_file(&content_type, bytes).await? } else { bytes };
    if bytes.is_empty() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "no photo: the upload is empty (send the image bytes, or a multipart form with a file)",
        ));
    }
    Ok(bytes)
}

async fn first_file(content_type: &str, bytes: Bytes) -> Result<Bytes, ApiError> {
    let bad = |e: multer::Error| err(StatusCode::BAD_REQUEST, format!("malformed multipart form: {e}"));
    let boundary = multer::parse_boundary(content_type).map_err(bad)?;
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) });
    let mut form = multer::Multipart::new(stream, boundary);
    while let Some(field) = form.next_field().await.map_err(bad)? {
        if field.file_name().is_some() || field.name() == Some("photo") {
            return field.bytes().await.map_err(bad);
        }
    }
    Err(err(StatusCode::BAD_REQUEST, "the multipart form has no file field (name it \"photo\")"))
}

fn rejection_status(kind: RejectKind) -> StatusCode {
    match kind {
        RejectKind::Unsupported => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        RejectKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

async fn identify(State(s): State<Arc<AppState>>, req: Request) -> Result<Json<Identified>, ApiError> {
    let t0 = Instant::now();
    let bytes = read_photo(&s.limits, req).await?;
    let read = ms(t0);
    let t = Instant::now();
    let permit = s.decoding.clone().acquire_owned().await.map_err(|_| stopping())?;
    let (engine, max_pixels) = (s.engine.clone(), s.limits.max_pixels);
    let prepared = tokio::task::spawn_blocking(move || {
        let _held = permit;
        engine.prepare_within(&bytes, max_pixels)
    })
    .await
    .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, format!("decoding failed: {e}")))?
    .map_err(|r| match r.kind {
        RejectKind::TooLarge => ApiError::from(Refused::TooLarge(format!("the photo is too large: {}", r.detail))),
        kind => err(rejection_status(kind), format!("not a photo we can read: {r}")),
    })?;
    let decode = ms(t);
    let waiting =
        s.batcher.submit(prepared).map_err(|Busy| Refused::Busy("the server is busy: try again in a moment".into()))?;
    let done = waiting.await.map_err(|_| stopping())?.map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let timings_ms = Timings {
        read,
        decode,
        queue: done.queue_ms,
        model: done.model_ms,
        search: done.search_ms,
        total: ms(t0),
        batch: done.batch,
    };
    let mut answer = done.answer;
    if !s.limits.show_paths {
        answer.neighbours.iter_mut().for_each(|n| n.path = None);
    }
    Ok(Json(Identified { answer, timings_ms }))
}

fn stopping() -> ApiError {
    Refused::Busy("the server is stopping".into()).into()
}
