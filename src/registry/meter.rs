//! A rate meter with the same numbers as the `measured` library the original used for
//! `/status`: count, mean rate, the rate since the last read, and 1/5/15-minute exponentially
//! weighted moving averages ticked every 5 seconds. Marking is one atomic add, so it can sit on
//! the heartbeat path.

use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the moving averages are updated (measured's `TICK_INTERVAL`).
pub const TICK_INTERVAL: Duration = Duration::from_secs(5);

/// One exponentially weighted moving average, in events per millisecond (as measured keeps it).
#[derive(Debug, Clone, Copy)]
struct Ewma {
    alpha: f64,
    rate_per_ms: f64,
}

impl Ewma {
    fn minutes(minutes: f64) -> Self {
        let tick_ms = TICK_INTERVAL.as_millis() as f64;
        Ewma {
            alpha: 1.0 - (-tick_ms / (minutes * 60_000.0)).exp(),
            rate_per_ms: 0.0,
        }
    }

    fn tick(&mut self, count: u64) {
        let instant_rate = count as f64 / TICK_INTERVAL.as_millis() as f64;
        self.rate_per_ms += self.alpha * (instant_rate - self.rate_per_ms);
    }

    fn per_second(&self) -> f64 {
        self.rate_per_ms * 1000.0
    }
}

#[derive(Debug)]
struct Averages {
    counted_at_last_tick: u64,
    m1: Ewma,
    m5: Ewma,
    m15: Ewma,
    counted_at_last_read: u64,
    last_read: Instant,
}

/// The `/status` shape of a meter; keys in measured's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeterReading {
    pub mean: f64,
    pub count: u64,
    #[serde(rename = "currentRate")]
    pub current_rate: f64,
    #[serde(rename = "1MinuteRate")]
    pub one_minute_rate: f64,
    #[serde(rename = "5MinuteRate")]
    pub five_minute_rate: f64,
    #[serde(rename = "15MinuteRate")]
    pub fifteen_minute_rate: f64,
}

#[derive(Debug)]
pub struct Meter {
    count: AtomicU64,
    started: Instant,
    averages: Mutex<Averages>,
}

impl Meter {
    pub fn new(now: Instant) -> Self {
        Meter {
            count: AtomicU64::new(0),
            started: now,
            averages: Mutex::new(Averages {
                counted_at_last_tick: 0,
                m1: Ewma::minutes(1.0),
                m5: Ewma::minutes(5.0),
                m15: Ewma::minutes(15.0),
                counted_at_last_read: 0,
                last_read: now,
            }),
        }
    }

    pub fn mark(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Called every [`TICK_INTERVAL`] by the registry's ticker task.
    pub fn tick(&self) {
        let count = self.count.load(Ordering::Relaxed);
        let mut averages = self.averages.lock().unwrap_or_else(|p| p.into_inner());
        let new = count.saturating_sub(averages.counted_at_last_tick);
        averages.counted_at_last_tick = count;
        averages.m1.tick(new);
        averages.m5.tick(new);
        averages.m15.tick(new);
    }

    /// Reads the meter; like measured, `currentRate` covers the time since the previous read.
    pub fn read(&self, now: Instant) -> MeterReading {
        let count = self.count.load(Ordering::Relaxed);
        let mut averages = self.averages.lock().unwrap_or_else(|p| p.into_inner());
        let since_read = now
            .saturating_duration_since(averages.last_read)
            .as_secs_f64();
        let new = count.saturating_sub(averages.counted_at_last_read);
        let current_rate = if since_read > 0.0 {
            new as f64 / since_read
        } else {
            0.0
        };
        averages.counted_at_last_read = count;
        averages.last_read = now;
        let elapsed = now.saturating_duration_since(self.started).as_secs_f64();
        MeterReading {
            mean: if elapsed > 0.0 {
                count as f64 / elapsed
            } else {
                0.0
            },
            count,
            current_rate,
            one_minute_rate: averages.m1.per_second(),
            five_minute_rate: averages.m5.per_second(),
            fifteen_minute_rate: averages.m15.per_second(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn counts_mean_and_current_rate() {
        let t0 = Instant::now();
        let meter = Meter::new(t0);
        for _ in 0..20 {
            meter.mark();
        }
        let reading = meter.read(t0 + Duration::from_secs(2));
        assert_eq!(reading.count, 20);
        assert!(close(reading.mean, 10.0), "{reading:?}");
        assert!(close(reading.current_rate, 10.0), "{reading:?}");
        // Nothing new since the last read.
        let reading = meter.read(t0 + Duration::from_secs(4));
        assert!(close(reading.current_rate, 0.0), "{reading:?}");
        assert!(close(reading.mean, 5.0), "{reading:?}");
    }

    #[test]
    fn moving_averages_match_measured() {
        let t0 = Instant::now();
        let meter = Meter::new(t0);
        for _ in 0..50 {
            meter.mark();
        }
        meter.tick();
        let reading = meter.read(t0 + TICK_INTERVAL);
        // measured: rate += alpha * (50 / 5000ms - 0), reported per second.
        let alpha_1m = 1.0 - (-5000.0f64 / 60_000.0).exp();
        let alpha_15m = 1.0 - (-5000.0f64 / 900_000.0).exp();
        assert!(
            close(reading.one_minute_rate, alpha_1m * 10.0),
            "{reading:?}"
        );
        assert!(
            close(reading.fifteen_minute_rate, alpha_15m * 10.0),
            "{reading:?}"
        );
        // A quiet tick decays the average.
        meter.tick();
        let decayed = meter.read(t0 + 2 * TICK_INTERVAL);
        assert!(close(
            decayed.one_minute_rate,
            alpha_1m * 10.0 * (1.0 - alpha_1m)
        ));
    }

    #[test]
    fn reading_serialises_with_the_originals_keys_in_order() {
        let reading = Meter::new(Instant::now()).read(Instant::now());
        let text = serde_json::to_string(&reading).unwrap();
        let keys: Vec<&str> = text.split('"').skip(1).step_by(2).collect();
        assert_eq!(
            keys,
            [
                "mean",
                "count",
                "currentRate",
                "1MinuteRate",
                "5MinuteRate",
                "15MinuteRate"
            ]
        );
    }
}
