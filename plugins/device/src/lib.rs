//! The `device` model: physical devices (chillers, pumps) described by several systems.
//!
//! Two records describe the same device when they share a serial number. Serials are
//! compared upper-cased and trimmed: `"sn-001"` and `"SN-001 "` are one device.
//!
//! This file is the template for a new entity model: implement `describe` and `keys`,
//! then export the model.

use flowhost_sdk::{Description, Model, Record, Rejection, Value, key};

pub struct Device;

impl Model for Device {
    fn describe() -> Description {
        Description::entity("device", env!("CARGO_PKG_VERSION"))
    }

    /// `serial:` + the upper-cased, trimmed serial; `serial` may be a string or a list.
    fn keys(record: &Record) -> Result<Vec<String>, Rejection> {
        let serials: Vec<&Value> = match record.get("serial") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.iter().collect(),
            Some(one) => vec![one],
        };
        serials
            .into_iter()
            .filter_map(|serial| match serial {
                Value::String(s) if s.trim().is_empty() => None,
                Value::String(s) => Some(Ok(key("serial", &s.trim().to_uppercase()))),
                _ => Some(Err(bad_serial())),
            })
            .collect()
    }
}

fn bad_serial() -> Rejection {
    Rejection::new("BAD_SERIAL", "serial must be a string or a list of strings")
}

flowhost_sdk::export_model!(Device);
