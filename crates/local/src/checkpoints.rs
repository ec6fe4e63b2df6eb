//! Local mode's checkpoint sink (issue 17): the same files as the
//! S3 bucket, in `<data-dir>/checkpoints/`, each created once and never overwritten.

use std::path::PathBuf;

use async_trait::async_trait;

use countersign_core::domain::checkpoint::object_key;
use countersign_core::ports::{CheckpointSink, StoreError};

pub struct DirSink {
    /// The data directory; objects go to `checkpoints/…` below it.
    pub root: PathBuf,
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::unavailable(e)
}

impl DirSink {
    fn seqs(&self) -> Result<Vec<u64>, StoreError> {
        let dir = self.root.join("checkpoints");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut seqs = Vec::new();
        for entry in entries {
            let name = entry.map_err(io)?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name.strip_suffix(".jwt").and_then(|s| s.parse::<u64>().ok()) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    fn read(&self, seq: u64) -> Result<String, StoreError> {
        std::fs::read_to_string(self.root.join(object_key(seq))).map_err(io)
    }
}

#[async_trait]
impl CheckpointSink for DirSink {
    async fn put(&self, seq: u64, jws: &str) -> Result<(), StoreError> {
        let path = self.root.join(object_key(seq));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(io)?;
        std::io::Write::write_all(&mut f, jws.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    async fn latest(&self) -> Result<Option<String>, StoreError> {
        self.seqs()?.last().map(|s| self.read(*s)).transpose()
    }

    async fn all(&self) -> Result<Vec<(u64, String)>, StoreError> {
        self.seqs()?.into_iter().map(|s| Ok((s, self.read(s)?))).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn checkpoints_are_written_once_and_listed_in_chain_order() {
        let dir = tempfile::tempdir().unwrap();
        let sink = DirSink { root: dir.path().to_path_buf() };
        assert_eq!(sink.latest().await.unwrap(), None);
        sink.put(12, "b").await.unwrap();
        sink.put(3, "a").await.unwrap();
        assert!(sink.put(3, "forged").await.is_err(), "a checkpoint is never overwritten");
        assert_eq!(sink.latest().await.unwrap().as_deref(), Some("b"));
        assert_eq!(sink.all().await.unwrap(), vec![(3, "a".to_string()), (12, "b".to_string())]);
        assert!(dir.path().join("checkpoints/00000000000000000012.jwt").exists());
    }
}
