//! Offline tools over a data directory: `check`, `export`, `import`, `compact`, `info`.
//!
//! Owns their flags, how a directory's engine is found, and how an engine is opened for
//! offline work. The inspecting tools (`info`, `export`, `check` without `--repair`) open
//! read-only ([`open_read_only`]): a shared lock, and no file created, cut or removed. The
//! writing tools (`import`, `compact`, `check --repair`) open read-write ([`open`]: no
//! automatic merges or save points, `sync=never` plus one final sync). Either way a tool
//! refuses (exit 8) while a server has the directory, and refuses (exit 2) a directory whose
//! `ENGINE` marker or files say it belongs to the other engine than `--engine` names.
//! `export`, `import`, `compact` and `info` go through the [`Engine`] trait and work for both
//! engines; `check` of a bitcask store reads its files with the engine's scanner
//! ([`check`]); for the memory engine `check` opens the store read-only, which verifies every
//! snapshot and log checksum.
//!
//! Layout: [`check`] verification and repair, [`transfer`] JSON-lines export and import,
//! [`progress`] bars and plain progress lines.

pub mod check;
pub mod progress;
pub mod transfer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cli::exit::{self, Exit};
use crate::engine::bitcask::{BitcaskOptions, MergePolicy};
use crate::engine::memory::MemoryOptions;
use crate::engine::{Engine, EngineKind, EngineOptions, JobState, MergeReport, SyncPolicy};
use crate::http::dto::StatsDto;

/// The offline subcommands (flattened into the top-level command list).
#[derive(Debug, Subcommand)]
pub enum OfflineCommand {
    /// Verify every record's checksum and every hint file of a stopped store
    Check(check::CheckArgs),
    /// Write every live key to JSON lines (values base64 where not UTF-8, expiry kept)
    Export(transfer::ExportArgs),
    /// Load JSON lines written by `export` into a stopped store
    Import(transfer::ImportArgs),
    /// Run a merge (bitcask) or log rewrite (memory) on a stopped store
    Compact(DirArgs),
    /// Print the statistics of a stopped store
    Info(DirArgs),
}

/// Where the data is.
#[derive(Debug, Clone, Args)]
pub struct DirArgs {
    /// Data directory
    #[arg(
        long,
        env = "HOARDHAVEN_DATA_DIR",
        hide_env_values = true,
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// Engine: bitcask or memory [default: the directory's ENGINE marker, else its files]
    #[arg(long)]
    pub engine: Option<EngineKind>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

impl DirArgs {
    /// The engine to use: the flag, else the one the directory belongs to
    /// ([`crate::engine::detect`]), else `bitcask` (an empty or new directory).
    ///
    /// # Errors
    /// [`exit::USAGE`] when the flag names the other engine than the directory's;
    /// [`exit::LOCAL`] when the directory cannot be told (a bad marker, files of both).
    pub fn kind(&self) -> Result<EngineKind, Exit> {
        let found = crate::engine::detect(&self.data_dir)
            .map_err(|e| engine_err(e, &format!("reading {}", self.data_dir.display())))?;
        match (self.engine, found) {
            (Some(wanted), Some(found)) if wanted != found => Err(engine_err(
                crate::Error::WrongEngine {
                    dir: self.data_dir.clone(),
                    found,
                    wanted,
                },
                "opening",
            )),
            (Some(k), _) | (None, Some(k)) => Ok(k),
            (None, None) => Ok(EngineKind::Bitcask),
        }
    }

    /// Fails unless the directory exists (the tools never create one by accident, except
    /// `import`).
    ///
    /// # Errors
    /// [`exit::LOCAL`] naming the directory.
    pub fn must_exist(&self) -> Result<(), Exit> {
        if self.data_dir.is_dir() {
            Ok(())
        } else {
            Err(Exit::local(format!(
                "{} is not a data directory",
                self.data_dir.display()
            )))
        }
    }
}

/// Maps an engine error met offline: [`exit::USAGE`] for a directory of the other engine,
/// else as [`exit::from_engine`].
pub fn engine_err(e: crate::Error, doing: &str) -> Exit {
    match e {
        e @ crate::Error::WrongEngine { .. } => Exit::new(exit::USAGE, format!("{doing}: {e}")),
        other => exit::from_engine(other, doing),
    }
}

fn options(args: &DirArgs) -> Result<EngineOptions, Exit> {
    Ok(EngineOptions {
        kind: args.kind()?,
        dir: args.data_dir.clone(),
        sync: SyncPolicy::Never,
        bitcask: BitcaskOptions {
            merge: MergePolicy {
                check_interval: None,
                ..MergePolicy::default()
            },
            ..BitcaskOptions::default()
        },
        memory: MemoryOptions {
            save_points: Vec::new(),
            ..MemoryOptions::default()
        },
    })
}

/// Opens the store in `args` read-write for offline work, taking its lock.
///
/// # Errors
/// [`exit::LOCKED`] when a server has it; [`exit::USAGE`] for the other engine's directory;
/// [`exit::LOCAL`] for anything else.
pub fn open(args: &DirArgs) -> Result<Arc<dyn Engine>, Exit> {
    crate::engine::open(&options(args)?)
        .map_err(|e| engine_err(e, &format!("opening {}", args.data_dir.display())))
}

/// Opens the store in `args` to salvage what is readable ([`crate::engine::open_salvage`]):
/// read-only, reading past damaged regions of bitcask data files.
///
/// # Errors
/// As [`open`].
pub fn open_salvage(args: &DirArgs) -> Result<Arc<dyn Engine>, Exit> {
    crate::engine::open_salvage(&options(args)?)
        .map_err(|e| engine_err(e, &format!("opening {}", args.data_dir.display())))
}

/// Opens the store in `args` read-only: shared lock, nothing on disk changes.
///
/// # Errors
/// As [`open`].
pub fn open_read_only(args: &DirArgs) -> Result<Arc<dyn Engine>, Exit> {
    crate::engine::open_read_only(&options(args)?)
        .map_err(|e| engine_err(e, &format!("opening {}", args.data_dir.display())))
}

/// Makes everything durable and releases the lock.
///
/// # Errors
/// [`exit::LOCAL`] when the final sync fails.
pub fn close(engine: &Arc<dyn Engine>) -> Result<(), Exit> {
    engine
        .sync()
        .and_then(|()| engine.close())
        .map_err(|e| exit::from_engine(e, "closing the store"))
}

/// Runs an offline subcommand.
///
/// # Errors
/// An [`Exit`] carrying the status to end with.
pub fn run(cmd: OfflineCommand) -> anyhow::Result<()> {
    match cmd {
        OfflineCommand::Check(a) => check::run(&a),
        OfflineCommand::Export(a) => transfer::export(&a),
        OfflineCommand::Import(a) => transfer::import(&a),
        OfflineCommand::Compact(a) => compact(&a),
        OfflineCommand::Info(a) => info(&a),
    }
    .map_err(anyhow::Error::new)
}

fn print(s: &str) -> Result<(), Exit> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())
        .and_then(|()| o.flush())
        .map_err(|e| Exit::local(format!("writing stdout: {e}")))
}

fn stats_json(engine: &Arc<dyn Engine>) -> Result<serde_json::Value, Exit> {
    let s = engine
        .stats()
        .map_err(|e| exit::from_engine(e, "reading stats"))?;
    let kept = engine
        .snapshots()
        .map_err(|e| exit::from_engine(e, "listing snapshots"))?;
    serde_json::to_value(StatsDto::new(&s, &kept))
        .map_err(|e| Exit::local(format!("encoding stats: {e}")))
}

/// `info`: the stats of a stopped store, opened read-only. The fields that describe a running
/// server (its sync policy and the bytes it wrote since start) are left out: offline there is
/// no such thing, and printing `sync: never` / `bytes_written: 0` would be untrue.
fn info(a: &DirArgs) -> Result<(), Exit> {
    a.must_exist()?;
    let engine = open_read_only(a)?;
    let mut doc = stats_json(&engine)?;
    close(&engine)?;
    if let Some(m) = doc.as_object_mut() {
        m.remove("sync");
        m.remove("bytes_written");
    }
    if a.json {
        print(&format!("{doc:#}\n"))
    } else {
        print(&crate::cli::client::stats_lines(&doc))
    }
}

fn compact(a: &DirArgs) -> Result<(), Exit> {
    a.must_exist()?;
    let engine = open(a)?;
    let before = engine
        .stats()
        .map_err(|e| exit::from_engine(e, "reading stats"))?;
    let report = merge_with_progress(&engine, before.disk_bytes)?;
    let after = engine
        .stats()
        .map_err(|e| exit::from_engine(e, "reading stats"))?;
    close(&engine)?;
    let doc = serde_json::json!({
        "engine": before.engine.to_string(),
        "disk_bytes_before": before.disk_bytes,
        "disk_bytes_after": after.disk_bytes,
        "bytes_reclaimed": report.bytes_reclaimed,
        "files_merged": report.files_merged,
        "records_kept": report.records_kept,
        "records_dropped": report.records_dropped,
        "duration_seconds": report.duration.as_secs_f64(),
    });
    if a.json {
        return print(&format!("{doc:#}\n"));
    }
    print(&format!(
        "compacted {}: {} -> {} bytes on disk ({} records kept, {} dropped, {:.3} s)\n",
        a.data_dir.display(),
        before.disk_bytes,
        after.disk_bytes,
        report.records_kept,
        report.records_dropped,
        report.duration.as_secs_f64()
    ))
}

/// Runs the merge in a thread and shows the job's progress (bytes of input read) meanwhile.
fn merge_with_progress(engine: &Arc<dyn Engine>, total: u64) -> Result<MergeReport, Exit> {
    let mut bar = progress::Progress::new("compact", total, "bytes");
    let worker = {
        let engine = Arc::clone(engine);
        std::thread::spawn(move || engine.merge())
    };
    while !worker.is_finished() {
        if let JobState::Running { progress, .. } = engine.jobs().merge {
            bar.set(progress.done, progress.total);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = worker
        .join()
        .map_err(|_| Exit::local("the merge thread panicked"))?
        .map_err(|e| exit::from_engine(e, "merging"))?;
    bar.set(report.bytes_read, report.bytes_read);
    bar.finish();
    Ok(report)
}
