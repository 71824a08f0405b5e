//! The client's spans as OpenTelemetry spans, printed by the OpenTelemetry stdout exporter.
//!
//! ```text
//! cargo run -p resilient-redis-examples --example otel [-- redis://127.0.0.1:6379]
//! ```
//! The URL comes from the first argument, else `REDIS_URL`, else `redis://127.0.0.1:6379`.
//! Swap `opentelemetry_stdout::SpanExporter` for an OTLP exporter (`opentelemetry-otlp`) to send
//! the same spans to a collector, Jaeger or Tempo.
//!
//! # What appears
//! Each of the three rounds is a span `round` of this program; inside it, the client emits one
//! span per call (not per attempt), target `resilient_redis`, name `redis`, at `DEBUG` (the
//! client's `span_level`: an application logging at `INFO` builds none), which the filter below
//! lets through for the client only and `tracing-opentelemetry` turns into an OpenTelemetry span:
//! - `otel.name` sets the span's name (the command, e.g. `SET`) and `otel.kind` its kind
//!   (`client`);
//! - the database semantic conventions: `db.system.name` (`redis`), `db.operation.name`,
//!   `db.namespace` (the db index), `server.address` and `server.port` (the node that answered),
//!   `db.response.status_code` (the server's error code, on an error reply);
//! - `error.type` and `otel.status_code` (`ERROR`) on a call that failed;
//! - the client's own: `resilient_redis.attempts` (1 on a healthy path, more after retries),
//!   `resilient_redis.retry_reasons`, `resilient_redis.connection_wait_ms`,
//!   `resilient_redis.outcome` (`ok`, `failed` or `ambiguous`) and `resilient_redis.route`
//!   (`master`, `replica` or `redirected`). The full table is in the docs of
//!   `resilient_redis::observe`.
//!
//! Keys and values are not recorded. Each span is printed as it ends (the simple processor);
//! a service would use the batch processor.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use redis::AsyncCommands;
use tracing::Instrument as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("REDIS_URL").ok())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());

    // Spans end in the stdout exporter; tracing spans reach it through tracing-opentelemetry.
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("otel-example")
                .build(),
        )
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let tracer = provider.tracer("resilient-redis-example");
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        // The application at INFO, the client's call spans (DEBUG) too.
        .with(
            Targets::new()
                .with_default(tracing::Level::INFO)
                .with_target("resilient_redis", tracing::Level::DEBUG),
        )
        .try_init()?;

    let mut client = resilient_redis::Client::connect(&url).await?;
    for round in 0..3_i64 {
        async {
            let _: () = client.set("example:otel", round).await?;
            let value: i64 = client.get("example:otel").await?;
            let visits: i64 = client.incr("example:otel:visits", 1).await?;
            println!("round {round}: example:otel = {value}, visits = {visits}");
            Ok::<_, redis::RedisError>(())
        }
        .instrument(tracing::info_span!("round", round))
        .await?;
    }

    // Exports what is still buffered.
    provider.shutdown()?;
    Ok(())
}
