//! A small real filesystem for the disk-full tests: a tmpfs of a few MiB mounted by the test
//! (as root), unmounted on drop, and a way to fill it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a few MiB mounted for the test; unmounted on drop.
pub struct SmallFs {
    /// The mount point.
    pub dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts it, or returns `None` after [`super::skip_unless_required`] (which fails the
    /// test when `HOARDHAVEN_REQUIRE_TOOLS` is set).
    pub fn mount(size: &str) -> Option<SmallFs> {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("mnt");
        std::fs::create_dir(&dir).expect("mkdir mount point");
        let why = match Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
        {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = why {
            super::skip_unless_required(&format!(
                "cannot mount a tmpfs here (needs root): {why}; disk-full on a real filesystem \
                 not tested"
            ));
            return None;
        }
        Some(SmallFs {
            dir,
            _parent: parent,
        })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

impl SmallFs {
    /// Fills the filesystem with one file, then gives `leave` bytes back; returns the file.
    pub fn fill(&self, leave: u64) -> PathBuf {
        fill_filesystem(&self.dir, leave)
    }
}

fn fill_filesystem(dir: &Path, leave: u64) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![7u8; 64 * 1024];
    // Fill it up, then give `leave` bytes back.
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    let len = f.metadata().expect("meta").len();
    f.set_len(len.saturating_sub(leave)).expect("shrink");
    filler
}
