//! The `Engine` trait: what every stage implements, from chapter 1's naive loop to chapter 6's
//! GPU engine. A whole workload in, every request's tokens and timings out; batching engines
//! can also be driven step by step.

use crate::serving::{Request, RunOptions, RunOutput};
use crate::stepwise::StepEngine;
use ch00_model::{Model, ModelError, Result};

// ANCHOR: engine
/// A serving engine: takes a workload, returns every request's tokens and timings.
pub trait Engine {
    fn name(&self) -> &'static str;
    fn run(&mut self, model: &Model, requests: &[Request], opts: &RunOptions) -> Result<RunOutput>;
    /// This engine with these settings, driven step by step over `model` (what a server runs).
    /// Engines that only run whole workloads answer with an error.
    fn stepper<'m>(&self, model: &'m Model) -> Result<Box<dyn StepEngine + 'm>> {
        let _ = model;
        let msg = format!("{} cannot be driven step by step (no server for it)", self.name());
        Err(ModelError::InvalidSettings(msg))
    }
}
// ANCHOR_END: engine
