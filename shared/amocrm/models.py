"""Typed views of the amoCRM v4 payloads amosync reads."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

EMAIL_CODE = "EMAIL"
PHONE_CODE = "PHONE"


class _Model(BaseModel):
    # amoCRM adds fields over time; unknown ones must not break parsing.
    model_config = ConfigDict(extra="ignore")


class TokenPair(_Model):
    """An OAuth access/refresh pair; store both at once, amoCRM rotates the refresh token."""

    access_token: SecretStr
    refresh_token: SecretStr
    expires_at: datetime
    api_domain: str | None = None

    @classmethod
    def from_token_response(cls, body: dict[str, Any], *, now: datetime) -> TokenPair:
        """Build from the token endpoint's 200 body (`expires_in` counted from `now`)."""
        access = str(body["access_token"])
        expires_in = int(body.get("expires_in") or 0)
        return cls(
            access_token=SecretStr(access),
            refresh_token=SecretStr(str(body["refresh_token"])),
            expires_at=datetime.fromtimestamp(now.timestamp() + expires_in, tz=UTC),
            api_domain=_jwt_claim(access, "api_domain"),
        )


def _jwt_claim(token: str, claim: str) -> str | None:
    # Tokens issued since 2024-08 are JWTs carrying `api_domain`; older ones are opaque. We only
    # read the claim (no verification): it is a routing hint, never an authorization decision.
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, TypeError):
        return None
    value = payload.get(claim) if isinstance(payload, dict) else None
    return str(value) if value is not None else None


class Account(_Model):
    """`GET /api/v4/account`."""

    id: int
    name: str = ""
    subdomain: str
    current_user_id: int | None = None
    country: str | None = None
    currency: str | None = None
    created_at: int | None = None
    updated_at: int | None = None
    is_api_filter_enabled: bool | None = None


class FieldValue(_Model):
    """One value of a custom field; `enum_code` falls back to the pre-2020 `enum` key."""

    value: str | None = None
    enum_id: int | None = None
    enum_code: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_enum(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("enum_code") is None and "enum" in data:
            # Old payloads carry the code as "enum": "WORK"; webhooks use "enum" for the *id*,
            # but those never reach this model (they are parsed by shared.amocrm.webhooks).
            data = {**data, "enum_code": data["enum"]}
        return data

    @field_validator("value", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        # Non-text fields (dates, checkboxes, legal entities) carry numbers, bools or objects;
        # amosync only reads EMAIL/PHONE text, so anything else is kept as a readable string.
        if v is None or isinstance(v, str):
            return v
        if isinstance(v, dict | list):
            return json.dumps(v, ensure_ascii=False)
        return str(v)


class CustomFieldValue(_Model):
    """One element of a contact's `custom_fields_values`."""

    field_id: int
    field_name: str | None = None
    field_code: str | None = None
    field_type: str | None = None
    values: list[FieldValue] = Field(default_factory=list)

    @field_validator("values", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v


class Contact(_Model):
    """A contact from `/api/v4/contacts`; `custom_fields_values` may be null in the API."""

    id: int
    name: str = ""
    first_name: str = ""
    last_name: str = ""
    responsible_user_id: int | None = None
    created_at: int | None = None
    updated_at: int = 0
    account_id: int | None = None
    is_deleted: bool = False
    custom_fields_values: list[CustomFieldValue] = Field(default_factory=list)

    @field_validator("name", "first_name", "last_name", mode="before")
    @classmethod
    def _null_name(cls, v: Any) -> Any:
        return "" if v is None else v

    @field_validator("custom_fields_values", mode="before")
    @classmethod
    def _null_fields(cls, v: Any) -> Any:
        return [] if v is None else v

    @field_validator("is_deleted", mode="before")
    @classmethod
    def _null_deleted(cls, v: Any) -> Any:
        return False if v is None else v

    @field_validator("updated_at", mode="before")
    @classmethod
    def _null_updated(cls, v: Any) -> Any:
        return 0 if v is None else v

    def values_by_code(self, field_code: str) -> list[FieldValue]:
        """Values of every field with this `field_code` (never matched by the localized name)."""
        return [
            value
            for field in self.custom_fields_values
            if field.field_code == field_code
            for value in field.values
        ]

    def email_values(self) -> list[FieldValue]:
        """Values of the EMAIL multitext field."""
        return self.values_by_code(EMAIL_CODE)

    def phone_values(self) -> list[FieldValue]:
        """Values of the PHONE multitext field."""
        return self.values_by_code(PHONE_CODE)


class ContactPage(_Model):
    """One page of `/api/v4/contacts`."""

    page: int
    contacts: list[Contact]


class FieldEnum(_Model):
    """An enum option of a custom field; ids differ per account."""

    id: int
    value: str
    sort: int | None = None


Enum = FieldEnum  # the name CONTRACTS.md uses


class CustomField(_Model):
    """`/api/v4/contacts/custom_fields` element."""

    id: int
    code: str | None = None
    name: str = ""
    type: str = ""
    sort: int | None = None
    enums: list[FieldEnum] = Field(default_factory=list)

    @field_validator("enums", mode="before")
    @classmethod
    def _null_enums(cls, v: Any) -> Any:
        return [] if v is None else v


def enum_codes_by_id(fields: list[CustomField], field_code: str) -> dict[int, str]:
    """Map enum id → code (e.g. 521317 → "WORK") for the field with `field_code`."""
    return {
        enum.id: enum.value for field in fields if field.code == field_code for enum in field.enums
    }


class Webhook(_Model):
    """A webhook subscription from `/api/v4/webhooks`."""

    id: int | None = None
    destination: str
    settings: list[str] = Field(default_factory=list)
    sort: int | None = None
    disabled: bool = False
    account_id: int | None = None
    created_at: int | None = None
    updated_at: int | None = None
    created_by: int | None = None
