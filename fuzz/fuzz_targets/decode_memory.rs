//! Fuzzes the memory engine's decoders with arbitrary bytes: one log record, a whole log
//! file, a snapshot file and a manifest. Nothing may panic or allocate without bound; every
//! failure is an error.
#![no_main]

use std::sync::OnceLock;

use hoardhaven_engine::memory::decode;
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("hh-fuzz-")
            .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" })
            .expect("tempdir")
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    if let Ok((_, n)) = decode::log_record(data) {
        assert!(n <= data.len(), "a record longer than its bytes");
    }
    let dir = scratch();
    let log = dir.join("log-0000000000000001.hha");
    std::fs::write(&log, data).expect("write");
    let _ = decode::log_file(&log, 1);
    let snap = dir.join("snap-0000000000000001.hhs");
    std::fs::write(&snap, data).expect("write");
    let _ = decode::snapshot_file(&snap);
    std::fs::write(dir.join("MANIFEST"), data).expect("write");
    let _ = decode::manifest_in(dir);
});
