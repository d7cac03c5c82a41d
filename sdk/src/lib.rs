//! The guest-side SDK for flowhost model plugins.
//!
//! A plugin author implements [`Model`] with per-record functions (its keys, its parents,
//! optionally a rejection) and calls [`export_model!`]. The macro generates the component's
//! bindings and the batch loops: the host calls the plugin once per batch, and the SDK
//! turns that into one call of the author's functions per record.
//!
//! The default projection of flowhost's domain (flattened dotted paths, trimmed
//! case-insensitive distinct values, lineage, root policies) lives in [`projection`] and is
//! plain Rust, usable and testable natively.
//!
//! ```
//! use flowhost_sdk::{Description, Kind, Model, Record, Rejection};
//!
//! pub struct Device;
//! impl Model for Device {
//!     fn describe() -> Description { Description::entity("device", env!("CARGO_PKG_VERSION")) }
//!     fn keys(record: &Record) -> Result<Vec<String>, Rejection> {
//!         Ok(record.strings("serial").map(|s| flowhost_sdk::key("serial", &s.trim().to_uppercase())).collect())
//!     }
//! }
//! flowhost_sdk::export_model!(Device);
//! ```

mod payload;
pub mod projection;
pub mod testing;
mod types;

// The allocator is only installed in a plugin; natively it is compiled for its tests.
#[cfg(any(test, all(not(target_feature = "atomics"), target_family = "wasm")))]
mod alloc;

// Plugins parse JSON and so allocate a great deal; talc is much faster than the default
// wasm allocator (dlmalloc), and a cache of small freed blocks in front of it is faster
// still. See BENCHMARKS.md for the measured differences.
#[cfg(all(not(target_feature = "atomics"), target_family = "wasm"))]
#[global_allocator]
static ALLOCATOR: alloc::SmallBlocks<talc::wasm::WasmDynamicTalc> =
    alloc::SmallBlocks::new(talc::wasm::new_wasm_dynamic_allocator());

#[doc(hidden)]
pub mod glue;

pub use payload::{Payload, PayloadError};
pub use serde_json::{self, Map, Value, json};
pub use types::*;

/// The bindings generated from `wit/flowhost.wit` (the `plugin` world).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "flowhost_sdk::bindings",
    });
}

/// A model plugin. Implement the per-record functions; the SDK runs the batch loops.
pub trait Model {
    /// The model's name, kind, version, parents and root policies.
    fn describe() -> Description;

    /// The record's aggregation keys, already normalised (`serial:SN-001`). The host adds
    /// the source key itself. Return `Err` to reject the record (it parks `REJECTED`).
    fn keys(record: &Record) -> Result<Vec<String>, Rejection>;

    /// The parents the record names, by a key of the parent model (see [`source_key`]).
    fn parents(_record: &Record) -> Result<Vec<ParentKey>, Rejection> {
        Ok(Vec::new())
    }

    /// Decides one record. The default combines [`Model::keys`] and [`Model::parents`];
    /// override it only to reject records on grounds that span both.
    fn associate(record: &Record) -> Result<Keyed, Rejection> {
        Ok(Keyed {
            keys: Self::keys(record)?,
            parents: Self::parents(record)?,
        })
    }

    /// Projects one reference's keyed records (in intake order) into its views, as JSON
    /// text. The default is flowhost's standard projection with the policies of
    /// [`Model::describe`] ([`projection::project_views`]), written straight to text. A
    /// model with a projection of its own builds a [`Projection`] of maps (for instance by
    /// adjusting [`projection::project`]'s) and returns `projection.into()`.
    fn project(group: &Group, description: &Description) -> Views {
        projection::project_views(group, &description.policies)
    }
}

/// Writes a line to the host's log (a no-op when the plugin runs natively, e.g. in tests).
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use bindings::flowhost::plugin::host::{Level, log};
        let level = match level {
            LogLevel::Trace => Level::Trace,
            LogLevel::Debug => Level::Debug,
            LogLevel::Info => Level::Info,
            LogLevel::Warn => Level::Warn,
            LogLevel::Error => Level::Error,
        };
        log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

/// Exports a [`Model`] implementation as the plugin's component exports.
///
/// Call it once, at the root of the plugin crate: `flowhost_sdk::export_model!(Device);`
#[macro_export]
macro_rules! export_model {
    ($model:ty) => {
        #[doc(hidden)]
        pub struct __FlowhostExport;

        impl $crate::bindings::exports::flowhost::plugin::model::Guest for __FlowhostExport {
            fn describe() -> $crate::bindings::flowhost::plugin::types::Description {
                $crate::glue::describe::<$model>()
            }
            fn associate(
                records: ::std::vec::Vec<$crate::bindings::flowhost::plugin::types::InputRecord>,
            ) -> ::std::vec::Vec<$crate::bindings::flowhost::plugin::types::Association> {
                $crate::glue::associate::<$model>(records)
            }
            fn project(
                groups: ::std::vec::Vec<$crate::bindings::flowhost::plugin::types::Group>,
            ) -> ::std::vec::Vec<$crate::bindings::flowhost::plugin::types::Projection> {
                $crate::glue::project::<$model>(groups)
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_plugin_world!(__FlowhostExport with_types_in $crate::bindings);
    };
}
