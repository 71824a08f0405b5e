//! Group commit of durable writes on one connection: one `WAIT` confirms every write whose
//! reply had arrived before it was sent.
//!
//! `WAIT` blocks its connection on the server until the replicas acknowledge (the commands
//! behind it wait in the server's input buffer), so a `WAIT` per write on a multiplexed
//! connection serialises every writer behind one replication round trip each. It also counts
//! the replicas that hold *every* write of its connection so far, so one `WAIT` can answer for
//! all of them.
//!
//! # Behavior
//! - A write takes a ticket when its reply arrives ([`WaitGroup::ticket`]); a `WAIT` sent after
//!   that covers it. Tickets are numbered in arrival order.
//! - One `WAIT` is in flight per connection. A writer that finds one in flight waits for it to
//!   end, then takes the answer of the last round if that round covered its ticket (and asked
//!   for at least as many replicas, or got them); otherwise it sends the next `WAIT` itself,
//!   covering every ticket taken so far.
//! - A write that finds no `WAIT` in flight ([`WaitGroup::try_lead`]) sends its own in the
//!   same round trip as the write: a lone writer pays one round trip, and under load the
//!   round's first writer too.
//! - A leader dropped mid-round (its caller gave up) releases the round: the next writer sends
//!   its own `WAIT`.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, MutexGuard};

/// What a `WAIT` answered, shared by every write its round covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The number of replicas that acknowledged.
    Replicas(i64),
    /// The `WAIT` failed (an error reply, the connection lost, the deadline): nothing is known.
    Failed(String),
}

/// One finished round.
#[derive(Clone, Debug)]
struct Round {
    /// The highest ticket it covered.
    upto: u64,
    /// The replicas its `WAIT` asked for.
    wanted: u32,
    answer: Answer,
}

impl Round {
    /// The round's answer for a write holding `ticket` that wants `wanted` replicas, if it
    /// gives one.
    fn answers(&self, ticket: u64, wanted: u32) -> Option<Answer> {
        if self.upto < ticket {
            return None;
        }
        match self.answer {
            // Enough replicas, or as many as this round asked for: WAIT waited its whole
            // timeout for them, and the count is final.
            Answer::Replicas(n) if n >= i64::from(wanted) || self.wanted >= wanted => {
                Some(self.answer.clone())
            }
            Answer::Replicas(_) => None,
            Answer::Failed(_) => Some(self.answer.clone()),
        }
    }
}

/// The group commit state of one connection.
#[derive(Debug)]
pub(crate) struct WaitGroup {
    /// The connection's generation.
    generation: u64,
    /// Tickets handed out (the last one's number).
    replied: AtomicU64,
    /// The last finished round; held by the writer sending a `WAIT`.
    last: Mutex<Option<Round>>,
}

/// The turn to send the next `WAIT` (see [`WaitGroup::confirm`]).
pub(crate) struct Leader<'a> {
    last: MutexGuard<'a, Option<Round>>,
    upto: u64,
    wanted: u32,
}

impl Leader<'_> {
    /// Records what the `WAIT` answered, for every write it covered, and ends the round.
    pub(crate) fn finish(mut self, answer: Answer) -> Answer {
        *self.last = Some(Round {
            upto: self.upto,
            wanted: self.wanted,
            answer: answer.clone(),
        });
        answer
    }
}

/// What [`WaitGroup::confirm`] gives a write.
pub(crate) enum Turn<'a> {
    /// A round that covered the write answered for it.
    Answered(Answer),
    /// The write's own round: send `WAIT wanted timeout`, then [`Leader::finish`].
    Lead(Leader<'a>),
}

impl WaitGroup {
    /// The group of the connection of `generation`.
    pub(crate) fn new(generation: u64) -> WaitGroup {
        WaitGroup {
            generation,
            replied: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// The generation of the connection it belongs to.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The turn to send a `WAIT` at once, behind a write not sent yet, if none is in flight
    /// (nor waited for): the round covers that write and every ticket handed out so far.
    pub(crate) fn try_lead(&self, wanted: u32) -> Option<Leader<'_>> {
        let last = self.last.try_lock().ok()?;
        let upto = self.replied.load(Ordering::Acquire);
        Some(Leader { last, upto, wanted })
    }

    /// A write's reply arrived: its ticket.
    pub(crate) fn ticket(&self) -> u64 {
        self.replied.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The answer for the write holding `ticket` that wants `wanted` replicas: a round that
    /// covered it, or the turn to send the next `WAIT`.
    pub(crate) async fn confirm(&self, ticket: u64, wanted: u32) -> Turn<'_> {
        let last = self.last.lock().await;
        if let Some(answer) = last.as_ref().and_then(|r| r.answers(ticket, wanted)) {
            return Turn::Answered(answer);
        }
        // Every ticket handed out so far: their replies arrived, so their writes were sent
        // before the WAIT this leader is about to send.
        let upto = self.replied.load(Ordering::Acquire);
        Turn::Lead(Leader { last, upto, wanted })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn lead(group: &WaitGroup, ticket: u64, wanted: u32) -> Leader<'_> {
        match group.confirm(ticket, wanted).await {
            Turn::Lead(leader) => leader,
            Turn::Answered(a) => panic!("answered {a:?}, expected to lead"),
        }
    }

    async fn answered(group: &WaitGroup, ticket: u64, wanted: u32) -> Answer {
        match group.confirm(ticket, wanted).await {
            Turn::Answered(a) => a,
            Turn::Lead(_) => panic!("expected an answer for ticket {ticket}"),
        }
    }

    #[tokio::test]
    async fn one_wait_answers_for_every_write_before_it() {
        let group = WaitGroup::new(7);
        let (a, b, c) = (group.ticket(), group.ticket(), group.ticket());
        let leader = lead(&group, a, 2).await;
        // Taken after the WAIT was sent: not covered.
        let late = group.ticket();
        assert_eq!(leader.finish(Answer::Replicas(2)), Answer::Replicas(2));
        assert_eq!(answered(&group, b, 2).await, Answer::Replicas(2));
        assert_eq!(answered(&group, c, 1).await, Answer::Replicas(2));
        let next = lead(&group, late, 2).await;
        next.finish(Answer::Replicas(2));
        assert_eq!(answered(&group, late, 2).await, Answer::Replicas(2));
    }

    #[tokio::test]
    async fn a_short_count_answers_only_for_writes_that_asked_no_more() {
        let group = WaitGroup::new(1);
        let (a, b) = (group.ticket(), group.ticket());
        lead(&group, a, 1).await.finish(Answer::Replicas(1));
        // `b` wants two: WAIT 1 returned at the first replica, the second may follow.
        lead(&group, b, 2).await.finish(Answer::Replicas(1));
        // A round that asked for two and got one is final for every write it covered.
        assert_eq!(answered(&group, a, 2).await, Answer::Replicas(1));
        let failed = Answer::Failed("connection lost".to_owned());
        let c = group.ticket();
        lead(&group, c, 2).await.finish(failed.clone());
        assert_eq!(answered(&group, c, 1).await, failed);
    }

    #[tokio::test(start_paused = true)]
    async fn writers_that_arrive_during_a_wait_share_the_next_one() {
        let group = Arc::new(WaitGroup::new(1));
        let sent = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..20u64 {
            let (group, sent) = (group.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                // Replies arrive 1 ms apart; each WAIT takes 5 ms.
                tokio::time::sleep(std::time::Duration::from_millis(i)).await;
                let ticket = group.ticket();
                match group.confirm(ticket, 1).await {
                    Turn::Answered(a) => a,
                    Turn::Lead(leader) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        leader.finish(Answer::Replicas(1))
                    }
                }
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Answer::Replicas(1));
        }
        // 20 writes over 20 ms, a WAIT at most every 5 ms: a handful of rounds, not 20.
        let rounds = sent.load(Ordering::Relaxed);
        assert!((2..=6).contains(&rounds), "{rounds} rounds");
    }

    #[tokio::test]
    async fn a_dropped_leader_leaves_the_round_to_the_next_writer() {
        let group = WaitGroup::new(1);
        let a = group.ticket();
        drop(lead(&group, a, 1).await);
        lead(&group, a, 1).await.finish(Answer::Replicas(1));
    }

    #[tokio::test]
    async fn a_write_leads_at_once_only_while_no_wait_is_in_flight() {
        let group = WaitGroup::new(1);
        let a = group.ticket();
        let first = group.try_lead(1).expect("nothing in flight");
        assert!(group.try_lead(1).is_none(), "a WAIT is in flight");
        first.finish(Answer::Replicas(1));
        // The round covered the ticket taken before it.
        assert_eq!(answered(&group, a, 1).await, Answer::Replicas(1));
        assert!(group.try_lead(1).is_some());
    }
}
