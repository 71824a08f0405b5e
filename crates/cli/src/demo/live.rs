//! The demo's live view: a few lines redrawn in place on a terminal, plain lines otherwise.

use std::io::Write as _;

use tokio::time::Duration;

/// What the live view shows for one client.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ClientLine {
    /// `"resilient"` or `"raw"`.
    pub(crate) name: &'static str,
    /// Successful calls per second over the last redraw interval.
    pub(crate) ok_per_sec: f64,
    /// Completed calls so far.
    pub(crate) ops: u64,
    /// Errors the application saw so far.
    pub(crate) errors: u64,
    /// Attempts the client repeated on its own so far.
    pub(crate) retries: u64,
    /// New connections after a breakage so far.
    pub(crate) reconnects: u64,
}

/// Draws the live view on stdout.
///
/// # Behavior
/// - On a terminal: the same block of lines is redrawn in place (ANSI cursor-up + clear-line).
/// - Otherwise (pipe, file, CI log): one plain line per `plain_every`, never an escape code.
#[derive(Debug)]
pub(crate) struct LiveView {
    tty: bool,
    drawn: usize,
    plain_every: Duration,
    last_plain: Option<Duration>,
}

impl LiveView {
    /// A view for a terminal (`tty`) or a plain stream.
    pub(crate) fn new(tty: bool, plain_every: Duration) -> LiveView {
        LiveView {
            tty,
            drawn: 0,
            plain_every,
            last_plain: None,
        }
    }

    /// Shows the state at `elapsed` into the demo.
    pub(crate) fn draw(&mut self, elapsed: Duration, phase: &str, clients: &[ClientLine]) {
        self.show(
            elapsed,
            || render_block(elapsed, phase, clients),
            || render_plain(elapsed, phase, clients),
        );
    }

    /// Shows any view: `block` on a terminal, `plain` otherwise (each rendered only if shown).
    pub(crate) fn show(
        &mut self,
        elapsed: Duration,
        block: impl FnOnce() -> Vec<String>,
        plain: impl FnOnce() -> String,
    ) {
        let mut out = std::io::stdout().lock();
        if self.tty {
            let lines = block();
            if self.drawn > 0 {
                let _ = write!(out, "\x1b[{}A", self.drawn);
            }
            for line in &lines {
                let _ = writeln!(out, "\x1b[2K{line}");
            }
            self.drawn = lines.len();
        } else {
            let due = self
                .last_plain
                .is_none_or(|last| elapsed >= last + self.plain_every);
            if !due {
                return;
            }
            self.last_plain = Some(elapsed);
            let _ = writeln!(out, "{}", plain());
        }
        let _ = out.flush();
    }

    /// Forgets the drawn block so the next output starts below it.
    pub(crate) fn detach(&mut self) {
        self.drawn = 0;
    }
}

/// The in-place block: a header line and one line per client.
pub(crate) fn render_block(elapsed: Duration, phase: &str, clients: &[ClientLine]) -> Vec<String> {
    let mut lines = vec![
        format!("t={:5.1} s  phase: {phase}", elapsed.as_secs_f64()),
        format!(
            "  {:<10} {:>9} {:>11} {:>8} {:>8} {:>11}",
            "client", "ok/s", "total ops", "errors", "retries", "reconnects"
        ),
    ];
    for c in clients {
        lines.push(format!(
            "  {:<10} {:>9.0} {:>11} {:>8} {:>8} {:>11}",
            c.name, c.ok_per_sec, c.ops, c.errors, c.retries, c.reconnects
        ));
    }
    lines
}

/// One plain line with the same information.
pub(crate) fn render_plain(elapsed: Duration, phase: &str, clients: &[ClientLine]) -> String {
    let parts: Vec<String> = clients
        .iter()
        .map(|c| {
            format!(
                "{} {:.0} ok/s, {} errors, {} retries, {} reconnects",
                c.name, c.ok_per_sec, c.errors, c.retries, c.reconnects
            )
        })
        .collect();
    format!(
        "t={:.1} s [{phase}] {}",
        elapsed.as_secs_f64(),
        parts.join(" | ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &'static str, errors: u64) -> ClientLine {
        ClientLine {
            name,
            ok_per_sec: 1234.4,
            ops: 10,
            errors,
            retries: 3,
            reconnects: 1,
        }
    }

    #[test]
    fn plain_line_has_no_escape_codes() {
        let text = render_plain(
            Duration::from_millis(2500),
            "baseline",
            &[line("resilient", 0), line("raw", 7)],
        );
        assert_eq!(
            text,
            "t=2.5 s [baseline] resilient 1234 ok/s, 0 errors, 3 retries, 1 reconnects | \
             raw 1234 ok/s, 7 errors, 3 retries, 1 reconnects"
        );
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn block_has_a_header_and_a_line_per_client() {
        let lines = render_block(
            Duration::from_secs(1),
            "restart",
            &[line("resilient", 0), line("raw", 2)],
        );
        assert_eq!(lines.len(), 4);
        assert!(lines[0].contains("phase: restart"));
        assert!(lines[3].trim_start().starts_with("raw"));
    }
}
