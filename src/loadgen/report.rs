//! Results of a load-tool run: latency histograms turned into percentiles, throughput, the
//! ratio of every test to the `healthz` baseline, and their text and JSON forms.
//!
//! Owns no I/O except writing the finished report where it is told to.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency histogram in microseconds, 1 µs to 60 s, three significant digits.
///
/// # Errors
/// Never in practice (the bounds are constants); the error type is hdrhistogram's.
pub fn new_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
}

/// Latency percentiles of one test, in microseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest request.
    pub max: u64,
}

impl Latency {
    /// Percentiles of a histogram (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        Latency {
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Outcome of one test.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TestResult {
    /// `healthz`, `get`, `put` or `mixed`.
    pub test: String,
    /// Requests answered with a success status.
    pub requests: u64,
    /// Requests that failed (non-2xx status or a connection error).
    pub errors: u64,
    /// Wall-clock length of the measured phase.
    pub seconds: f64,
    /// Successful requests per second.
    pub rps: f64,
    /// Latency of successful requests.
    pub latency_us: Latency,
    /// `rps` divided by the `healthz` test's `rps` of the same run (`None` without one).
    pub ratio_to_healthz: Option<f64>,
}

impl TestResult {
    /// Builds a result from the merged histogram of all workers.
    pub fn new(test: &str, h: &Histogram<u64>, errors: u64, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        TestResult {
            test: test.to_string(),
            requests: h.len(),
            errors,
            seconds: secs,
            rps: h.len() as f64 / secs,
            latency_us: Latency::of(h),
            ratio_to_healthz: None,
        }
    }
}

/// Everything a run measured, with the settings that produced it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Free-form label given with `--label` (for scripts that combine reports).
    pub label: Option<String>,
    /// `hoardhaven` or `etcd`.
    pub target: super::Target,
    /// The server's base URL.
    pub url: String,
    /// Concurrent connections.
    pub connections: usize,
    /// Distinct keys.
    pub keys: u64,
    /// Key length in bytes.
    pub key_size: usize,
    /// Value length in bytes.
    pub value_size: usize,
    /// Reads in the mixed test.
    pub read_ratio: f64,
    /// One row per test, in the order run (`healthz` first).
    pub results: Vec<TestResult>,
}

impl Report {
    /// Fills in every result's ratio to the `healthz` result.
    pub fn compute_ratios(&mut self) {
        let base = self
            .results
            .iter()
            .find(|r| r.test == "healthz")
            .map(|r| r.rps);
        for r in &mut self.results {
            r.ratio_to_healthz = base.filter(|b| *b > 0.0).map(|b| r.rps / b);
        }
    }

    /// The human-readable table.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{} at {}: {} connections, {} keys of {} B, values of {} B\n",
            match self.target {
                super::Target::Hoardhaven => "hoardhaven",
                super::Target::Etcd => "etcd",
            },
            self.url,
            self.connections,
            self.keys,
            self.key_size,
            self.value_size
        );
        s.push_str(&format!(
            "{:<8} {:>11} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}\n",
            "test", "req/s", "errors", "mean µs", "p50", "p90", "p99", "p99.9", "max", "/healthz"
        ));
        for r in &self.results {
            let l = &r.latency_us;
            let ratio = r
                .ratio_to_healthz
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "-".into());
            s.push_str(&format!(
                "{:<8} {:>11.0} {:>7} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}\n",
                r.test, r.rps, r.errors, l.mean, l.p50, l.p90, l.p99, l.p999, l.max, ratio
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_ratios() -> Result<(), Box<dyn std::error::Error>> {
        let mut h = new_histogram()?;
        for v in 1..=1000u64 {
            h.record(v)?;
        }
        let fast = TestResult::new("healthz", &h, 0, Duration::from_secs(1));
        assert_eq!(fast.requests, 1000);
        assert!((fast.latency_us.p50 as i64 - 500).abs() <= 1);
        assert_eq!(fast.latency_us.max, 1000);
        let slow = TestResult::new("get", &h, 3, Duration::from_secs(2));
        let mut rep = Report {
            label: None,
            target: super::super::Target::Hoardhaven,
            url: "http://127.0.0.1:1".into(),
            connections: 1,
            keys: 1,
            key_size: 16,
            value_size: 100,
            read_ratio: 0.9,
            results: vec![fast, slow],
        };
        rep.compute_ratios();
        assert_eq!(rep.results[1].ratio_to_healthz, Some(0.5));
        assert!(rep.to_text().contains("healthz"));
        let json = serde_json::to_string(&rep)?;
        assert!(json.contains("\"p999\""));
        Ok(())
    }
}
