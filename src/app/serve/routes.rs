//! The HTTP surface: `POST /v1/identify`, `GET /`, `GET /healthz`,
//! `GET /metrics`. A photo is read into memory, decoded, answered and
//! dropped: it is never written anywhere nor logged (GDPR).

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::batcher::{Batcher, Busy};
use super::metrics::{Metrics, RequestLabels};
use crate::app::identify::{Answer, Identifier};
use crate::image::RejectKind;

const PAGE: &str = include_str!("page.html");

pub struct AppState {
    pub engine: Arc<Identifier>,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    pub max_body: usize,
    /// Photos being read or decoded at once; beyond, 503.
    pub decoding: Arc<Semaphore>,
}

pub fn router(state: Arc<AppState>, request_timeout: std::time::Duration) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/identify", post(identify))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), record))
        // A client that sends its body too slowly gets 408, not a stuck task.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .with_state(state)
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

async fn page() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob:",
            ),
        ],
        Html(PAGE),
    )
}

async fn not_found() -> ApiError {
    err(StatusCode::NOT_FOUND, "no such route: GET /, POST /v1/identify, GET /healthz, GET /metrics")
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    model: String,
    weights: String,
    index_rows: usize,
    labels: usize,
}

async fn healthz(State(s): State<Arc<AppState>>) -> Json<Health> {
    let m = &s.engine.index.meta;
    Json(Health {
        status: "ok",
        model: s.engine.model.which.name().into(),
        weights: s.engine.model.weights_id.clone(),
        index_rows: m.rows,
        labels: m.classes.len(),
    })
}

async fn metrics(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode())
}

/// Counts every answer by route and status, and its latency.
async fn record(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = match req.uri().path() {
        p @ ("/" | "/healthz" | "/metrics" | "/v1/identify") => p.to_string(),
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

/// The photo: the raw body, or the first file of a multipart form.
async fn photo_bytes(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ApiError> {
    let too_big = || err(StatusCode::PAYLOAD_TOO_LARGE, format!("the upload is larger than {max} bytes"));
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        if len > max as u64 {
            return Err(too_big());
        }
    }
    let bytes = axum::body::to_bytes(body, max).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            too_big()
        } else {
            err(StatusCode::BAD_REQUEST, format!("could not read the upload: {e}"))
        }
    })?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let bytes =
        if content_type.starts_with("multipart/form-data") { first_file(content_type, bytes).await? } else { bytes };
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

async fn identify(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Identified>, ApiError> {
    let t0 = Instant::now();
    let Ok(_permit) = s.decoding.clone().try_acquire_owned() else {
        return Err(err(StatusCode::SERVICE_UNAVAILABLE, "too many photos in flight: try again in a moment"));
    };
    let bytes = photo_bytes(&headers, body, s.max_body).await?;
    let read = ms(t0);
    let t = Instant::now();
    let engine = s.engine.clone();
    let prepared = tokio::task::spawn_blocking(move || engine.prepare(&bytes))
        .await
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, format!("decoding failed: {e}")))?
        .map_err(|r| err(rejection_status(r.kind), format!("not a photo we can read: {r}")))?;
    let decode = ms(t);
    let waiting = s
        .batcher
        .submit(prepared)
        .map_err(|Busy| err(StatusCode::SERVICE_UNAVAILABLE, "the server is busy: try again in a moment"))?;
    let done = waiting
        .await
        .map_err(|_| err(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"))?
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let timings_ms = Timings {
        read,
        decode,
        queue: done.queue_ms,
        model: done.model_ms,
        search: done.search_ms,
        total: ms(t0),
        batch: done.batch,
    };
    Ok(Json(Identified { answer: done.answer, timings_ms }))
}
