//! Chunked prefill's split of a step's token budget among the running sequences.

// ANCHOR: shares
/// How many tokens each running sequence computes this step, with chunked prefill. `running[i]`
/// is sequence i's (tokens not yet computed, still prefilling), in admission order. The decodes
/// come first, one token each, oldest first, while the budget lasts; then the sequences still
/// prefilling, oldest first, each a chunk of at most `max_chunk` of what the budget has left.
pub fn chunk_shares(running: &[(usize, bool)], budget: usize, max_chunk: usize) -> Vec<usize> {
    let mut left = budget;
    let mut shares = vec![0; running.len()];
    for prefills in [false, true] {
        for (share, &(uncomputed, prefilling)) in shares.iter_mut().zip(running).filter(|(_, r)| r.1 == prefills) {
            let cap = if prefilling { max_chunk } else { 1 };
            *share = uncomputed.min(cap).min(left);
            left -= *share;
        }
    }
    shares
}
// ANCHOR_END: shares

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_first_then_chunks_oldest_first() {
        // A long prompt admitted first, two decodes after it, a second prompt: budget 10.
        let running = [(100, true), (1, false), (1, false), (7, true)];
        assert_eq!(chunk_shares(&running, 10, 64), vec![8, 1, 1, 0]);
        assert_eq!(chunk_shares(&running, 10, 5), vec![5, 1, 1, 3], "a chunk cap leaves room for the next prompt");
        assert_eq!(chunk_shares(&running, 1, 64), vec![0, 1, 0, 0], "a budget below the decodes serves the oldest");
        assert_eq!(chunk_shares(&[], 10, 4), Vec::<usize>::new());
    }
}
