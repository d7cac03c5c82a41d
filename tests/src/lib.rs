//! Helpers for flowhost's end-to-end tests: where the built binary and plugin components
//! are (`paths`), scratch databases on the real SQLite and PostgreSQL (`scratch`), the CLI
//! driver and waiting on conditions (`cli`), a `serve` child (`server`) and an HTTP client
//! (`http`).

mod cli;
mod http;
mod paths;
mod scratch;
mod server;

pub use cli::*;
pub use http::*;
pub use paths::*;
pub use scratch::*;
pub use server::*;
