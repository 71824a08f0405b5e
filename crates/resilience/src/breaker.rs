//! Circuit breaker: closed / open / half-open.
//!
//! The closed-state success path touches only atomics (a state load, a load of the
//! consecutive-failure counter, and one slot of the failure-rate window). Transitions take a
//! small mutex. Every state-machine step takes `now` as an argument (`*_at` methods), so the
//! logic is unit-testable without a clock; the plain methods read `tokio::time::Instant`.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::ConfigError;
use crate::event::{Event, Listener};
use crate::observe::BreakerMetrics;

/// Settings of a [`CircuitBreaker`].
///
/// # Default
/// Opens after 5 consecutive failures, or when at least 20 of the last 100 calls made within
/// 30 s were recorded and 50 % of them failed; stays open 5 s; half-open admits 3 concurrent
/// probes and closes after 3 probe successes. Named `default`; sets the state gauge.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many consecutive server-fault failures. `None` disables the rule.
    pub consecutive_failures: Option<u32>,
    /// Open when the failure rate over the window reaches this fraction, in `(0, 1]`.
    /// `None` disables the rule (and the window bookkeeping on the success path).
    pub failure_rate: Option<f64>,
    /// The window holds at most the last `window_calls` calls (count-based bound).
    pub window_calls: u32,
    /// ... and only those recorded within the last `window_duration` (time-based bound).
    pub window_duration: Duration,
    /// The rate rule applies only when the window holds at least this many calls.
    pub minimum_calls: u32,
    /// How long the breaker stays open before admitting probes.
    pub open_duration: Duration,
    /// Maximum number of concurrent probe calls in the half-open state.
    pub half_open_max_probes: u32,
    /// Probe successes needed to close again. Any probe failure re-opens.
    pub close_after_successes: u32,
    /// Label for tracing, metrics and events.
    pub name: Cow<'static, str>,
    /// Whether the breaker sets the `resilience.breaker.state` gauge (label `breaker`) at each
    /// transition. A caller that publishes the state itself, under labels of its own, turns it
    /// off so that each breaker has one state series (resilient-redis publishes one per node).
    /// The transitions counter is emitted either way.
    ///
    /// # Default
    /// `true`.
    pub state_gauge: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: Some(5),
            failure_rate: Some(0.5),
            window_calls: 100,
            window_duration: Duration::from_secs(30),
            minimum_calls: 20,
            open_duration: Duration::from_secs(5),
            half_open_max_probes: 3,
            close_after_successes: 3,
            name: Cow::Borrowed("default"),
            state_gauge: true,
        }
    }
}

/// The state of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls fail at once.
    Open {
        /// Time until probes are admitted (zero: the next call will probe).
        retry_in: Duration,
    },
    /// A bounded number of probe calls pass; the rest fail at once.
    HalfOpen,
}

impl BreakerState {
    /// `"closed"`, `"open"` or `"half_open"` (the metric label).
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of the `resilience.breaker.state` gauge: closed 0, open 1, half-open 2.
    pub fn gauge_value(&self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open { .. } => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

/// The breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open; probing in {retry_in:?}")]
pub struct BreakerOpen {
    /// Time until the breaker admits probe calls. Zero when it is half-open and all probe
    /// slots are taken (it is probing now).
    pub retry_in: Duration,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

const SLOT_SUCCESS: u64 = 1;
const SLOT_FAILURE: u64 = 2;

/// A circuit breaker. Cheap to clone: clones share one state.
///
/// # Behavior
/// - **Closed**: [`CircuitBreaker::try_acquire`] always grants a permit. A permit's
///   [`failure`](BreakerPermit::failure) counts toward opening: `consecutive_failures` in a
///   row, or a failure rate of at least `failure_rate` over the window (the last
///   `window_calls` calls that are younger than `window_duration`, when it holds at least
///   `minimum_calls`). [`success`](BreakerPermit::success) resets the consecutive count.
/// - **Open**: `try_acquire` fails at once with [`BreakerOpen`] saying when it will probe.
///   After `open_duration` the next `try_acquire` moves to half-open.
/// - **Half-open**: at most `half_open_max_probes` permits are out at a time; others fail with
///   `retry_in = 0`. `close_after_successes` probe successes close the breaker (and clear the
///   window); one probe failure re-opens it for another `open_duration`. A dropped probe permit
///   (neither success nor failure, e.g. a user error) frees its slot.
/// - Outcomes of permits granted before a transition are ignored after it.
///
/// # Example
/// ```no_run
/// use resilience::{BreakerConfig, CircuitBreaker};
/// # async fn call() -> Result<(), std::io::Error> { Ok(()) }
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let breaker = CircuitBreaker::new(BreakerConfig::default())?;
/// let permit = breaker.try_acquire()?; // Err(BreakerOpen { retry_in }) when open
/// match call().await {
///     Ok(()) => permit.success(),
///     Err(_) => permit.failure(),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Shared>,
}

struct Shared {
    config: BreakerConfig,
    origin: Instant,
    state: AtomicU8,
    consecutive: AtomicU32,
    /// Nanoseconds since `origin` at which an open breaker admits probes.
    open_until: AtomicU64,
    /// Ring of the last `window_calls` outcomes: `(nanos since origin) << 2 | outcome`, 0 empty.
    slots: Box<[AtomicU64]>,
    /// Written on every closed-state outcome: kept on its own cache line so that it does not
    /// invalidate the line holding `state` and `consecutive`, which every call reads.
    cursor: Padded<AtomicU64>,
    control: Mutex<Control>,
    listeners: Mutex<Vec<Listener>>,
    metrics: BreakerMetrics,
}

/// Aligns its content to its own cache line (128 bytes covers adjacent-line prefetching).
#[repr(align(128))]
struct Padded<T>(T);

struct Control {
    /// Incremented on every entry into half-open; probe permits carry it.
    epoch: u64,
    in_flight: u32,
    successes: u32,
}

impl CircuitBreaker {
    /// Creates a closed breaker.
    ///
    /// # Errors
    /// A zero count or duration, `failure_rate` outside `(0, 1]`, `minimum_calls` above
    /// `window_calls`, or `window_calls` above 100 000.
    pub fn new(config: BreakerConfig) -> Result<Self, ConfigError> {
        if config.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "BreakerConfig::consecutive_failures",
                "must be >= 1",
            ));
        }
        if let Some(rate) = config.failure_rate
            && !(rate > 0.0 && rate <= 1.0)
        {
            return Err(ConfigError::new(
                "BreakerConfig::failure_rate",
                "must be in (0, 1]",
            ));
        }
        if config.window_calls == 0 || config.window_calls > 100_000 {
            return Err(ConfigError::new(
                "BreakerConfig::window_calls",
                "must be in 1..=100000",
            ));
        }
        if config.window_duration.is_zero() {
            return Err(ConfigError::new(
                "BreakerConfig::window_duration",
                "must be > 0",
            ));
        }
        if config.minimum_calls == 0 || config.minimum_calls > config.window_calls {
            return Err(ConfigError::new(
                "BreakerConfig::minimum_calls",
                "must be in 1..=window_calls",
            ));
        }
        if config.open_duration.is_zero() {
            return Err(ConfigError::new(
                "BreakerConfig::open_duration",
                "must be > 0",
            ));
        }
        if config.half_open_max_probes == 0 {
            return Err(ConfigError::new(
                "BreakerConfig::half_open_max_probes",
                "must be >= 1",
            ));
        }
        if config.close_after_successes == 0 {
            return Err(ConfigError::new(
                "BreakerConfig::close_after_successes",
                "must be >= 1",
            ));
        }
        let slots = if config.failure_rate.is_some() {
            config.window_calls as usize
        } else {
            0
        };
        Ok(Self {
            inner: Arc::new(Shared {
                origin: Instant::now(),
                state: AtomicU8::new(CLOSED),
                consecutive: AtomicU32::new(0),
                open_until: AtomicU64::new(0),
                slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
                cursor: Padded(AtomicU64::new(0)),
                control: Mutex::new(Control {
                    epoch: 0,
                    in_flight: 0,
                    successes: 0,
                }),
                listeners: Mutex::new(Vec::new()),
                metrics: BreakerMetrics::new(),
                config,
            }),
        })
    }

    /// The settings this breaker was built with.
    pub fn config(&self) -> &BreakerConfig {
        &self.inner.config
    }

    /// Adds a listener for [`Event::BreakerTransition`]. Listeners live as long as the breaker.
    pub fn add_listener(&self, listener: Listener) {
        lock(&self.inner.listeners).push(listener);
    }

    /// The current state (read from `tokio::time::Instant::now()`).
    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    /// Whether the breaker is closed (one atomic load, no clock read): calls pass.
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == CLOSED
    }

    /// The state as seen at `now`. An open breaker whose open time has passed reports
    /// `Open { retry_in: 0 }` until a call moves it to half-open.
    pub fn state_at(&self, now: Instant) -> BreakerState {
        let s = &*self.inner;
        match s.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open {
                retry_in: s.retry_in(s.nanos(now)),
            },
            _ => BreakerState::HalfOpen,
        }
    }

    /// Asks to make one call; reads `tokio::time::Instant::now()`.
    ///
    /// # Errors
    /// [`BreakerOpen`] when the breaker is open, or half-open with all probe slots taken.
    #[inline]
    pub fn try_acquire(&self) -> Result<BreakerPermit<'_>, BreakerOpen> {
        self.try_acquire_at(Instant::now())
    }

    /// [`CircuitBreaker::try_acquire`] at an explicit `now`.
    ///
    /// # Errors
    /// As [`CircuitBreaker::try_acquire`].
    #[inline]
    pub fn try_acquire_at(&self, now: Instant) -> Result<BreakerPermit<'_>, BreakerOpen> {
        let s = &*self.inner;
        let now_ns = s.nanos(now);
        match s.state.load(Ordering::Acquire) {
            CLOSED => Ok(BreakerPermit {
                shared: s,
                kind: PermitKind::Closed,
                at: now_ns,
            }),
            OPEN if now_ns < s.open_until.load(Ordering::Acquire) => Err(BreakerOpen {
                retry_in: s.retry_in(now_ns),
            }),
            _ => s.acquire_slow(now_ns),
        }
    }
}

impl Shared {
    #[inline]
    fn nanos(&self, now: Instant) -> u64 {
        // 2^62 ns is 146 years: the shift in the window encoding cannot overflow.
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX)
            .min(1 << 62)
    }

    fn retry_in(&self, now_ns: u64) -> Duration {
        Duration::from_nanos(
            self.open_until
                .load(Ordering::Acquire)
                .saturating_sub(now_ns),
        )
    }

    #[cold]
    fn acquire_slow(&self, now_ns: u64) -> Result<BreakerPermit<'_>, BreakerOpen> {
        let mut transition = None;
        let result = {
            let mut ctl = lock(&self.control);
            match self.state.load(Ordering::Acquire) {
                CLOSED => Ok(BreakerPermit {
                    shared: self,
                    kind: PermitKind::Closed,
                    at: now_ns,
                }),
                OPEN if now_ns < self.open_until.load(Ordering::Acquire) => Err(BreakerOpen {
                    retry_in: self.retry_in(now_ns),
                }),
                state => {
                    if state == OPEN {
                        ctl.epoch += 1;
                        ctl.in_flight = 0;
                        ctl.successes = 0;
                        self.state.store(HALF_OPEN, Ordering::Release);
                        transition = Some((
                            BreakerState::Open {
                                retry_in: Duration::ZERO,
                            },
                            BreakerState::HalfOpen,
                        ));
                    }
                    if ctl.in_flight < self.config.half_open_max_probes {
                        ctl.in_flight += 1;
                        Ok(BreakerPermit {
                            shared: self,
                            kind: PermitKind::Probe { epoch: ctl.epoch },
                            at: now_ns,
                        })
                    } else {
                        Err(BreakerOpen {
                            retry_in: Duration::ZERO,
                        })
                    }
                }
            }
        };
        if let Some((from, to)) = transition {
            self.notify(from, to);
        }
        result
    }

    #[inline]
    fn closed_success(&self, at: u64) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if !self.slots.is_empty() {
            self.record(at, SLOT_SUCCESS);
        }
    }

    #[inline]
    fn record(&self, at: u64, outcome: u64) {
        let i = self.cursor.0.fetch_add(1, Ordering::Relaxed) % self.slots.len() as u64;
        self.slots[i as usize].store((at << 2) | outcome, Ordering::Relaxed);
    }

    fn closed_failure(&self, now_ns: u64) {
        if self.state.load(Ordering::Acquire) != CLOSED {
            return;
        }
        let consecutive = self
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if !self.slots.is_empty() {
            self.record(now_ns, SLOT_FAILURE);
        }
        let trip = self
            .config
            .consecutive_failures
            .is_some_and(|n| consecutive >= n)
            || self.rate_exceeded(now_ns);
        if trip {
            self.open(CLOSED, now_ns);
        }
    }

    fn rate_exceeded(&self, now_ns: u64) -> bool {
        let Some(threshold) = self.config.failure_rate else {
            return false;
        };
        let window = u64::try_from(self.config.window_duration.as_nanos()).unwrap_or(u64::MAX);
        let oldest = now_ns.saturating_sub(window);
        let (mut total, mut failures) = (0u32, 0u32);
        for slot in &self.slots {
            let v = slot.load(Ordering::Relaxed);
            if v != 0 && (v >> 2) >= oldest {
                total += 1;
                failures += u32::from(v & 3 == SLOT_FAILURE);
            }
        }
        total >= self.config.minimum_calls && f64::from(failures) >= threshold * f64::from(total)
    }

    /// Moves `from` -> open (if still in `from`).
    fn open(&self, from: u8, now_ns: u64) {
        {
            let _ctl = lock(&self.control);
            if self.state.load(Ordering::Acquire) != from {
                return;
            }
            let open_ns = u64::try_from(self.config.open_duration.as_nanos()).unwrap_or(u64::MAX);
            self.open_until
                .store(now_ns.saturating_add(open_ns), Ordering::Release);
            self.state.store(OPEN, Ordering::Release);
        }
        let from = if from == CLOSED {
            BreakerState::Closed
        } else {
            BreakerState::HalfOpen
        };
        self.notify(
            from,
            BreakerState::Open {
                retry_in: self.config.open_duration,
            },
        );
    }

    fn probe_done(&self, epoch: u64, outcome: Option<bool>, now_ns: u64) {
        let mut closed = false;
        {
            let mut ctl = lock(&self.control);
            if self.state.load(Ordering::Acquire) != HALF_OPEN || ctl.epoch != epoch {
                return;
            }
            ctl.in_flight = ctl.in_flight.saturating_sub(1);
            match outcome {
                None => return,
                Some(false) => {}
                Some(true) => {
                    ctl.successes += 1;
                    if ctl.successes >= self.config.close_after_successes {
                        for slot in &self.slots {
                            slot.store(0, Ordering::Relaxed);
                        }
                        self.consecutive.store(0, Ordering::Relaxed);
                        self.state.store(CLOSED, Ordering::Release);
                        closed = true;
                    } else {
                        return;
                    }
                }
            }
        }
        if closed {
            self.notify(BreakerState::HalfOpen, BreakerState::Closed);
        } else {
            self.open(HALF_OPEN, now_ns);
        }
    }

    #[cold]
    fn notify(&self, from: BreakerState, to: BreakerState) {
        let name: &str = &self.config.name;
        let config = &self.config;
        self.metrics
            .transition(&config.name, config.state_gauge, from, to);
        let listeners = lock(&self.listeners).clone();
        let event = Event::BreakerTransition {
            breaker: name,
            from,
            to,
        };
        for l in &listeners {
            l(&event);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a listener panicked elsewhere.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, Copy)]
enum PermitKind {
    Closed,
    Probe { epoch: u64 },
    Done,
}

/// Permission to make one call through a [`CircuitBreaker`]. Report the outcome with
/// [`BreakerPermit::success`] or [`BreakerPermit::failure`]; dropping the permit reports
/// neither (use it for outcomes that say nothing about the server's health, such as a user
/// error) and frees a half-open probe slot.
#[must_use = "report the outcome with success() or failure(), or drop it to report neither"]
pub struct BreakerPermit<'a> {
    shared: &'a Shared,
    kind: PermitKind,
    /// Nanoseconds since the breaker's origin when the permit was granted.
    at: u64,
}

impl BreakerPermit<'_> {
    /// The call succeeded.
    #[inline]
    pub fn success(mut self) {
        match std::mem::replace(&mut self.kind, PermitKind::Done) {
            PermitKind::Closed => self.shared.closed_success(self.at),
            PermitKind::Probe { epoch } => self.shared.probe_done(epoch, Some(true), self.at),
            PermitKind::Done => {}
        }
    }

    /// The call failed because of the server (reads `tokio::time::Instant::now()`).
    pub fn failure(self) {
        self.failure_at(Instant::now());
    }

    /// [`BreakerPermit::failure`] at an explicit `now`.
    pub fn failure_at(mut self, now: Instant) {
        let now_ns = self.shared.nanos(now);
        match std::mem::replace(&mut self.kind, PermitKind::Done) {
            PermitKind::Closed => self.shared.closed_failure(now_ns),
            PermitKind::Probe { epoch } => self.shared.probe_done(epoch, Some(false), now_ns),
            PermitKind::Done => {}
        }
    }

    /// Whether this permit is a half-open probe.
    pub fn is_probe(&self) -> bool {
        matches!(self.kind, PermitKind::Probe { .. })
    }
}

impl Drop for BreakerPermit<'_> {
    #[inline]
    fn drop(&mut self) {
        if let PermitKind::Probe { epoch } = self.kind {
            self.shared.probe_done(epoch, None, self.at);
        }
    }
}

impl fmt::Debug for BreakerPermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerPermit")
            .field("kind", &self.kind)
            .finish()
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.config.name)
            .field("state", &self.state())
            .finish()
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
