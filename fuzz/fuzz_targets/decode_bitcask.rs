//! Fuzzes every bitcask decoder with arbitrary bytes: the record header and record, batch
//! envelopes' nested records, the file header, whole data files (scan, as the last file and
//! as a sealed one) and hint files. Nothing may panic; a record that decodes must re-encode to
//! exactly the same bytes (so no two byte strings decode to the same record).
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use hoardhaven_engine::UnixMillis;
use hoardhaven_engine::bitcask::data_file::{DATA_MAGIC, FileHeader, HINT_MAGIC};
use hoardhaven_engine::bitcask::{hint, record, scan};
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
    let _ = record::Header::decode(data);
    if let Ok(r) = record::decode(data) {
        if r.header.kind != record::Kind::Batch {
            let mut again = Vec::new();
            let expiry = r.header.expiry();
            record::encode(
                &mut again,
                r.header.kind,
                r.header.seq,
                UnixMillis(r.header.timestamp),
                expiry,
                r.key,
                r.value,
            );
            assert_eq!(&again[..], &data[..again.len()], "decode/encode round trip");
        } else {
            for item in record::nested(r.value) {
                let _ = item;
            }
        }
    }
    let p = std::path::Path::new("x");
    let _ = FileHeader::decode(data, DATA_MAGIC, p);
    let _ = FileHeader::decode(data, HINT_MAGIC, p);
    // Whole files (every fourth input: files cost a write and a 1 MiB read buffer): the bytes
    // as a data file and as a hint file.
    if data.first().is_none_or(|b| b % 4 != 0) {
        return;
    }
    let dir = scratch();
    let data_path = dir.join("0000000001-00000.data");
    let hint_path = dir.join("0000000001-00000.hint");
    for (path, bytes) in [(&data_path, data), (&hint_path, data)] {
        let mut f = std::fs::File::create(path).expect("create");
        f.write_all(bytes).expect("write");
    }
    let _ = scan::scan(&data_path, false, |_| Ok(()));
    let _ = scan::scan(&data_path, true, |_| Ok(()));
    let _ = hint::load(&hint_path, |_| Ok(()));
});
