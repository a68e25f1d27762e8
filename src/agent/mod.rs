//! Agent jobs: the Aider session over attached stdio (`session`, `parse`, `bounded` for a turn's
//! output), the manager protocol
//! (`protocol`), the manager itself (`manager`: llm, script or none), and the attempt that ties
//! them to a sandbox, a repository and the result export (`run`).

pub mod bounded;
pub mod manager;
pub mod parse;
pub mod protocol;
pub mod run;
pub mod session;
