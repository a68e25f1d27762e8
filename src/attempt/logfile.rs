//! A job's output on disk, capped: the head is written as it arrives, the tail is kept in a
//! bounded ring, and at the end the file is the head, a line marking what was cut, and the tail.
//! Memory stays bounded by the tail size however much a job prints.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Default cap of a stored log (head + tail).
pub const DEFAULT_LOG_CAP: u64 = 16 << 20;

/// A capped log file being written.
pub struct CappedLog {
    path: PathBuf,
    file: tokio::fs::File,
    /// Bytes written to the head so far.
    head_written: u64,
    head_cap: u64,
    tail: VecDeque<u8>,
    tail_cap: usize,
    /// Bytes dropped from the front of the tail.
    cut: u64,
    /// Secret values replaced before anything is stored.
    redactor: super::redact::Redactor,
}

impl CappedLog {
    /// Creates (truncating) the log at `path`, keeping at most `cap` bytes of output.
    pub async fn create(path: &Path, cap: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::File::create(path).await?;
        Ok(CappedLog {
            path: path.to_path_buf(),
            file,
            head_written: 0,
            head_cap: cap / 2,
            tail: VecDeque::new(),
            tail_cap: (cap - cap / 2) as usize,
            cut: 0,
            redactor: super::redact::Redactor::default(),
        })
    }

    /// Replaces these secret values (name, value) wherever they appear in the output.
    pub fn redacting(mut self, redactor: super::redact::Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends output.
    pub async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        if self.redactor.is_empty() {
            return self.store(chunk).await;
        }
        let safe = self.redactor.push(chunk);
        self.store(&safe).await
    }

    async fn store(&mut self, mut chunk: &[u8]) -> std::io::Result<()> {
        if self.head_written < self.head_cap {
            let room = (self.head_cap - self.head_written) as usize;
            let (head, rest) = chunk.split_at(room.min(chunk.len()));
            self.file.write_all(head).await?;
            self.file.flush().await?;
            self.head_written += head.len() as u64;
            chunk = rest;
        }
        if chunk.is_empty() {
            return Ok(());
        }
        if chunk.len() >= self.tail_cap {
            self.cut += self.tail.len() as u64 + (chunk.len() - self.tail_cap) as u64;
            self.tail.clear();
            self.tail.extend(&chunk[chunk.len() - self.tail_cap..]);
            return Ok(());
        }
        let overflow = (self.tail.len() + chunk.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.cut += overflow as u64;
        self.tail.extend(chunk);
        Ok(())
    }

    /// Writes the tail (after a cut marker if anything was dropped) and closes the file.
    pub async fn finish(mut self) -> std::io::Result<()> {
        let rest = self.redactor.finish();
        self.store(&rest).await?;
        if self.cut > 0 {
            let marker = format!(
                "\n[runner: {} bytes of output cut here; the first {} and last {} bytes are kept]\n",
                self.cut,
                self.head_written,
                self.tail.len()
            );
            self.file.write_all(marker.as_bytes()).await?;
        }
        let (a, b) = self.tail.as_slices();
        self.file.write_all(a).await?;
        self.file.write_all(b).await?;
        self.file.flush().await?;
        self.file.sync_all().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_output_is_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut log = CappedLog::create(&path, 100).await.unwrap();
        log.write(b"hello ").await.unwrap();
        log.write(b"world").await.unwrap();
        log.finish().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
    }

    #[tokio::test]
    async fn output_between_head_and_cap_is_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut log = CappedLog::create(&path, 20).await.unwrap();
        log.write(b"0123456789abcdefghij").await.unwrap();
        log.finish().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789abcdefghij");
    }

    #[tokio::test]
    async fn flood_keeps_head_and_tail_and_marks_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut log = CappedLog::create(&path, 20).await.unwrap();
        log.write(b"HEAD-HEAD-").await.unwrap();
        for _ in 0..1000 {
            log.write(b"middle").await.unwrap();
        }
        log.write(b"TAIL-TAIL-").await.unwrap();
        log.finish().await.unwrap();
        let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        assert!(text.starts_with("HEAD-HEAD-"), "{text}");
        assert!(text.ends_with("TAIL-TAIL-"), "{text}");
        assert!(
            text.contains("[runner: 6000 bytes of output cut here"),
            "{text}"
        );
    }
}
