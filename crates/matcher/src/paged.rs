//! Copy-on-write paging of the engine's large arrays, so that a snapshot need not stop the
//! matcher while the whole state is copied or encoded.
//!
//! A [`Paged`] array is the live array plus a copy buffer of the same length, both divided
//! into pages of about 16 KiB. A copy begins in O(1) (an epoch number moves on); from then on
//! each page is copied exactly once, either by [`Paged::step`] (the caller spends a budget of
//! bytes at a time, between commands) or, if the matcher is about to write to a page not yet
//! copied, by the write itself, which first saves the page as it was. When every page is
//! copied, the buffer holds the array exactly as it was when the copy began, and is lent out
//! ([`Paged::take_copy`]) to be encoded on another thread, then given back.
//!
//! Writes go through `IndexMut`; reads through `Index` cost nothing extra. While no copy is
//! under way a write costs one predictable branch.

use std::ops::{Index, IndexMut};

/// The size a page aims at.
const PAGE_BYTES_TARGET: usize = 16 * 1024;

/// Where a paged array's copy buffer is.
enum Buffer<T> {
    /// Not allocated yet ([`Paged::reserve_copy`] allocates it).
    None,
    /// Here, ready for the next copy (or holding the one under way).
    Here(Box<[T]>),
    /// Lent out with a finished copy.
    Lent,
}

/// An array whose contents at one moment can be copied a page at a time while it changes.
pub(crate) struct Paged<T: Copy> {
    live: Box<[T]>,
    buffer: Buffer<T>,
    /// The epoch in which each page was last copied.
    copied_in: Box<[u32]>,
    /// The epoch of the copy under way (or of the last one).
    epoch: u32,
    /// A copy is under way and not all pages are copied yet.
    copying: bool,
    /// The next page [`Paged::step`] looks at.
    cursor: usize,
    /// Pages of the copy under way not copied yet.
    pages_left: usize,
}

impl<T: Copy> Paged<T> {
    /// Elements per page: a power of two near [`PAGE_BYTES_TARGET`] bytes.
    const PAGE_SHIFT: u32 = {
        let elements = PAGE_BYTES_TARGET / std::mem::size_of::<T>();
        if elements <= 1 {
            0
        } else {
            usize::BITS - 1 - elements.leading_zeros()
        }
    };

    /// A paged array over `live`; no copy buffer yet.
    pub fn new(live: Box<[T]>) -> Paged<T> {
        let pages_count = live.len().div_ceil(1 << Self::PAGE_SHIFT);
        Paged {
            live,
            buffer: Buffer::None,
            copied_in: vec![0; pages_count].into_boxed_slice(),
            epoch: 0,
            copying: false,
            cursor: 0,
            pages_left: 0,
        }
    }

    /// Elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// The live elements.
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        &self.live
    }

    fn pages_count(&self) -> usize {
        self.copied_in.len()
    }

    /// Allocates the copy buffer if it is not there yet (and not lent out).
    pub fn reserve_copy(&mut self) {
        if matches!(self.buffer, Buffer::None) {
            self.buffer = Buffer::Here(self.live.clone());
        }
    }

    /// Whether a copy can begin: the buffer is not lent out.
    pub fn can_begin(&self) -> bool {
        !matches!(self.buffer, Buffer::Lent)
    }

    /// Begins a copy of the array as it is now. The buffer must not be lent out.
    pub fn begin_copy(&mut self) {
        assert!(
            self.can_begin(),
            "a copy began while the last one is lent out"
        );
        assert!(!self.copying, "a copy began while one is under way");
        self.reserve_copy();
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // After 2^32 copies the epochs come round: forget which page was copied when.
            self.copied_in.fill(0);
            self.epoch = 1;
        }
        self.cursor = 0;
        self.pages_left = self.pages_count();
        self.copying = self.pages_left > 0;
    }

    /// Whether a copy is under way and not finished.
    #[inline]
    pub fn copying(&self) -> bool {
        self.copying
    }

    /// Copies pages not yet copied, in order, while `budget_bytes` lasts (at least one page
    /// when any is left); takes what it spent from the budget.
    pub fn step(&mut self, budget_bytes: &mut usize) {
        while self.copying && self.cursor < self.pages_count() {
            let page = self.cursor;
            self.cursor += 1;
            if self.copied_in[page] != self.epoch {
                let spent = self.copy_page(page);
                *budget_bytes = budget_bytes.saturating_sub(spent);
                if *budget_bytes == 0 {
                    return;
                }
            }
        }
    }

    /// Copies one page into the buffer; returns the bytes copied.
    fn copy_page(&mut self, page: usize) -> usize {
        let start = page << Self::PAGE_SHIFT;
        let end = (start + (1 << Self::PAGE_SHIFT)).min(self.live.len());
        let Buffer::Here(buffer) = &mut self.buffer else {
            unreachable!("a copy is under way without its buffer");
        };
        buffer[start..end].copy_from_slice(&self.live[start..end]);
        self.copied_in[page] = self.epoch;
        self.pages_left -= 1;
        if self.pages_left == 0 {
            self.copying = false;
        }
        (end - start) * std::mem::size_of::<T>()
    }

    /// Saves the page of `index` before a write changes it, if the copy under way has not
    /// copied it yet.
    #[cold]
    #[inline(never)]
    fn save_before_write(&mut self, index: usize) {
        let page = index >> Self::PAGE_SHIFT;
        if page < self.pages_count() && self.copied_in[page] != self.epoch {
            self.copy_page(page);
        }
    }

    /// The finished copy, lent out until [`Paged::give_back`].
    pub fn take_copy(&mut self) -> Box<[T]> {
        assert!(!self.copying, "the copy is not finished");
        match std::mem::replace(&mut self.buffer, Buffer::Lent) {
            Buffer::Here(buffer) => buffer,
            Buffer::None | Buffer::Lent => panic!("no finished copy to take"),
        }
    }

    /// Takes back a buffer lent out by [`Paged::take_copy`].
    pub fn give_back(&mut self, buffer: Box<[T]>) {
        assert!(
            matches!(self.buffer, Buffer::Lent) && buffer.len() == self.live.len(),
            "a buffer given back that was not lent out"
        );
        self.buffer = Buffer::Here(buffer);
    }
}

impl<T: Copy> Index<usize> for Paged<T> {
    type Output = T;

    #[inline]
    fn index(&self, index: usize) -> &T {
        &self.live[index]
    }
}

impl<T: Copy> IndexMut<usize> for Paged<T> {
    #[inline]
    fn index_mut(&mut self, index: usize) -> &mut T {
        if self.copying {
            self.save_before_write(index);
        }
        &mut self.live[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator for the test.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn a_copy_is_the_array_as_it_was_when_the_copy_began() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        // Several pages of u64 (2048 per page), and a partial last page.
        let len = 2048 * 5 + 17;
        let mut paged = Paged::new((0..len as u64).collect::<Vec<_>>().into_boxed_slice());
        for round in 0..20 {
            let expected = paged.as_slice().to_vec();
            paged.begin_copy();
            // Writes and steps interleaved, until the copy is done.
            while paged.copying() {
                for _ in 0..(next(&mut rng) % 50) {
                    let index = (next(&mut rng) % len as u64) as usize;
                    paged[index] = next(&mut rng);
                }
                let mut budget = (next(&mut rng) % 40_000) as usize;
                if round % 3 != 0 {
                    paged.step(&mut budget);
                }
            }
            let copy = paged.take_copy();
            assert_eq!(&copy[..], &expected[..], "round {round}");
            // The live array kept every write.
            assert!(!paged.can_begin());
            paged.give_back(copy);
            assert!(paged.can_begin());
        }
    }

    #[test]
    fn a_step_spends_its_budget_a_page_at_a_time() {
        let mut paged = Paged::new(vec![0u64; 2048 * 4].into_boxed_slice());
        paged.begin_copy();
        let mut budget = 1;
        paged.step(&mut budget);
        assert_eq!(paged.pages_left, 3, "at least one page per step");
        let mut budget = 2 * 2048 * 8;
        paged.step(&mut budget);
        assert_eq!((paged.pages_left, budget), (1, 0));
        paged[2048 * 3] = 5;
        assert!(!paged.copying(), "the write copied the last page");
        assert_eq!(paged.take_copy()[2048 * 3], 0);
    }
}
