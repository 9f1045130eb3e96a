//! `export` and `import`: a store's live keys as JSON lines, through the [`Engine`] trait.
//!
//! One object per line, keys and values as UTF-8 text with a `*_base64` twin for bytes that are
//! not UTF-8 (the API's convention), and the expiry kept as an absolute instant so that a
//! value exported with 60 s left and imported 10 s later still expires at the same moment:
//!
//! ```text
//! {"key":"user/1","value":"ada"}
//! {"key_base64":"/w==","value_base64":"AAEC","expires_at_ms":1767225600000}
//! ```
//!
//! `import` also accepts `"ttl": <seconds>` (counted from the import) for files written by
//! hand. It reads the whole input twice: first to validate every line (a malformed line stops
//! it with the line number before anything is written, and before a new directory is
//! created), then to apply the lines in atomic batches. Standard input is held in memory for
//! the second pass. Values already expired are skipped.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::progress::Progress;
use super::{DirArgs, close, open, open_read_only, open_salvage, print};
use crate::cli::exit::{self, Exit};
use crate::engine::{BatchOp, Engine, UnixMillis};

/// One exported key.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// The key as text (when UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key in base64 (when not UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// The value as text (when UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value in base64 (when not UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// Expiry, milliseconds since the Unix epoch; absent = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// Import only: seconds from now until expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

/// Flags of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Write to this file instead of stdout
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Skip records that fail their checksum (naming each on stderr) instead of stopping at
    /// the first: exports everything still readable
    #[arg(long)]
    skip_corrupt: bool,
}

/// Flags of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// JSON-lines file; `-` or nothing = stdin
    input: Option<PathBuf>,
    /// Lines applied per atomic batch
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch_size: u64,
}

fn text_or_b64(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Some(s.to_owned()), None),
        Err(_) => (None, Some(STANDARD.encode(bytes))),
    }
}

/// A record `export --skip-corrupt` could not read.
#[derive(Debug, Serialize)]
struct Skipped {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    error: String,
}

/// What an export did.
#[derive(Debug, Default, Serialize)]
struct Exported {
    exported: u64,
    skipped: Vec<Skipped>,
    /// `--skip-corrupt`: damaged regions read past while opening (their keys are unknown).
    damaged_regions: u64,
}

/// Writes every live key of the store to JSON lines, then a summary on stderr (one JSON
/// object with `--json`; the lines go to stdout or `--output`).
///
/// # Errors
/// [`exit::LOCKED`] while a server runs; [`exit::LOCAL`] for I/O and engine errors (a
/// corrupt record too, unless `--skip-corrupt`).
pub fn export(a: &ExportArgs) -> Result<(), Exit> {
    a.dir.must_exist()?;
    let engine = if a.skip_corrupt {
        open_salvage(&a.dir)?
    } else {
        open_read_only(&a.dir)?
    };
    let result = export_from(&engine, a);
    close(&engine)?;
    let done = result?;
    let summary = if a.dir.json {
        let doc = serde_json::to_value(&done).unwrap_or_default();
        format!("{doc}\n")
    } else {
        let mut s = format!(
            "exported {} keys from {}\n",
            done.exported,
            a.dir.data_dir.display()
        );
        if done.damaged_regions > 0 {
            s.push_str(&format!(
                "skipped {} damaged regions of the data files while opening; records in them \
                 are lost, and a value they overwrote or deleted may be exported in its older \
                 version (`hoardhaven check` shows where they are)\n",
                done.damaged_regions
            ));
        }
        if !done.skipped.is_empty() {
            s.push_str(&format!(
                "skipped {} unreadable records:\n",
                done.skipped.len()
            ));
            for k in &done.skipped {
                let name = match (&k.key, &k.key_base64) {
                    (Some(t), _) => format!("{t:?}"),
                    (None, Some(b)) => format!("(base64) {b}"),
                    (None, None) => String::new(),
                };
                s.push_str(&format!("  key {name}: {}\n", k.error));
            }
        }
        s
    };
    eprint!("{summary}");
    Ok(())
}

fn export_from(engine: &Arc<dyn Engine>, a: &ExportArgs) -> Result<Exported, Exit> {
    let stats = engine
        .stats()
        .map_err(|e| exit::from_engine(e, "reading stats"))?;
    let keys = stats.keys;
    let sink: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(
            File::create(p).map_err(|e| Exit::local(format!("creating {}: {e}", p.display())))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    let mut bar = Progress::new("export", keys, "keys");
    let (mut after, mut done): (Option<Vec<u8>>, Exported) = (None, Exported::default());
    // Offline, a bitcask store's count is exactly the regions salvage read past (a torn tail
    // is not cut, so not counted); the memory engine's counts torn tails, never salvaged.
    if a.skip_corrupt && stats.engine == crate::engine::EngineKind::Bitcask {
        done.damaged_regions = stats.corrupt_records;
    }
    let write_err = |e: std::io::Error| Exit::local(format!("writing the export: {e}"));
    loop {
        let page = engine
            .list(b"", after.as_deref(), 1000)
            .map_err(|e| exit::from_engine(e, "listing keys"))?;
        for key in &page.keys {
            // A key listed but gone by the time it is read (expired) is simply skipped.
            let v = match engine.get(key) {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e @ crate::Error::Corrupted { .. }) if a.skip_corrupt => {
                    let (k, kb) = text_or_b64(key);
                    done.skipped.push(Skipped {
                        key: k,
                        key_base64: kb,
                        error: e.to_string(),
                    });
                    continue;
                }
                Err(e) => {
                    return Err(exit::from_engine(
                        e,
                        &format!(
                            "reading a value ({} keys exported; --skip-corrupt exports \
                             every readable record)",
                            done.exported
                        ),
                    ));
                }
            };
            let (k, kb) = text_or_b64(key);
            let (val, vb) = text_or_b64(&v.bytes);
            let line = Line {
                key: k,
                key_base64: kb,
                value: val,
                value_base64: vb,
                expires_at_ms: v.meta.expires_at.map(|e| e.0),
                ttl: None,
            };
            serde_json::to_writer(&mut out, &line)
                .map_err(|e| Exit::local(format!("writing the export: {e}")))?;
            out.write_all(b"\n").map_err(write_err)?;
            done.exported += 1;
        }
        bar.inc(page.keys.len() as u64);
        match page.next_start_after {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    out.flush().map_err(write_err)?;
    if let Ok(f) = out.into_inner() {
        drop(f);
    }
    if let Some(p) = &a.output {
        File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(|e| Exit::local(format!("syncing {}: {e}", p.display())))?;
    }
    bar.finish();
    Ok(done)
}

fn field(text: Option<String>, b64: Option<String>, name: &str) -> Result<Vec<u8>, String> {
    match (text, b64) {
        (Some(t), None) => Ok(t.into_bytes()),
        (None, Some(b)) => STANDARD
            .decode(b)
            .map_err(|e| format!("`{name}_base64` is not base64: {e}")),
        _ => Err(format!("give exactly one of `{name}` and `{name}_base64`")),
    }
}

/// Decodes one line into a put; `Ok(None)` when its value has already expired.
fn parse_line(text: &str, now: UnixMillis) -> Result<Option<BatchOp>, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if line.ttl.is_some() && line.expires_at_ms.is_some() {
        return Err("give at most one of `ttl` and `expires_at_ms`".into());
    }
    let key = field(line.key, line.key_base64, "key")?;
    crate::engine::check_key(&key).map_err(|e| e.to_string())?;
    let value = field(line.value, line.value_base64, "value")?;
    let expires_at = match (line.expires_at_ms, line.ttl) {
        (Some(ms), _) => Some(UnixMillis(ms)),
        (None, Some(s)) => Some(UnixMillis::after(Duration::from_secs(s))),
        (None, None) => None,
    };
    if expires_at.is_some_and(|e| e.has_passed(now)) {
        return Ok(None);
    }
    Ok(Some(BatchOp::Put {
        key,
        value: Bytes::from(value),
        expires_at,
    }))
}

/// Counts of an import.
#[derive(Debug, Default, Serialize)]
struct Imported {
    keys: u64,
    expired_skipped: u64,
    lines: u64,
}

/// Loads JSON lines into the store (creating the directory when missing).
///
/// # Errors
/// [`exit::LOCKED`] while a server runs; [`exit::LOCAL`] for unreadable input, a malformed
/// line (naming it) and engine errors.
pub fn import(a: &ImportArgs) -> Result<(), Exit> {
    let now = UnixMillis::now();
    let input = Input::new(a.input.as_deref())?;
    validate(input.reader()?, now)?;
    let engine = open(&a.dir)?;
    let result = import_into(&engine, input.reader()?, input.len(), now, a);
    close(&engine)?;
    let counts = result?;
    if a.dir.json {
        let doc = serde_json::to_value(&counts).unwrap_or_default();
        return print(&format!("{doc}\n"));
    }
    print(&format!(
        "imported {} keys into {} ({} already expired, skipped)\n",
        counts.keys,
        a.dir.data_dir.display(),
        counts.expired_skipped
    ))
}

/// Where `import` reads from: a file (read once per pass) or standard input (held in memory).
enum Input {
    File(PathBuf, u64),
    Stdin(Vec<u8>),
}

impl Input {
    fn new(path: Option<&std::path::Path>) -> Result<Self, Exit> {
        match path {
            Some(p) if p.as_os_str() != "-" => {
                let len = std::fs::metadata(p)
                    .map_err(|e| Exit::local(format!("opening {}: {e}", p.display())))?
                    .len();
                Ok(Input::File(p.to_path_buf(), len))
            }
            _ => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .lock()
                    .read_to_end(&mut buf)
                    .map_err(|e| Exit::local(format!("reading standard input: {e}")))?;
                Ok(Input::Stdin(buf))
            }
        }
    }

    fn len(&self) -> u64 {
        match self {
            Input::File(_, n) => *n,
            Input::Stdin(b) => b.len() as u64,
        }
    }

    fn reader(&self) -> Result<Box<dyn BufRead + '_>, Exit> {
        Ok(match self {
            Input::File(p, _) => Box::new(BufReader::with_capacity(
                1 << 20,
                File::open(p).map_err(|e| Exit::local(format!("opening {}: {e}", p.display())))?,
            )),
            Input::Stdin(b) => Box::new(b.as_slice()),
        })
    }
}

/// Calls `f` with each non-blank line, its number and its length in bytes; returns the
/// number of lines.
fn each_line(
    mut input: impl BufRead,
    mut f: impl FnMut(u64, &str, usize) -> Result<(), Exit>,
) -> Result<u64, Exit> {
    let (mut buf, mut no) = (String::new(), 0u64);
    loop {
        buf.clear();
        let n = input
            .read_line(&mut buf)
            .map_err(|e| Exit::local(format!("reading line {}: {e}", no + 1)))?;
        if n == 0 {
            return Ok(no);
        }
        no += 1;
        let text = buf.trim();
        if !text.is_empty() {
            f(no, text, n)?;
        }
    }
}

/// The first pass: every line must parse; nothing is written.
fn validate(input: impl BufRead, now: UnixMillis) -> Result<(), Exit> {
    each_line(input, |no, text, _| {
        parse_line(text, now)
            .map(|_| ())
            .map_err(|e| Exit::local(format!("line {no}: {e} (nothing was imported)")))
    })
    .map(|_| ())
}

fn import_into(
    engine: &Arc<dyn Engine>,
    input: impl BufRead,
    total: u64,
    now: UnixMillis,
    a: &ImportArgs,
) -> Result<Imported, Exit> {
    let mut bar = Progress::new("import", total, "bytes");
    let mut counts = Imported::default();
    let mut ops = Vec::new();
    let apply = |ops: &mut Vec<BatchOp>, counts: &mut Imported| -> Result<(), Exit> {
        if ops.is_empty() {
            return Ok(());
        }
        counts.keys += ops.len() as u64;
        engine
            .apply_batch(std::mem::take(ops))
            .map(|_| ())
            .map_err(|e| exit::from_engine(e, "writing a batch"))
    };
    let mut expired = 0u64;
    let mut applied = Imported::default();
    let lines = each_line(input, |no, text, n| {
        bar.inc(n as u64);
        match parse_line(text, now) {
            Ok(Some(op)) => ops.push(op),
            Ok(None) => expired += 1,
            // Validated by the first pass; only an input file changed meanwhile gets here.
            Err(e) => {
                return Err(Exit::local(format!(
                    "line {no}: {e} (the input changed while importing; the {} keys before \
                     it were imported)",
                    applied.keys
                )));
            }
        }
        if ops.len() as u64 >= a.batch_size {
            apply(&mut ops, &mut applied)?;
        }
        Ok(())
    })?;
    apply(&mut ops, &mut applied)?;
    counts.keys = applied.keys;
    counts.lines = lines;
    counts.expired_skipped = expired;
    bar.finish();
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_decode_text_base64_and_expiry() {
        let now = UnixMillis(1_000);
        let op = parse_line(
            r#"{"key_base64":"/w==","value":"v","expires_at_ms":5000}"#,
            now,
        )
        .expect("valid")
        .expect("live");
        assert_eq!(
            op,
            BatchOp::Put {
                key: vec![0xFF],
                value: Bytes::from_static(b"v"),
                expires_at: Some(UnixMillis(5000))
            }
        );
        assert!(
            parse_line(r#"{"key":"k","value":"v","expires_at_ms":500}"#, now)
                .expect("valid")
                .is_none()
        );
        assert!(parse_line(r#"{"key":"k"}"#, now).is_err());
        assert!(parse_line(r#"{"key":"","value":"v"}"#, now).is_err());
        assert!(parse_line(r#"{"key":"k","value":"v","extra":1}"#, now).is_err());
    }
}
