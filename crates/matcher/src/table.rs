//! A fixed-capacity open-addressing hash map from integer keys to slot indexes.
//!
//! Linear probing with backward-shift deletion: no tombstones, so the table never needs a
//! rehash and never allocates after construction. The capacity is a power of two at least
//! twice the most entries it may hold, which keeps probe sequences short.

/// Marks an empty slot.
const EMPTY: u32 = u32::MAX;

/// A key the table can hash.
pub(crate) trait TableKey: Copy + Eq + Default {
    fn hash(self) -> u64;
    /// The key's low 64 bits, for a table whose keys are handed out in sequence.
    fn low(self) -> u64;
}

impl TableKey for u64 {
    #[inline]
    fn hash(self) -> u64 {
        self.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    #[inline]
    fn low(self) -> u64 {
        self
    }
}

impl TableKey for u128 {
    #[inline]
    fn hash(self) -> u64 {
        let folded = (self as u64) ^ ((self >> 64) as u64).rotate_left(29);
        folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((self >> 64) as u64)
    }

    #[inline]
    fn low(self) -> u64 {
        self as u64
    }
}

/// Where a key's probe sequence starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Home {
    /// The top bits of a multiplicative hash: for keys a client chooses.
    Hashed,
    /// For keys the engine hands out in sequence (order ids): each run of 64 consecutive keys
    /// shares a 64-slot group, so keys made one after another sit in neighbouring slots, and
    /// the groups are spread by a multiplicative hash of the run's number. Homing on the low
    /// bits alone would lay a long run of live keys (a burst of resting orders) out as one
    /// contiguous cluster that every key homing into it, one table's worth of ids later,
    /// would have to probe past.
    Sequential,
}

pub(crate) struct FixedMap<K: TableKey> {
    keys: Box<[K]>,
    values: Box<[u32]>,
    shift: u32,
    mask: usize,
    len: usize,
    len_max: usize,
    homing: Home,
}

impl<K: TableKey> FixedMap<K> {
    /// A map that can hold `len_max` entries without ever growing.
    pub fn with_len_max(len_max: usize) -> Self {
        Self::with_len_max_homed(len_max, Home::Hashed)
    }

    /// A map that can hold `len_max` entries, its probes starting where `homing` says.
    pub fn with_len_max_homed(len_max: usize, homing: Home) -> Self {
        let capacity = (len_max.max(1) * 2).next_power_of_two().max(16);
        FixedMap {
            keys: vec![K::default(); capacity].into_boxed_slice(),
            values: vec![EMPTY; capacity].into_boxed_slice(),
            shift: 64 - capacity.trailing_zeros(),
            mask: capacity - 1,
            len: 0,
            len_max,
            homing,
        }
    }

    #[inline]
    fn home(&self, key: K) -> usize {
        match self.homing {
            Home::Hashed => (key.hash() >> self.shift) as usize,
            Home::Sequential => {
                let key = key.low();
                let group = ((key >> 6).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize;
                ((group & !63) | (key as usize & 63)) & self.mask
            }
        }
    }

    #[inline]
    fn find(&self, key: K) -> Option<usize> {
        let mut index = self.home(key);
        loop {
            if self.values[index] == EMPTY {
                return None;
            }
            if self.keys[index] == key {
                return Some(index);
            }
            index = (index + 1) & self.mask;
        }
    }

    #[inline]
    pub fn get(&self, key: K) -> Option<u32> {
        self.find(key).map(|index| self.values[index])
    }

    pub fn contains(&self, key: K) -> bool {
        self.find(key).is_some()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// The longest distance of an entry from its home.
    #[cfg(test)]
    fn probe_length_max(&self) -> usize {
        (0..self.values.len())
            .filter(|index| self.values[*index] != EMPTY)
            .map(|index| index.wrapping_sub(self.home(self.keys[index])) & self.mask)
            .max()
            .unwrap_or(0)
    }

    /// Inserts a key that is not present. Panics past `len_max`: callers check limits first.
    #[inline]
    pub fn insert(&mut self, key: K, value: u32) {
        assert!(value != EMPTY, "slot index {value} is the empty marker");
        assert!(self.len < self.len_max, "fixed map over its len_max");
        let mut index = self.home(key);
        while self.values[index] != EMPTY {
            assert!(self.keys[index] != key, "key inserted twice");
            index = (index + 1) & self.mask;
        }
        self.keys[index] = key;
        self.values[index] = value;
        self.len += 1;
    }

    /// Sets the value of `key`, inserting it when absent (one probe sequence). Panics past
    /// `len_max` on an insert: callers check limits first.
    #[inline]
    pub fn upsert(&mut self, key: K, value: u32) {
        assert!(value != EMPTY, "slot index {value} is the empty marker");
        let mut index = self.home(key);
        while self.values[index] != EMPTY {
            if self.keys[index] == key {
                self.values[index] = value;
                return;
            }
            index = (index + 1) & self.mask;
        }
        assert!(self.len < self.len_max, "fixed map over its len_max");
        self.keys[index] = key;
        self.values[index] = value;
        self.len += 1;
    }

    /// Removes `key` if its value is `value` (one probe sequence to find it).
    #[inline]
    pub fn remove_if(&mut self, key: K, value: u32) {
        if let Some(found) = self.find(key) {
            if self.values[found] == value {
                self.remove_at(found);
            }
        }
    }

    /// Replaces the value of a present key.
    #[cfg(test)]
    pub fn update(&mut self, key: K, value: u32) {
        let index = self.find(key).expect("update of a missing key");
        self.values[index] = value;
    }

    /// Removes a key, returning its value.
    #[inline]
    pub fn remove(&mut self, key: K) -> Option<u32> {
        let found = self.find(key)?;
        let value = self.values[found];
        self.remove_at(found);
        Some(value)
    }

    /// Removes the entry at table index `found`, shifting later entries back.
    #[inline]
    fn remove_at(&mut self, found: usize) {
        let mut hole = found;
        let mut index = found;
        loop {
            index = (index + 1) & self.mask;
            if self.values[index] == EMPTY {
                break;
            }
            let home = self.home(self.keys[index]);
            // The entry may move back into the hole if the hole lies between its home and
            // where it sits now (cyclically).
            let distance_from_home = index.wrapping_sub(home) & self.mask;
            let distance_from_hole = index.wrapping_sub(hole) & self.mask;
            if distance_from_home >= distance_from_hole {
                self.keys[hole] = self.keys[index];
                self.values[hole] = self.values[index];
                hole = index;
            }
        }
        self.values[hole] = EMPTY;
        self.keys[hole] = K::default();
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn matches_a_std_hash_map_under_churn() {
        // Sequential homing with a key space five times the table's 1,024 slots, so keys of
        // one slot meet and probe on; hashed homing with a small key space, so inserts, hits
        // and removes all happen often.
        for (homing, key_space) in [(Home::Hashed, 1_000), (Home::Sequential, 5_000)] {
            churn(homing, key_space);
        }
    }

    fn churn(homing: Home, key_space: u64) {
        let mut map = FixedMap::<u64>::with_len_max_homed(500, homing);
        let mut model = HashMap::new();
        let mut state = 0x1234_5678u64;
        for step in 0..200_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = state % key_space;
            if let Some(value) = model.get(&key).copied() {
                assert_eq!(map.get(key), Some(value));
                match step % 5 {
                    0 => {
                        map.update(key, step);
                        model.insert(key, step);
                    }
                    1 => {
                        map.upsert(key, step);
                        model.insert(key, step);
                    }
                    2 => {
                        // Another value: kept.
                        map.remove_if(key, value + 1);
                    }
                    3 => {
                        map.remove_if(key, value);
                        model.remove(&key);
                    }
                    _ => {
                        assert_eq!(map.remove(key), Some(value));
                        model.remove(&key);
                    }
                }
            } else {
                assert_eq!(map.get(key), None);
                if model.len() < 500 {
                    if step % 2 == 0 {
                        map.insert(key, step);
                    } else {
                        map.upsert(key, step);
                    }
                    model.insert(key, step);
                }
            }
            assert_eq!(map.len(), model.len());
        }
        for (key, value) in model {
            assert_eq!(map.get(key), Some(value));
        }
    }

    /// A burst of 50,000 orders that stay live, and then, one table's worth of ids later,
    /// another burst: the second run's keys must not probe past the first run.
    #[test]
    fn a_long_run_of_live_sequential_keys_leaves_later_keys_short_probes() {
        let mut map = FixedMap::<u64>::with_len_max_homed(100_000, Home::Sequential);
        let capacity = 262_144u64;
        for id in 1..=50_000u64 {
            map.insert(id, id as u32);
        }
        for id in capacity + 1..=capacity + 50_000 {
            map.insert(id, id as u32);
        }
        assert!(map.probe_length_max() < 200, "{}", map.probe_length_max());
        for id in (1..=50_000u64).chain(capacity + 1..=capacity + 50_000) {
            assert_eq!(map.get(id), Some(id as u32));
        }
        for id in 1..=50_000u64 {
            assert_eq!(map.remove(id), Some(id as u32));
        }
        assert_eq!(map.get(capacity + 7), Some((capacity + 7) as u32));
    }

    #[test]
    fn wide_keys_work() {
        let mut map = FixedMap::<u128>::with_len_max(64);
        for account in 0..8u128 {
            for id in 0..8u128 {
                map.insert((account << 64) | id, (account * 8 + id) as u32);
            }
        }
        assert_eq!(map.get((3 << 64) | 5), Some(29));
        assert_eq!(map.remove((3 << 64) | 5), Some(29));
        assert_eq!(map.get((3 << 64) | 5), None);
        assert_eq!(map.get((5 << 64) | 3), Some(43));
    }
}
