//! The engine thread. The model runs on one OS thread of its own, never on the async runtime:
//! a step is long, CPU-bound work. HTTP handlers talk to it through a bounded channel of
//! commands; it answers each request through a channel of events. Between steps it takes in new
//! requests and aborts, so requests join and leave the running batch at every iteration.
//!
//! Everything the thread keeps per request (its entry in `live`) leaves with the request, and
//! every queue is bounded by construction:
//! - adds wait in the command channel only after taking one of `--max-waiting` admission slots
//!   ([`EngineHandle::admit`]), so there are never more of them than that;
//! - aborts wait in a list of at most one entry per request in flight;
//! - a request's event channel has room for every event the request can produce (its tokens, its
//!   finishes, one failure), so the engine never blocks on a slow client and never drops an
//!   event: a slow reader holds at most its own request's tokens, and slows only its own stream.
//!
//! A step error or a panic on the thread marks the engine dead: every request in flight gets
//! [`Event::Failed`], the thread stops stepping, and [`EngineHandle::dead`] gives the reason
//! (`/health` answers 503 with it, new requests get 503).

use ch00_model::{LoadedModel, Model};
use ch00_serving::{FinishReason, Request, StepEngine};
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};

/// Commands that may wait in the channel (adds are also capped by the admission slots).
pub const COMMAND_QUEUE: usize = 1024;

// ANCHOR: events
/// What the engine tells a request's handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Token { sample: usize, token: u32 },
    Finished { sample: usize, reason: FinishReason },
    /// The engine failed; the request is over.
    Failed(String),
}

enum Command {
    Add { req: Request, events: mpsc::Sender<Event>, accepted: oneshot::Sender<Result<(), String>> },
    /// Nothing to do but look at the abort list and the stop flag.
    Wake,
}
// ANCHOR_END: events

/// Builds the step-wise engine over the model, on the engine thread.
pub type MakeStepper = Box<dyn for<'m> FnOnce(&'m Model) -> ch00_model::Result<Box<dyn StepEngine + 'm>> + Send>;

/// State both sides of the engine thread see.
struct SharedState {
    /// Admission slots taken: requests accepted by a handler whose first token has not come yet.
    queued: AtomicUsize,
    /// Requests to abort, at most one entry per request in flight.
    aborts: Mutex<Vec<u64>>,
    stop: AtomicBool,
}

/// The handlers' side of the engine thread. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: std_mpsc::SyncSender<Command>,
    shared: Arc<SharedState>,
    dead: watch::Receiver<Option<String>>,
    pub metrics: Arc<Metrics>,
    /// Longest prompt + output the engine accepts.
    pub max_len: usize,
}

/// An admission slot: held from the 429 check until the engine has the request. Dropped without
/// [`EngineHandle::add`] taking it (a bad request found later), it gives the slot back.
pub struct Admission {
    shared: Arc<SharedState>,
    armed: bool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.armed {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl EngineHandle {
    // ANCHOR: admit
    /// Takes one of `max_waiting` admission slots, or says how many are taken. One atomic
    /// compare-and-swap: no interleaving of handlers admits more than `max_waiting`.
    pub fn admit(&self, max_waiting: usize) -> Result<Admission, usize> {
        self.shared
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| (q < max_waiting).then_some(q + 1))
            .map(|_| Admission { shared: self.shared.clone(), armed: true })
    }
    // ANCHOR_END: admit

    /// Queues an admitted request; its events arrive on the returned channel. An error is the
    /// engine's reason for refusing it (a bad request), or that the engine is gone or busy.
    pub async fn add(&self, req: Request, mut slot: Admission) -> Result<mpsc::Receiver<Event>, AddError> {
        if let Some(why) = self.dead() {
            return Err(AddError::Dead(why));
        }
        // Room for every event the request can produce: the engine never waits on this channel.
        let room = req.max_new_tokens.saturating_mul(req.n).saturating_add(req.n).saturating_add(1);
        let (events, rx) = mpsc::channel(room.min(tokio::sync::Semaphore::MAX_PERMITS));
        let (accepted, answer) = oneshot::channel();
        match self.tx.try_send(Command::Add { req, events, accepted }) {
            Ok(()) => slot.armed = false, // the engine gives the slot back from now on
            Err(std_mpsc::TrySendError::Full(_)) => return Err(AddError::Busy),
            Err(std_mpsc::TrySendError::Disconnected(_)) => return Err(self.gone()),
        }
        match answer.await {
            Ok(Ok(())) => Ok(rx),
            Ok(Err(why)) => Err(AddError::Refused(why)),
            Err(_) => Err(self.gone()),
        }
    }

    fn gone(&self) -> AddError {
        AddError::Dead(self.dead().unwrap_or_else(|| "the engine has stopped".into()))
    }

    /// The client went away (or a stop string ended every sample): free its KV memory now.
    pub fn abort(&self, id: u64) {
        self.shared.aborts.lock().unwrap_or_else(|e| e.into_inner()).push(id);
        let _ = self.tx.try_send(Command::Wake); // full: the engine is busy and will look anyway
    }

    /// Requests admitted and not started yet (what `--max-waiting` limits).
    pub fn waiting(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    /// Why the engine died, if it has.
    pub fn dead(&self) -> Option<String> {
        self.dead.borrow().clone()
    }

    /// Resolves when the engine dies, with the reason; never, if it stops normally.
    pub async fn died(&self) -> String {
        let mut rx = self.dead.clone();
        let why = rx.wait_for(Option::is_some).await.map(|why| why.clone().unwrap_or_default());
        match why {
            Ok(why) => why,
            Err(_) => std::future::pending().await, // stopped normally
        }
    }

    /// Tells the engine thread to abort everything left and exit.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(Command::Wake);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddError {
    /// The engine refused the request (a bad request: 400).
    Refused(String),
    /// The command queue is full (429).
    Busy,
    /// The engine has died or stopped (503), and why.
    Dead(String),
}

/// Starts the engine thread over `loaded.model`. Fails if the engine cannot be built.
pub fn spawn_engine(
    loaded: Arc<LoadedModel>,
    make: MakeStepper,
) -> anyhow::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std_mpsc::sync_channel(COMMAND_QUEUE);
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (dead_tx, dead) = watch::channel(None);
    let metrics = Arc::new(Metrics::default());
    let shared = Arc::new(SharedState { queued: AtomicUsize::new(0), aborts: Mutex::new(Vec::new()), stop: AtomicBool::new(false) });
    let (m, sh) = (metrics.clone(), shared.clone());
    let thread = std::thread::Builder::new().name("engine".into()).spawn(move || {
        let built = std::panic::catch_unwind(AssertUnwindSafe(|| make(&loaded.model)));
        let mut engine = match built {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => return drop(ready_tx.send(Err(e.to_string()))),
            Err(p) => return drop(ready_tx.send(Err(format!("panicked: {}", panic_message(&*p))))),
        };
        m.set_load(engine.load(), false);
        let _ = ready_tx.send(Ok(engine.max_len()));
        let mut live = Live::default();
        // ANCHOR: liveness
        let why = match std::panic::catch_unwind(AssertUnwindSafe(|| engine_loop(engine.as_mut(), &rx, &m, &sh, &mut live))) {
            Ok(Ok(())) => None,
            Ok(Err(step_error)) => Some(format!("the engine failed: {step_error}")),
            Err(p) => Some(format!("the engine thread panicked: {}", panic_message(&*p))),
        };
        if let Some(why) = why {
            // The engine is in no state to trust: tell everyone in flight, then stop for good.
            m.died();
            let _ = dead_tx.send(Some(why.clone()));
            for (_, r) in live.requests.drain() {
                let _ = r.events.try_send(Event::Failed(why.clone()));
            }
            drop(rx); // adds still queued see a closed channel and get 503 with the reason
        }
        // ANCHOR_END: liveness
        live.publish(&m, &sh);
    })?;
    let max_len = match ready_rx.recv() {
        Ok(Ok(max_len)) => max_len,
        Ok(Err(e)) => anyhow::bail!("the engine could not start: {e}"),
        Err(_) => anyhow::bail!("the engine thread died while starting"),
    };
    Ok((EngineHandle { tx, shared, dead, metrics, max_len }, thread))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(no message)".into())
}

/// A request in flight: where its events go, how many of its samples are still going, and
/// whether it still holds an admission slot (no token yet).
struct LiveRequest {
    events: mpsc::Sender<Event>,
    samples_left: usize,
    queued: bool,
}

/// The engine thread's only per-request record; an entry leaves when its request does.
#[derive(Default)]
struct Live {
    requests: HashMap<u64, LiveRequest>,
}

impl Live {
    /// Removes request `id`, giving back its admission slot if it still held one.
    fn remove(&mut self, id: u64, sh: &SharedState) -> bool {
        match self.requests.remove(&id) {
            Some(r) => {
                if r.queued {
                    sh.queued.fetch_sub(1, Ordering::SeqCst);
                }
                true
            }
            None => false,
        }
    }

    fn publish(&self, m: &Metrics, sh: &SharedState) {
        let aborts = sh.aborts.lock().unwrap_or_else(|e| e.into_inner()).len();
        m.set_server(self.requests.len(), sh.queued.load(Ordering::SeqCst), aborts);
    }
}

// ANCHOR: engine_loop
fn engine_loop(
    engine: &mut dyn StepEngine,
    rx: &std_mpsc::Receiver<Command>,
    m: &Metrics,
    sh: &SharedState,
    live: &mut Live,
) -> ch00_model::Result<()> {
    loop {
        // Idle: sleep until a command comes. Busy: take what has come and go on stepping.
        if !engine.has_unfinished() {
            live.publish(m, sh);
            match rx.recv() {
                Ok(c) => take(engine, c, m, sh, live),
                Err(_) => return Ok(()), // every handle is gone
            }
        }
        while let Ok(c) = rx.try_recv() {
            take(engine, c, m, sh, live);
        }
        let aborts = std::mem::take(&mut *sh.aborts.lock().unwrap_or_else(|e| e.into_inner()));
        for id in aborts {
            abort(engine, live, id, m, sh);
        }
        if sh.stop.load(Ordering::SeqCst) {
            let ids: Vec<u64> = live.requests.keys().copied().collect();
            ids.into_iter().for_each(|id| abort(engine, live, id, m, sh));
            return Ok(());
        }
        if !engine.has_unfinished() {
            m.set_load(engine.load(), false);
            continue;
        }
        let out = engine.step()?; // a failed step: the caller fails everyone in flight
        // Stream each new token to its request; a closed channel means the client is gone.
        let mut gone = Vec::new();
        for t in &out.tokens {
            if let Some(r) = live.requests.get_mut(&t.id) {
                if std::mem::take(&mut r.queued) {
                    sh.queued.fetch_sub(1, Ordering::SeqCst); // started: its admission slot is free
                }
                if r.events.try_send(Event::Token { sample: t.sample, token: t.token }).is_err() {
                    gone.push(t.id); // closed (never full: the channel has room for every event)
                }
            }
        }
        for (_, o) in &out.finished {
            m.finished(o);
            if let Some(r) = live.requests.get_mut(&o.id) {
                let _ = r.events.try_send(Event::Finished { sample: o.sample, reason: o.finish });
                r.samples_left = r.samples_left.saturating_sub(1);
                if r.samples_left == 0 {
                    live.remove(o.id, sh);
                }
            }
        }
        gone.into_iter().for_each(|id| abort(engine, live, id, m, sh));
        m.set_load(engine.load(), out.ran.is_some());
        live.publish(m, sh);
        if out.ran.is_none() {
            std::thread::yield_now(); // nothing could run (cannot happen with arrivals at `now`)
        }
    }
}
// ANCHOR_END: engine_loop

fn take(engine: &mut dyn StepEngine, c: Command, m: &Metrics, sh: &SharedState, live: &mut Live) {
    let Command::Add { mut req, events, accepted } = c else { return };
    req.arrival_s = engine.now_s();
    match engine.add_request(&req) {
        Ok(()) => {
            m.added(req.prompt.len());
            live.requests.insert(req.id, LiveRequest { events, samples_left: req.n, queued: true });
            let _ = accepted.send(Ok(()));
        }
        Err(e) => {
            sh.queued.fetch_sub(1, Ordering::SeqCst);
            let _ = accepted.send(Err(e.to_string()));
        }
    }
}

fn abort(engine: &mut dyn StepEngine, live: &mut Live, id: u64, m: &Metrics, sh: &SharedState) {
    if live.remove(id, sh) {
        m.aborted();
        let _ = engine.abort(id); // its blocks are free before the next step
    }
}
