"""Redis for the online world: the online feature store, precomputed feeds, and the state every
server process shares, behind the interfaces the embedded defaults implement.

Chosen by one setting, ``FEEDREC_REDIS_URL`` (or ``backends.redis_url`` in the config file); the
embedded stores stay the default. The event store stays the durable truth: Redis holds what is
derived from it (counters, recent actions, precomputed feeds), so losing Redis loses no event.
"""

from feedrec.redis.client import connect, namespace_for

__all__ = ["connect", "namespace_for"]
