"""Rate-limit checks on Redis in one round trip: decide, charge and read back at once.

`limits` charges a limit with one Lua script and reads its window back with another
(GET and TTL for the fixed window), one limit at a time: the response headers cost a
round trip more, and every further limit of a route two or three more. The scripts
here do all of that in one EVALSHA per request: they decide every limit of the request, charge all
of them or none, and return each window as `limits`' own read scripts would. They
work on `limits`' keys and data (its resources/redis/lua_scripts: the same lists of
timestamps, counters and expiries, the same arithmetic), so a counter means the
same whichever of the two touched it last.

A Redis Cluster keeps each limit's keys in a slot of their own (the keys hold the
limit's count and period, and `limits` puts no hash tag across them), so there each
call covers one limit and the caller makes one call per limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import limits
import limits.storage
import redis.exceptions
from limits.util import WindowStats

# Shared by the three scripts below:
#   ARGV[1]      "1": charge the request if every limit has room; "0": only look.
#   ARGV[2]      now, in epoch seconds from the gateway's clock (limits stamps its
#                moving-window entries with the client's clock too).
#   ARGV[1 + 2i] and ARGV[2 + 2i]: limit i's count and period in seconds.
# Reply: {i of the first limit without room, 0 if none; then each limit's window}.

MOVING_WINDOW = """
-- KEYS[i]: limit i's list of request timestamps, newest first, at most `count`
-- long (acquire_moving_window.lua). Window reply: the oldest timestamp still in the
-- window and how many requests the window holds (moving_window.lua).
local charge = ARGV[1] == '1'
local timestamp = tonumber(ARGV[2])

local function oldest_entry(key, high, target)
    local low = 0
    local result = nil
    while low <= high do
        local mid = math.floor((low + high) / 2)
        local val = tonumber(redis.call('lindex', key, mid))
        if val and val >= target then
            result = mid
            low = mid + 1
        else
            high = mid - 1
        end
    end
    return result
end

local refused = 0
if charge then
    for i = 1, #KEYS do
        local limit = tonumber(ARGV[1 + 2 * i])
        local expiry = tonumber(ARGV[2 + 2 * i])
        local entry = redis.call('lindex', KEYS[i], limit - 1)
        if entry and tonumber(entry) >= timestamp - expiry then
            refused = i
            break
        end
    end
    if refused == 0 then
        for i = 1, #KEYS do
            local limit = tonumber(ARGV[1 + 2 * i])
            local expiry = tonumber(ARGV[2 + 2 * i])
            redis.call('lpush', KEYS[i], timestamp)
            redis.call('ltrim', KEYS[i], 0, limit - 1)
            redis.call('expire', KEYS[i], expiry)
        end
    end
end

local reply = {0}
for i = 1, #KEYS do
    local limit = tonumber(ARGV[1 + 2 * i])
    local expiry = tonumber(ARGV[2 + 2 * i])
    local index = oldest_entry(KEYS[i], limit - 1, timestamp - expiry)
    local oldest, count = '', 0
    if index then
        oldest = tostring(tonumber(redis.call('lindex', KEYS[i], index)))
        count = index + 1
    end
    -- Only looking, limits' test counts the window rather than reading one entry.
    if not charge and refused == 0 and count >= limit then
        refused = i
    end
    reply[2 * i] = oldest
    reply[2 * i + 1] = count
end
reply[1] = refused
return reply
"""

FIXED_WINDOW = """
-- KEYS[i]: limit i's counter, which expires a period after its first request
-- (incr_expire.lua). Window reply: the count and its TTL in seconds. A refused
-- request is not counted, so that a route's other limits are not charged either;
-- limits' own hit counts it past the limit, which changes nothing a client is told
-- (the remaining stays 0, the expiry is the first request's).
local charge = ARGV[1] == '1'

local refused = 0
local counts = {}
for i = 1, #KEYS do
    local count = tonumber(redis.call('get', KEYS[i])) or 0
    counts[i] = count
    if refused == 0 and count >= tonumber(ARGV[1 + 2 * i]) then
        refused = i
    end
end
if charge and refused == 0 then
    for i = 1, #KEYS do
        local current = redis.call('incrby', KEYS[i], 1)
        if tonumber(current) == 1 then
            redis.call('expire', KEYS[i], ARGV[2 + 2 * i])
        end
        counts[i] = current
    end
end

local reply = {refused}
for i = 1, #KEYS do
    reply[2 * i] = counts[i]
    reply[2 * i + 1] = redis.call('ttl', KEYS[i])
end
return reply
"""

SLIDING_WINDOW_COUNTER = """
-- KEYS[2i - 1], KEYS[2i]: limit i's previous and current window counters, whose TTLs
-- (in milliseconds) place them in time (acquire_sliding_window.lua). Window reply:
-- both counts and both TTLs, as sliding_window.lua returns them.
local charge = ARGV[1] == '1'
local limits_count = #KEYS / 2

local refused = 0
for i = 1, limits_count do
    local previous_key, current_key = KEYS[2 * i - 1], KEYS[2 * i]
    local limit = tonumber(ARGV[1 + 2 * i])
    local expiry = tonumber(ARGV[2 + 2 * i]) * 1000

    local current_ttl = tonumber(redis.call('pttl', current_key))
    if current_ttl > 0 and current_ttl < expiry then
        -- Current window expired, shift it to the previous window
        redis.call('rename', current_key, previous_key)
        redis.call('set', current_key, 0, 'PX', current_ttl + expiry)
    end

    local previous_count = tonumber(redis.call('get', previous_key)) or 0
    local previous_ttl = tonumber(redis.call('pttl', previous_key)) or 0
    local current_count = tonumber(redis.call('get', current_key)) or 0
    if previous_ttl <= 0 then
        previous_ttl = 0
    end
    local weighted_count = math.floor(previous_count * previous_ttl / expiry) + current_count
    if refused == 0 and weighted_count + 1 > limit then
        refused = i
    end
end
if charge and refused == 0 then
    for i = 1, limits_count do
        local current_key = KEYS[2 * i]
        if redis.call('exists', current_key) == 1 then
            redis.call('incrby', current_key, 1)
        else
            redis.call('set', current_key, 1, 'PX', tonumber(ARGV[2 + 2 * i]) * 1000 * 2)
        end
    end
end

local reply = {refused}
for i = 1, limits_count do
    local previous_key, current_key = KEYS[2 * i - 1], KEYS[2 * i]
    reply[4 * i - 2] = tonumber(redis.call('get', previous_key)) or 0
    reply[4 * i - 1] = redis.call('pttl', previous_key)
    reply[4 * i] = tonumber(redis.call('get', current_key)) or 0
    reply[4 * i + 1] = redis.call('pttl', current_key)
end
return reply
"""

_SOURCES = {
    "moving-window": MOVING_WINDOW,
    "fixed-window": FIXED_WINDOW,
    "sliding-window-counter": SLIDING_WINDOW_COUNTER,
}


@dataclass(frozen=True, slots=True)
class Windows:
    """One script call's answer: which limit had no room, and every limit's window."""

    refused: int | None  # index into the limits asked about; None: all had room
    stats: tuple[WindowStats, ...]  # as limits' get_window_stats, after any charge


class RedisWindows:
    """Runs the strategy's script on the storage `limits` was given (the same client,
    pool, timeouts and keys); every Redis error is left to the caller."""

    def __init__(self, storage: limits.storage.RedisStorage, strategy: str) -> None:
        self.storage = storage
        self.strategy = strategy
        self.sliding = strategy == "sliding-window-counter"
        # limits' typing knows its clients by a protocol that omits register_script.
        client = cast(Any, storage.get_connection())
        self._script = client.register_script(_SOURCES[strategy])
        # Only a cluster spreads the keys of one request over several slots.
        self.one_call_for_all = not isinstance(storage, limits.storage.RedisClusterStorage)
        self.errors: tuple[type[Exception], ...] = _as_tuple(storage.base_exceptions)
        if not self.one_call_for_all:
            # The cluster client's own errors (no node reachable, no node for a slot)
            # are not RedisErrors.
            self.errors += (redis.exceptions.RedisClusterException,)

    def run(
        self, items: Sequence[limits.RateLimitItem], bucket: str, key: str, *, charge: bool
    ) -> Windows:
        """Decide (and with `charge`, count) the request against every item at once."""
        now = time.time()
        keys: list[str] = []
        args: list[float | int] = [1 if charge else 0, now]
        for item in items:
            # limits' own key names, so that both read and count the same counters
            counter = item.key_for(bucket, key)
            if self.sliding:
                keys.append(self.storage.prefixed_key(self.storage._previous_window_key(counter)))
                keys.append(self.storage.prefixed_key(self.storage._current_window_key(counter)))
            else:
                keys.append(self.storage.prefixed_key(counter))
            args.extend((item.amount, item.get_expiry()))
        reply = self._script(keys=keys, args=args)
        refused = int(reply[0])
        return Windows(
            refused - 1 if refused else None,
            tuple(self._stats(item, reply, index, now) for index, item in enumerate(items)),
        )

    def _stats(
        self, item: limits.RateLimitItem, reply: list[Any], index: int, now: float
    ) -> WindowStats:
        """limits' get_window_stats (strategies.py) from the window the script read."""
        expiry = item.get_expiry()
        if self.strategy == "moving-window":
            oldest, count = reply[1 + 2 * index], int(reply[2 + 2 * index])
            start = float(oldest) if count else now
            return WindowStats(start + expiry, item.amount - count)
        if self.strategy == "fixed-window":
            count, ttl = int(reply[1 + 2 * index]), int(reply[2 + 2 * index])
            return WindowStats(max(ttl, 0) + time.time(), max(0, item.amount - count))
        base = 1 + 4 * index
        previous_count = int(reply[base])
        previous_expires_in = max(0, int(reply[base + 1])) / 1000
        current_count = int(reply[base + 2])
        current_expires_in = max(0, int(reply[base + 3])) / 1000
        weighted = previous_count * previous_expires_in / expiry + current_count
        remaining = max(0, item.amount - math.floor(weighted))
        read_at = time.time()
        if not (previous_count or current_count):
            return WindowStats(read_at, remaining)
        previous_reset_in, current_reset_in = math.inf, math.inf
        if previous_count:
            previous_reset_in = previous_expires_in % (expiry / previous_count)
        if current_count:
            current_reset_in = current_expires_in % expiry
        return WindowStats(read_at + min(previous_reset_in, current_reset_in), remaining)


def _as_tuple(
    exceptions: type[Exception] | tuple[type[Exception], ...],
) -> tuple[type[Exception], ...]:
    return exceptions if isinstance(exceptions, tuple) else (exceptions,)
