//! A deterministic, realistic workload: devices described by two or three systems that
//! share serials (with different spellings), sensors on devices, readings of sensors, parents
//! that arrive late, devices without serials, serial collisions, and re-sent records.

use serde_json::json;
use std::io::Write;

/// What a generated workload holds.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkloadStats {
    pub lines: u64,
    pub things: u64,
    pub resends: u64,
}

/// Writes about `n` NDJSON lines to `out`.
pub fn generate(n: u64, out: &mut impl Write) -> std::io::Result<WorkloadStats> {
    // About 13 lines per device "thing": bms + oem device records (crm for every third),
    // a bms and an oem sensor, four readings per sensor, and a few re-sends.
    let things = (n / 13).max(1);
    let mut stats = WorkloadStats {
        things,
        ..Default::default()
    };
    let base = 1_772_359_200i64; // 2026-03-01T10:00:00Z
    let at = |t: i64| {
        chrono::DateTime::from_timestamp(base + t, 0)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let mut resend: Vec<String> = Vec::new();
    let mut emit =
        |line: String, out: &mut dyn Write, stats: &mut WorkloadStats| -> std::io::Result<()> {
            writeln!(out, "{line}")?;
            stats.lines += 1;
            if stats.lines.is_multiple_of(20) {
                resend.push(line);
            }
            if resend.len() >= 50 {
                for l in resend.drain(..) {
                    writeln!(out, "{l}")?;
                    stats.lines += 1;
                    stats.resends += 1;
                }
            }
            Ok(())
        };
    for i in 0..things {
        let t = i as i64;
        let serial = format!("sn-{i:07}");
        let no_serial = i % 97 == 13;
        let site = ["Roof", "Basement", "Plant room"][(i % 3) as usize];
        let bms_device = json!({"model":"device","source":{"system":"bms","adapter":"bms-v2"},"id":format!("D-{i}"),
            "occurred_at":at(t),"payload": if no_serial { json!({"name":format!("Unit {i}"),"site":"Roof"}) }
            else { json!({"serial":serial,"name":format!("Chiller {i}"),"site":site,"location":{"floor":i % 12,"room":format!("R{}", i % 40)}}) }}).to_string();
        let oem_device = json!({"model":"device","source":{"system":"oem","adapter":"oem-cloud"},"id":format!("X-{i}"),
            "occurred_at":at(t + 5),"payload":{"serial":format!(" {} ", serial.to_uppercase()),"firmware":format!("1.{}", i % 9),"vendor":"Acme"}}).to_string();
        let bms_sensor = json!({"model":"sensor","source":{"system":"bms","adapter":"bms-v2"},"id":format!("S-{i}"),
            "occurred_at":at(t + 1),"payload":{"code":format!("t{i}"),"device_id":format!("D-{i}"),"unit":"C"}}).to_string();
        let oem_sensor = json!({"model":"sensor","source":{"system":"oem","adapter":"oem-cloud"},"id":format!("T-{i}"),
            "occurred_at":at(t + 6),"payload":{"code":format!("T{i} "),"device_id":format!("X-{i}"),"range":{"min":-20,"max":60}}}).to_string();
        // Every tenth thing's sensor arrives before its device (a late parent).
        if i % 10 == 3 {
            emit(bms_sensor.clone(), out, &mut stats)?;
            emit(bms_device, out, &mut stats)?;
        } else {
            emit(bms_device, out, &mut stats)?;
            emit(bms_sensor.clone(), out, &mut stats)?;
        }
        emit(oem_device, out, &mut stats)?;
        emit(oem_sensor, out, &mut stats)?;
        if i % 3 == 0 {
            // crm knows the device by serial; every 500th crm record names two serials that
            // belong to two devices (a collision).
            let serials = if i % 500 == 0 && i > 0 {
                json!([serial, format!("sn-{:07}", i - 1)])
            } else {
                json!(serial)
            };
            emit(json!({"model":"device","source":{"system":"crm","adapter":"crm-export"},"id":format!("C-{i}"),
                "occurred_at":at(t + 9),"payload":{"serial":serials,"owner":format!("Team {}", i % 7)}}).to_string(), out, &mut stats)?;
        }
        for k in 0..4i64 {
            for (system, adapter, sensor) in [
                ("bms", "bms-v2", format!("S-{i}")),
                ("oem", "oem-cloud", format!("T-{i}")),
            ] {
                emit(json!({"model":"reading","source":{"system":system,"adapter":adapter},"id":format!("R-{system}-{i}-{k}"),
                    "occurred_at":at(t + 60 * k),"payload":{"sensor_id":sensor,"value":20.0 + ((t + k) % 50) as f64 / 10.0}}).to_string(), out, &mut stats)?;
            }
        }
        if no_serial && i % 2 == 1 {
            // The serial-less device is later sent again with its serial: the parked record heals.
            emit(json!({"model":"device","source":{"system":"bms","adapter":"bms-v2"},"id":format!("D-{i}"),
                "occurred_at":at(t + 300),"payload":{"serial":serial,"name":format!("Unit {i}")}}).to_string(), out, &mut stats)?;
        }
    }
    for l in resend.drain(..) {
        writeln!(out, "{l}")?;
        stats.lines += 1;
        stats.resends += 1;
    }
    Ok(stats)
}
