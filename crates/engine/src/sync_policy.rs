//! When a write is made durable: the one durability knob both engines share.
//!
//! Parsed from `always`, `never` or `<N>ms` (also `<N>s`), as given by `--sync`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// When an acknowledged write reaches stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// fdatasync before acknowledging; concurrent writers share one fdatasync (group commit).
    #[default]
    Always,
    /// A background fsync every interval; at most that window is lost on power failure.
    Every(Duration),
    /// The operating system decides when to write back.
    Never,
}

impl FromStr for SyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "always" => return Ok(SyncPolicy::Always),
            "never" => return Ok(SyncPolicy::Never),
            _ => {}
        }
        let (digits, scale_ms) = if let Some(d) = s.strip_suffix("ms") {
            (d, 1)
        } else if let Some(d) = s.strip_suffix('s') {
            (d, 1000)
        } else {
            return Err(format!(
                "expected `always`, `never` or an interval like `100ms`, got `{s}`"
            ));
        };
        let n: u64 = digits
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an interval like `100ms`"))?;
        if n == 0 {
            return Err("the sync interval must be at least 1ms".into());
        }
        Ok(SyncPolicy::Every(Duration::from_millis(
            n.saturating_mul(scale_ms),
        )))
    }
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncPolicy::Always => f.write_str("always"),
            SyncPolicy::Never => f.write_str("never"),
            SyncPolicy::Every(d) => write!(f, "{}ms", d.as_millis()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["always", "never", "100ms", "1ms"] {
            let p: SyncPolicy = s.parse().expect("parses");
            assert_eq!(p.to_string(), s);
        }
        assert_eq!(
            "2s".parse::<SyncPolicy>(),
            Ok(SyncPolicy::Every(Duration::from_secs(2)))
        );
        for bad in ["", "sometimes", "0ms", "-5ms", "ms", "10m"] {
            assert!(bad.parse::<SyncPolicy>().is_err(), "{bad}");
        }
    }
}
