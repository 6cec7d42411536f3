//! Okta-style rate-limit windows: a budget of requests per window of about 60 s that starts at
//! the first request after the previous window ended (not aligned to wall-clock minutes).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One bucket (per org, or per org and token).
pub(crate) struct Bucket {
    window_start: Instant,
    /// Epoch seconds at which the current window ends (`X-Rate-Limit-Reset`).
    reset_epoch: u64,
    used: u32,
}

/// The outcome of taking one request from a bucket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Take {
    pub allowed: bool,
    pub remaining: u32,
    pub reset_epoch: u64,
}

pub(crate) fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn reset_for(window: Duration) -> u64 {
    // Round up: a client waiting until Reset must find the window over.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now + window).as_secs() + u64::from((now + window).subsec_nanos() > 0)
}

impl Bucket {
    pub fn new(window: Duration) -> Bucket {
        Bucket {
            window_start: Instant::now(),
            reset_epoch: reset_for(window),
            used: 0,
        }
    }

    fn roll(&mut self, window: Duration) {
        if self.window_start.elapsed() >= window {
            *self = Bucket::new(window);
        }
    }

    /// Takes one request if the budget allows it.
    pub fn take(&mut self, limit: u32, window: Duration) -> Take {
        self.roll(window);
        let allowed = self.used < limit;
        if allowed {
            self.used += 1;
        }
        Take {
            allowed,
            remaining: limit.saturating_sub(self.used),
            reset_epoch: self.reset_epoch,
        }
    }

    /// Gives back a request taken by [`Bucket::take`] (the other bucket refused it).
    pub fn give_back(&mut self) {
        self.used = self.used.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_then_refusal_then_new_window() {
        let window = Duration::from_millis(200);
        let mut b = Bucket::new(window);
        let first = b.take(2, window);
        assert!(first.allowed);
        assert_eq!(first.remaining, 1);
        assert!(first.reset_epoch >= epoch_secs());
        assert!(b.take(2, window).allowed);
        let refused = b.take(2, window);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        std::thread::sleep(window);
        assert!(b.take(2, window).allowed);
    }
}
