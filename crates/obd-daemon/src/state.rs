//! The daemon's persistent record of attached devices, so that a restarted daemon (after a
//! crash, a kill or an upgrade) brings the same exports back at the same paths.
//!
//! One JSON file, `<stateDir>/devices.json`, rewritten atomically (temporary file, fsync,
//! rename, fsync of the directory) whenever a device is attached or detached.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::protocol::AttachRequest;

/// The state directory and its record file.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// Use `dir`, creating it when missing.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        Ok(StateStore {
            dir: dir.to_path_buf(),
        })
    }

    fn file(&self) -> PathBuf {
        self.dir.join("devices.json")
    }

    /// The recorded attachments (each with its id set). A missing file is an empty list.
    pub fn load(&self) -> Result<Vec<AttachRequest>> {
        let path = self.file();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid state file", path.display()))
    }

    /// Replace the record with `devices`.
    pub fn save(&self, devices: &[AttachRequest]) -> Result<()> {
        let path = self.file();
        let tmp = self.dir.join(".devices.json.tmp");
        let text = serde_json::to_vec_pretty(devices)?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ExportOptions, ExportSpec};

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        assert!(store.load().unwrap().is_empty());
        let recs = vec![AttachRequest {
            config: "/c/config.v1.json".into(),
            export: ExportSpec::Nbd("unix:/run/x.sock".into()),
            id: Some("x".into()),
            options: ExportOptions::default(),
        }];
        store.save(&recs).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].export, recs[0].export);
        fs::write(store.file(), b"{not json").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("devices.json"), "{err}");
    }
}
