"""Unisender email-marketing API: client, models and error tree."""

from shared.unisender.client import UnisenderClient, encode_form, join_ids
from shared.unisender.errors import (
    AccessDenied,
    InvalidApiKey,
    InvalidArgument,
    IpRateLimited,
    KeyRateLimited,
    NotEnoughMoney,
    NotFound,
    RateLimited,
    RetryLater,
    Transient,
    UnisenderError,
    UnknownMethod,
)
from shared.unisender.models import (
    ContactField,
    ContactList,
    ImportResult,
    ImportRow,
    MailingList,
    RowError,
    UnisenderContact,
)

__all__ = [
    "AccessDenied",
    "ContactField",
    "ContactList",
    "ImportResult",
    "ImportRow",
    "InvalidApiKey",
    "InvalidArgument",
    "IpRateLimited",
    "KeyRateLimited",
    "MailingList",
    "NotEnoughMoney",
    "NotFound",
    "RateLimited",
    "RetryLater",
    "RowError",
    "Transient",
    "UnisenderClient",
    "UnisenderContact",
    "UnisenderError",
    "UnknownMethod",
    "encode_form",
    "join_ids",
]
