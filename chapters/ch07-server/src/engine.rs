//! The engine thread. The model runs on one OS thread of its own, never on the async runtime:
//! a step is long, CPU-bound work. HTTP handlers talk to it through a channel of commands; it
//! answers each request through a channel of events. Between steps it takes in new requests and
//! aborts, so requests join and leave the running batch at every iteration.

use ch00_model::{FinishReason, LoadedModel, Model, Request, StepEngine};
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

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
    Add { req: Request, events: mpsc::UnboundedSender<Event>, accepted: oneshot::Sender<Result<(), String>> },
    Abort(u64),
    Stop,
}
// ANCHOR_END: events

/// Builds the step-wise engine over the model, on the engine thread.
pub type MakeStepper = Box<dyn for<'m> FnOnce(&'m Model) -> ch00_model::Result<Box<dyn StepEngine + 'm>> + Send>;

/// The handlers' side of the engine thread. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: std_mpsc::Sender<Command>,
    /// Commands sent but not yet taken in by the engine (part of the waiting queue).
    in_channel: Arc<AtomicUsize>,
    pub metrics: Arc<Metrics>,
    /// Longest prompt + output the engine accepts.
    pub max_len: usize,
}

impl EngineHandle {
    /// Queues a request; its events arrive on the returned channel. An error is the engine's
    /// reason for refusing it (a bad request), or that the engine is gone.
    pub async fn add(&self, req: Request) -> Result<mpsc::UnboundedReceiver<Event>, AddError> {
        let (events, rx) = mpsc::unbounded_channel();
        let (accepted, answer) = oneshot::channel();
        self.in_channel.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(Command::Add { req, events, accepted }).is_err() {
            self.in_channel.fetch_sub(1, Ordering::SeqCst);
            return Err(AddError::Gone);
        }
        match answer.await {
            Ok(Ok(())) => Ok(rx),
            Ok(Err(why)) => Err(AddError::Refused(why)),
            Err(_) => Err(AddError::Gone),
        }
    }

    /// The client went away (or a stop string ended every sample): free its KV memory now.
    pub fn abort(&self, id: u64) {
        let _ = self.tx.send(Command::Abort(id));
    }

    /// Sequences waiting for admission, counting requests still in the channel.
    pub fn waiting(&self) -> usize {
        self.metrics.load().waiting + self.in_channel.load(Ordering::SeqCst)
    }

    /// Tells the engine thread to abort everything left and exit.
    pub fn stop(&self) {
        let _ = self.tx.send(Command::Stop);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddError {
    Refused(String),
    Gone,
}

/// Starts the engine thread over `loaded.model`. Fails if the engine cannot be built.
pub fn spawn_engine(
    loaded: Arc<LoadedModel>,
    make: MakeStepper,
) -> anyhow::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std_mpsc::channel();
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let metrics = Arc::new(Metrics::default());
    let in_channel = Arc::new(AtomicUsize::new(0));
    let (m, counter) = (metrics.clone(), in_channel.clone());
    let thread = std::thread::Builder::new().name("engine".into()).spawn(move || {
        let mut engine = match make(&loaded.model) {
            Ok(e) => e,
            Err(e) => {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
        };
        m.set_load(engine.load(), false);
        let _ = ready_tx.send(Ok(engine.max_len()));
        engine_loop(engine.as_mut(), &rx, &m, &counter);
    })?;
    let max_len = match ready_rx.recv() {
        Ok(Ok(max_len)) => max_len,
        Ok(Err(e)) => anyhow::bail!("the engine could not start: {e}"),
        Err(_) => anyhow::bail!("the engine thread died while starting"),
    };
    Ok((EngineHandle { tx, in_channel, metrics, max_len }, thread))
}

/// A request in flight: where its events go, and how many of its samples are still going.
struct Live {
    events: mpsc::UnboundedSender<Event>,
    samples_left: usize,
}

// ANCHOR: engine_loop
fn engine_loop(engine: &mut dyn StepEngine, rx: &std_mpsc::Receiver<Command>, m: &Metrics, in_channel: &AtomicUsize) {
    let mut live: HashMap<u64, Live> = HashMap::new();
    loop {
        // Idle: sleep until a command comes. Busy: take what has come and go on stepping.
        let mut commands = Vec::new();
        if !engine.has_unfinished() {
            match rx.recv() {
                Ok(c) => commands.push(c),
                Err(_) => return, // every handle is gone
            }
        }
        commands.extend(rx.try_iter());
        for c in commands {
            match c {
                Command::Add { mut req, events, accepted } => {
                    in_channel.fetch_sub(1, Ordering::SeqCst);
                    req.arrival_s = engine.now_s();
                    match engine.add_request(&req) {
                        Ok(()) => {
                            m.added(req.prompt.len());
                            live.insert(req.id, Live { events, samples_left: req.n });
                            let _ = accepted.send(Ok(()));
                        }
                        Err(e) => drop(accepted.send(Err(e.to_string()))),
                    }
                }
                Command::Abort(id) => abort(engine, &mut live, id, m),
                Command::Stop => {
                    let ids: Vec<u64> = live.keys().copied().collect();
                    ids.into_iter().for_each(|id| abort(engine, &mut live, id, m));
                    return;
                }
            }
        }
        if !engine.has_unfinished() {
            m.set_load(engine.load(), false);
            continue;
        }
        let out = match engine.step() {
            Ok(out) => out,
            Err(e) => {
                // A failed step leaves the engine in no state to trust: fail everyone in flight.
                for (id, l) in live.drain() {
                    let _ = l.events.send(Event::Failed(e.to_string()));
                    let _ = engine.abort(id);
                }
                continue;
            }
        };
        // Stream each new token to its request; a closed channel means the client is gone.
        let mut gone = Vec::new();
        for t in &out.tokens {
            if let Some(l) = live.get(&t.id) {
                if l.events.send(Event::Token { sample: t.sample, token: t.token }).is_err() {
                    gone.push(t.id);
                }
            }
        }
        for (_, o) in &out.finished {
            m.finished(o);
            if let Some(l) = live.get_mut(&o.id) {
                let _ = l.events.send(Event::Finished { sample: o.sample, reason: o.finish });
                l.samples_left -= 1;
                if l.samples_left == 0 {
                    live.remove(&o.id);
                }
            }
        }
        gone.into_iter().for_each(|id| abort(engine, &mut live, id, m));
        m.set_load(engine.load(), out.ran);
        if !out.ran {
            std::thread::yield_now(); // nothing could run (cannot happen with arrivals at `now`)
        }
    }
}
// ANCHOR_END: engine_loop

fn abort(engine: &mut dyn StepEngine, live: &mut HashMap<u64, Live>, id: u64, m: &Metrics) {
    if live.remove(&id).is_some() {
        m.aborted();
        let _ = engine.abort(id); // its blocks are free before the next step
    }
}
