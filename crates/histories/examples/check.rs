//! Checks a saved history: `cargo run -p hoardhaven-histories --example check -- FILE.jsonl`.
//! Prints the verdict per key (and the smallest window with no valid order for each violation);
//! exits 1 when the history is not linearizable, 2 when undecided within the budget.

use std::io::BufReader;

use hoardhaven_histories::check::{Outcome, check_history};
use hoardhaven_histories::history::read_jsonl;
use hoardhaven_histories::wgl::Budget;

fn main() -> std::io::Result<()> {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: check HISTORY.jsonl");
        std::process::exit(64);
    };
    let events = read_jsonl(BufReader::new(std::fs::File::open(&path)?))?;
    let started = std::time::Instant::now();
    let report = check_history(&events, Budget::default());
    print!("{report}");
    println!(
        "{} events, {} keys, checked in {:.1} s, at most {} search steps on one key (budget {})",
        events.len(),
        report.keys.len(),
        started.elapsed().as_secs_f64(),
        report.most_steps(),
        Budget::default().steps
    );
    std::process::exit(match report.outcome() {
        Outcome::Linearizable => 0,
        Outcome::NotLinearizable => 1,
        Outcome::Unknown => 2,
    })
}
