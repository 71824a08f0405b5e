//! The span of one call, and what the call path notes into it while it runs (attempts, retry
//! reasons, waits, the node that answered) through a task-local set only for traced calls: an
//! untraced call's notes are one thread-local check each.

use std::{
    cell::{Cell, RefCell},
    fmt::Write,
    sync::Arc,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use redis::Value;
use tracing::{Level, Span, field::Empty};

use crate::{
    commands::{self, args::Name},
    error::{Error, Outcome},
    replies::Code,
    request::{Reply, Request},
};

tokio::task_local! {
    static TRACE: CallTrace;
}

/// Traced calls in flight in the process: while there are none (no subscriber wants the
/// spans), a note from the call path is one load of this, not a task-local lookup.
static TRACED: AtomicUsize = AtomicUsize::new(0);

/// Where the last attempt of a call went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Route {
    #[default]
    None,
    Master,
    Replica,
    Redirected,
}

/// What a traced call's path notes while it runs.
#[derive(Default)]
pub(crate) struct CallTrace {
    attempts: Cell<u32>,
    reasons: RefCell<String>,
    waited: Cell<Duration>,
    server: RefCell<Option<Arc<str>>>,
    route: Cell<Route>,
}

/// Whether calls are traced now: spans at `level` are wanted for the target, and this is not
/// already a traced call (a call made inside one counts in it).
#[inline]
pub(crate) fn wanted(level: Option<Level>) -> bool {
    let Some(level) = level else { return false };
    let on = match level {
        Level::TRACE => tracing::enabled!(target: "resilient_redis", Level::TRACE),
        Level::DEBUG => tracing::enabled!(target: "resilient_redis", Level::DEBUG),
        Level::INFO => tracing::enabled!(target: "resilient_redis", Level::INFO),
        Level::WARN => tracing::enabled!(target: "resilient_redis", Level::WARN),
        Level::ERROR => tracing::enabled!(target: "resilient_redis", Level::ERROR),
    };
    on && TRACE.try_with(|_| ()).is_err()
}

/// The span of one call at `$level`; its fields in the order [`finish`] records them.
macro_rules! call_span {
    ($level:expr, $op:expr, $db:expr, $query:expr) => {
        tracing::span!(
            target: "resilient_redis",
            $level,
            "redis",
            otel.name = $op,
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = "redis",
            db.operation.name = $op,
            db.namespace = $db,
            db.query.text = $query,
            db.response.status_code = Empty,
            error.type = Empty,
            server.address = Empty,
            server.port = Empty,
            resilient_redis.outcome = Empty,
            resilient_redis.attempts = Empty,
            resilient_redis.retry_reasons = Empty,
            resilient_redis.connection_wait_ms = Empty,
            resilient_redis.route = Empty,
        )
    };
}

/// How many fields a call span has (checked by a test against the span's field list).
const FIELDS: usize = 16;

fn new_span(level: Level, op: &str, db: i64, query: Option<&str>) -> Span {
    match level {
        Level::TRACE => call_span!(Level::TRACE, op, db, query),
        Level::DEBUG => call_span!(Level::DEBUG, op, db, query),
        Level::INFO => call_span!(Level::INFO, op, db, query),
        Level::WARN => call_span!(Level::WARN, op, db, query),
        Level::ERROR => call_span!(Level::ERROR, op, db, query),
    }
}

/// Runs `call` in a span at `level` for `request`, noting what its path reports; returns its
/// result.
pub(crate) async fn traced(
    request: Request<'_>,
    level: Level,
    db: i64,
    keys: bool,
    call: impl Future<Output = Result<Reply, Error>>,
) -> Result<Reply, Error> {
    use tracing::Instrument;
    let name = operation(request);
    let op = std::str::from_utf8(name.as_bytes()).unwrap_or("OTHER");
    let query = match request {
        Request::Cmd(cmd) if keys => Some(query_text(cmd)),
        _ => None,
    };
    let span = new_span(level, op, db, query.as_deref());
    struct InFlight;
    impl Drop for InFlight {
        fn drop(&mut self) {
            TRACED.fetch_sub(1, Ordering::Relaxed);
        }
    }
    TRACED.fetch_add(1, Ordering::Relaxed);
    let _in_flight = InFlight;
    let (result, trace) = TRACE
        .scope(
            CallTrace::default(),
            async {
                let result = call.await;
                (result, TRACE.with(CallTrace::take))
            }
            .instrument(span.clone()),
        )
        .await;
    finish(&span, &trace, &result);
    result
}

impl CallTrace {
    fn take(&self) -> CallTrace {
        CallTrace {
            attempts: Cell::new(self.attempts.get()),
            reasons: RefCell::new(self.reasons.take()),
            waited: Cell::new(self.waited.get()),
            server: RefCell::new(self.server.take()),
            route: Cell::new(self.route.get()),
        }
    }
}

/// Records the call's outcome and what its path noted, in one record (a subscriber that
/// formats fields formats them once).
fn finish(span: &Span, trace: &CallTrace, result: &Result<Reply, Error>) {
    let Some(meta) = span.metadata() else { return };
    // Integers as i64: OpenTelemetry has no unsigned attributes (tracing-opentelemetry turns
    // a u64 into a string).
    let attempts = i64::from(trace.attempts.get());
    let reasons = trace.reasons.borrow();
    let waited_ms = trace.waited.get().as_secs_f64() * 1e3;
    let route = match trace.route.get() {
        Route::None => None,
        Route::Master => Some("master"),
        Route::Replica => Some("replica"),
        Route::Redirected => Some("redirected"),
    };
    let server = trace.server.borrow();
    let (host, port) = match server.as_deref() {
        Some(addr) => match crate::addr::split_addr(addr) {
            Some((host, port)) => (Some(host), Some(i64::from(port))),
            None => (Some(addr), None),
        },
        None => (None, None),
    };
    let (outcome, code, error_type) = match result {
        Ok(Reply::One(Value::ServerError(e))) => ("failed", Some(e.code().to_owned()), None),
        Ok(_) => ("ok", None, None),
        Err(e) => (
            outcome_str(e.outcome()),
            e.redis_error()
                .and_then(Code::of_redis)
                .map(|c| c.as_str().to_owned()),
            Some(e.kind().as_str()),
        ),
    };
    let failed = outcome != "ok";
    let error_type =
        failed.then(|| error_type.unwrap_or_else(|| code.as_deref().unwrap_or("server")));
    let status = failed.then_some("ERROR");
    let code = code.as_deref();
    let reasons = reasons.as_str();
    let values: [Option<&dyn tracing::Value>; FIELDS] = [
        None,
        None,
        status.as_ref().map(|v| v as &dyn tracing::Value),
        None,
        None,
        None,
        None,
        code.as_ref().map(|v| v as &dyn tracing::Value),
        error_type.as_ref().map(|v| v as &dyn tracing::Value),
        host.as_ref().map(|v| v as &dyn tracing::Value),
        port.as_ref().map(|v| v as &dyn tracing::Value),
        Some(&outcome),
        Some(&attempts),
        (!reasons.is_empty()).then_some(&reasons as &dyn tracing::Value),
        (waited_ms > 0.0).then_some(&waited_ms as &dyn tracing::Value),
        route.as_ref().map(|v| v as &dyn tracing::Value),
    ];
    span.record_all(&meta.fields().value_set_all(&values));
}

/// The metric and span name of an outcome.
pub(crate) fn outcome_str(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ambiguous => "ambiguous",
        Outcome::Failed => "failed",
        _ => "ok",
    }
}

/// The operation name of a request: the command's, upper case, or `PIPELINE` / `MULTI`.
#[inline]
pub(crate) fn operation(request: Request<'_>) -> Name {
    match request {
        Request::Cmd(cmd) => commands::command_name(cmd).unwrap_or_else(|| Name::of(b"OTHER")),
        Request::Pipeline { pipeline, .. } if pipeline.is_transaction() => Name::of(b"MULTI"),
        Request::Pipeline { .. } => Name::of(b"PIPELINE"),
    }
}

/// `SET key ?`: the command with its keys, every other argument replaced.
fn query_text(cmd: &redis::Cmd) -> String {
    let mut keys = commands::positioned_keys(cmd).peekable();
    let mut text = String::new();
    for (i, word) in commands::args::words(cmd).enumerate() {
        if i > 0 {
            text.push(' ');
        }
        if i == 0 {
            text.push_str(&String::from_utf8_lossy(word).to_uppercase());
        } else if keys.peek().is_some_and(|(k, _)| *k == i) {
            keys.next();
            let _ = write!(text, "{}", String::from_utf8_lossy(word));
        } else {
            text.push('?');
        }
    }
    text
}

/// Notes `count` attempts sent (0: another hop of the same attempt), to the server and on a
/// replica or not as `to` says (asked only for a traced call).
#[inline]
pub(crate) fn note_attempt(to: impl FnOnce() -> (Option<Arc<str>>, bool), count: u32) {
    if TRACED.load(Ordering::Relaxed) == 0 {
        return;
    }
    let _ = TRACE.try_with(|t| {
        t.attempts.set(t.attempts.get() + count);
        let (server, replica) = to();
        *t.server.borrow_mut() = server;
        if t.route.get() != Route::Redirected {
            t.route.set(if replica {
                Route::Replica
            } else {
                Route::Master
            });
        }
    });
}

/// Notes a retry made for `reason`.
pub(crate) fn note_retry(reason: &str) {
    let _ = TRACE.try_with(|t| {
        let mut reasons = t.reasons.borrow_mut();
        if !reasons.is_empty() {
            reasons.push(',');
        }
        reasons.push_str(reason);
    });
}

/// Notes time spent waiting for a connection or for the topology.
pub(crate) fn note_wait(waited: Duration) {
    if TRACED.load(Ordering::Relaxed) == 0 {
        return;
    }
    let _ = TRACE.try_with(|t| t.waited.set(t.waited.get() + waited));
}

/// Notes that a cluster redirect was followed.
pub(crate) fn note_redirect() {
    let _ = TRACE.try_with(|t| t.route.set(Route::Redirected));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_records_the_fields_in_the_span_order() {
        struct Names(std::sync::Arc<std::sync::Mutex<Vec<String>>>);
        impl tracing::Subscriber for Names {
            fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
                let names = span.metadata().fields().iter().map(|f| f.name().to_owned());
                self.0.lock().unwrap().extend(names);
                tracing::span::Id::from_u64(1)
            }
            fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
            fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
            fn event(&self, _: &tracing::Event<'_>) {}
            fn enter(&self, _: &tracing::span::Id) {}
            fn exit(&self, _: &tracing::span::Id) {}
        }
        let names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        tracing::subscriber::with_default(Names(names.clone()), || {
            let _span = new_span(Level::INFO, "GET", 0, None);
        });
        let names = names.lock().unwrap();
        assert_eq!(names.len(), FIELDS);
        for (i, name) in [
            (2, "otel.status_code"),
            (7, "db.response.status_code"),
            (8, "error.type"),
            (9, "server.address"),
            (10, "server.port"),
            (11, "resilient_redis.outcome"),
            (12, "resilient_redis.attempts"),
            (13, "resilient_redis.retry_reasons"),
            (14, "resilient_redis.connection_wait_ms"),
            (15, "resilient_redis.route"),
        ] {
            assert_eq!(names[i], name);
        }
    }

    #[test]
    fn query_text_keeps_keys_only() {
        let cmd = commands::cmd_of(&["set", "user:1", "secret"]);
        assert_eq!(query_text(&cmd), "SET user:1 ?");
        let cmd = commands::cmd_of(&["MSET", "a", "1", "b", "2"]);
        assert_eq!(query_text(&cmd), "MSET a ? b ?");
        let cmd = commands::cmd_of(&["PING"]);
        assert_eq!(query_text(&cmd), "PING");
    }
}
