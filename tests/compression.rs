//! Value compression, end to end over HTTP on the real binary, for both engines: a
//! compressible 8 KiB JSON value PUT with `--compression lz4` reads back byte for byte with
//! the ETag its PUT answered, before and after a restart (bitcask: out of sealed, mmap-read
//! files and after a merge; memory: replayed from its log), the ETags are the same as with
//! compression off, and the data files take less disk than the same writes uncompressed.
//! Files from before compression (bitcask format 1) read back with it on.

mod common;

use common::{Server, tree_bytes};

/// A JSON document of exactly 8 KiB, different for each `i`, compressible like real ones.
fn json_doc(i: usize) -> Vec<u8> {
    let mut s = format!("{{\"id\":{i},\"items\":[");
    let mut n = 0;
    while s.len() + 100 < 8192 {
        s.push_str(&format!(
            "{{\"sku\":\"SKU-{i:04}-{n:04}\",\"name\":\"widget {n}\",\"qty\":{},\"tags\":[\"red\",\"small\"]}},",
            n % 17
        ));
        n += 1;
    }
    s.push_str("{}]");
    while s.len() < 8191 {
        s.push(' ');
    }
    s.push('}');
    assert_eq!(s.len(), 8192);
    s.into_bytes()
}

async fn put(s: &Server, key: &str, body: Vec<u8>) -> String {
    let r = s
        .client
        .put(s.url(&format!("/kv/{key}")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success(), "{}", r.status());
    r.headers()["etag"].to_str().expect("etag").to_string()
}

async fn get(s: &Server, key: &str) -> (Vec<u8>, String) {
    let r = s
        .client
        .get(s.url(&format!("/kv/{key}")))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200, "{key}");
    let etag = r.headers()["etag"].to_str().expect("etag").to_string();
    (r.bytes().await.expect("body").to_vec(), etag)
}

const KEYS: usize = 40;

/// Writes the documents with `codec`; checks reads before and after a restart; returns each
/// key's ETag and the bytes the data directory holds once the server has stopped.
async fn run(engine: &str, codec: &str) -> (Vec<String>, u64) {
    let flags = [
        "--compression",
        codec,
        "--bitcask-max-file-size",
        "65536",
        "--bitcask-read-mode",
        "mmap",
    ];
    let mut s = Server::start(engine, &flags).await;
    let mut etags = Vec::new();
    for i in 0..KEYS {
        etags.push(put(&s, &format!("doc-{i}"), json_doc(i)).await);
    }
    for (i, etag) in etags.iter().enumerate() {
        let (body, tag) = get(&s, &format!("doc-{i}")).await;
        assert!(
            body == json_doc(i),
            "{engine} {codec}: doc-{i} bytes differ"
        );
        assert_eq!(&tag, etag, "{engine} {codec}: doc-{i}");
    }
    let dir = s.data_dir.clone();
    assert!(s.terminate().await.success());
    let bytes = tree_bytes(&dir);
    // Restarted: values come from disk (bitcask: sealed files through the map; memory: the
    // log replayed), then once more after a merge (bitcask: records carried over as stored).
    let mut t = Server::start_in(&dir, engine, &flags).await;
    for round in 0..2 {
        for (i, etag) in etags.iter().enumerate() {
            let (body, tag) = get(&t, &format!("doc-{i}")).await;
            assert!(
                body == json_doc(i),
                "{engine} {codec} round {round}: doc-{i} bytes differ after restart"
            );
            assert_eq!(&tag, etag, "{engine} {codec} round {round}: doc-{i}");
        }
        let r = t
            .client
            .post(t.url("/admin/merge?wait=true"))
            .send()
            .await
            .expect("merge");
        assert!(r.status().is_success(), "merge: {}", r.status());
    }
    assert!(t.terminate().await.success());
    (etags, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_values_read_back_identical_with_the_same_etags_in_less_space() {
    for engine in ["bitcask", "memory"] {
        let (plain_tags, plain_bytes) = run(engine, "none").await;
        let (lz4_tags, lz4_bytes) = run(engine, "lz4").await;
        if engine == "bitcask" {
            // Versions are sequence numbers from 1 in a fresh store: the same writes get the
            // same ETags whatever the codec. (The memory engine's versions start from the
            // clock, so only each store's own ETags are compared there.)
            assert_eq!(plain_tags, lz4_tags, "{engine}");
        }
        assert!(
            lz4_bytes * 2 < plain_bytes,
            "{engine}: {lz4_bytes} bytes with lz4, {plain_bytes} without"
        );
    }
}

/// A store whose files are format 1 (as written before compression existed: the same bytes
/// as format 2 with raw values, headers patched back to 1) opens with compression on, reads
/// every value, takes compressed writes beside the old records, and merges them together.
#[test]
fn format_1_bitcask_files_read_back_with_compression_on() {
    use bytes::Bytes;
    use hoardhaven::engine::bitcask::Bitcask;
    use hoardhaven::engine::compression::{Algorithm, Compression};
    use hoardhaven::engine::{Engine, PutOptions, SyncPolicy};

    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = common::bitcask_opts(65536);
    let e = Bitcask::open(dir.path(), SyncPolicy::Always, &o).expect("open");
    for i in 0..20 {
        e.put(
            format!("old-{i}").as_bytes(),
            Bytes::from(json_doc(i)),
            PutOptions::default(),
        )
        .expect("put");
    }
    e.close().expect("close");
    drop(e);
    let mut patched = 0;
    for entry in std::fs::read_dir(dir.path()).expect("read_dir").flatten() {
        let p = entry.path();
        if !p.extension().is_some_and(|x| x == "data" || x == "hint") {
            continue;
        }
        let mut b = std::fs::read(&p).expect("read");
        assert_eq!(b[8..12], 2u32.to_le_bytes(), "{} is format 2", p.display());
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&p, b).expect("write");
        patched += 1;
    }
    assert!(patched > 1, "data files patched: {patched}");
    o.compression = Compression {
        algorithm: Algorithm::Lz4,
        min_bytes: 1024,
    };
    let e = Bitcask::open(dir.path(), SyncPolicy::Always, &o).expect("open format 1 with lz4");
    for i in 20..40 {
        e.put(
            format!("new-{i}").as_bytes(),
            Bytes::from(json_doc(i)),
            PutOptions::default(),
        )
        .expect("put");
    }
    for round in ["before merge", "after merge"] {
        for i in 0..40 {
            let key = if i < 20 {
                format!("old-{i}")
            } else {
                format!("new-{i}")
            };
            let v = e.get(key.as_bytes()).expect("get").expect("present");
            assert!(v.bytes == json_doc(i), "{round}: {key}");
            assert_eq!(v.meta.value_len, 8192, "{round}: {key}");
        }
        e.merge().expect("merge");
    }
    e.close().expect("close");
}
