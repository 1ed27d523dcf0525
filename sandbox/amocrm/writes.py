"""Contact writes through the API (`POST`/`PATCH /api/v4/contacts`): v4 JSON → a World spec.

amosync itself only reads contacts today, but independent clients (the contract tests) and the
two-way work write them, so the emulator accepts the documented v4 shape: `name`, `first_name`,
`last_name`, `responsible_user_id` and `custom_fields_values` with `field_id` or `field_code` and
values carrying `enum_id` or `enum_code`.
"""

from __future__ import annotations

from typing import Any

from sandbox.amocrm.state import AccountRec, FieldDef

MAX_WRITE = 250  # reference §3.1: writes take at most 250 entities (422 beyond)


class WriteRefused(Exception):
    """One invalid item of a write, rendered as amoCRM's validation-errors entry."""

    def __init__(self, index: int, code: str, path: str, detail: str) -> None:
        super().__init__(detail)
        self.index, self.code, self.path, self.detail = index, code, path, detail


def contact_spec(account: AccountRec, item: Any, index: int) -> dict[str, Any]:
    """The World spec for one v4 contact object (raises WriteRefused on what amoCRM refuses)."""
    if not isinstance(item, dict):
        raise WriteRefused(index, "InvalidType", "", "an object expected")
    spec: dict[str, Any] = {}
    for key in ("name", "first_name", "last_name"):
        if key in item:
            if item[key] is not None and not isinstance(item[key], str):
                raise WriteRefused(index, "InvalidType", key, "a string expected")
            spec[key] = item[key] or ""
    if "responsible_user_id" in item:
        if not isinstance(item["responsible_user_id"], int):
            raise WriteRefused(index, "InvalidType", "responsible_user_id", "an integer expected")
        spec["responsible_user_id"] = item["responsible_user_id"]
    values = item.get("custom_fields_values")
    if values is not None:
        if not isinstance(values, list):
            raise WriteRefused(index, "InvalidType", "custom_fields_values", "an array expected")
        spec["fields"] = dict(_field_value(account, cf, index, n) for n, cf in enumerate(values))
    return spec


def _field_value(account: AccountRec, cf: Any, index: int, n: int) -> tuple[str, Any]:
    path = f"custom_fields_values.{n}"
    if not isinstance(cf, dict):
        raise WriteRefused(index, "InvalidType", path, "an object expected")
    fdef = _field(account, cf)
    if fdef is None:
        raise WriteRefused(index, "NotSupportedChoice", f"{path}.field_id", "unknown field")
    items = cf.get("values")
    if items is None or items == []:
        return str(fdef.id), None  # clears the field
    if not isinstance(items, list) or not all(isinstance(v, dict) for v in items):
        raise WriteRefused(index, "InvalidType", f"{path}.values", "an array of objects expected")
    if fdef.type != "multitext":
        return str(fdef.id), str(items[0].get("value", ""))
    out = []
    for j, value in enumerate(items):
        code = value.get("enum_code") or value.get("enum") or "WORK"
        if "enum_id" in value:
            code = fdef.enum_code(value["enum_id"])
        if code is None or fdef.enum_id(str(code)) is None:
            raise WriteRefused(
                index, "NotSupportedChoice", f"{path}.values.{j}.enum_id", "unknown enum"
            )
        out.append({"value": str(value.get("value", "")), "enum": str(code)})
    return str(fdef.id), out


def _field(account: AccountRec, cf: dict[str, Any]) -> FieldDef | None:
    if "field_id" in cf:
        return next((f for f in account.fields if f.id == cf["field_id"]), None)
    if "field_code" in cf:
        return account.field_by_code(str(cf["field_code"]))
    return None
