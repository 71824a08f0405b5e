//! `bench --metrics-addr IP:PORT`: the resilient client's metrics as a Prometheus page while the
//! run lasts.
//!
//! # Behavior
//! - [`serve`] installs the process-wide `metrics` recorder and starts the page. Call it before
//!   any client is created: the client registers its metric handles when it is created, and a
//!   handle registered before a recorder exists records nothing.
//! - Every path but `/health` renders every metric in the Prometheus text format (so
//!   `GET /metrics` works); dotted names are written with underscores
//!   (`db.client.operation.duration` becomes `db_client_operation_duration`).
//! - The durations of calls (`db.client.operation.duration`) and of connection set-up
//!   (`db.client.connection.create_time`) are histograms with buckets from 50 µs to 5 s
//!   ([`LATENCY_BUCKETS_S`]); other histograms are summaries (the exporter's default).
//! - The page lives as long as the process: it ends with the run.
//! - A malformed address or port 0 is refused when the command line is parsed; an address that
//!   cannot be bound (in use, not an address of this machine) is a usage error. Both exit 2.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::error::CliError;

/// Histogram buckets for Redis latencies, in seconds: 50 µs (a loopback round trip) to 5 s (a
/// call that waited through a failover).
pub(crate) const LATENCY_BUCKETS_S: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// The histograms that get [`LATENCY_BUCKETS_S`].
pub(crate) const LATENCY_HISTOGRAMS: [&str; 2] = [
    "db.client.operation.duration",
    "db.client.connection.create_time",
];

/// `--metrics-addr`'s value: `IP:PORT`, with a port other than 0 (the page must be found).
pub(crate) fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not IP:PORT (e.g. 127.0.0.1:9091)"))?;
    if addr.port() == 0 {
        return Err(format!("{text:?}: give a port other than 0"));
    }
    Ok(addr)
}

/// Installs the Prometheus recorder and serves its page on `addr`; call it from inside the
/// runtime, before any client is created.
///
/// # Errors
/// [`CliError::Usage`] when `addr` cannot be bound; [`CliError::Runtime`] when a recorder is
/// already installed (not done by this program).
pub(crate) fn serve(addr: SocketAddr) -> Result<(), CliError> {
    let builder = with_latency_buckets(PrometheusBuilder::new().with_http_listener(addr))
        .map_err(|err| CliError::runtime(format!("--metrics-addr: {err}")))?;
    builder.install().map_err(|err| match err {
        metrics_exporter_prometheus::BuildError::FailedToCreateHTTPListener(reason) => {
            CliError::usage(format!(
                "--metrics-addr {addr}: cannot listen there: {reason}"
            ))
        }
        other => CliError::runtime(format!("--metrics-addr {addr}: {other}")),
    })?;
    eprintln!("metrics: serving http://{addr}/metrics");
    Ok(())
}

/// `builder` with [`LATENCY_BUCKETS_S`] for the [`LATENCY_HISTOGRAMS`].
fn with_latency_buckets(
    mut builder: PrometheusBuilder,
) -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    for name in LATENCY_HISTOGRAMS {
        builder =
            builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), &LATENCY_BUCKETS_S)?;
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_addr_needs_an_ip_and_a_port() {
        assert_eq!(
            parse_metrics_addr("127.0.0.1:9091"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 9091)))
        );
        assert!(parse_metrics_addr("[::1]:9091").is_ok());
        for bad in ["127.0.0.1", "localhost:9091", "127.0.0.1:0", ":9091", ""] {
            assert!(parse_metrics_addr(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn latency_buckets_rise_from_50_us_to_5_s() {
        assert_eq!(LATENCY_BUCKETS_S.first(), Some(&0.000_05));
        assert_eq!(LATENCY_BUCKETS_S.last(), Some(&5.0));
        assert!(LATENCY_BUCKETS_S.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_latency_histograms_get_the_buckets_and_others_stay_summaries() {
        let recorder = with_latency_buckets(PrometheusBuilder::new())
            .expect("valid buckets")
            .build_recorder();
        let page = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("db.client.operation.duration", "outcome" => "ok").record(0.000_07);
            metrics::histogram!("db.client.connection.create_time").record(0.002);
            metrics::histogram!("some.other.duration").record(0.002);
        });
        let page = page.render();
        for line in [
            r#"db_client_operation_duration_bucket{outcome="ok",le="0.00005"} 0"#,
            r#"db_client_operation_duration_bucket{outcome="ok",le="0.0001"} 1"#,
            r#"db_client_connection_create_time_bucket{le="0.0025"} 1"#,
            r#"db_client_connection_create_time_bucket{le="5"} 1"#,
            r#"some_other_duration{quantile="0.5"}"#,
        ] {
            assert!(page.contains(line), "{line:?} missing in:\n{page}");
        }
    }
}
