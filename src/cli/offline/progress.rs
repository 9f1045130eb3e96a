//! Progress of long offline work: an indicatif bar on a terminal, plain lines otherwise.
//!
//! Owns [`Progress`]. On a terminal (stderr) it draws a bar with rate and ETA; when stderr is a
//! file or a pipe (CI logs, `2> log`) it prints `label: done/total unit (pct%)` at most once a
//! second and once at the end, so logs stay short and greppable. Everything goes to stderr:
//! stdout belongs to the data (`export` writes JSON lines there).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often plain progress lines are printed.
const LINE_EVERY: Duration = Duration::from_secs(1);

/// A progress report for one piece of work.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    unit: &'static str,
    total: u64,
    done: u64,
    last_line: Instant,
}

impl Progress {
    /// Starts reporting `label` over `total` units (`"bytes"`, `"keys"`; 0 = unknown).
    pub fn new(label: &str, total: u64, unit: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let template = if unit == "bytes" {
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            } else {
                "{msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_owned());
            bar
        });
        Progress {
            bar,
            label: label.to_owned(),
            unit,
            total,
            done: 0,
            last_line: Instant::now(),
        }
    }

    /// Adds `n` units done.
    pub fn inc(&mut self, n: u64) {
        self.done = self.done.saturating_add(n);
        match &self.bar {
            Some(b) => b.inc(n),
            None => self.tick(),
        }
    }

    /// Sets how much is done out of a (possibly new) total.
    pub fn set(&mut self, done: u64, total: u64) {
        self.total = total;
        self.done = done;
        match &self.bar {
            Some(b) => {
                b.set_length(total);
                b.set_position(done);
            }
            None => self.tick(),
        }
    }

    /// A plain line when the last one is old enough.
    fn tick(&mut self) {
        if self.last_line.elapsed() >= LINE_EVERY {
            self.line();
            self.last_line = Instant::now();
        }
    }

    fn line(&self) {
        if self.total > 0 {
            let pct = self.done.min(self.total) as f64 * 100.0 / self.total as f64;
            eprintln!(
                "{}: {}/{} {} ({pct:.0}%)",
                self.label, self.done, self.total, self.unit
            );
        } else {
            eprintln!("{}: {} {}", self.label, self.done, self.unit);
        }
    }

    /// Ends the report (the bar is cleared; a last plain line is printed).
    pub fn finish(self) {
        match &self.bar {
            Some(b) => b.finish_and_clear(),
            None => self.line(),
        }
    }
}
