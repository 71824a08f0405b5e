//! The end-of-demo table: what each client saw during each phase.

use tokio::time::Duration;

use crate::client::ClientCounters;

use super::Snapshot;
use super::timeline::Totals;

/// One phase of the demo and, per client, what happened during it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PhaseRow {
    /// The phase (fault) label.
    pub(crate) label: String,
    /// Per client: name, call totals and client counters accumulated during the phase.
    pub(crate) clients: Vec<(&'static str, Totals, ClientCounters)>,
    /// Per client (same order), the time from the end of the fault to the client's first
    /// successful call after it; empty for the baseline.
    pub(crate) first_ok_after: Vec<Option<Duration>>,
}

impl PhaseRow {
    /// The row for the phase between two snapshots of the same clients.
    pub(crate) fn between(label: String, before: &Snapshot, after: &Snapshot) -> PhaseRow {
        let clients = after
            .iter()
            .zip(before)
            .map(|((name, totals, counters), (_, totals0, counters0))| {
                (*name, totals.since(*totals0), counters.since(*counters0))
            })
            .collect();
        PhaseRow {
            label,
            clients,
            first_ok_after: Vec::new(),
        }
    }

    /// The same row with the clients' recovery times.
    pub(crate) fn with_first_ok_after(self, first_ok_after: Vec<Option<Duration>>) -> PhaseRow {
        PhaseRow {
            first_ok_after,
            ..self
        }
    }
}

/// Renders the rows as an aligned text table.
pub(crate) fn render_table(rows: &[PhaseRow]) -> String {
    let width = rows
        .iter()
        .map(|row| row.label.len())
        .max()
        .unwrap_or(0)
        .max("fault".len());
    let mut out = format!(
        "{:<width$}  {:<10} {:>10} {:>8} {:>10} {:>8} {:>11} {:>14}\n",
        "fault", "client", "ops", "errors", "ambiguous", "retries", "reconnects", "first ok after"
    );
    out.push_str(&format!("{}\n", "-".repeat(width + 79)));
    for row in rows {
        for (index, (name, totals, counters)) in row.clients.iter().enumerate() {
            let label = if index == 0 { row.label.as_str() } else { "" };
            let first_ok = match row.first_ok_after.get(index) {
                Some(Some(after)) => format!("{} ms", after.as_millis()),
                Some(None) => "never".to_owned(),
                None => "-".to_owned(),
            };
            out.push_str(&format!(
                "{label:<width$}  {name:<10} {:>10} {:>8} {:>10} {:>8} {:>11} {first_ok:>14}\n",
                totals.ops, totals.errors, totals.ambiguous, counters.retries, counters.reconnects
            ));
        }
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_is_the_difference_of_two_snapshots() {
        let before = vec![(
            "resilient",
            Totals {
                ops: 10,
                errors: 0,
                ambiguous: 0,
            },
            ClientCounters {
                retries: 1,
                reconnects: 0,
                ..ClientCounters::default()
            },
        )];
        let after = vec![(
            "resilient",
            Totals {
                ops: 25,
                errors: 2,
                ambiguous: 1,
            },
            ClientCounters {
                retries: 4,
                reconnects: 1,
                ..ClientCounters::default()
            },
        )];
        let row = PhaseRow::between("kill".to_owned(), &before, &after);
        assert_eq!(
            row.clients,
            vec![(
                "resilient",
                Totals {
                    ops: 15,
                    errors: 2,
                    ambiguous: 1
                },
                ClientCounters {
                    retries: 3,
                    reconnects: 1,
                    ..ClientCounters::default()
                }
            )]
        );
        let row = row.with_first_ok_after(vec![Some(Duration::from_millis(12))]);
        let table = render_table(&[row]);
        assert!(table.contains("12 ms"), "{table}");
        assert_eq!(table.lines().count(), 3);
        assert!(
            table
                .lines()
                .nth(2)
                .is_some_and(|line| line.starts_with("kill "))
        );
    }
}
