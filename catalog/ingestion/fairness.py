"""Fair ingestion between providers: a per-provider cap on busy ingest worker processes.

A provider's batch is queued as many chunk tasks at once (ingestion.upload_batch_ingest),
so without a cap one large upload fills every ingest process until it is done. Each chunk
task takes a slot of its provider first (a Redis sorted set per provider, member = a token,
score = when the slot lapses); with INGEST_PROVIDER_SLOTS busy it is re-queued behind the
other providers' chunks instead of waiting in a process. A slot that a killed worker never
released lapses after INGEST_PROVIDER_SLOT_SECONDS.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import redis
from django.conf import settings

# Drop lapsed slots, then take one if fewer than the cap are held; atomic in Redis.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""


@lru_cache(maxsize=1)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def _key(provider_id: int) -> str:
    return f"ingest:provider-slots:{provider_id}"


@contextmanager
def provider_slot(provider_id: int) -> Iterator[bool]:
    """Yields True while holding one of the provider's ingest slots, False when all are busy."""
    client, key, token = _client(settings.REDIS_URL), _key(provider_id), uuid.uuid4().hex
    now, ttl = time.time(), settings.INGEST_PROVIDER_SLOT_SECONDS
    held = bool(client.eval(_ACQUIRE, 1, key, now, settings.INGEST_PROVIDER_SLOTS, now + ttl, token, ttl + 60))
    try:
        yield held
    finally:
        if held:
            client.zrem(key, token)
