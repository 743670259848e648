//! Block tables: a sequence's logical token positions mapped onto physical blocks, the way a page
//! table maps virtual addresses onto physical pages.

/// Index of one physical KV block in the pool (a block table is a list of them).
pub type BlockId = usize;

/// Blocks needed to hold `tokens` tokens: the last block may be partly empty, every other is full.
pub fn blocks_for(tokens: usize, block_size: usize) -> usize {
    tokens.div_ceil(block_size)
}

// ANCHOR: locate
/// Where token `pos` of a sequence lives: (physical block, offset inside it), or `None` when the
/// table does not reach that far. Logical block `pos / block_size` is the table's index.
pub fn locate(table: &[BlockId], block_size: usize, pos: usize) -> Option<(BlockId, usize)> {
    table.get(pos / block_size).map(|&b| (b, pos % block_size))
}
// ANCHOR_END: locate

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_walk_the_table_in_block_size_steps() {
        let table = [7, 2, 9];
        assert_eq!(locate(&table, 4, 0), Some((7, 0)));
        assert_eq!(locate(&table, 4, 5), Some((2, 1)));
        assert_eq!(locate(&table, 4, 11), Some((9, 3)));
        assert_eq!(locate(&table, 4, 12), None);
        assert_eq!((blocks_for(0, 4), blocks_for(1, 4), blocks_for(4, 4), blocks_for(5, 4)), (0, 1, 1, 2));
    }
}
