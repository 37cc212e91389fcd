//! Exponential backoff, the one policy of every retry loop (MQTT reconnects, the InfluxDB sink,
//! notification channels): start at `initial`, double after each failure up to `max`, start over
//! after a success. Pure: the loops do the sleeping.

use std::time::Duration;

/// The delays of one retry loop.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays `initial`, 2 × `initial`, … up to `max` (`max` below `initial` means `initial`).
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The delay before the next attempt, without advancing.
    pub(crate) fn peek(&self) -> Duration {
        self.next
    }

    /// The delay before the next attempt; the one after it is twice as long, up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.checked_mul(2).unwrap_or(self.max).min(self.max);
        d
    }

    /// After a success: the next failure waits `initial` again.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn doubles_up_to_the_cap_and_starts_over() {
        let mut b = Backoff::new(ms(200), ms(1000));
        let seq: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert_eq!(
            seq,
            [ms(200), ms(400), ms(800), ms(1000), ms(1000), ms(1000)]
        );
        assert_eq!(b.peek(), ms(1000));
        b.reset();
        assert_eq!(b.next_delay(), ms(200));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::MAX / 2 + ms(1), Duration::MAX);
        b.next_delay();
        assert_eq!(b.next_delay(), Duration::MAX);
        assert_eq!(Backoff::new(ms(5), ms(1)).next_delay(), ms(5));
    }
}
