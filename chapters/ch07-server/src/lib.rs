//! Chapter 7: the step-wise engine behind an OpenAI-compatible HTTP server. The engine runs on a
//! thread of its own ([`engine`]); axum handlers ([`routes`]) parse requests, queue them, and
//! stream each token back as it is produced. [`loadgen`] measures any such server.
//!
//! [`api`] is the OpenAI request and response shapes, [`chat`] the chat template, [`text`] the
//! incremental detokenizer and stop strings, [`error`] the JSON errors, [`metrics`] `/metrics`,
//! [`client`] a small HTTP client (tests and loadgen), [`fault`] the engines of the fault suite.

pub mod api;
pub mod chat;
pub mod client;
pub mod engine;
pub mod error;
pub mod fault;
pub mod loadgen;
pub mod metrics;
pub mod routes;
pub mod text;

pub use chat::ChatTemplate;
pub use engine::{spawn_engine, EngineHandle, MakeStepper};
pub use error::ApiError;
pub use routes::{AppState, Shared};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use ch00_model::LoadedModel;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Server settings beyond the engine's.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub model_name: String,
    pub chat: Option<ChatTemplate>,
    /// Waiting sequences beyond which new requests get 429.
    pub max_waiting: usize,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// After a shutdown signal, how long in-flight requests may take to finish.
    pub grace: Duration,
    /// After the engine dies, how long the server goes on answering (`/health` 503 with the
    /// reason, requests 503) before it shuts down and [`serve`] returns the error.
    pub dead_linger: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            model_name: "kvserve".into(),
            chat: None,
            max_waiting: 256,
            max_body_bytes: 1 << 20,
            grace: Duration::from_secs(30),
            dead_linger: Duration::from_secs(2),
        }
    }
}

// ANCHOR: router
/// The routes of the OpenAI-compatible API.
/// Bodies are read by the handlers themselves, against `AppState::max_body_bytes` (a 413 JSON
/// error that states the limit).
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/completions", post(routes::completions))
        .route("/v1/chat/completions", post(routes::chat_completions))
        .route("/v1/models", get(routes::models))
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}
// ANCHOR_END: router

/// A running server's state, for tests and the CLI.
pub fn app_state(engine: EngineHandle, model: Arc<LoadedModel>, cfg: &ServerConfig) -> Shared {
    Arc::new(AppState {
        engine,
        model,
        model_name: cfg.model_name.clone(),
        chat: cfg.chat.clone(),
        max_waiting: cfg.max_waiting,
        max_body_bytes: cfg.max_body_bytes,
        shutting_down: AtomicBool::new(false),
        next_id: AtomicU64::new(0),
    })
}

// ANCHOR: serve
/// Serves on `listener` until `shutdown` resolves; then stops accepting, lets in-flight requests
/// finish for up to `cfg.grace`, aborts what is left and stops the engine thread.
///
/// If the engine dies instead, the server answers 503 for `cfg.dead_linger` (so health checks see
/// why), shuts down the same way and returns the engine's error: `kvserve serve` exits non-zero
/// and a supervisor restarts it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    cfg: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(state.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (st, linger) = (state.clone(), cfg.dead_linger);
    let signal = async move {
        let engine = st.engine.clone();
        tokio::select! {
            _ = shutdown => {}
            _ = async { engine.died().await; tokio::time::sleep(linger).await } => {}
        }
        st.shutting_down.store(true, Ordering::SeqCst); // new requests on open connections: 503
        let _ = tx.send(());
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let grace = cfg.grace;
    let deadline = async move {
        let _ = rx.await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = server => r?,
        _ = deadline => {} // in-flight requests took too long: they are aborted below
    }
    state.engine.stop();
    match state.engine.dead() {
        Some(why) => anyhow::bail!("{why}"),
        None => Ok(()),
    }
}
// ANCHOR_END: serve

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => drop(s.recv().await),
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
