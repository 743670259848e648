//! Chapter 7: the step-wise engine behind an OpenAI-compatible HTTP server. The engine runs on a
//! thread of its own ([`engine`]); axum handlers ([`routes`]) parse requests, queue them, and
//! stream each token back as it is produced. [`loadgen`] measures any such server.

pub mod api;
pub mod chat;
pub mod client;
pub mod engine;
pub mod error;
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            model_name: "kvserve".into(),
            chat: None,
            max_waiting: 256,
            max_body_bytes: 1 << 20,
            grace: Duration::from_secs(30),
        }
    }
}

// ANCHOR: router
/// The routes of the OpenAI-compatible API.
pub fn router(state: Shared, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/completions", post(routes::completions))
        .route("/v1/chat/completions", post(routes::chat_completions))
        .route("/v1/models", get(routes::models))
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
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
        shutting_down: AtomicBool::new(false),
        next_id: AtomicU64::new(0),
    })
}

// ANCHOR: serve
/// Serves on `listener` until `shutdown` resolves; then stops accepting, lets in-flight requests
/// finish for up to `cfg.grace`, aborts what is left and stops the engine thread.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    cfg: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(state.clone(), cfg.max_body_bytes);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let st = state.clone();
    let signal = async move {
        shutdown.await;
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
    Ok(())
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
