//! The `reading` model: measurements taken by sensors.
//!
//! A reading is a value object: it is never merged with other readings and has no
//! canonical view of its own; it hangs under its sensor, named by the sensor's id in the
//! same source system (`{"sensor_id": "S-1"}` from `bms` → sensor key `src:bms:S-1`).
//!
//! This file is the template for a value-object model.

use flowhost_sdk::{Description, Model, ParentKey, Record, Rejection, Value};

pub struct Reading;

impl Model for Reading {
    fn describe() -> Description {
        Description::value_object("reading", env!("CARGO_PKG_VERSION"), "sensor")
    }

    /// Value objects own no keys.
    fn keys(_record: &Record) -> Result<Vec<String>, Rejection> {
        Ok(Vec::new())
    }

    /// The sensor, by its source key in this record's system. A reading without one is
    /// rejected: it could never be placed.
    fn parents(record: &Record) -> Result<Vec<ParentKey>, Rejection> {
        match record.get("sensor_id") {
            Some(Value::String(id)) if !id.trim().is_empty() => Ok(vec![ParentKey::by_source(
                "sensor",
                &record.source.system,
                id,
            )]),
            _ => Err(Rejection::new(
                "MISSING_SENSOR",
                "sensor_id must be a non-empty string",
            )),
        }
    }
}

flowhost_sdk::export_model!(Reading);
