"""amoCRM (Kommo) API client, OAuth and models."""

from shared.amocrm.client import AmoCrmClient, StaticTokenProvider, TokenProvider
from shared.amocrm.errors import (
    AmoCrmError,
    BadRequest,
    Blocked,
    NotFound,
    OAuthRejected,
    OAuthTransient,
    PaymentRequired,
    RateLimited,
    Transient,
    Unauthorized,
)
from shared.amocrm.models import (
    Account,
    Contact,
    ContactPage,
    CustomField,
    FieldEnum,
    FieldValue,
    TokenPair,
    Webhook,
)
from shared.amocrm.oauth import AmoCrmOAuth

__all__ = [
    "Account",
    "AmoCrmClient",
    "AmoCrmError",
    "AmoCrmOAuth",
    "BadRequest",
    "Blocked",
    "Contact",
    "ContactPage",
    "CustomField",
    "FieldEnum",
    "FieldValue",
    "NotFound",
    "OAuthRejected",
    "OAuthTransient",
    "PaymentRequired",
    "RateLimited",
    "StaticTokenProvider",
    "TokenPair",
    "TokenProvider",
    "Transient",
    "Unauthorized",
    "Webhook",
]
