"""The shared vocabulary: events, items and users, as typed records and as Arrow schemas.

The pydantic models describe one record (what the API and the tests speak); the Arrow schemas
describe the columnar tables the stores hold (what the pipelines speak). Both come from here so
that the offline and the online world agree on names and types.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field


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


class Event(BaseModel):
    """One interaction between a user and an item."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    item_id: str = Field(min_length=1)
    timestamp: datetime
    type: EventType = EventType.CLICK
    value: float | None = None  # dwell seconds, rating, ...
    position: int | None = Field(default=None, ge=0)  # 0-based slot in the feed
    surface: str | None = None  # where it was shown: "home", "explore", ...
    request_id: str | None = None  # the feed request that showed the item


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
