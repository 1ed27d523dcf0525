"""Typed queue jobs: each model names its tube; the body on Beanstalk is the model's JSON."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class Job(BaseModel):
    """Base of every job; carries the request id of the HTTP call that caused it."""

    model_config = ConfigDict(extra="forbid")

    tube: ClassVar[str]
    request_id: str | None = None


class RefreshTokenJob(Job):
    """Refresh one account's OAuth token pair (at most one in flight per account)."""

    tube: ClassVar[str] = "token-refresh"
    account_id: int = Field(gt=0)
    reason: str = "expiring"


class EmailValue(BaseModel):
    """One value of a contact's EMAIL field; webhooks give `enum_id`, the API `enum_code`."""

    model_config = ConfigDict(extra="forbid")

    value: str = Field(max_length=1000)
    enum_id: int | None = None
    enum_code: str | None = Field(default=None, max_length=32)


class ContactEvent(BaseModel):
    """One contact change from a webhook POST."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["add", "update", "delete", "restore"]
    contact_id: int = Field(gt=0)
    name: str = Field(default="", max_length=1000)
    updated_at: int = Field(default=0, ge=0)
    # None means the payload carried no custom fields at all (deletes); [] means "no email now".
    emails: list[EmailValue] | None = None


class ContactEventsJob(Job):
    """Every contact event of one webhook POST for one account."""

    tube: ClassVar[str] = "contact-events"
    account_id: int = Field(gt=0)
    events: list[ContactEvent] = Field(min_length=1)
    received_at: float = 0.0


class FullSyncJob(Job):
    """A full (or incremental reconcile) sync run of one account, resumable from its checkpoint."""

    tube: ClassVar[str] = "full-sync"
    account_id: int = Field(gt=0)
    run_id: int = Field(gt=0)
    mode: Literal["full", "incremental"] = "full"


JOB_TYPES: dict[str, type[Job]] = {
    RefreshTokenJob.tube: RefreshTokenJob,
    ContactEventsJob.tube: ContactEventsJob,
    FullSyncJob.tube: FullSyncJob,
}
