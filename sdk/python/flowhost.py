"""flowhost's guest library for model plugins written in Python.

A plugin is a component built with componentize-py for the `plugin` world of
`wit/flowhost.wit`. This module does what the Rust SDK's `Model` trait and
`export_model!` do: the host calls the plugin once per batch, and this module turns
that into one call of your `keys` (and `parents`) per record. Projection is flowhost's
default projection, which the host runs natively on the groups this module hands over
(`host.default-projection`), so a Python model projects exactly as a Rust one.

    import flowhost

    class Device(flowhost.Model):
        def describe(self):
            return flowhost.entity("device", "0.1.0")

        def keys(self, record):
            return ["serial:" + s.strip().upper() for s in record.strings("serial")]

    Model = flowhost.export(Device)   # componentize-py looks for `Model` in your app
"""

from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
import json

try:
    from wit_world import exports
    from wit_world.imports import host
    from wit_world.imports import types as wit

    NATIVE = False
except ImportError:
    # Plain Python, outside a component (a plugin's own tests): the component's types as
    # plain stand-ins, so `describe`, `keys` and `parents` run as they will in the host.
    NATIVE = True
    exports = host = None

    class wit:  # noqa: N801 - stands in for the generated module
        class Kind(Enum):
            ENTITY = 0
            VALUE_OBJECT = 1

        @dataclass
        class Policy_Last:  # noqa: N801
            pass

        @dataclass
        class Policy_First:  # noqa: N801
            pass

        @dataclass
        class Policy_Max:  # noqa: N801
            pass

        @dataclass
        class Policy_Min:  # noqa: N801
            pass

        @dataclass
        class Policy_Coalesce:  # noqa: N801
            value: list = field(default_factory=list)

        @dataclass
        class PathPolicy:
            path: str
            policy: object

        @dataclass
        class Description:
            model: str
            kind: object
            version: str
            parents: list
            policies: list

        @dataclass
        class ParentKey:
            model: str
            key: str


class Rejection(Exception):
    """Raise it from `keys` or `parents` to reject a record: it parks `REJECTED` with the
    code and message."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Record:
    """One intake record: who sent it, when, and its payload as Python values (objects as
    dicts, numbers exactly: integers as `int` (past 4,000 digits `decimal.Decimal`), the rest
    as `decimal.Decimal`)."""

    __slots__ = ("seq", "system", "adapter", "external_id", "occurred_at", "payload")

    def __init__(self, seq, system, adapter, external_id, occurred_at, payload):
        self.seq = seq
        self.system = system
        self.adapter = adapter
        self.external_id = external_id
        self.occurred_at = occurred_at
        self.payload = payload

    @classmethod
    def _of(cls, raw, payload):
        s = raw.source
        return cls(raw.seq, s.system, s.adapter, raw.external_id, raw.occurred_at, payload)

    def get(self, path):
        """The value at a dotted path (`location.floor`), or None."""
        value = self.payload
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value

    def strings(self, path):
        """The strings at a path: one string, or each string of a list. Empty and
        blank strings are left out; anything else there rejects the record."""
        value = self.get(path)
        items = [] if value is None else value if isinstance(value, list) else [value]
        out = []
        for item in items:
            if not isinstance(item, str):
                raise Rejection(
                    "BAD_" + path.upper().replace(".", "_"),
                    f"{path} must be a string or a list of strings",
                )
            if item.strip():
                out.append(item)
        return out


def source_key(system, external_id):
    """The key every entity record has: `src:{system}:{external id}` (to name a parent)."""
    return f"src:{system}:{external_id}"


# Root policies: how the root view picks one value for a path (the default is `LAST`).
LAST = wit.Policy_Last()
FIRST = wit.Policy_First()
MAX = wit.Policy_Max()
MIN = wit.Policy_Min()


def coalesce(*systems):
    """The first non-null value, taking sources in this priority order of systems."""
    return wit.Policy_Coalesce(list(systems))


def _description(model, kind, version, parents, policies):
    return wit.Description(
        model=model,
        kind=kind,
        version=version,
        parents=list(parents),
        policies=[wit.PathPolicy(path=p, policy=pol) for p, pol in (policies or {}).items()],
    )


def entity(model, version, parents=(), policies=None):
    """An entity model: records are associated into references and projected.
    `policies` maps dotted paths to a root policy."""
    return _description(model, wit.Kind.ENTITY, version, parents, policies)


def value_object(model, version, parents=()):
    """A value-object model: records only hang under a parent reference."""
    return _description(model, wit.Kind.VALUE_OBJECT, version, parents, None)


class Model:
    """Subclass it: `describe` and `keys` are required, `parents` is optional."""

    def describe(self):
        raise NotImplementedError("describe the model with flowhost.entity(...)")

    def keys(self, record):
        """The record's aggregation keys, already normalised (`serial:SN-001`). The host
        adds the source key itself."""
        raise NotImplementedError

    def parents(self, record):
        """The parents the record names, as (model, key) pairs."""
        return []


def _int(text):
    # Python refuses to read integers of more than 4,300 digits; intake takes longer ones,
    # so those stay exact as Decimal.
    return int(text) if len(text) <= 4000 else Decimal(text)


def _parse(text):
    return json.loads(text, parse_float=Decimal, parse_int=_int)


def _decide(model, record):
    """(keys, parents) of a record, or the Rejection."""
    try:
        keys = [str(k) for k in model.keys(record)]
        parents = [wit.ParentKey(model=m, key=k) for m, k in model.parents(record)]
        return keys, parents
    except Rejection as r:
        return r


def export(model_class):
    """The class componentize-py exports as the `model` interface (name it `Model`)."""
    if NATIVE:
        return model_class
    model = model_class()
    description = model.describe()

    class Exported(exports.Model):
        def describe(self):
            return description

        def associate(self, records):
            out = []
            for raw in records:
                payload = _parse(raw.payload)
                decided = (
                    _decide(model, Record._of(raw, payload))
                    if isinstance(payload, dict)
                    else Rejection("BAD_PAYLOAD", "payload is not a JSON object")
                )
                if isinstance(decided, Rejection):
                    out.append(
                        wit.Association_Rejected(
                            wit.Rejection(code=decided.code, message=decided.message)
                        )
                    )
                else:
                    keys, parents = decided
                    out.append(wit.Association_Keyed(wit.Keyed(keys=keys, parents=parents)))
            return out

        def project(self, groups):
            return host.default_projection(groups, description.policies)

    return Exported


def log(level, message):
    """Writes a line to the host's log: level is one of "trace", "debug", "info",
    "warn", "error"."""
    host.log(host.Level[level.upper()], message)


# A plugin's own tests, in plain Python: its records from NDJSON in flowhost's intake
# format, and what the model decides for each.


def records(ndjson, model):
    """The records of `model` in NDJSON text, numbered in order from 1."""
    out = []
    for line in ndjson.splitlines():
        if not line.strip():
            continue
        item = _parse(line)
        if item.get("model") != model:
            continue
        source = item.get("source", {})
        out.append(
            Record(
                len(out) + 1,
                source.get("system", ""),
                source.get("adapter", source.get("system", "")),
                item.get("id", ""),
                item.get("occurred_at", ""),
                item.get("payload", {}),
            )
        )
    return out


def associate(model_class, records):
    """Per record: {"keys": [...], "parents": [(model, key), ...]} or its Rejection."""
    model = model_class()
    out = []
    for record in records:
        decided = _decide(model, record)
        if isinstance(decided, Rejection):
            out.append(decided)
        else:
            keys, parents = decided
            out.append({"keys": keys, "parents": [(p.model, p.key) for p in parents]})
    return out
