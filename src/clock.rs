//! The registry's clock: what "now" is for token expiry, creation and publication dates,
//! and the age of files. It is passed to what needs it (the stores, the indexer, the
//! application state), never read from a global, so that a test can set it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

impl dyn Clock {
    /// Seconds since the Unix epoch (0 before it).
    pub fn unix_secs(&self) -> i64 {
        self.since_epoch()
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    /// Milliseconds since the Unix epoch (0 before it).
    pub fn unix_ms(&self) -> i64 {
        self.since_epoch()
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    fn since_epoch(&self) -> Option<Duration> {
        self.now().duration_since(UNIX_EPOCH).ok()
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that stands still until moved: for tests of expiry and ageing.
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    pub fn new(now: SystemTime) -> ManualClock {
        ManualClock(Mutex::new(now))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("clock poisoned");
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().expect("clock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let manual = Arc::new(ManualClock::new(start));
        let clock: SharedClock = manual.clone();
        assert_eq!(clock.unix_secs(), 1_700_000_000);
        assert_eq!(clock.unix_ms(), 1_700_000_000_250);
        manual.advance(Duration::from_secs(3600));
        assert_eq!(clock.unix_secs(), 1_700_003_600);
        let before_epoch: SharedClock =
            Arc::new(ManualClock::new(UNIX_EPOCH - Duration::from_secs(1)));
        assert_eq!(before_epoch.unix_secs(), 0);
    }
}
