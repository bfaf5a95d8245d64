//! What became of the commands a leader proposed. Raft identifies an entry by its index and
//! term: a proposal made at index `i` in term `t` is sequenced exactly when the entry
//! committed at `i` has term `t`. Any other term there means a later leader overrode it and
//! the proposal is lost (its client resends). So a deposed leader that still learns what was
//! committed never acknowledges another command's sequence as its own.

use std::collections::BTreeMap;

/// The fate of one proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Committed at `seq`: the client may be told.
    Sequenced {
        /// What the proposer attached to it.
        token: T,
        /// Its sequence.
        seq: u64,
    },
    /// Another leader's entry was committed in its place.
    Lost {
        /// What the proposer attached to it.
        token: T,
    },
}

/// The proposals that await their fate, by index.
#[derive(Debug)]
pub struct Proposals<T> {
    pending: BTreeMap<u64, (u64, T)>,
}

impl<T> Default for Proposals<T> {
    fn default() -> Self {
        Proposals {
            pending: BTreeMap::new(),
        }
    }
}

impl<T> Proposals<T> {
    /// A proposal made at `index` in `term`.
    pub fn proposed(&mut self, index: u64, term: u64, token: T) {
        self.pending.insert(index, (term, token));
    }

    /// The entry at `index`, of `term`, is committed: the fate of the proposal made there.
    pub fn committed(&mut self, index: u64, term: u64) -> Option<Outcome<T>> {
        let (proposed_term, token) = self.pending.remove(&index)?;
        Some(if proposed_term == term {
            Outcome::Sequenced { token, seq: index }
        } else {
            Outcome::Lost { token }
        })
    }

    /// Proposals still waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proposal_is_sequenced_only_by_an_entry_of_its_own_term() {
        let mut proposals = Proposals::default();
        proposals.proposed(5, 2, "a");
        proposals.proposed(6, 2, "b");
        assert_eq!(proposals.committed(4, 2), None);
        assert_eq!(
            proposals.committed(5, 2),
            Some(Outcome::Sequenced { token: "a", seq: 5 })
        );
        assert_eq!(
            proposals.committed(6, 3),
            Some(Outcome::Lost { token: "b" })
        );
        assert!(proposals.is_empty());
    }
}
