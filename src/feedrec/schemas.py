"""The shared vocabulary: events, items and users, as typed records and as Arrow schemas.

The pydantic models describe one record (what the API and the tests speak); the Arrow schemas
describe the columnar tables the stores hold (what the pipelines speak). Both come from here so
that the offline and the online world agree on names and types.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import pyarrow as pa
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt


class EventType(StrEnum):
    """What a user did with an item."""

    IMPRESSION = "impression"  # the item was shown
    CLICK = "click"  # opened; also the type of a bare (user, item, time) interaction
    LIKE = "like"
    SHARE = "share"
    HIDE = "hide"  # explicit negative feedback
    DWELL = "dwell"  # value = seconds spent
    RATING = "rating"  # value = the rating


#: Event types that say the user wanted the item; retrieval models learn from these.
POSITIVE_EVENT_TYPES: tuple[EventType, ...] = (
    EventType.CLICK,
    EventType.LIKE,
    EventType.SHARE,
    EventType.DWELL,
    EventType.RATING,
)


#: The largest value a stored ``position`` (int32) can hold.
MAX_POSITION = 2**31 - 1
#: Ids, surfaces and request ids are short texts; longer ones are refused rather than stored.
MAX_ID_LENGTH = 256


def _iso_text(value: Any) -> Any:
    """An event's time is ISO-8601 text (or a datetime, from Python): a bare number is ambiguous
    (seconds? milliseconds?) and is refused rather than guessed."""
    if isinstance(value, bool | int | float):
        raise ValueError("give the timestamp as ISO-8601 text, such as 2024-01-05T12:00:00Z")
    return value


def iso_time_text(value: Any) -> Any:
    """A time given as text (a query parameter): ISO-8601 only; "0.0" or "1700000000" (which
    pydantic would read as epoch seconds) is refused like a bare number."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return _iso_text(value)
        raise ValueError("give the time as ISO-8601 text, such as 2024-01-05T12:00:00Z, not a number")
    return _iso_text(value)


#: A time that must be ISO-8601 text (UTC when no zone is given).
IsoTime = Annotated[datetime, BeforeValidator(iso_time_text)]


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a number, not true or false")
    return value


#: The rules between fields, as JSON Schema, so that the API's spec states them too (the same rules
#: are enforced by ``feedrec.data.validation``; the timestamp's range depends on the clock, which a
#: schema cannot say).
_EVENT_RULES: dict[str, Any] = {
    "allOf": [
        {
            "if": {"properties": {"type": {"const": "rating"}}, "required": ["type"]},
            "then": {"properties": {"value": {"type": "number"}}, "required": ["value"]},
        },
        {
            "if": {"properties": {"type": {"const": "dwell"}}, "required": ["type"]},
            "then": {"properties": {"value": {"type": "number", "minimum": 0}}, "required": ["value"]},
        },
    ]
}


class Event(BaseModel):
    """One interaction between a user and an item (what ``POST /v1/events`` takes). Types are
    strict (``"position": false`` or ``"3"`` is refused) and numbers bounded to what the store holds;
    the rules beyond types (timestamp range, a dwell needs its seconds, ...) are
    ``feedrec.data.validation``'s, shared with file ingestion."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_EVENT_RULES)

    event_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    user_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    item_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    timestamp: Annotated[datetime, BeforeValidator(_iso_text)] = Field(
        description="ISO-8601; UTC when no zone is given"
    )
    type: EventType = EventType.CLICK
    value: Annotated[float, BeforeValidator(_not_bool)] | None = Field(
        None, allow_inf_nan=False, description="dwell seconds (>= 0), the rating, ...; a dwell or rating needs one"
    )
    position: StrictInt | None = Field(None, ge=0, le=MAX_POSITION, description="0-based slot in the feed")
    surface: str | None = Field(None, max_length=64, description='where it was shown: "home", "explore", ...')
    request_id: str | None = Field(None, max_length=MAX_ID_LENGTH, description="the feed request that showed the item")


class Item(BaseModel):
    """A piece of content that can appear in a feed."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1)
    created_at: datetime | None = None
    topics: list[str] = Field(default_factory=list)
    creator_id: str | None = None
    text: str | None = None


class User(BaseModel):
    """Someone who reads a feed."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1)
    created_at: datetime | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


TIMESTAMP = pa.timestamp("us", tz="UTC")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("value", pa.float64()),
        pa.field("position", pa.int32()),
        pa.field("surface", pa.string()),
        pa.field("request_id", pa.string()),
    ]
)

ITEM_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("created_at", TIMESTAMP),
        pa.field("topics", pa.list_(pa.string())),
        pa.field("creator_id", pa.string()),
        pa.field("text", pa.string()),
    ]
)

USER_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("created_at", TIMESTAMP),
        # Attributes as a JSON object: users of different sources carry different attributes.
        pa.field("attributes", pa.string()),
    ]
)

EVENT_FIELDS: tuple[str, ...] = tuple(EVENT_SCHEMA.names)
REQUIRED_EVENT_FIELDS: tuple[str, ...] = ("user_id", "item_id", "timestamp")
