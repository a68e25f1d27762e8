//! What is particular to Aider: the session over attached stdio (`session`, `parse`, `bounded`
//! for a turn's output), Aider's container (`plan`), the manager protocol (`protocol`) and the
//! manager itself (`manager`: llm, script or none). The attempt that ties them to a sandbox, a
//! repository, the store and the result export is [`crate::attempt`].

pub mod bounded;
pub mod manager;
pub mod parse;
pub mod plan;
pub mod protocol;
pub mod session;
