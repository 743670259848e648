//! Chapter 4: continuous (iteration-level) batching. The scheduler decides at every step: finished
//! requests leave, and waiting requests that have arrived take the free slots (prefill) and join
//! the decode batch at once. Nobody waits for the longest request of someone else's batch.
//!
//! [`scheduler`] is the policy, a pure data structure; [`engine`] runs the model on its plans;
//! [`budget`] turns a KV memory budget into a number of slots.

pub mod budget;
pub mod engine;
pub mod scheduler;

pub use budget::slots_for_budget;
pub use engine::{ContinuousBatchEngine, ContinuousCore, SlotBudget};
pub use scheduler::{default_max_tokens_per_step, Admit, Decode, Pending, Scheduler, SchedulerConfig, StepPlan};
