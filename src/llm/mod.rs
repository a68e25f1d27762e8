//! LLM access: the gateway agent containers talk to (forwarding, metering, budgets, record and
//! replay) and its parts.

pub mod cassette;
pub mod gateway;
pub mod meter;
pub mod prices;

pub use gateway::{upstream_base, Gateway, GatewayError};
pub use prices::Prices;
