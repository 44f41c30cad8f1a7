//! The local HTTP API (feature `http`): `cosee-edge serve --http ADDR`, documented for its users in docs/http.md.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/classify` | `{"text": …}` → the CLI's JSON object; `{"texts": […]}` → `{"answers": [those objects]}` |
//! | `GET /v1/model` | the package's summary, the current τ and the controller's state |
//! | `GET /healthz` | `{"status": "ok"}` |
//!
//! The server is axum on tokio, HTTP/1. Requests are parsed and checked on the async reactor (cheap), and the
//! engine runs on tokio's blocking threads, at most [`Limits::workers`] at once, so that a layer never stalls the
//! reactor and accepting, parsing and refusing go on while the cores compute. Every request goes through the one
//! threshold controller of [`crate::serving`], exactly as stdin `serve`'s lines do. Bounds: the body
//! ([`Limits::max_body_bytes`]), each input ([`Limits::max_text_bytes`], the stdin line cap
//! [`crate::MAX_LINE_BYTES`]), inputs per request ([`Limits::max_texts`]) and requests at once
//! ([`Limits::max_in_flight`], beyond which a request is answered 503 at once instead of queueing without end).
//! Shutdown (SIGTERM, ctrl-c, or [`Server::stop`]) stops accepting and lets the requests in flight finish.

mod error;
mod request;
mod routes;

pub use error::ApiError;
pub use request::{ClassifyRequest, Item};

use crate::serving::ThresholdControl;
use crate::settings::OutOfRange;
use crate::{Engine, MAX_LINE_BYTES};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;

/// How much one server takes at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// The longest input (the two texts of a pair together), bytes of UTF-8 (413 beyond).
    pub max_text_bytes: usize,
    /// Inputs in one `texts` list (413 beyond).
    pub max_texts: usize,
    /// Requests the engine runs at once, each on its own blocking thread.
    pub workers: usize,
    /// Requests accepted at once, running or waiting for a worker (503 beyond).
    pub max_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            // One input at the stdin cap, JSON-escaped (up to 6 bytes per byte for control characters, but text is
            // mostly 1:1), plus room for the object around it.
            max_body_bytes: 4 * MAX_LINE_BYTES,
            max_text_bytes: MAX_LINE_BYTES,
            max_texts: 256,
            workers: cores,
            max_in_flight: 64 * cores,
        }
    }
}

impl Limits {
    /// Every limit must let at least one request through.
    pub fn check(&self) -> Result<(), OutOfRange> {
        for (name, value) in [
            ("max_body_bytes", self.max_body_bytes),
            ("max_text_bytes", self.max_text_bytes),
            ("max_texts", self.max_texts),
            ("workers", self.workers),
            ("max_in_flight", self.max_in_flight),
        ] {
            if value == 0 {
                return Err(OutOfRange::new(name, value, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("--http {0}: expected PORT or IP:PORT (e.g. 8080 or 127.0.0.1:8080)")]
    Address(String),
    #[error(
        "--http {0}: not a loopback address, so other machines could reach this API, which has no authentication; \
         add --allow-remote to listen there anyway"
    )]
    Remote(SocketAddr),
    #[error(transparent)]
    Limit(#[from] OutOfRange),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the server's threads: {0}")]
    Runtime(std::io::Error),
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    #[error("the server's thread panicked")]
    Panicked,
}

/// Where to listen: `PORT` means loopback (`127.0.0.1:PORT`); `IP:PORT` is taken as given, but an address other
/// machines can reach only with `allow_remote`, since the API has no authentication. Port 0 picks a free port.
pub fn listen_addr(spec: &str, allow_remote: bool) -> Result<SocketAddr, HttpError> {
    let addr = match spec.parse::<u16>() {
        Ok(port) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        Err(_) => spec.parse::<SocketAddr>().map_err(|_| HttpError::Address(spec.to_string()))?,
    };
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(HttpError::Remote(addr));
    }
    Ok(addr)
}

/// Serves `engine` on `addr` until `shutdown` completes, then finishes the requests in flight and returns.
/// `on_listening` gets the bound address (the port chosen, for port 0) once the socket accepts connections.
/// Blocks the calling thread; the server's own threads are tokio's.
pub fn serve(
    engine: Engine,
    control: ThresholdControl,
    addr: SocketAddr,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), HttpError> {
    limits.check()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // The reactor only parses, checks and routes: two threads keep it responsive while the engine's blocking
        // threads (bounded by `workers` below, not by tokio) hold the cores.
        .worker_threads(2)
        .thread_name("cosee-http")
        .enable_all()
        .build()
        .map_err(HttpError::Runtime)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(|source| HttpError::Bind { addr, source })?;
        let app = routes::router(routes::AppState::new(engine, Mutex::new(control), limits));
        on_listening(bound);
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(HttpError::Serve)
    })
}

/// Completes on SIGTERM or ctrl-c (SIGINT): what `cosee-edge serve --http` stops on.
pub async fn shutdown_signal() {
    let interrupt = async {
        // Without a handler ctrl-c keeps its default action (the process ends), so an error here loses nothing.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

/// A server on its own thread, for programs and tests that embed one: [`Server::start`] returns once it listens.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), HttpError>>>,
}

impl Server {
    /// Binds `addr` and serves on a new thread; returns the running server, or why it could not start.
    pub fn start(
        engine: Engine,
        control: ThresholdControl,
        addr: SocketAddr,
        limits: Limits,
    ) -> Result<Self, HttpError> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cosee-http-server".into())
            .spawn(move || {
                // A dropped sender (the handle dropped without stop) also stops the server.
                let shutdown = async move {
                    let _ = stopped.await;
                };
                serve(engine, control, addr, limits, shutdown, |bound| {
                    let _ = bound_tx.send(bound);
                })
            })
            .map_err(HttpError::Runtime)?;
        match bound_rx.recv() {
            Ok(addr) => Ok(Self { addr, stop: Some(stop), thread: Some(thread) }),
            // The thread ended before listening: its result says why.
            Err(_) => Err(thread.join().map_err(|_| HttpError::Panicked)?.err().unwrap_or(HttpError::Panicked)),
        }
    }

    /// The address it listens on (with the port chosen for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections, waits for the requests in flight to be answered, and returns the server's
    /// result.
    pub fn stop(mut self) -> Result<(), HttpError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), HttpError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| HttpError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}

/// A JSON body with its status.
fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
