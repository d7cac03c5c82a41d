//! flowhost's domain types and the pure logic of its stages.
//!
//! Nothing here does IO: the association decision of a batch ([`association::decide`]),
//! intake line validation ([`intake`]), and adaptive batch sizing ([`batch`]) are plain
//! functions over plain data, so that they test in milliseconds and the same logic serves
//! the engine, the CLI's plugin test loop and the benchmarks.

pub mod association;
pub mod batch;
pub mod intake;
mod model;

pub use model::*;
