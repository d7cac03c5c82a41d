//! The `sensor` model: sensors mounted on devices.
//!
//! Two records describe the same sensor when they share a code (upper-cased, trimmed).
//! A sensor names its device by the device's id in the same source system:
//! `{"device_id": "D-1001"}` from `bms` means the device whose source key is
//! `src:bms:D-1001`.
//!
//! This file is the template for an entity model with a parent.

use flowhost_sdk::{Description, Model, ParentKey, Record, Rejection, Value, key};

pub struct Sensor;

impl Model for Sensor {
    fn describe() -> Description {
        Description::entity("sensor", env!("CARGO_PKG_VERSION")).with_parent("device")
    }

    /// `sensor:` + the upper-cased, trimmed code.
    fn keys(record: &Record) -> Result<Vec<String>, Rejection> {
        match record.get("code") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(code)) if code.trim().is_empty() => Ok(Vec::new()),
            Some(Value::String(code)) => Ok(vec![key("sensor", &code.trim().to_uppercase())]),
            Some(_) => Err(Rejection::new("BAD_CODE", "code must be a string")),
        }
    }

    /// The device, by its source key in this record's system, built from `device_id` exactly
    /// as the device's own source key is built from its id (untrimmed: ids are taken as
    /// sent).
    fn parents(record: &Record) -> Result<Vec<ParentKey>, Rejection> {
        match record.get("device_id") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(id)) if !id.trim().is_empty() => Ok(vec![ParentKey::by_source(
                "device",
                &record.source.system,
                id,
            )]),
            Some(_) => Err(Rejection::new(
                "BAD_DEVICE_ID",
                "device_id must be a non-empty string",
            )),
        }
    }
}

flowhost_sdk::export_model!(Sensor);
