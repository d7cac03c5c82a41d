//! Helpers for flowhost's end-to-end tests: where the built binary and plugin components
//! are (`paths`), scratch databases on the real SQLite and PostgreSQL (`scratch`), the CLI
//! driver and waiting on conditions (`cli`), a `serve` child (`server`), an HTTP client
//! (`http`) and NATS JetStream (`nats`).

mod cli;
mod http;
mod nats;
mod paths;
mod scratch;
mod server;

pub use cli::*;
pub use http::*;
pub use nats::*;
pub use paths::*;
pub use scratch::*;
pub use server::*;
