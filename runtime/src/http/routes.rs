//! The routes and what each answers; the shared state every handler sees.

use super::error::ApiError;
use super::request::{self, ClassifyRequest};
use super::{json_response, Limits};
use crate::answer::json_object;
use crate::controller::ControllerEvent;
use crate::serving::{self, ThresholdControl};
use crate::{Engine, RunError};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Semaphore;

/// What every handler shares: one engine, one controller, the limits and the two gates.
pub struct AppState {
    engine: Engine,
    control: Mutex<ThresholdControl>,
    limits: Limits,
    /// One permit per engine thread: requests beyond wait here, off the blocking pool.
    workers: Arc<Semaphore>,
    /// One permit per request accepted; none left means 503.
    in_flight: Arc<Semaphore>,
}

impl AppState {
    pub fn new(engine: Engine, control: Mutex<ThresholdControl>, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            workers: Arc::new(Semaphore::new(limits.workers)),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            engine,
            control,
            limits,
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/v1/classify", post(classify))
        .route("/v1/model", get(model))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn classify(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    match classify_inner(state, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn classify_inner(state: Arc<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    // Held until the answer is built: counts this request among those in flight.
    let _ticket = state.in_flight.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} requests are already in flight, the limit: retry later", state.limits.max_in_flight),
        )
    })?;
    let body = body.map_err(|e| ApiError::from_rejection(&e, state.limits.max_body_bytes))?;
    let request = request::parse(&body, &state.limits, state.engine.package().tokenizer())?;
    let worker = state.workers.clone().acquire_owned().await.map_err(|_| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down: no engine thread is left")
    })?;
    let shared = state.clone();
    let batch = request.batch;
    let results = tokio::task::spawn_blocking(move || {
        let _worker = worker;
        run(&shared, &request)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the engine's thread failed: {e}")))?;

    if batch {
        let answers: Vec<Value> =
            results.iter().enumerate().map(|(i, r)| Value::Object(json_object(i + 1, r))).collect();
        return Ok(json_response(StatusCode::OK, &json!({ "answers": answers })));
    }
    let Some(result) = results.first() else {
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no answer was computed"));
    };
    // The inputs passed the checks, so a failure here is the model's (non-finite logits) or the backend's.
    let status = if result.is_ok() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    Ok(json_response(status, &Value::Object(json_object(1, result))))
}

/// Runs a checked request's inputs in order, each under the controller; on a blocking thread.
fn run(state: &AppState, request: &ClassifyRequest) -> Vec<Result<crate::Answer, String>> {
    let pair_task = state.engine.manifest().task.is_pair();
    request
        .items
        .iter()
        .map(|item| {
            serving::classify_controlled(&state.control, &state.engine, &item.input(pair_task), log_event)
                .map_err(|e: RunError| e.to_string())
        })
        .collect()
}

/// The controller's moves go to stderr, as stdin `serve`'s do.
fn log_event(event: &ControllerEvent) {
    eprintln!("cosee-edge serve: {event}");
}

async fn model(State(state): State<Arc<AppState>>) -> Response {
    let m = state.engine.manifest();
    let controller = state.control.lock().unwrap_or_else(PoisonError::into_inner).state();
    let body = json!({
        "model": state.engine.package().dir().display().to_string(),
        "task": m.task,
        "labels": m.label_names,
        "num_layers": m.num_layers,
        "hidden_size": m.hidden_size,
        "max_seq_len": m.max_seq_len,
        "signal": m.signal.name,
        "default_threshold": m.default_threshold,
        "calibrated": m.calibration.is_some(),
        "quantization": m.quantization,
        "backend": crate::Backend::name(state.engine.backend()),
        "threshold": controller.threshold,
        "controller": controller,
        "limits": {
            "max_body_bytes": state.limits.max_body_bytes,
            "max_text_bytes": state.limits.max_text_bytes,
            "max_texts": state.limits.max_texts,
            "workers": state.limits.workers,
            "max_in_flight": state.limits.max_in_flight,
        },
    });
    json_response(StatusCode::OK, &body)
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

const ROUTES: &str = "POST /v1/classify, GET /v1/model, GET /healthz";

async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, format!("no route {method} {}: the API has {ROUTES}", uri.path()))
        .into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}: the API has {ROUTES}", uri.path()),
    )
    .into_response()
}
