//! Circuit breakers around the service's dependencies (database, storage, callbacks): closed,
//! open and half-open, with a failure-rate window, an open duration and a number of trial calls.
//! Their state is queryable (`GET /v1/breakers`) so operators can see why work pauses.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use speechmill_queue::{Clock, Millis};
use utoipa::ToSchema;

/// How a breaker decides.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Outcomes older than this are forgotten.
    pub window: Duration,
    /// Fewer outcomes than this in the window never open the breaker.
    pub min_calls: usize,
    /// The breaker opens when this fraction of the window's calls failed.
    pub failure_rate: f64,
    /// How long it stays open before letting trial calls through.
    pub open_for: Duration,
    /// Successful trial calls that close it again.
    pub trial_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: Duration::from_secs(10),
            min_calls: 5,
            failure_rate: 0.5,
            open_for: Duration::from_secs(5),
            trial_calls: 3,
        }
    }
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the open duration has passed.
    Open,
    /// A few trial calls go through; success closes, failure opens again.
    HalfOpen,
}

/// A breaker as operators see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BreakerView {
    /// What it protects: `database`, `storage` or `callbacks`.
    pub name: String,
    /// Its state.
    pub state: BreakerState,
    /// Failed fraction of the calls in the window.
    pub failure_rate: f64,
    /// Calls in the window.
    pub calls_in_window: usize,
}

/// What a breaker remembers; guarded by the breaker's mutex.
#[derive(Debug)]
struct Inner {
    /// Current state.
    state: BreakerState,
    /// Recent outcomes (time, success), oldest first; written by `record`.
    window: VecDeque<(Millis, bool)>,
    /// When it last opened.
    opened_at: Millis,
    /// Trial calls let through since half-opening.
    trials_started: u32,
    /// Trial calls that succeeded since half-opening.
    trials_succeeded: u32,
}

/// One circuit breaker. Cheap to share; every method takes a short lock and never awaits.
pub struct Breaker {
    /// What it protects.
    name: &'static str,
    /// How it decides.
    config: BreakerConfig,
    /// The time source (injectable for tests).
    clock: Arc<dyn Clock>,
    /// The state, written by `allow` and `record`.
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker").field("name", &self.name).field("state", &self.state()).finish()
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new(name: &'static str, config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        Breaker {
            name,
            config,
            clock,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                window: VecDeque::new(),
                opened_at: 0,
                trials_started: 0,
                trials_succeeded: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a call may go ahead now; `Err` carries how long to wait before asking again.
    pub fn allow(&self) -> Result<(), Duration> {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => {
                let reopens = inner.opened_at + self.config.open_for.as_millis() as Millis;
                if now < reopens {
                    return Err(Duration::from_millis((reopens - now) as u64));
                }
                inner.state = BreakerState::HalfOpen;
                inner.trials_started = 1;
                inner.trials_succeeded = 0;
                Ok(())
            }
            BreakerState::HalfOpen => {
                if inner.trials_started < self.config.trial_calls {
                    inner.trials_started += 1;
                    Ok(())
                } else {
                    Err(Duration::from_millis(100))
                }
            }
        }
    }

    /// How long until an open breaker lets calls through, without taking a trial call; `None`
    /// when a call would be allowed now. For refusing work early, before the guarded call.
    pub fn refusing_for(&self) -> Option<Duration> {
        let now = self.clock.now_ms();
        let inner = self.lock();
        if inner.state != BreakerState::Open {
            return None;
        }
        let reopens = inner.opened_at + self.config.open_for.as_millis() as Millis;
        (now < reopens).then(|| Duration::from_millis((reopens - now) as u64))
    }

    /// Records a call's outcome.
    pub fn record(&self, success: bool) {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        match inner.state {
            BreakerState::HalfOpen => {
                if !success {
                    self.open(&mut inner, now);
                    return;
                }
                inner.trials_succeeded += 1;
                if inner.trials_succeeded >= self.config.trial_calls {
                    inner.state = BreakerState::Closed;
                    inner.window.clear();
                    tracing::info!(breaker = self.name, "circuit breaker closed");
                }
            }
            BreakerState::Open => {}
            BreakerState::Closed => {
                inner.window.push_back((now, success));
                self.forget_old(&mut inner, now);
                let calls = inner.window.len();
                let failures = inner.window.iter().filter(|(_, ok)| !ok).count();
                if calls >= self.config.min_calls && failures as f64 >= self.config.failure_rate * calls as f64 {
                    self.open(&mut inner, now);
                }
            }
        }
    }

    fn open(&self, inner: &mut Inner, now: Millis) {
        inner.state = BreakerState::Open;
        inner.opened_at = now;
        inner.window.clear();
        tracing::warn!(breaker = self.name, "circuit breaker opened");
    }

    fn forget_old(&self, inner: &mut Inner, now: Millis) {
        let horizon = now - self.config.window.as_millis() as Millis;
        while inner.window.front().is_some_and(|(at, _)| *at < horizon) {
            inner.window.pop_front();
        }
    }

    /// The current state (an open breaker past its open duration still shows open until a call
    /// is tried).
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// The breaker as operators see it.
    pub fn view(&self) -> BreakerView {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        self.forget_old(&mut inner, now);
        let calls = inner.window.len();
        let failures = inner.window.iter().filter(|(_, ok)| !ok).count();
        BreakerView {
            name: self.name.to_string(),
            state: inner.state,
            failure_rate: if calls == 0 { 0.0 } else { failures as f64 / calls as f64 },
            calls_in_window: calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use speechmill_queue::ManualClock;

    fn breaker() -> (Breaker, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        (Breaker::new("database", BreakerConfig::default(), Arc::new(clock.clone())), clock)
    }

    #[test]
    fn a_failure_rate_over_the_threshold_opens_the_breaker() {
        let (breaker, _) = breaker();
        for success in [true, false, true, false] {
            breaker.record(success);
        }
        assert_eq!(breaker.state(), BreakerState::Closed, "fewer calls than min_calls");
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.allow(), Err(Duration::from_secs(5)));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let (breaker, clock) = breaker();
        for _ in 0..4 {
            breaker.record(false);
        }
        clock.advance(Duration::from_secs(11));
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn after_the_open_duration_trial_calls_close_or_reopen_it() {
        let (breaker, clock) = breaker();
        for _ in 0..5 {
            breaker.record(false);
        }
        clock.advance(Duration::from_secs(5));
        for _ in 0..3 {
            assert_eq!(breaker.allow(), Ok(()));
        }
        assert!(breaker.allow().is_err(), "only three trial calls");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.record(true);
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(5));
        for _ in 0..3 {
            assert_eq!(breaker.allow(), Ok(()));
            breaker.record(true);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
