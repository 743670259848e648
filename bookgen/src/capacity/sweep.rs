//! The accounting run again at several `max_len`s (chapter 5): contiguous slots reserve `max_len`
//! tokens per request, blocks hold what each request has, so the concurrency ratio follows
//! `max_len` ÷ the mean sequence length of the workload, not anything about paging itself.

use crate::capacity::run::accounting_run;
use crate::capacity::spec::AccountingSpec;
use anyhow::Result;
use std::fmt::Write;

/// One `max_len` of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRow {
    pub max_len: usize,
    pub slots: usize,
    pub contiguous_running: f64,
    pub paged_running: f64,
    pub ratio: f64,
    /// `max_len` ÷ the mean final length (prompt + output) of the workload's requests.
    pub closed_form: f64,
}

/// The default accounting spec (the card model's 7B budget and the same 2000 requests) at each
/// `max_len`; every request of the workload fits the smallest.
pub fn max_len_sweep(max_lens: &[usize]) -> Result<(f64, Vec<SweepRow>)> {
    let base = AccountingSpec::default();
    let reqs = base.workload.generate(base.shape.config.vocab_size);
    let mean = reqs.iter().map(|r| (r.prompt.len() + r.max_new_tokens) as f64).sum::<f64>() / reqs.len().max(1) as f64;
    let longest = reqs.iter().map(|r| r.prompt.len() + r.max_new_tokens).max().unwrap_or(0);
    let mut rows = Vec::new();
    for &max_len in max_lens {
        anyhow::ensure!(max_len >= longest, "max_len {max_len} is shorter than the workload's longest request ({longest})");
        let run = accounting_run(&AccountingSpec { max_len, ..base.clone() })?;
        rows.push(SweepRow {
            max_len,
            slots: run.num_slots,
            contiguous_running: run.contiguous.mean_running_queued,
            paged_running: run.paged.mean_running_queued,
            ratio: run.queued_running_ratio,
            closed_form: max_len as f64 / mean,
        });
    }
    Ok((mean, rows))
}

/// The sweep as the table chapter 5 includes.
pub fn sweep_markdown(max_lens: &[usize]) -> Result<String> {
    let (mean, rows) = max_len_sweep(max_lens)?;
    let spec = AccountingSpec::default();
    let mut o = String::new();
    writeln!(o, "The accounting run ({} shape, KV budget {:.1} GiB, {} requests of mean length {mean:.0} tokens, prompt + output) at several `max_len`s; requests running while others wait:\n", spec.shape.name, spec.budget_bytes() as f64 / (1u64 << 30) as f64, spec.workload.n_requests)?;
    writeln!(o, "| max_len | slots (ch04) | contiguous (ch04) | paged (ch05) | paged ÷ contiguous | max_len ÷ mean length |")?;
    writeln!(o, "|---:|---:|---:|---:|---:|---:|")?;
    for r in rows {
        writeln!(o, "| {} | {} | {:.1} | {:.1} | {:.2}× | {:.2} |", r.max_len, r.slots, r.contiguous_running, r.paged_running, r.ratio, r.closed_form)?;
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_follows_max_len_over_the_mean_length() {
        let (_, rows) = max_len_sweep(&[2048, 4096]).unwrap();
        // The paged side does not depend on max_len; the contiguous side halves with it.
        assert!((rows[0].paged_running - rows[1].paged_running).abs() < 1e-9);
        assert!(rows[1].ratio > 1.8 * rows[0].ratio);
        for r in &rows {
            assert!((r.ratio / r.closed_form - 1.0).abs() < 0.15, "{r:?}");
        }
        assert!(max_len_sweep(&[1024]).is_err(), "shorter than the longest request");
    }
}
