//! A hierarchical bitmap over price-level indexes: which levels of one side are non-empty.
//!
//! Each layer has one bit per 64-bit word of the layer below, so finding the next non-empty
//! level above or below any index takes a few word operations at most, whatever the gap.

pub(crate) struct LevelBitmap {
    /// `layers[0]` has one bit per level; each next layer summarises the one below.
    layers: Vec<Box<[u64]>>,
}

impl LevelBitmap {
    pub fn new(bits_count: usize) -> Self {
        let mut layers = Vec::new();
        let mut words_count = bits_count.div_ceil(64).max(1);
        loop {
            layers.push(vec![0u64; words_count].into_boxed_slice());
            if words_count == 1 {
                break;
            }
            words_count = words_count.div_ceil(64);
        }
        LevelBitmap { layers }
    }

    #[inline]
    pub fn set(&mut self, mut index: usize) {
        for layer in self.layers.iter_mut() {
            let word = &mut layer[index >> 6];
            let was_empty = *word == 0;
            *word |= 1 << (index & 63);
            if !was_empty {
                return;
            }
            index >>= 6;
        }
    }

    #[inline]
    pub fn clear(&mut self, mut index: usize) {
        for layer in self.layers.iter_mut() {
            let word = &mut layer[index >> 6];
            *word &= !(1u64 << (index & 63));
            if *word != 0 {
                return;
            }
            index >>= 6;
        }
    }

    #[cfg(test)]
    pub fn get(&self, index: usize) -> bool {
        self.layers[0][index >> 6] & (1 << (index & 63)) != 0
    }

    /// The lowest set index at or above `index`.
    #[inline]
    pub fn next_at_or_after(&self, index: usize) -> Option<usize> {
        self.next_in_layer(0, index)
    }

    fn next_in_layer(&self, layer_index: usize, index: usize) -> Option<usize> {
        let layer = &self.layers[layer_index];
        let word_index = index >> 6;
        if word_index >= layer.len() {
            return None;
        }
        let masked = layer[word_index] & (u64::MAX << (index & 63));
        if masked != 0 {
            return Some((word_index << 6) | masked.trailing_zeros() as usize);
        }
        if layer_index + 1 == self.layers.len() {
            return None;
        }
        let next_word = self.next_in_layer(layer_index + 1, word_index + 1)?;
        Some((next_word << 6) | layer[next_word].trailing_zeros() as usize)
    }

    /// The highest set index at or below `index`.
    #[inline]
    pub fn prev_at_or_before(&self, index: usize) -> Option<usize> {
        self.prev_in_layer(0, index)
    }

    fn prev_in_layer(&self, layer_index: usize, index: usize) -> Option<usize> {
        let layer = &self.layers[layer_index];
        let word_index = index >> 6;
        let bit = index & 63;
        let masked = layer[word_index] & (u64::MAX >> (63 - bit));
        if masked != 0 {
            return Some((word_index << 6) | (63 - masked.leading_zeros() as usize));
        }
        if layer_index + 1 == self.layers.len() || word_index == 0 {
            return None;
        }
        let prev_word = self.prev_in_layer(layer_index + 1, word_index - 1)?;
        Some((prev_word << 6) | (63 - layer[prev_word].leading_zeros() as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn agrees_with_a_btree_set() {
        for bits_count in [1usize, 63, 64, 65, 4096, 4097, 300_000] {
            let mut bitmap = LevelBitmap::new(bits_count);
            let mut model = BTreeSet::new();
            let mut state = 0x9E37_79B9u64 ^ bits_count as u64;
            for _ in 0..5_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let index = (state % bits_count as u64) as usize;
                if state & (1 << 40) != 0 {
                    bitmap.set(index);
                    model.insert(index);
                } else {
                    bitmap.clear(index);
                    model.remove(&index);
                }
                let probe = ((state >> 20) % bits_count as u64) as usize;
                assert_eq!(bitmap.get(probe), model.contains(&probe));
                assert_eq!(
                    bitmap.next_at_or_after(probe),
                    model.range(probe..).next().copied()
                );
                assert_eq!(
                    bitmap.prev_at_or_before(probe),
                    model.range(..=probe).next_back().copied()
                );
            }
        }
    }
}
