//! The schema as an ordered list of migrations. `PRAGMA user_version` records how many have been
//! applied; a migration is never edited once released, only followed by a new one.

/// Migration `i` brings the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: jobs, attempts, events, artifacts, jobs-dir bookkeeping.
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,      -- ULID, sorts by submission time
    name             TEXT NOT NULL,
    spec             TEXT NOT NULL,         -- JobSpec as JSON
    source           TEXT,                  -- job file path, if submitted from a file
    grp              TEXT NOT NULL,         -- concurrency group
    state            TEXT NOT NULL,
    reason           TEXT,
    exit_code        INTEGER,
    detail           TEXT,                  -- last human-readable outcome
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    submitted_at     TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT
);
CREATE INDEX jobs_by_state ON jobs(state);  -- rowid (submission order) is implied
CREATE INDEX jobs_by_name ON jobs(name);
CREATE TABLE attempts (
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    n           INTEGER NOT NULL,
    container   TEXT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT,
    exit_code   INTEGER,
    detail      TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (job_id, n)
);
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL REFERENCES jobs(id),
    attempt INTEGER,
    at      TEXT NOT NULL,
    state   TEXT NOT NULL,
    reason  TEXT,
    detail  TEXT
);
CREATE INDEX events_by_job ON events(job_id, seq);
CREATE TABLE artifacts (
    job_id     TEXT NOT NULL REFERENCES jobs(id),
    attempt    INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    path       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX artifacts_by_job ON artifacts(job_id);
CREATE TABLE jobs_dir_files (
    path         TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    job_id       TEXT NOT NULL REFERENCES jobs(id),
    seen_at      TEXT NOT NULL,
    PRIMARY KEY (path, content_hash)
);
"#,
    // 2: LLM gateway: per-attempt tokens (hashed) and metered usage per attempt and role.
    r#"
CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,            -- sha256 of the token; the token itself is never stored
    job_id     TEXT NOT NULL REFERENCES jobs(id),
    attempt    INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX tokens_by_attempt ON tokens(job_id, attempt);
CREATE TABLE usage (
    job_id            TEXT NOT NULL REFERENCES jobs(id),
    attempt           INTEGER NOT NULL,
    role              TEXT NOT NULL,         -- agent | manager
    requests          INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd          REAL NOT NULL DEFAULT 0,
    unpriced_requests INTEGER NOT NULL DEFAULT 0, -- calls to models missing from the price table
    PRIMARY KEY (job_id, attempt, role)
);
"#,
    // 3: agent transcripts: both directions, timestamped.
    r#"
CREATE TABLE transcript (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id    TEXT NOT NULL REFERENCES jobs(id),
    attempt   INTEGER NOT NULL,
    at        TEXT NOT NULL,
    direction TEXT NOT NULL,               -- out: Aider printed; in: the runner typed
    text      TEXT NOT NULL
);
CREATE INDEX transcript_by_attempt ON transcript(job_id, attempt, seq);
"#,
    // 4: the commit an attempt's work starts from (repository jobs).
    r#"
ALTER TABLE attempts ADD COLUMN base_commit TEXT;
"#,
    // 5: delivering an attempt's result (push a branch, open a pull request) as resumable steps.
    r#"
CREATE TABLE deliveries (
    job_id        TEXT NOT NULL REFERENCES jobs(id),
    attempt       INTEGER NOT NULL,
    kind          TEXT NOT NULL,            -- branch | pr
    branch        TEXT NOT NULL,
    bundle        TEXT NOT NULL,            -- path of the attempt's result.bundle
    bundle_sha256 TEXT NOT NULL,            -- its hash when exported: a changed file is not delivered
    commit_sha    TEXT,                     -- the bundle's head, once pushed
    state         TEXT NOT NULL,            -- pending | pushed | done
    pr_url        TEXT,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
"#,
    // 6: typed events: `state` rows as before; `turn` rows carry the turn as JSON in `data`
    // (their `state` is the job's state then, `running`).
    r#"
ALTER TABLE events ADD COLUMN kind TEXT NOT NULL DEFAULT 'state';
ALTER TABLE events ADD COLUMN data TEXT;
"#,
    // 7: a person's messages to a running agent (`runner send`), waiting for the attempt's
    // manager loop to type them into Aider (`delivered_at` set when it does).
    r#"
CREATE TABLE messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       TEXT NOT NULL REFERENCES jobs(id),
    attempt      INTEGER NOT NULL,
    text         TEXT NOT NULL,
    sent_at      TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX messages_by_attempt ON messages(job_id, attempt, seq);
"#,
    // 8: `runner pause`: the manager of a paused running agent issues no turns until resumed.
    r#"
ALTER TABLE jobs ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
"#,
    // 9: where an agent attempt stands in its Aider session, so that a restarted scheduler can
    // adopt it: the manager's last typed turn and the inputs since (JSON, see
    // `store::Checkpoint`), and how much of Aider's output the stored transcript holds.
    r#"
CREATE TABLE agent_checkpoints (
    job_id  TEXT NOT NULL REFERENCES jobs(id),
    attempt INTEGER NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
ALTER TABLE attempts ADD COLUMN transcript_offset INTEGER NOT NULL DEFAULT 0;
"#,
    // 10: usage per model too: the model a call named joins the key. SQLite cannot change a
    // primary key, so the table is rebuilt; rows metered before this carry model '' (unknown).
    r#"
CREATE TABLE usage_by_model (
    job_id            TEXT NOT NULL REFERENCES jobs(id),
    attempt           INTEGER NOT NULL,
    role              TEXT NOT NULL,         -- agent | manager
    model             TEXT NOT NULL,         -- as the call named it, at most 200 characters; '' unknown
    requests          INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd          REAL NOT NULL DEFAULT 0,
    unpriced_requests INTEGER NOT NULL DEFAULT 0, -- calls to models missing from the price table
    PRIMARY KEY (job_id, attempt, role, model)
);
INSERT INTO usage_by_model (job_id, attempt, role, model, requests, prompt_tokens,
                            completion_tokens, cost_usd, unpriced_requests)
    SELECT job_id, attempt, role, '', requests, prompt_tokens, completion_tokens, cost_usd,
           unpriced_requests
    FROM usage;
DROP TABLE usage;
ALTER TABLE usage_by_model RENAME TO usage;
"#,
    // 11: calls whose tokens are estimated (the upstream reported no usage, or the call was
    // cut short before it did).
    r#"
ALTER TABLE usage ADD COLUMN estimated_requests INTEGER NOT NULL DEFAULT 0;
"#,
    // 12: best-of-N (`candidates: N`): an attempt's place in its round of candidates (NULL for
    // a job with one attempt at a time); the order in which it passed `verify` and its change's
    // size; whether it won its round; whether its failure allows a new round (see
    // `store/candidates.rs`).
    r#"
ALTER TABLE attempts ADD COLUMN candidate INTEGER;
ALTER TABLE attempts ADD COLUMN passed INTEGER;
ALTER TABLE attempts ADD COLUMN diff_lines INTEGER;
ALTER TABLE attempts ADD COLUMN selected INTEGER NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN retryable INTEGER NOT NULL DEFAULT 0;
"#,
];
