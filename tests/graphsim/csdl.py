"""A small validator of OData JSON against Microsoft's CSDL (../shared/graph-schema): entity and
complex types with their base types, property names and JSON types, enum members, nullability.

Stricter than OData in one way: an open type (``event`` is one) gets no dynamic properties here,
so a misspelt property name is an error, not a dynamic property.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lxml import etree

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
SCHEMA_PATH = (
    Path(__file__).resolve().parents[2].parent / "shared" / "graph-schema" / ("v1.0-metadata.xml")
)

_DATE_TIME_OFFSET = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?(Z|[+-]\d{2}:\d{2})$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_OF_DAY = re.compile(r"^\d{2}:\d{2}(:\d{2}(\.\d{1,12})?)?$")
_DURATION = re.compile(r"^-?P(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")
_INTEGERS = {"Edm.Byte": (0, 255), "Edm.SByte": (-128, 127), "Edm.Int16": (-(2**15), 2**15 - 1),
             "Edm.Int32": (-(2**31), 2**31 - 1), "Edm.Int64": (-(2**63), 2**63 - 1)}  # fmt: skip


class SchemaViolation(AssertionError):
    """A JSON value the schema rejects; ``path`` says where (``value[3].start.dateTime``)."""


@dataclass
class Prop:
    type: str  # "graph.x", "Edm.String" or "Collection(...)"
    nullable: bool


@dataclass
class StructType:
    name: str
    base: str | None
    abstract: bool
    props: dict[str, Prop] = field(default_factory=dict)


@dataclass
class Schema:
    types: dict[str, StructType]
    enums: dict[str, tuple[set[str], bool]]  # name -> (members, is flags)

    def all_props(self, type_name: str) -> dict[str, Prop]:
        props: dict[str, Prop] = {}
        name: str | None = type_name
        while name:
            struct = self.types[name]
            props = {**struct.props, **props}
            name = struct.base
        return props

    def derives(self, name: str, base: str) -> bool:
        current: str | None = name
        while current:
            if current == base:
                return True
            current = self.types[current].base
        return False

    # --- validation -----------------------------------------------------------------------

    def validate(self, value: Any, type_name: str, path: str = "$") -> None:
        """Raise SchemaViolation unless ``value`` is valid JSON for ``type_name``
        ("graph.event", "Collection(graph.event)", "Edm.String", ...)."""
        if type_name.startswith("Collection("):
            inner = type_name[len("Collection(") : -1]
            if not isinstance(value, list):
                raise SchemaViolation(f"{path}: expected a JSON array of {inner}, got {value!r}")
            for n, element in enumerate(value):
                if element is None:
                    raise SchemaViolation(f"{path}[{n}]: null in a collection of {inner}")
                self.validate(element, inner, f"{path}[{n}]")
            return
        if type_name.startswith("Edm."):
            _check_primitive(value, type_name, path)
            return
        if type_name in self.enums:
            members, flags = self.enums[type_name]
            if not isinstance(value, str):
                raise SchemaViolation(f"{path}: {type_name} must be a string, got {value!r}")
            names = [v.strip() for v in value.split(",")] if flags else [value]
            for name in names:
                if name not in members:
                    raise SchemaViolation(
                        f"{path}: {value!r} is not a member of {type_name} ({sorted(members)})"
                    )
            return
        if type_name not in self.types:
            raise SchemaViolation(f"{path}: unknown type {type_name}")
        if not isinstance(value, dict):
            raise SchemaViolation(f"{path}: expected an object of {type_name}, got {value!r}")
        actual = type_name
        declared = value.get("@odata.type")
        if declared is not None:
            actual = declared.lstrip("#").replace("microsoft.graph.", "graph.")
            if actual not in self.types or not self.derives(actual, type_name):
                raise SchemaViolation(f"{path}: @odata.type {declared} is not a {type_name}")
        if self.types[actual].abstract:
            raise SchemaViolation(f"{path}: {actual} is abstract; name a concrete @odata.type")
        props = self.all_props(actual)
        for key, item in value.items():
            if key.startswith("@") or "@" in key:
                # instance annotations (@odata.etag, @removed, prop@odata.type): not properties
                continue
            prop = props.get(key)
            if prop is None:
                raise SchemaViolation(f"{path}: {actual} has no property {key!r}")
            if item is None:
                if not prop.nullable:
                    raise SchemaViolation(f"{path}.{key}: null, but {actual}.{key} is not nullable")
                continue
            self.validate(item, prop.type, f"{path}.{key}")
        for key, prop in props.items():
            # a non-nullable property of a complex value must be there (entities may be $select-ed)
            if (
                not prop.nullable
                and key not in value
                and not self._is_entity(actual)
                and not prop.type.startswith("Collection(")
            ):
                raise SchemaViolation(f"{path}: {actual}.{key} is required (Nullable=false)")

    def _is_entity(self, name: str) -> bool:
        return self.derives(name, "graph.entity")


def _check_primitive(value: Any, type_name: str, path: str) -> None:
    def fail(expected: str) -> None:
        raise SchemaViolation(f"{path}: {type_name} expects {expected}, got {value!r}")

    if type_name in ("Edm.String",):
        if not isinstance(value, str):
            fail("a string")
    elif type_name == "Edm.Boolean":
        if not isinstance(value, bool):
            fail("true or false")
    elif type_name in _INTEGERS:
        low, high = _INTEGERS[type_name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            fail(f"an integer in [{low}, {high}]")
    elif type_name in ("Edm.Double", "Edm.Single", "Edm.Decimal"):
        number = not isinstance(value, bool) and isinstance(value, int | float)
        if not number and value not in ("INF", "-INF", "NaN"):
            fail("a number")
    elif type_name == "Edm.DateTimeOffset":
        if not isinstance(value, str) or not _DATE_TIME_OFFSET.match(value):
            fail("an ISO 8601 date-time with Z or an offset")
    elif type_name == "Edm.Date":
        if not isinstance(value, str) or not _DATE.match(value):
            fail("YYYY-MM-DD")
    elif type_name == "Edm.TimeOfDay":
        if not isinstance(value, str) or not _TIME_OF_DAY.match(value):
            fail("hh:mm:ss")
    elif type_name == "Edm.Duration":
        if not isinstance(value, str) or not _DURATION.match(value):
            fail("an ISO 8601 duration")
    elif type_name == "Edm.Guid":
        if not isinstance(value, str) or not _GUID.match(value):
            fail("a GUID")
    elif type_name == "Edm.Binary":
        if not isinstance(value, str) or not _BASE64.match(value):
            fail("base64")
    elif type_name in ("Edm.Untyped", "Edm.Stream"):
        return
    else:
        raise SchemaViolation(f"{path}: primitive type {type_name} not known to this validator")


@cache
def load(path: Path = SCHEMA_PATH) -> Schema:
    """The parsed schema (cached: the file is 3.5 MB)."""
    root = etree.parse(str(path)).getroot()
    types: dict[str, StructType] = {}
    enums: dict[str, tuple[set[str], bool]] = {}
    for schema in root.iter(f"{EDM}Schema"):
        alias = schema.get("Alias") or schema.get("Namespace")
        for element in schema:
            if not isinstance(element.tag, str):  # comments
                continue
            tag = element.tag.removeprefix(EDM)
            if tag in ("EntityType", "ComplexType"):
                name = f"{alias}.{element.get('Name')}"
                struct = StructType(
                    name=name,
                    base=element.get("BaseType"),
                    abstract=element.get("Abstract") == "true",
                )
                for child in element:
                    child_tag = child.tag.removeprefix(EDM)
                    if child_tag in ("Property", "NavigationProperty"):
                        struct.props[child.get("Name")] = Prop(
                            type=child.get("Type"), nullable=child.get("Nullable") != "false"
                        )
                types[name] = struct
            elif tag == "EnumType":
                name = f"{alias}.{element.get('Name')}"
                members = {m.get("Name") for m in element.iter(f"{EDM}Member")}
                enums[name] = (members, element.get("IsFlags") == "true")
    return Schema(types=types, enums=enums)


# --- whole answers ---------------------------------------------------------------------------

ERROR_KEYS = {"code", "message", "innerError", "details", "target"}


def validate_error(document: Any) -> None:
    """An OData JSON error body as Graph sends it: {"error": {"code", "message", "innerError"}}."""
    if not isinstance(document, dict) or set(document) != {"error"}:
        raise SchemaViolation(f"an error body is {{'error': {{...}}}}, got {document!r}")
    error = document["error"]
    if not isinstance(error, dict) or not {"code", "message"} <= set(error):
        raise SchemaViolation(f"error needs code and message: {error!r}")
    if set(error) - ERROR_KEYS:
        raise SchemaViolation(f"error has unknown members {sorted(set(error) - ERROR_KEYS)}")
    if not isinstance(error["code"], str) or not isinstance(error["message"], str):
        raise SchemaViolation(f"error code and message are strings: {error!r}")
    inner = error.get("innerError")
    if inner is not None and not isinstance(inner, dict):
        raise SchemaViolation(f"innerError is an object: {inner!r}")


def validate_answer(document: Any, entity_type: str = "graph.event") -> None:
    """A whole JSON answer: an error body, a collection page (``value`` + paging links; entries
    may be ``@removed`` stubs of delta) or one entity of ``entity_type``."""
    schema = load()
    if isinstance(document, dict) and "error" in document:
        validate_error(document)
        return
    if isinstance(document, dict) and set(document) == {"responses"}:
        # a JSON batch's answer: each response's body is an answer of its own
        for n, response in enumerate(document["responses"]):
            if set(response) - {"id", "status", "headers", "body"} or not isinstance(
                response.get("status"), int
            ):
                raise SchemaViolation(f"$.responses[{n}] is malformed: {sorted(response)}")
            if "body" in response:
                validate_answer(response["body"], entity_type)
        return
    if isinstance(document, dict) and "value" in document and isinstance(document["value"], list):
        extra = {k for k in document if not k.startswith("@")} - {"value"}
        if extra:
            raise SchemaViolation(f"a collection page has unknown members {sorted(extra)}")
        for n, entry in enumerate(document["value"]):
            if isinstance(entry, dict) and "@removed" in entry:
                removed = entry["@removed"]
                if set(entry) - {"@odata.type", "id", "@removed"} or not isinstance(
                    removed, dict
                ) or removed.get("reason") not in ("deleted", "changed"):  # fmt: skip
                    raise SchemaViolation(f"$.value[{n}]: a @removed entry is malformed: {entry}")
                schema.validate(entry["id"], "Edm.String", f"$.value[{n}].id")
                continue
            schema.validate(entry, entity_type, f"$.value[{n}]")
        return
    schema.validate(document, entity_type)
