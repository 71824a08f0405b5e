//! Echoes: a message that a topic's new link delivers although its old link already did.
//!
//! Redis orders nothing between nodes. A message published just before a topic moved can wait
//! in the new node's socket (a cluster node relays `PUBLISH` over the bus; a Sentinel replica
//! gets it in the replication stream) while that node handles the new `SUBSCRIBE` first, and
//! then delivers it to the new subscription: measured on a loaded 3+3 cluster, one message per
//! channel in about one SIGKILL in three, published 10 ms before the kill.
//!
//! Messages carry no id, so each topic keeps a keyed hash of its channel and payload for what it
//! delivered in the last [`WINDOW`] (at most [`KEPT`] of them). For [`WINDOW`] after the topic
//! is live on a new link, a message whose hash is among those is an echo and is dropped, once
//! per copy kept. The price: the same payload published twice on one channel within about a
//! second, once before a gap and once just after it, arrives once.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    time::Duration,
};

use redis::Msg;
use tokio::time::Instant;

/// How long before a move a delivered message counts, and how long after it echoes are looked for.
pub(super) const WINDOW: Duration = Duration::from_secs(1);

/// Delivered messages kept per topic (the newest).
pub(super) const KEPT: usize = 1024;

/// Hashes messages with a key of the subscription's own (so that nobody can craft a payload
/// that collides with another).
#[derive(Clone, Default)]
pub(super) struct Hasher(RandomState);

impl Hasher {
    /// The hash of `msg`'s channel and payload.
    pub(super) fn of(&self, msg: &Msg) -> u64 {
        self.0
            .hash_one((msg.get_channel_name().as_bytes(), msg.get_payload_bytes()))
    }
}

/// One topic's recent messages and, after a move, the echoes it still expects.
#[derive(Default)]
pub(super) struct Echoes {
    recent: VecDeque<(Instant, u64)>,
    /// Hashes delivered before the move, with how many copies.
    expected: HashMap<u64, u32>,
    /// Until when echoes are looked for.
    until: Option<Instant>,
}

impl Echoes {
    /// A message with this hash arrived on the topic's link: `true` to deliver it, `false` for
    /// an echo.
    pub(super) fn arrived(&mut self, hash: u64, now: Instant) -> bool {
        if let Some(until) = self.until {
            if now <= until {
                if let Some(copies) = self.expected.get_mut(&hash) {
                    *copies -= 1;
                    if *copies == 0 {
                        self.expected.remove(&hash);
                    }
                    return false;
                }
            } else {
                self.until = None;
                self.expected.clear();
            }
        }
        while self.recent.len() >= KEPT
            || self
                .recent
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.push_back((now, hash));
        true
    }

    /// The topic is live on a new link: what it delivered in the last [`WINDOW`] may come again.
    pub(super) fn moved(&mut self, now: Instant) {
        self.expected.clear();
        for (at, hash) in self.recent.drain(..) {
            if now.duration_since(at) <= WINDOW {
                *self.expected.entry(hash).or_default() += 1;
            }
        }
        self.until = (!self.expected.is_empty()).then_some(now + WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_copy_after_a_move_is_an_echo_once() {
        let t = Instant::now();
        let mut e = Echoes::default();
        assert!(e.arrived(1, t));
        assert!(e.arrived(2, at(t, 1)));
        assert!(e.arrived(2, at(t, 2)));
        e.moved(at(t, 10));
        assert!(!e.arrived(2, at(t, 11)), "first copy of 2");
        assert!(!e.arrived(1, at(t, 12)));
        assert!(!e.arrived(2, at(t, 13)), "second copy of 2");
        assert!(e.arrived(2, at(t, 14)), "a third one was never delivered");
        assert!(e.arrived(3, at(t, 15)));
    }

    #[test]
    fn echoes_are_looked_for_within_the_window_only() {
        let t = Instant::now();
        let mut e = Echoes::default();
        assert!(e.arrived(1, t));
        assert!(e.arrived(2, at(t, 1500)));
        e.moved(at(t, 2000));
        assert!(
            e.arrived(1, at(t, 2001)),
            "delivered more than a window before the move"
        );
        assert!(
            e.arrived(2, at(t, 3600)),
            "arrives more than a window after the move"
        );
    }

    #[test]
    fn without_a_move_repeats_are_delivered() {
        let t = Instant::now();
        let mut e = Echoes::default();
        for i in 0..3000 {
            assert!(e.arrived(7, at(t, i)));
        }
        assert!(e.recent.len() <= KEPT);
    }

    #[test]
    fn only_the_newest_are_kept() {
        let t = Instant::now();
        let mut e = Echoes::default();
        for h in 0..(KEPT as u64 + 10) {
            assert!(e.arrived(h, t));
        }
        e.moved(t);
        assert!(e.arrived(0, t), "the oldest fell out");
        assert!(!e.arrived(KEPT as u64 + 9, t));
    }
}
