//! Token buckets for webhook rate limits, one per key (a trigger, a workspace), in memory.
//!
//! Limits hold per engine process: with several engines behind a load balancer each admits its
//! share, so a limit of `n` admits up to `n` times the number of engines. Memory is bounded:
//! past [`MAX_KEYS`] buckets, those that have refilled completely (and so carry no
//! information) are dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before full ones are dropped.
pub const MAX_KEYS: usize = 10_000;

/// A rate: `requests` per `per`, with bursts up to `requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per period, and the bucket's size.
    pub requests: u32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    fn per_second(self) -> f64 {
        f64::from(self.requests) / self.per.as_secs_f64().max(f64::EPSILON)
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets by key.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// Takes one token from `key`'s bucket, or says how long until one is there.
    pub fn take(&self, key: &str, rate: Rate, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(rate.requests.max(1));
        let refill = rate.per_second();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * refill < capacity
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * refill).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / refill))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_the_size_then_one_per_interval() {
        let limiter = Limiter::default();
        let rate = Rate {
            requests: 3,
            per: Duration::from_secs(3),
        };
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take("a", rate, t0), Ok(()));
        }
        let wait = limiter.take("a", rate, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        // Other keys have their own bucket.
        assert_eq!(limiter.take("b", rate, t0), Ok(()));
        assert_eq!(limiter.take("a", rate, t0 + Duration::from_secs(1)), Ok(()));
        assert!(
            limiter
                .take("a", rate, t0 + Duration::from_secs(1))
                .is_err()
        );
    }

    #[test]
    fn full_buckets_are_dropped_past_the_key_limit() {
        let limiter = Limiter::default();
        let rate = Rate {
            requests: 1,
            per: Duration::from_millis(1),
        };
        let t0 = Instant::now();
        for i in 0..MAX_KEYS {
            limiter.take(&i.to_string(), rate, t0).unwrap();
        }
        limiter
            .take("new", rate, t0 + Duration::from_secs(1))
            .unwrap();
        let kept = limiter.buckets.lock().unwrap().len();
        assert_eq!(
            kept, 1,
            "only the new bucket is kept once the others refilled"
        );
    }
}
