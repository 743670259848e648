//! The HTTP side: parse and check a request, hand it to the engine thread, and send its tokens
//! back as they come — as server-sent events when `stream` is set, as one JSON body otherwise.

use crate::api::{ChatChoice, ChatCompletion, ChatRequest, Choice, Completion, CompletionRequest, Message, Prompt, SamplingFields, Usage};
use crate::chat::ChatTemplate;
use crate::engine::{AddError, Admission, EngineHandle, Event};
use crate::error::ApiError;
use crate::text::{Assembler, Delta};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ch00_model::{LoadedModel, SamplingParams};
use ch00_serving::{Request, MAX_SAMPLES};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Everything a handler needs.
pub struct AppState {
    pub engine: EngineHandle,
    pub model: Arc<LoadedModel>,
    /// The name clients use in `model` (`/v1/models` lists it).
    pub model_name: String,
    pub chat: Option<ChatTemplate>,
    /// More requests admitted and not yet started than this: 429.
    pub max_waiting: usize,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    pub shutting_down: AtomicBool,
    pub next_id: AtomicU64,
}

pub type Shared = Arc<AppState>;

// ANCHOR: read_body
/// Bodies over the limit are still read (and dropped) up to this many bytes, so that the client
/// finishes sending and reads the 413; closing the connection on it mid-upload would reset it.
const DRAIN_LIMIT: usize = 64 << 20;

/// The request body, or a 413 that states the limit.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = |got: &str| ApiError::too_large(format!("request body too large: {got}; the limit is {limit} bytes"));
    let mut body = body;
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue }; // trailers
        total = total.saturating_add(data.len());
        if total <= limit {
            buf.extend_from_slice(&data);
        } else if total > DRAIN_LIMIT.max(limit) {
            return Err(too_large(&format!("over {total} bytes")));
        }
    }
    if total > limit {
        return Err(too_large(&format!("{total} bytes")));
    }
    Ok(Bytes::from(buf))
}
// ANCHOR_END: read_body

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// The checks every generation request passes before any work is done for it: the model name,
/// the fields this server does not implement, the engine's health, and an admission slot.
fn precheck(st: &AppState, model: Option<&str>, f: &SamplingFields) -> Result<Admission, ApiError> {
    if let Some(m) = model.filter(|m| *m != st.model_name) {
        return Err(ApiError::model_not_found(m, &st.model_name));
    }
    if let Some((param, why)) = f.unsupported() {
        return Err(ApiError::unsupported(param, why));
    }
    if let Some(why) = st.engine.dead() {
        return Err(ApiError::unavailable(format!("the engine is down ({why}); the server is exiting")));
    }
    if st.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    // Backpressure: refuse at the door rather than queue without bound.
    st.engine
        .admit(st.max_waiting)
        .map_err(|waiting| ApiError::busy(format!("{waiting} requests are already waiting (the limit is {}); retry later", st.max_waiting)))
}

/// Runs tokenizer work on tokio's blocking pool: a long prompt must not stall the async workers
/// that stream everyone's tokens.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
}

pub async fn completions(State(st): State<Shared>, body: Body) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(&read_body(body, st.max_body_bytes).await?)?;
    let slot = precheck(&st, req.model.as_deref(), &req.sampling)?;
    let prompt = match req.prompt {
        Prompt::Text(t) => {
            let m = st.model.clone();
            blocking(move || m.encode(&t).map_err(|e| ApiError::bad_request(e.to_string()))).await?
        }
        Prompt::Ids(ids) => ids,
    };
    generate(st, slot, prompt, req.sampling, Kind::Completion).await
}

pub async fn chat_completions(State(st): State<Shared>, body: Body) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(&read_body(body, st.max_body_bytes).await?)?;
    let Some(chat) = st.chat.clone() else {
        return Err(ApiError::bad_request(format!(
            "{} has no chat template (tokenizer_config.json `chat_template`); use /v1/completions",
            st.model_name
        )));
    };
    let slot = precheck(&st, req.model.as_deref(), &req.sampling)?;
    let (m, messages) = (st.model.clone(), req.messages);
    let prompt = blocking(move || {
        let text = chat.render(&messages).map_err(ApiError::bad_request)?;
        chat.encode(&m, &text).map_err(|e| ApiError::bad_request(e.to_string()))
    })
    .await?;
    generate(st, slot, prompt, req.sampling, Kind::Chat).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

// ANCHOR: validate
/// The engine request for `prompt` and the client's fields, or the 400 that says what is wrong.
fn to_request(st: &AppState, prompt: Vec<u32>, f: &SamplingFields) -> Result<Request, ApiError> {
    let max_len = st.engine.max_len;
    let max_tokens = f.max_tokens.unwrap_or(16);
    let n = f.n.unwrap_or(1);
    if prompt.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty"));
    }
    if max_tokens == 0 {
        return Err(ApiError::bad_request("max_tokens must be at least 1"));
    }
    if !(1..=MAX_SAMPLES).contains(&n) {
        return Err(ApiError::bad_request(format!("n must be in 1..={MAX_SAMPLES}")));
    }
    if prompt.len().saturating_add(max_tokens) > max_len {
        return Err(ApiError::context_length(format!(
            "this model's maximum context length is {max_len} tokens; you asked for {} ({} in the prompt, {max_tokens} to generate)",
            prompt.len().saturating_add(max_tokens),
            prompt.len()
        )));
    }
    let id = st.next_id.fetch_add(1, Ordering::SeqCst);
    let sampling = SamplingParams {
        temperature: f.temperature.unwrap_or(1.0),
        top_k: 0,
        top_p: f.top_p.unwrap_or(1.0),
        seed: f.seed.unwrap_or(id),
    };
    sampling.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
    let req = Request { sampling, n, ignore_eos: f.ignore_eos, ..Request::greedy(id, prompt, max_tokens) };
    Ok(req)
}
// ANCHOR_END: validate

// ANCHOR: generate
async fn generate(st: Shared, slot: Admission, prompt: Vec<u32>, f: SamplingFields, kind: Kind) -> Result<Response, ApiError> {
    let req = to_request(&st, prompt, &f)?;
    let (id, n, prompt_tokens) = (req.id, req.n, req.prompt.len());
    let events = st.engine.add(req, slot).await.map_err(|e| match e {
        AddError::Refused(why) => ApiError::bad_request(why),
        AddError::Busy => ApiError::busy("the engine's command queue is full; retry later"),
        AddError::Dead(why) => ApiError::unavailable(why),
    })?;
    // Dropped with the handler or the stream (a client that went away): aborts the request.
    let guard = AbortOnDrop { engine: st.engine.clone(), id, armed: true };
    let reply = Reply { st: st.clone(), id: format!("cmpl-{id}"), kind, created: unix_now(), prompt_tokens };
    let stops = f.stop.strings();
    if !f.stream {
        return reply.whole(events, guard, n, stops, f.return_token_ids).await;
    }
    let include_usage = f.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(reply.stream(events, guard, n, stops, f.return_token_ids, include_usage, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    let headers = [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")];
    Ok((headers, Body::from_stream(body)).into_response())
}
// ANCHOR_END: generate

/// Aborts request `id` in the engine when dropped: a client gone mid-request, or stop strings
/// that ended samples early. Disarmed when the engine itself finished every sample.
struct AbortOnDrop {
    engine: EngineHandle,
    id: u64,
    armed: bool,
}

impl AbortOnDrop {
    /// The request is over: abort it only if a stop string ended a sample the engine still runs.
    fn finish(mut self, text: &Assembler) {
        self.armed = text.stopped_early();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.engine.abort(self.id);
        }
    }
}

/// Builds the responses of one request.
struct Reply {
    st: Shared,
    id: String,
    kind: Kind,
    created: u64,
    prompt_tokens: usize,
}

impl Reply {
    fn usage(&self, completion_tokens: usize) -> Usage {
        let prompt_tokens = self.prompt_tokens;
        Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
    }

    async fn whole(
        self,
        mut events: mpsc::Receiver<Event>,
        guard: AbortOnDrop,
        n: usize,
        stops: Vec<String>,
        ids: bool,
    ) -> Result<Response, ApiError> {
        let mut text = Assembler::new(&self.st.model, n, stops);
        while !text.done() {
            let ev = events.recv().await.ok_or_else(|| ApiError::unavailable("the engine stopped"))?;
            text.on_event(ev).map_err(ApiError::unavailable)?;
        }
        guard.finish(&text); // ended by stop strings: free the blocks now
        let usage = Some(self.usage(text.completion_tokens()));
        let texts = text.texts();
        let body = match self.kind {
            Kind::Completion => {
                let choices = texts
                    .into_iter()
                    .enumerate()
                    .map(|(index, (text, token_ids, fin))| Choice {
                        index,
                        text,
                        logprobs: None,
                        finish_reason: Some(fin.to_string()),
                        token_ids: ids.then_some(token_ids),
                    })
                    .collect();
                serde_json::to_value(self.completion(choices, usage))
            }
            Kind::Chat => {
                let choices = texts
                    .into_iter()
                    .enumerate()
                    .map(|(index, (content, _, fin))| ChatChoice {
                        index,
                        message: Some(Message { role: "assistant".into(), content }),
                        delta: None,
                        logprobs: None,
                        finish_reason: Some(fin.to_string()),
                    })
                    .collect();
                serde_json::to_value(self.chat(choices, usage))
            }
        };
        Ok(Json(body.map_err(|e| ApiError::unavailable(e.to_string()))?).into_response())
    }

    // ANCHOR: stream
    #[allow(clippy::too_many_arguments)]
    async fn stream(
        self,
        mut events: mpsc::Receiver<Event>,
        guard: AbortOnDrop,
        n: usize,
        stops: Vec<String>,
        ids: bool,
        include_usage: bool,
        tx: mpsc::Sender<Bytes>,
    ) {
        let mut text = Assembler::new(&self.st.model, n, stops);
        if self.kind == Kind::Chat {
            for index in 0..n {
                let role = serde_json::json!({ "role": "assistant", "content": "" });
                let _ = tx.send(sse(&self.chat_chunk(index, role, None))).await;
            }
        }
        while !text.done() {
            let ev = tokio::select! {
                ev = events.recv() => ev,
                _ = tx.closed() => return, // the client went away: `guard` aborts the request
            };
            let delta = match ev.map(|ev| text.on_event(ev)) {
                Some(Ok(Some(d))) => d,
                Some(Ok(None)) => continue,
                Some(Err(why)) => {
                    let _ = tx.send(sse(&ApiError::unavailable(why).body())).await;
                    break;
                }
                None => {
                    // Aborted by a shutdown past its grace period, or an engine gone.
                    let why = "the engine stopped before this request finished";
                    let _ = tx.send(sse(&ApiError::unavailable(why).body())).await;
                    break;
                }
            };
            let chunk = match self.kind {
                Kind::Completion => sse(&self.completion_chunk(delta, ids)),
                Kind::Chat => {
                    let content = serde_json::json!({ "content": delta.text });
                    sse(&self.chat_chunk(delta.index, content, delta.finish))
                }
            };
            if tx.send(chunk).await.is_err() {
                return; // the client went away
            }
        }
        guard.finish(&text); // ended by stop strings: free the blocks now
        if include_usage {
            let usage = Some(self.usage(text.completion_tokens()));
            let last = match self.kind {
                Kind::Completion => serde_json::to_value(self.completion(Vec::new(), usage)),
                Kind::Chat => serde_json::to_value(self.chat(Vec::new(), usage)),
            };
            let _ = tx.send(sse(&last.unwrap_or_default())).await;
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    }
    // ANCHOR_END: stream

    fn completion(&self, choices: Vec<Choice>, usage: Option<Usage>) -> Completion {
        let (id, created, model) = (self.id.clone(), self.created, self.st.model_name.clone());
        Completion { id, object: "text_completion".into(), created, model, choices, usage }
    }

    fn completion_chunk(&self, d: Delta, ids: bool) -> Completion {
        let choice = Choice {
            index: d.index,
            text: d.text,
            logprobs: None,
            finish_reason: d.finish.map(str::to_string),
            token_ids: ids.then_some(d.token_ids),
        };
        self.completion(vec![choice], None)
    }

    fn chat(&self, choices: Vec<ChatChoice>, usage: Option<Usage>) -> ChatCompletion {
        let (id, created, model) = (self.id.replace("cmpl", "chatcmpl"), self.created, self.st.model_name.clone());
        let object = if choices.iter().any(|c| c.delta.is_some()) { "chat.completion.chunk" } else { "chat.completion" };
        ChatCompletion { id, object: object.into(), created, model, choices, usage }
    }

    fn chat_chunk(&self, index: usize, delta: serde_json::Value, finish: Option<&str>) -> ChatCompletion {
        let choice =
            ChatChoice { index, message: None, delta: Some(delta), logprobs: None, finish_reason: finish.map(str::to_string) };
        self.chat(vec![choice], None)
    }
}

fn sse<T: serde::Serialize>(v: &T) -> Bytes {
    Bytes::from(format!("data: {}\n\n", serde_json::to_string(v).unwrap_or_default()))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub async fn models(State(st): State<Shared>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "object": "list",
        "data": [{
            "id": st.model_name, "object": "model", "created": 0, "owned_by": "kvserve",
            "max_model_len": st.engine.max_len, "vocab_size": st.model.model.config.vocab_size,
        }],
    }))
}

// ANCHOR: health
/// 200 `{"status": "ok"}` while the engine steps; 503 with the reason once it has died or the
/// server is shutting down, so a load balancer or supervisor takes it out of service.
pub async fn health(State(st): State<Shared>) -> Response {
    let (status, body) = match (st.engine.dead(), st.shutting_down.load(Ordering::SeqCst)) {
        (Some(why), _) => (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "status": "engine_dead", "reason": why })),
        (None, true) => (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "status": "shutting_down" })),
        (None, false) => (StatusCode::OK, serde_json::json!({ "status": "ok" })),
    };
    (status, Json(body)).into_response()
}
// ANCHOR_END: health

pub async fn metrics(State(st): State<Shared>) -> Response {
    let headers = [(header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    (headers, st.engine.metrics.render()).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route; try POST /v1/completions")
}
