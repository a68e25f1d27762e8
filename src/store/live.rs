//! Reads for live followers (mission control's streams): a cheap test of whether any other
//! connection has written since the last look, and transcript rows by their global `seq`, so
//! that a follower asks only for what is new instead of rereading whole transcripts.

use super::{Result, Store};
use crate::state::JobId;
use rusqlite::params;
use serde::Serialize;

/// One transcript entry with its place in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TranscriptRecord {
    /// Global order of transcript rows (all jobs).
    pub seq: i64,
    #[serde(skip)]
    pub job_id: JobId,
    pub attempt: u32,
    pub at: String,
    /// `out`: Aider printed it; `in`: the runner typed it.
    pub direction: String,
    pub text: String,
}

const TRANSCRIPT_COLUMNS: &str = "seq, job_id, attempt, at, direction, text";

fn transcript_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TranscriptRecord> {
    Ok(TranscriptRecord {
        seq: r.get(0)?,
        job_id: JobId(r.get(1)?),
        attempt: r.get(2)?,
        at: r.get(3)?,
        direction: r.get(4)?,
        text: r.get(5)?,
    })
}

impl Store {
    /// SQLite's `data_version`: it changes when another connection commits, so a follower that
    /// sees the same value as last time knows there is nothing new without reading a table.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// The newest transcript row's `seq` (0 when there is none).
    pub fn last_transcript_seq(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(seq), 0) FROM transcript", [], |r| {
                r.get(0)
            })?)
    }

    /// At most `limit` transcript rows of any job with a `seq` above `after`, in order.
    pub fn transcript_since(&self, after: i64, limit: usize) -> Result<Vec<TranscriptRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {TRANSCRIPT_COLUMNS} FROM transcript WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(params![after, limit as i64], transcript_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The transcript rows of job `id` (every attempt) with a `seq` above `after`, in order.
    pub fn transcript_after(&self, id: &JobId, after: i64) -> Result<Vec<TranscriptRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {TRANSCRIPT_COLUMNS} FROM transcript WHERE job_id = ?1 AND seq > ?2 ORDER BY seq"
        ))?;
        let rows = stmt
            .query_map(params![id.as_str(), after], transcript_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::tests_support::submit_one;
    use crate::store::Store;

    fn row(text: &str) -> (String, String, String) {
        ("2026-12-01T00:00:00Z".into(), "out".into(), text.into())
    }

    #[test]
    fn transcript_rows_are_read_by_seq_across_jobs_and_per_job() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let a = submit_one(&mut store, "a");
        let b = submit_one(&mut store, "b");
        store
            .add_transcript(&a, 1, &[row("a1"), row("a2")], 0)
            .unwrap();
        store.add_transcript(&b, 1, &[row("b1")], 0).unwrap();
        store.add_transcript(&a, 2, &[row("a3")], 0).unwrap();

        let all = store.transcript_since(0, 10).unwrap();
        let texts: Vec<&str> = all.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["a1", "a2", "b1", "a3"]);
        assert_eq!(store.last_transcript_seq().unwrap(), all[3].seq);
        let limited = store.transcript_since(all[0].seq, 2).unwrap();
        assert_eq!(limited.len(), 2);
        assert_eq!(limited[0].text, "a2");

        let of_a = store.transcript_after(&a, all[1].seq).unwrap();
        assert_eq!(of_a.len(), 1);
        assert_eq!((of_a[0].attempt, of_a[0].text.as_str()), (2, "a3"));
    }

    #[test]
    fn data_version_moves_only_when_another_connection_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Store::open(dir.path()).unwrap();
        let reader = Store::open(dir.path()).unwrap();
        let before = reader.data_version().unwrap();
        assert_eq!(reader.data_version().unwrap(), before);
        submit_one(&mut writer, "a");
        assert_ne!(reader.data_version().unwrap(), before);
    }
}
