//! Chapter 5: PagedAttention. KV memory is cut into fixed-size blocks handed out on demand from
//! one pool; each sequence has a block table mapping its positions onto blocks, as a page table
//! maps virtual pages onto physical frames. Admission is decided by free blocks, a finished
//! request's blocks are free at once, and when the pool runs dry a sequence is preempted and
//! recomputed later.
//!
//! [`allocator`] hands out blocks, [`block_table`] maps positions to them, [`kv_pool`] stores
//! them, [`backend`] is the attention over them, [`scheduler`] is the policy (model-free, also
//! driven by the capacity accounting), [`prefix`] shares full blocks between equal prefixes, [`lru`]
//! keeps finished requests' full blocks for later hits until the pool needs them, and [`engine`]
//! runs the model on the scheduler's plans.

pub mod accounting;
pub mod allocator;
pub mod backend;
pub mod block_table;
pub mod engine;
pub mod kv_pool;
pub mod lru;
pub mod prefix;
pub mod runner;
pub mod scheduler;

pub use accounting::{simulate_blocks, simulate_slots, MemSeries, MemStep};
pub use allocator::BlockAllocator;
pub use backend::PagedBackend;
pub use block_table::{blocks_for, locate, BlockId};
pub use engine::{blocks_for_budget, CpuRunner, KvBudget, PagedEngine};
pub use runner::{run_paged, PagedCore, PagedRunner};
pub use kv_pool::PagedKvPool;
pub use lru::Lru;
pub use prefix::{block_hash, PrefixCache, PrefixCacheStats};
pub use scheduler::{chunk_shares, BlockScheduler, Plan, SchedulerConfig, SchedulerStats, Work};
