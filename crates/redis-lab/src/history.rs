//! Checkers of what a run's history must satisfy.
//!
//! [`Sequences`]: sequence-numbered pub/sub messages. Publishers record what they were told of
//! each message (acknowledged, ambiguous, failed); the subscriber records, in its order of
//! arrival per channel, each message and each gap (a time its subscription was lost, as
//! `resilient_redis::PubSubEvent::Gap` reports it). The check then counts what went wrong:
//! - a **duplicate**: a message received twice;
//! - **lost**: an acknowledged message never received, and not *covered* by a gap (its sequence
//!   number falls strictly between the highest one received before a gap and the lowest one
//!   received after it, on its channel: it was published while the subscription was down);
//! - **in gaps**: acknowledged, not received, covered by a gap (what pub/sub may lose, and said).
//!
//! Publishers send each channel's numbers in increasing order, one at a time.

use std::collections::{HashMap, HashSet};

/// What a publisher was told of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The server acknowledged it.
    Acknowledged,
    /// It may or may not have been published (the reply was lost).
    Ambiguous,
    /// It surely was not published.
    Failed,
}

/// One channel's history.
#[derive(Debug, Default)]
struct Channel {
    acknowledged: HashSet<u64>,
    ambiguous: HashSet<u64>,
    failed: u64,
    /// What the subscriber saw, in order: `Some(seq)` a message, `None` a gap.
    seen: Vec<Option<u64>>,
}

/// The history of sequence-numbered messages over channels (see the module docs).
#[derive(Debug, Default)]
pub struct Sequences {
    channels: HashMap<String, Channel>,
}

/// What [`Sequences::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SequenceCheck {
    /// Messages the server acknowledged.
    pub acknowledged: u64,
    /// Messages whose publication was ambiguous.
    pub ambiguous: u64,
    /// Messages surely not published.
    pub failed: u64,
    /// Messages received (duplicates included).
    pub received: u64,
    /// Messages received more than once (each extra copy counts).
    pub duplicates: u64,
    /// Gaps the subscriber reported.
    pub gaps: u64,
    /// Acknowledged, not received, covered by a gap.
    pub in_gaps: u64,
    /// Acknowledged, not received, not covered by a gap.
    pub lost: u64,
    /// Those messages: channel and sequence number.
    pub lost_messages: Vec<(String, u64)>,
    /// A few duplicated or lost messages, described (at most 10).
    pub examples: Vec<String>,
}

impl SequenceCheck {
    /// Whether nothing went wrong: no duplicate, nothing lost outside the gaps.
    pub fn is_clean(&self) -> bool {
        self.duplicates == 0 && self.lost == 0
    }
}

impl Sequences {
    /// An empty history.
    pub fn new() -> Sequences {
        Sequences::default()
    }

    /// A publisher was told `outcome` for message `seq` of `channel`.
    pub fn published(&mut self, channel: &str, seq: u64, outcome: Published) {
        let c = self.channel(channel);
        match outcome {
            Published::Acknowledged => {
                c.acknowledged.insert(seq);
            }
            Published::Ambiguous => {
                c.ambiguous.insert(seq);
            }
            Published::Failed => c.failed += 1,
        }
    }

    /// The subscriber received message `seq` of `channel`.
    pub fn received(&mut self, channel: &str, seq: u64) {
        self.channel(channel).seen.push(Some(seq));
    }

    /// The subscriber reported a gap of `channel`.
    pub fn gap(&mut self, channel: &str) {
        self.channel(channel).seen.push(None);
    }

    fn channel(&mut self, name: &str) -> &mut Channel {
        self.channels.entry(name.to_owned()).or_default()
    }

    /// Counts what went wrong (see the module docs).
    pub fn check(&self) -> SequenceCheck {
        let mut check = SequenceCheck::default();
        let mut names: Vec<&String> = self.channels.keys().collect();
        names.sort();
        for name in names {
            let c = &self.channels[name];
            check.acknowledged += c.acknowledged.len() as u64;
            check.ambiguous += c.ambiguous.len() as u64;
            check.failed += c.failed;
            let mut received = HashSet::new();
            // Per gap: the highest number received before it, the lowest after it.
            let mut covered: Vec<(u64, u64)> = Vec::new();
            let mut highest = 0u64;
            for (i, event) in c.seen.iter().enumerate() {
                match *event {
                    Some(seq) => {
                        check.received += 1;
                        highest = highest.max(seq);
                        if received.insert(seq) {
                            continue;
                        }
                        check.duplicates += 1;
                        let gaps_between = c.seen[..i]
                            .iter()
                            .rev()
                            .take_while(|e| **e != Some(seq))
                            .filter(|e| e.is_none())
                            .count();
                        let status = if c.acknowledged.contains(&seq) {
                            "acknowledged"
                        } else if c.ambiguous.contains(&seq) {
                            "ambiguous"
                        } else {
                            "never published"
                        };
                        check.example(format!(
                            "{name}: {seq} ({status}) received twice, {gaps_between} gaps between"
                        ));
                    }
                    None => {
                        check.gaps += 1;
                        let after = c.seen[i + 1..].iter().flatten().min().copied();
                        covered.push((highest, after.unwrap_or(u64::MAX)));
                    }
                }
            }
            let mut missing: Vec<u64> = c
                .acknowledged
                .iter()
                .copied()
                .filter(|seq| !received.contains(seq))
                .collect();
            missing.sort_unstable();
            for seq in missing {
                if covered
                    .iter()
                    .any(|&(before, after)| before < seq && seq < after)
                {
                    check.in_gaps += 1;
                } else {
                    check.lost += 1;
                    check.lost_messages.push((name.clone(), seq));
                    check.example(format!(
                        "{name}: {seq} lost (highest received {highest}, gaps {covered:?})"
                    ));
                }
            }
        }
        check
    }
}

impl SequenceCheck {
    fn example(&mut self, text: String) {
        if self.examples.len() < 10 {
            self.examples.push(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(published: &[(u64, Published)], seen: &[Option<u64>]) -> SequenceCheck {
        let mut h = Sequences::new();
        for &(seq, outcome) in published {
            h.published("c", seq, outcome);
        }
        for event in seen {
            match event {
                Some(seq) => h.received("c", *seq),
                None => h.gap("c"),
            }
        }
        h.check()
    }

    use Published::*;

    #[test]
    fn a_clean_run_is_clean() {
        let check = history(
            &[(1, Acknowledged), (2, Ambiguous), (3, Acknowledged)],
            &[Some(1), Some(3)],
        );
        assert!(check.is_clean(), "{check:?}");
        assert_eq!(
            (check.acknowledged, check.ambiguous, check.received),
            (2, 1, 2)
        );
    }

    #[test]
    fn what_a_gap_covers_is_not_lost() {
        let check = history(
            &[
                (1, Acknowledged),
                (2, Acknowledged),
                (3, Acknowledged),
                (4, Acknowledged),
            ],
            &[Some(1), None, Some(4)],
        );
        assert!(check.is_clean(), "{check:?}");
        assert_eq!((check.in_gaps, check.gaps), (2, 1));
    }

    #[test]
    fn a_message_missing_outside_a_gap_is_lost() {
        let check = history(
            &[(1, Acknowledged), (2, Acknowledged), (3, Acknowledged)],
            &[Some(1), Some(3)],
        );
        assert_eq!(check.lost, 1);
        assert!(check.examples[0].contains("2 lost"), "{check:?}");
        // Missing at the end, with no gap after it: lost too.
        let check = history(&[(1, Acknowledged), (2, Acknowledged)], &[Some(1)]);
        assert_eq!(check.lost, 1);
    }

    #[test]
    fn a_message_before_a_gap_is_not_covered_by_it() {
        // 2 was received before the gap began: its loss is not the gap's.
        let check = history(
            &[
                (1, Acknowledged),
                (2, Acknowledged),
                (3, Acknowledged),
                (4, Acknowledged),
            ],
            &[Some(1), Some(3), None, Some(4)],
        );
        assert_eq!(check.lost, 1);
    }

    #[test]
    fn a_copy_across_a_gap_is_a_duplicate() {
        let check = history(
            &[(1, Acknowledged), (2, Acknowledged), (3, Acknowledged)],
            &[Some(1), Some(2), None, Some(2), Some(3)],
        );
        assert_eq!(check.duplicates, 1);
        assert!(
            check.examples[0].contains("1 gaps between"),
            "{:?}",
            check.examples
        );
        assert!(!check.is_clean());
    }
}
