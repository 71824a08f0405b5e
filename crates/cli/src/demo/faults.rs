//! The faults the demo injects, in order, and how each is applied to the lab server.

use tokio::time::Duration;

use crate::error::CliError;
use redis_lab::RedisServer;

/// One fault of the demo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// `CLIENT KILL TYPE normal`: every client connection is closed by the server.
    ClientKill,
    /// `DEBUG SLEEP`: the server stops answering for this long (longer than the response timeout).
    DebugSleep(Duration),
    /// `SHUTDOWN NOSAVE`, then a restart on the same port after `down`.
    Restart {
        /// How long the server stays down.
        down: Duration,
    },
    /// A Lua script that keeps the server busy (it answers `BUSY`) for this long.
    BusyScript(Duration),
}

impl Fault {
    /// The faults the issue asks for, in order.
    pub(crate) fn schedule() -> [Fault; 4] {
        [
            Fault::ClientKill,
            Fault::DebugSleep(Duration::from_millis(1500)),
            Fault::Restart {
                down: Duration::from_secs(2),
            },
            Fault::BusyScript(Duration::from_secs(1)),
        ]
    }

    /// A human label for the table and the live view.
    pub(crate) fn label(self) -> String {
        match self {
            Fault::ClientKill => "CLIENT KILL TYPE normal".to_owned(),
            Fault::DebugSleep(d) => format!("DEBUG SLEEP {}", seconds(d)),
            Fault::Restart { down } => format!("SHUTDOWN NOSAVE + restart after {}", seconds(down)),
            Fault::BusyScript(d) => format!("busy Lua script {}", seconds(d)),
        }
    }

    /// A short label for the chart's markers.
    pub(crate) fn short_label(self) -> &'static str {
        match self {
            Fault::ClientKill => "client kill",
            Fault::DebugSleep(_) => "debug sleep",
            Fault::Restart { .. } => "restart",
            Fault::BusyScript(_) => "busy script",
        }
    }

    /// How long the fault lasts once injected (an upper bound used to size the timeline).
    pub(crate) fn expected_length(self) -> Duration {
        match self {
            Fault::ClientKill => Duration::ZERO,
            Fault::DebugSleep(d) | Fault::BusyScript(d) => d,
            // Shutdown and startup of a small server take well under a second each.
            Fault::Restart { down } => down + Duration::from_secs(2),
        }
    }

    /// Applies the fault and returns when it is over (the server answers normally again).
    pub(crate) async fn inject(self, server: &mut RedisServer) -> Result<(), CliError> {
        let failed =
            |err: redis_lab::LabError| CliError::runtime(format!("{}: {err}", self.label()));
        match self {
            Fault::ClientKill => server.client_kill_normal().await.map(drop).map_err(failed),
            Fault::DebugSleep(d) => server.debug_sleep(d).await.map_err(failed),
            Fault::Restart { down } => {
                server.stop().await.map_err(failed)?;
                tokio::time::sleep(down).await;
                server.restart().await.map_err(failed)
            }
            Fault::BusyScript(d) => server.busy_script(d).await.map_err(failed),
        }
    }
}

fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_the_issue_order_with_labels() {
        let labels: Vec<String> = Fault::schedule().iter().map(|f| f.label()).collect();
        assert_eq!(
            labels,
            [
                "CLIENT KILL TYPE normal",
                "DEBUG SLEEP 1.5 s",
                "SHUTDOWN NOSAVE + restart after 2 s",
                "busy Lua script 1 s"
            ]
        );
    }
}
