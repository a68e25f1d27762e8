//! Record and replay: a cassette is a JSON-lines file, one exchange a line, in the order they
//! happened. Only a summary of each request is kept (model, stream, message count): never
//! headers, keys or tokens. Replay serves each role's answers in order, with no upstream.

use crate::store::Role;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Largest cassette replay reads.
const MAX_CASSETTE_BYTES: u64 = 64 << 20;

/// What a cassette keeps of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSummary {
    pub model: String,
    pub stream: bool,
    pub messages: usize,
}

/// One exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    pub role: Role,
    pub request: RequestSummary,
    pub status: u16,
    pub content_type: String,
    /// The whole answer (for a stream, its server-sent events as sent).
    pub body: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CassetteError {
    #[error("cannot read cassette {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cassette {path} line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot write cassette {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Appends exchanges to a cassette.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl Recorder {
    /// Starts a fresh cassette at `path` (truncating an old one).
    pub fn create(path: &Path) -> Result<Recorder, CassetteError> {
        let write_err = |source| CassetteError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let new = !path.exists();
        let file = std::fs::File::create(path).map_err(write_err)?;
        if new {
            // The cassette lives beside the job file, the user's: the user's umask decides.
            crate::store::private::give_user_mode(path).map_err(write_err)?;
        }
        Ok(Recorder {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn append(&self, exchange: &Exchange) -> Result<(), CassetteError> {
        let mut line = serde_json::to_string(exchange).expect("exchange serializes");
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(line.as_bytes())
            .and_then(|_| file.flush())
            .map_err(|source| CassetteError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

/// A cassette loaded for replay.
#[derive(Debug)]
pub struct Cassette {
    pub path: PathBuf,
    by_role: HashMap<Role, Vec<Exchange>>,
}

impl Cassette {
    pub fn load(path: &Path) -> Result<Cassette, CassetteError> {
        let read_err = |message: String| CassetteError::Read {
            path: path.to_path_buf(),
            message,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| read_err(e.to_string()))?
            .len();
        if size > MAX_CASSETTE_BYTES {
            return Err(read_err(format!(
                "{size} bytes is over the {MAX_CASSETTE_BYTES}-byte cap"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        let mut by_role: HashMap<Role, Vec<Exchange>> = HashMap::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let exchange: Exchange =
                serde_json::from_str(line).map_err(|e| CassetteError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: e.to_string(),
                })?;
            by_role.entry(exchange.role).or_default().push(exchange);
        }
        Ok(Cassette {
            path: path.to_path_buf(),
            by_role,
        })
    }

    /// The `n`th (0-based) answer recorded for `role`.
    pub fn get(&self, role: Role, n: usize) -> Option<&Exchange> {
        self.by_role.get(&role)?.get(n)
    }

    pub fn count(&self, role: Role) -> usize {
        self.by_role.get(&role).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(role: Role, body: &str) -> Exchange {
        Exchange {
            role,
            request: RequestSummary {
                model: "m".into(),
                stream: false,
                messages: 1,
            },
            status: 200,
            content_type: "application/json".into(),
            body: body.into(),
            prompt_tokens: 1,
            completion_tokens: 2,
        }
    }

    #[test]
    fn recorded_exchanges_replay_in_order_per_role() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        let rec = Recorder::create(&path).unwrap();
        rec.append(&exchange(Role::Agent, "a1")).unwrap();
        rec.append(&exchange(Role::Manager, "m1")).unwrap();
        rec.append(&exchange(Role::Agent, "a2")).unwrap();
        let c = Cassette::load(&path).unwrap();
        assert_eq!(c.get(Role::Agent, 1).unwrap().body, "a2");
        assert_eq!(c.get(Role::Manager, 0).unwrap().body, "m1");
        assert!(c.get(Role::Manager, 1).is_none());
        assert_eq!(c.count(Role::Agent), 2);
    }

    #[test]
    fn a_corrupt_line_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(&path, "\n{not json}\n").unwrap();
        let err = Cassette::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
