//! The one backoff: doubling delays with a ceiling.
//!
//! Stream job restarts, blocking sinks (PostgreSQL), the alert webhook and
//! the load client all wait this way between attempts, each with its own
//! first and longest delay (written next to where it is built).

use std::time::Duration;

/// Delays that double after each failed attempt, up to a ceiling.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`, doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The delay to wait now; the following one is twice as long (at most
    /// the ceiling).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// The delay [`Backoff::next_delay`] would return, without moving on.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Back to the first delay (after a success, or a long healthy run).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The ceiling.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_ceiling_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let delays: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(250));
    }
}
