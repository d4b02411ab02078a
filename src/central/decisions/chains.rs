//! Verifying a node's hash chain as its records arrive, in any order.
//!
//! Delivery is at least once and batches may arrive out of order, so a
//! chain is walked forward from the last record checked whenever the next
//! one is present: each record must follow the previous one (`prevHash` =
//! its `hash`) and its own `hash` must match its content (checked at
//! parse). A missing seq is a gap until it arrives; a wrong link or hash,
//! or a second record for a seq, is a break that stays. Pure: the store
//! hands in the state and the records after it.

use crate::central::store::decisions::Seal;
use serde::{Deserialize, Serialize};

/// `prevHash` of a chain's first record.
pub(crate) use crate::audit::record::GENESIS_HASH;

/// A record's place in its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
    /// The record's `hash` matches its content.
    pub hash_ok: bool,
    /// Its checkpoint signature, if checked.
    pub seal: Seal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Break {
    pub seq: i64,
    /// `link` (prevHash differs from the previous hash), `hash` (content
    /// edited), `duplicate` (a second record for a seq), `signature` (a
    /// `sig` that does not verify with a trusted record key).
    pub reason: String,
}

/// What is known about one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainState {
    pub first_seq: i64,
    pub last_seq: i64,
    /// Highest seq walked so far (-1: none), and its hash.
    pub checked_through: i64,
    pub checked_hash: String,
    /// Highest seq whose whole prefix is present and links (-1: none).
    pub verified_through: i64,
    /// Missing ranges after `checked_through`, `[from, to]`.
    pub gaps: Vec<[i64; 2]>,
    pub breaks: Vec<Break>,
    /// Highest seq of an unbroken prefix that carries a valid signature:
    /// everything up to it is sealed (-1: none).
    pub signed_through: i64,
}

impl ChainState {
    /// A chain seen for the first time. Chains start at seq 0: an earlier
    /// part that never arrived is a gap, not a fresh start.
    pub(crate) fn new() -> ChainState {
        ChainState {
            first_seq: 0,
            last_seq: -1,
            checked_through: -1,
            checked_hash: GENESIS_HASH.to_owned(),
            verified_through: -1,
            gaps: Vec::new(),
            breaks: Vec::new(),
            signed_through: -1,
        }
    }

    pub(crate) fn status(&self) -> &'static str {
        if !self.breaks.is_empty() {
            "broken"
        } else if !self.gaps.is_empty() {
            "gap"
        } else {
            "ok"
        }
    }

    /// A record was stored for a seq already walked: two records claim
    /// one place in the chain.
    pub(crate) fn duplicate_seq(&mut self, seq: i64) {
        self.add_break(seq, "duplicate");
    }

    /// Walk forward over `unchecked` (every stored record after
    /// `checked_through`, in seq order); the breaks it found.
    pub(crate) fn advance(&mut self, unchecked: &[Link]) -> usize {
        let before = self.breaks.len();
        for link in unchecked {
            self.last_seq = self.last_seq.max(link.seq);
            if link.seq <= self.checked_through {
                // Two records for one seq, both after the old checkpoint.
                self.add_break(link.seq, "duplicate");
                continue;
            }
            if link.seq != self.checked_through + 1 {
                continue;
            }
            if !link.hash_ok {
                self.add_break(link.seq, "hash");
            }
            if link.prev_hash != self.checked_hash {
                self.add_break(link.seq, "link");
            }
            if link.seal == Seal::Invalid {
                self.add_break(link.seq, "signature");
            }
            self.checked_through = link.seq;
            self.checked_hash.clone_from(&link.hash);
            if self.breaks.is_empty() {
                self.verified_through = link.seq;
                if link.seal == Seal::Valid {
                    self.signed_through = link.seq;
                }
            }
        }
        self.gaps = gaps_after(self.checked_through, unchecked);
        self.breaks.len() - before
    }

    fn add_break(&mut self, seq: i64, reason: &str) {
        if !self
            .breaks
            .iter()
            .any(|b| b.seq == seq && b.reason == reason)
        {
            self.breaks.push(Break {
                seq,
                reason: reason.to_owned(),
            });
            self.breaks.sort_by_key(|b| b.seq);
        }
    }
}

/// Missing seq ranges between `checked_through` and the records after it.
fn gaps_after(checked_through: i64, links: &[Link]) -> Vec<[i64; 2]> {
    let mut gaps = Vec::new();
    let mut next = checked_through + 1;
    for link in links.iter().filter(|l| l.seq > checked_through) {
        if link.seq > next {
            gaps.push([next, link.seq - 1]);
        }
        next = next.max(link.seq + 1);
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Link> {
        let mut prev = GENESIS_HASH.to_owned();
        (0..n)
            .map(|seq| {
                let hash = format!("{seq:064x}");
                let link = Link {
                    seq,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                    hash_ok: true,
                    seal: Seal::Unchecked,
                };
                prev = hash;
                link
            })
            .collect()
    }

    #[test]
    fn out_of_order_arrival_is_a_gap_until_it_fills() {
        let links = chain(10);
        let mut state = ChainState::new();
        // 0..3 and 6..9 arrive first.
        let first: Vec<Link> = links[..4].iter().chain(&links[6..]).cloned().collect();
        state.advance(&first);
        assert_eq!(
            (state.verified_through, state.gaps.clone(), state.status()),
            (3, vec![[4, 5]], "gap")
        );
        // Then 4 and 5: the store hands in everything after seq 3.
        state.advance(&links[4..]);
        assert_eq!(
            (state.verified_through, state.last_seq, state.status()),
            (9, 9, "ok")
        );
        assert!(state.gaps.is_empty());
    }

    #[test]
    fn wrong_links_edits_and_second_records_are_breaks_that_stay() {
        let mut links = chain(6);
        links[3].prev_hash = "f".repeat(64);
        links[5].hash_ok = false;
        let mut state = ChainState::new();
        assert_eq!(state.advance(&links), 2);
        assert_eq!(
            state.breaks,
            vec![
                Break {
                    seq: 3,
                    reason: "link".into()
                },
                Break {
                    seq: 5,
                    reason: "hash".into()
                }
            ]
        );
        assert_eq!((state.verified_through, state.checked_through), (2, 5));
        state.duplicate_seq(1);
        assert_eq!(
            state.breaks[0],
            Break {
                seq: 1,
                reason: "duplicate".into()
            }
        );
        assert_eq!(state.status(), "broken");
    }

    #[test]
    fn a_chain_whose_start_never_arrived_has_a_gap_from_zero() {
        let links = chain(5);
        let mut state = ChainState::new();
        state.advance(&links[2..]);
        assert_eq!(
            (state.verified_through, state.gaps.clone()),
            (-1, vec![[0, 1]])
        );
    }

    #[test]
    fn signatures_seal_the_prefix_and_a_bad_one_is_a_break() {
        let mut links = chain(8);
        links[2].seal = Seal::Valid;
        links[4].seal = Seal::Valid;
        let mut state = ChainState::new();
        // 0..5 arrive: sealed through 4, 5 is the unsigned tail.
        state.advance(&links[..6]);
        assert_eq!((state.signed_through, state.verified_through), (4, 5));
        // A signature that does not verify breaks the chain there, and
        // nothing after a break counts as sealed.
        links[6].seal = Seal::Invalid;
        links[7].seal = Seal::Valid;
        state.advance(&links[6..]);
        assert_eq!(
            state.breaks,
            vec![Break {
                seq: 6,
                reason: "signature".into()
            }]
        );
        assert_eq!((state.signed_through, state.status()), (4, "broken"));
    }
}
