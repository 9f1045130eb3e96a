//! The offline tools (`info`, `check`, `export`, `import`, `compact`) as a user meets them:
//! black-box runs of the binary over real data directories.
//!
//! Guards: inspection changes nothing on disk (file names, sizes and content hashes compared
//! before and after, for both engines, an empty directory and a directory of the other
//! engine); the `ENGINE` marker and the refusal of the other engine (tools, server and the
//! library's open); `export --skip-corrupt`; `import` validating its whole input first; and
//! the small output fixes (no doubled error text, no offline `sync`/`bytes_written`, no
//! stray env value in help). Helpers are local to this file. No test waits on time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

const ENGINES: [&str; 2] = ["bitcask", "memory"];
/// Longest any one command may take (a bound against hangs, not a timing assertion).
const TIMEOUT: Duration = Duration::from_secs(60);

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the binary with `args` (clean environment), feeding `stdin`.
fn hh(args: &[&str], stdin: Option<&str>) -> Out {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hoardhaven"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HOARDHAVEN_") {
            c.env_remove(k);
        }
    }
    c.env_remove("RUST_LOG")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn hoardhaven");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let id = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(TIMEOUT) {
        Ok(r) => r.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
            panic!("hoardhaven {args:?} did not finish");
        }
    };
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs an offline tool over `dir`.
fn tool(cmd: &[&str], dir: &Path) -> Out {
    let mut args = cmd.to_vec();
    args.extend(["--data-dir", s(dir)]);
    hh(&args, None)
}

/// Imports `lines` into `dir` with `engine`, expecting success.
fn import(dir: &Path, engine: &str, lines: &str) {
    let out = hh(
        &["import", "--engine", engine, "--data-dir", s(dir)],
        Some(lines),
    );
    assert_eq!(out.code, 0, "{out:?}");
}

/// `n` JSON lines `key000..` with values of `size` bytes.
fn lines(n: usize, size: usize) -> String {
    let v = "v".repeat(size);
    (0..n)
        .map(|i| format!("{{\"key\":\"key{i:03}\",\"value\":\"{v}{i}\"}}\n"))
        .collect()
}

/// Every file under `dir` (recursively): relative name -> (size, SHA-256).
fn tree(dir: &Path) -> BTreeMap<String, (u64, String)> {
    fn walk(root: &Path, at: &Path, out: &mut BTreeMap<String, (u64, String)>) {
        let Ok(rd) = std::fs::read_dir(at) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
                out.insert(
                    format!("{}/", p.strip_prefix(root).expect("under").display()),
                    (0, String::new()),
                );
            } else {
                let bytes = std::fs::read(&p).expect("read");
                let hash: String = Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                out.insert(
                    p.strip_prefix(root).expect("under").display().to_string(),
                    (bytes.len() as u64, hash),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    v.sort();
    v
}

fn other(engine: &str) -> &'static str {
    if engine == "bitcask" {
        "memory"
    } else {
        "bitcask"
    }
}

/// The inspecting commands, with and without naming the engine.
fn inspections(engine: Option<&str>) -> Vec<Vec<String>> {
    let mut v: Vec<Vec<String>> = [
        vec!["info"],
        vec!["info", "--json"],
        vec!["check"],
        vec!["check", "--json"],
        vec!["export"],
    ]
    .iter()
    .map(|c| c.iter().map(|a| (*a).to_owned()).collect())
    .collect();
    if let Some(e) = engine {
        for c in &mut v {
            c.extend(["--engine".to_owned(), e.to_owned()]);
        }
    }
    v
}

fn assert_unchanged(dir: &Path, cmd: &[String], expect_code: Option<i32>) -> Out {
    let before = tree(dir);
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let out = tool(&args, dir);
    if let Some(c) = expect_code {
        assert_eq!(out.code, c, "{cmd:?}: {out:?}");
    }
    assert_eq!(
        tree(dir),
        before,
        "{cmd:?} changed {}: {out:?}",
        dir.display()
    );
    out
}

#[test]
fn inspection_changes_nothing_on_disk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for engine in ENGINES {
        let dir = tmp.path().join(engine);
        import(&dir, engine, &lines(30, 50));
        for cmd in inspections(None)
            .into_iter()
            .chain(inspections(Some(engine)))
        {
            assert_unchanged(&dir, &cmd, Some(0));
        }
        // The other engine's name: refused (exit 2), and still nothing written.
        for cmd in inspections(Some(other(engine))) {
            let out = assert_unchanged(&dir, &cmd, Some(2));
            assert!(
                out.stderr.contains(&format!("holds a {engine} store")),
                "{cmd:?}: {out:?}"
            );
        }
    }
    // An empty directory: nothing is created (no data file, no LOCK, no MANIFEST).
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    for engine in [None, Some("bitcask"), Some("memory")] {
        for cmd in inspections(engine) {
            assert_unchanged(&empty, &cmd, Some(0));
        }
    }
    assert!(tree(&empty).is_empty());
}

#[test]
fn inspection_leaves_a_torn_tail_for_the_server_to_cut() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("b");
    import(&dir, "bitcask", &lines(10, 20));
    let last = data_files(&dir).pop().expect("a data file");
    let mut bytes = std::fs::read(&last).expect("read");
    bytes.extend_from_slice(&[0xAB; 17]);
    std::fs::write(&last, &bytes).expect("write");
    for cmd in [vec!["info"], vec!["export"]] {
        let cmd: Vec<String> = cmd.iter().map(|a| (*a).to_owned()).collect();
        assert_unchanged(&dir, &cmd, Some(0));
    }
    let out = assert_unchanged(&dir, &["check".to_owned()], Some(1));
    assert!(out.stdout.contains("torn tail"), "{out:?}");
    let out = tool(&["export"], &dir);
    assert_eq!(out.stdout.lines().count(), 10, "{out:?}");
}

#[test]
fn the_marker_names_the_engine_and_the_other_engine_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for engine in ENGINES {
        let dir = tmp.path().join(engine);
        import(&dir, engine, &lines(3, 5));
        assert_eq!(
            std::fs::read_to_string(dir.join("ENGINE")).expect("marker written at creation"),
            format!("hoardhaven-engine {engine}\n")
        );
        let out = tool(&["info", "--json"], &dir);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains(&format!("\"engine\": \"{engine}\"")),
            "{out:?}"
        );
        // Every tool refuses the other engine, the writing ones included.
        let dump = tmp.path().join("one.jsonl");
        std::fs::write(&dump, "{\"key\":\"a\",\"value\":\"b\"}\n").expect("write");
        let before = tree(&dir);
        for cmd in [
            vec!["info"],
            vec!["check"],
            vec!["check", "--repair"],
            vec!["export"],
            vec!["compact"],
            vec!["import", s(&dump)],
        ] {
            let mut cmd = cmd;
            cmd.extend(["--engine", other(engine)]);
            let out = tool(&cmd, &dir);
            assert_eq!(out.code, 2, "{cmd:?}: {out:?}");
            assert!(
                out.stderr.contains(&format!(
                    "holds a {engine} store, not a {} one",
                    other(engine)
                )),
                "{cmd:?}: {out:?}"
            );
        }
        assert_eq!(tree(&dir), before);
        // The library's open (what the server uses) refuses it too.
        let kind = |e: &str| e.parse::<hoardhaven_engine::EngineKind>().expect("kind");
        let opts = hoardhaven_engine::EngineOptions {
            kind: kind(other(engine)),
            dir: dir.clone(),
            ..hoardhaven_engine::EngineOptions::default()
        };
        match hoardhaven_engine::open(&opts) {
            Err(hoardhaven_engine::Error::WrongEngine { found, wanted, .. }) => {
                assert_eq!((found, wanted), (kind(engine), kind(other(engine))));
            }
            Err(e) => panic!("expected WrongEngine, got {e}"),
            Ok(_) => panic!("{engine} directory opened as {}", other(engine)),
        }
        assert_eq!(tree(&dir), before);
    }
}

#[test]
fn the_server_refuses_a_directory_of_the_other_engine() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for engine in ENGINES {
        let dir = tmp.path().join(engine);
        import(&dir, engine, &lines(3, 5));
        let before = tree(&dir);
        let out = hh(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--engine",
                other(engine),
                "--data-dir",
                s(&dir),
            ],
            None,
        );
        assert_ne!(out.code, 0, "{out:?}");
        assert!(
            out.stderr.contains(&format!("holds a {engine} store")),
            "{out:?}"
        );
        assert_eq!(tree(&dir), before);
    }
}

#[test]
fn a_directory_without_marker_is_told_by_its_files_and_marked_on_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for engine in ENGINES {
        let dir = tmp.path().join(engine);
        import(&dir, engine, &lines(5, 5));
        // As a directory made before markers existed.
        std::fs::remove_file(dir.join("ENGINE")).expect("remove marker");
        let out = tool(&["info", "--json"], &dir);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains(&format!("\"engine\": \"{engine}\"")),
            "{out:?}"
        );
        assert!(!dir.join("ENGINE").exists(), "inspection wrote a marker");
        let out = tool(&["export", "--engine", other(engine)], &dir);
        assert_eq!(out.code, 2, "{out:?}");
        assert!(
            out.stderr.contains(&format!("holds a {engine} store")),
            "{out:?}"
        );
        // The next read-write open writes it.
        let out = tool(&["compact"], &dir);
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(
            std::fs::read_to_string(dir.join("ENGINE")).expect("marker"),
            format!("hoardhaven-engine {engine}\n")
        );
        assert_eq!(tool(&["export"], &dir).stdout.lines().count(), 5);
    }
}

/// Flips one byte inside the value of `key` in the data file that holds it.
fn damage_value_of(dir: &Path, key: &str) {
    for f in data_files(dir) {
        let mut bytes = std::fs::read(&f).expect("read");
        if let Some(at) = bytes.windows(key.len()).position(|w| w == key.as_bytes()) {
            bytes[at + key.len() + 2] ^= 0x20;
            std::fs::write(&f, &bytes).expect("write");
            return;
        }
    }
    panic!("{key} not found in any data file");
}

#[test]
fn export_skip_corrupt_exports_every_readable_record_and_names_the_rest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("b");
    import(&dir, "bitcask", &lines(59, 40));
    // A sealed merge output with a good hint: the damage is met when the value is read.
    assert_eq!(tool(&["compact"], &dir).code, 0);
    damage_value_of(&dir, "key012");
    damage_value_of(&dir, "key040");
    let plain = tool(&["export"], &dir);
    assert_eq!(plain.code, 7, "{plain:?}");
    assert!(plain.stderr.contains("--skip-corrupt"), "{plain:?}");
    let out = tool(&["export", "--skip-corrupt"], &dir);
    assert_eq!(out.code, 0, "{out:?}");
    let keys: Vec<String> = out
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["key"].as_str().expect("key").to_owned()
        })
        .collect();
    assert_eq!(keys.len(), 57, "{out:?}");
    assert!(!keys.iter().any(|k| k == "key012" || k == "key040"));
    assert!(
        out.stderr.contains("skipped 2 unreadable records"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("\"key012\"") && out.stderr.contains("\"key040\""),
        "{out:?}"
    );
    let out = tool(&["export", "--skip-corrupt", "--json"], &dir);
    let summary: serde_json::Value =
        serde_json::from_str(out.stderr.trim().lines().last().expect("summary")).expect("json");
    assert_eq!(summary["exported"], 57, "{out:?}");
    assert_eq!(summary["skipped"][1]["key"], "key040", "{out:?}");
    assert!(
        summary["skipped"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("corrupted data in")),
        "{out:?}"
    );
}

#[test]
fn import_validates_the_whole_input_before_writing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = "{\"key\":\"a\",\"value\":\"1\"}\n{\"key\":\"b\",\"value\":\"2\"}\n{\"key\":3}\n\
               {\"key\":\"c\",\"value\":\"4\"}\n";
    for engine in ENGINES {
        // Into a new directory: refused before the directory is even created.
        let fresh = tmp.path().join(format!("new-{engine}"));
        let out = hh(
            &["import", "--engine", engine, "--data-dir", s(&fresh)],
            Some(bad),
        );
        assert_eq!(out.code, 7, "{out:?}");
        assert!(
            out.stderr.contains("line 3") && out.stderr.contains("nothing was imported"),
            "{out:?}"
        );
        assert!(!fresh.exists(), "import created {}", fresh.display());
        // Into an existing store, from a file: not one byte changes.
        let dir = tmp.path().join(engine);
        import(&dir, engine, &lines(4, 4));
        let file = tmp.path().join("bad.jsonl");
        std::fs::write(&file, bad).expect("write");
        let before = tree(&dir);
        let out = tool(&["import", s(&file)], &dir);
        assert_eq!(out.code, 7, "{out:?}");
        assert!(out.stderr.contains("line 3"), "{out:?}");
        assert_eq!(tree(&dir), before);
        assert_eq!(tool(&["export"], &dir).stdout.lines().count(), 4);
    }
}

#[test]
fn check_and_recovery_agree_on_a_batch_torn_by_a_crash() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("b");
    import(&dir, "bitcask", &lines(3, 10));
    // One atomic batch of ten puts, then a crash tears its envelope: the nested records
    // before the tear are intact, and are the torn record itself, not data after damage.
    let out = hh(
        &["import", "--batch-size", "10", "--data-dir", s(&dir)],
        Some(
            &lines(13, 10)
                .lines()
                .skip(3)
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
        ),
    );
    assert_eq!(out.code, 0, "{out:?}");
    let last = data_files(&dir).pop().expect("a data file");
    let len = std::fs::metadata(&last).expect("stat").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open");
    f.set_len(len - 30).expect("tear");
    drop(f);
    let out = tool(&["check"], &dir);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("torn tail") && out.stdout.contains("--repair cuts"),
        "{out:?}"
    );
    assert_eq!(tool(&["export"], &dir).stdout.lines().count(), 3);
    let out = tool(&["check", "--repair"], &dir);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(tool(&["check"], &dir).code, 0);
}

#[test]
fn error_text_is_not_repeated() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // An I/O error through anyhow's chain (the server's start-up) and through a tool.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").expect("write");
    let out = hh(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", s(&file)],
        None,
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert_eq!(out.stderr.matches("(os error").count(), 1, "{out:?}");
    let out = hh(
        &["import", "--data-dir", s(&file)],
        Some("{\"key\":\"a\",\"value\":\"b\"}\n"),
    );
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(out.stderr.matches("(os error").count(), 1, "{out:?}");
    // A record failing its checksum in a sealed file that has no hint: start-up scans it.
    let dir = tmp.path().join("b");
    import(&dir, "bitcask", &lines(20, 30));
    assert_eq!(tool(&["compact"], &dir).code, 0);
    for f in std::fs::read_dir(&dir).expect("ls").flatten() {
        if f.path().extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(f.path()).expect("rm hint");
        }
    }
    damage_value_of(&dir, "key007");
    let out = tool(&["info"], &dir);
    assert_eq!(out.code, 7, "{out:?}");
    assert!(out.stderr.contains("checksum mismatch"), "{out:?}");
    assert_eq!(
        out.stderr.matches("checksum mismatch").count(),
        1,
        "{out:?}"
    );
}

#[test]
fn info_prints_only_what_is_true_offline() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for engine in ENGINES {
        let dir = tmp.path().join(engine);
        import(&dir, engine, &lines(5, 5));
        let out = tool(&["info"], &dir);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("keys: 5"), "{out:?}");
        // A stopped store has no sync policy in force and wrote nothing since "start".
        assert!(!out.stdout.contains("sync:"), "{out:?}");
        assert!(!out.stdout.contains("bytes_written"), "{out:?}");
        let doc: serde_json::Value =
            serde_json::from_str(&tool(&["info", "--json"], &dir).stdout).expect("json");
        assert!(
            doc.get("sync").is_none() && doc.get("bytes_written").is_none(),
            "{doc}"
        );
    }
}

#[test]
fn a_memory_store_without_keys_has_no_fragmentation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("m");
    import(&dir, "memory", "");
    import(&dir, "memory", ""); // a second open: a second (empty) log
    let doc: serde_json::Value =
        serde_json::from_str(&tool(&["info", "--json"], &dir).stdout).expect("json");
    assert_eq!(doc["keys"], 0, "{doc}");
    assert_eq!(doc["fragmentation"], 0.0, "{doc}");
    assert_eq!(doc["dead_bytes"], 0, "{doc}");
}

#[test]
fn offline_help_names_the_environment_variable_without_a_stray_value() {
    for cmd in ["check", "export", "import", "compact", "info"] {
        let out = hh(&[cmd, "--help"], None);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("[env: HOARDHAVEN_DATA_DIR]"), "{out:?}");
        assert!(!out.stdout.contains("HOARDHAVEN_DATA_DIR="), "{out:?}");
    }
}

#[test]
fn export_skip_corrupt_reads_past_damage_that_stops_the_store_opening() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("b");
    import(&dir, "bitcask", &lines(59, 40));
    assert_eq!(tool(&["compact"], &dir).code, 0);
    // No hint: opening scans the sealed file, and damage in its middle stops the open.
    for f in std::fs::read_dir(&dir).expect("ls").flatten() {
        if f.path().extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(f.path()).expect("rm hint");
        }
    }
    damage_value_of(&dir, "key012");
    let out = tool(&["export"], &dir);
    assert_eq!(out.code, 7, "{out:?}");
    let before = tree(&dir);
    let out = tool(&["export", "--skip-corrupt"], &dir);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(tree(&dir), before, "salvage wrote into the directory");
    assert_eq!(out.stdout.lines().count(), 58, "{out:?}");
    assert!(!out.stdout.contains("\"key012\""), "{out:?}");
    assert!(out.stdout.contains("\"key013\""), "{out:?}");
    assert!(out.stderr.contains("skipped 1 damaged regions"), "{out:?}");
}

#[test]
fn memory_inspection_leaves_a_torn_log_tail_in_place_and_check_says_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("m");
    import(&dir, "memory", &lines(10, 20));
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hha"))
        .collect();
    logs.sort();
    let last = logs.pop().expect("a log");
    let mut bytes = std::fs::read(&last).expect("read");
    bytes.extend_from_slice(&[0xAB; 13]);
    std::fs::write(&last, &bytes).expect("write");
    for cmd in [vec!["info"], vec!["export"]] {
        let cmd: Vec<String> = cmd.iter().map(|a| (*a).to_owned()).collect();
        assert_unchanged(&dir, &cmd, Some(0));
    }
    let out = assert_unchanged(&dir, &["check".to_owned()], Some(0));
    assert!(out.stdout.contains("torn record"), "{out:?}");
    assert_eq!(tool(&["export"], &dir).stdout.lines().count(), 10);
}

#[test]
fn the_read_only_open_refuses_every_write_and_a_mixed_directory_is_named() {
    use hoardhaven_engine::{EngineKind, EngineOptions, Error, PutOptions};
    let tmp = tempfile::tempdir().expect("tempdir");
    for engine in ENGINES {
        let dir = tmp.path().join(engine);
        import(&dir, engine, &lines(3, 5));
        let before = tree(&dir);
        let opts = EngineOptions {
            kind: engine.parse::<EngineKind>().expect("kind"),
            dir: dir.clone(),
            ..EngineOptions::default()
        };
        let store = hoardhaven_engine::open_read_only(&opts).expect("open read-only");
        assert!(store.get(b"key001").expect("get").is_some());
        let put = store.put(b"k", bytes::Bytes::from_static(b"v"), PutOptions::default());
        assert!(matches!(put, Err(Error::ReadOnly)), "{put:?}");
        assert!(matches!(
            store.apply_batch(Vec::new()),
            Err(Error::ReadOnly)
        ));
        assert!(matches!(store.merge(), Err(Error::ReadOnly)));
        assert!(matches!(store.snapshot(), Err(Error::ReadOnly)));
        store.close().expect("close");
        assert_eq!(tree(&dir), before, "{engine}");
    }
    // A directory holding both engines' files and no marker (as an old `info --engine memory`
    // on a bitcask directory left it): named, not guessed.
    let dir = tmp.path().join("bitcask");
    std::fs::remove_file(dir.join("ENGINE")).expect("rm marker");
    std::fs::write(dir.join("MANIFEST"), b"x").expect("write");
    let out = tool(&["info"], &dir);
    assert_eq!(out.code, 7, "{out:?}");
    assert!(out.stderr.contains("files of both engines"), "{out:?}");
}
