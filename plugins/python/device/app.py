"""The `device` model in Python: the same rule as the Rust example in plugins/device.

Two records describe the same device when they share a serial number. Serials are
compared upper-cased and trimmed: "sn-001" and "SN-001 " are one device. `serial` may be
a string or a list of strings; anything else rejects the record (BAD_SERIAL).
"""

import flowhost


class Device(flowhost.Model):
    def describe(self):
        return flowhost.entity("device", "0.1.0")

    def keys(self, record):
        serial = record.get("serial")
        serials = [] if serial is None else serial if isinstance(serial, list) else [serial]
        keys = []
        for s in serials:
            if not isinstance(s, str):
                raise flowhost.Rejection("BAD_SERIAL", "serial must be a string or a list of strings")
            if s.strip():
                keys.append("serial:" + s.strip().upper())
        return keys


Model = flowhost.export(Device)
