"""Per-test Redis/Valkey isolation: a leased *logical database* per test.

Why logical databases rather than key prefixes: tests (and the code under test) use plain clients
and any key names; nothing has to be rewritten, ``KEYS *`` and ``SCAN`` see only the test's keys,
and cleaning up is one ``FLUSHDB`` of the test's own database — never a ``FLUSHALL`` that would wipe
another worker's or another run's data. testlane's own Valkey servers start with
``valkey.databases`` (1024) logical databases, enough for any number of xdist workers.

The same code leases databases on an existing server (the ``url`` backend), which may hold someone's
data, so a lease never takes, and nothing ever flushes, a database testlane cannot prove is its own:

* Database 0 coordinates (it is never handed out). The lease of database ``n`` is the key
  ``testlane:lease:<n>`` there, whose value is ``testlane:v1 <expires, Unix ms> <token> <owner>`` (no
  Redis TTL: once expired, the record still says that the database's contents are a dead holder's).
* Claiming is one Lua script (``EVALSHA``, atomic on the server, one round trip): for each candidate,
  starting at a random one, a database is taken when it has no lease record and is empty
  (``DBSIZE`` 0), or when its lease record has expired (the dead holder's leftovers are flushed).
  A database holding anything else is skipped and counted; a live lease is skipped.
* Giving back is another script: flush the database and delete the record only while the record
  still carries this lease's token.

The marker lives in database 0, not in the leased database, so a test sees an empty database
(``DBSIZE`` 0). The last logical database is never leased: it is the one an application's mapped
``REDIS_URL`` uses (see :mod:`testlane.services.env_mapping`). When no database is free the lease
fails with one message naming the server and what occupies its databases.

What a logical database does not isolate: pub/sub. Channels are server-wide (a ``PUBLISH`` on database
5 reaches a subscriber on database 9), so two tests that use the same channel name hear each other.
Each lease therefore carries a *channel prefix* (:attr:`RedisLease.channel_prefix`,
``tl:<db>:<8 hex>:``): unique among live leases (the database number) and among successive leases of
one database (the token), so a subscriber a previous test left open hears nothing of the next. It is a
convention the test and the code under test follow, not enforced: an ACL user per lease (``&<prefix>*``)
costs little (0.2-0.3 ms to create and delete) but Redis 7 and Valkey 8 match a ``PSUBSCRIBE`` pattern
literally against the allowed ones (``PSUBSCRIBE tl:5:ab12cd34:events.*`` is refused), clients would
have to log in as that user (the URL changes, the application's too), and an existing server's
administrator may not allow ``ACL SETUSER`` at all. See docs/isolation.md.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from testlane.core.errors import ServiceError

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["RedisLease", "lease_database"]

LEASE_TTL = 3600  # seconds: a holder that dies leaves its database to be reclaimed after this
LEASE_KEY = "testlane:lease:"

# ARGV: ttl ms, token, owner, first candidate, number of candidates, start offset.
# Returns {db or -1, databases leased by live testlane leases, databases holding other data}.
_CLAIM = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local first, count, start = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local leased, foreign = 0, 0
for i = 0, count - 1 do
    local db = first + (start + i) % count
    local key = 'testlane:lease:' .. db
    redis.call('SELECT', 0)
    local ok, held = pcall(redis.call, 'GET', key)
    if not ok then
        foreign = foreign + 1
    else
        local expired = false
        if held then
            local expires = tonumber(string.match(held, '^testlane:v1 (%d+) %x+ '))
            expired = expires ~= nil and expires <= now
        end
        if held and not expired then
            leased = leased + 1
        else
            redis.call('SELECT', db)
            local size = redis.call('DBSIZE')
            if size == 0 or expired then
                if size > 0 then redis.call('FLUSHDB') end
                redis.call('SELECT', 0)
                redis.call('SET', key, 'testlane:v1 ' .. (now + tonumber(ARGV[1])) .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
                return {db, leased, foreign}
            end
            foreign = foreign + 1
        end
    end
end
redis.call('SELECT', 0)
return {-1, leased, foreign}
"""

# ARGV: db, token. Flushes the database only while its lease record still carries the token.
_RELEASE = """
local key = 'testlane:lease:' .. ARGV[1]
redis.call('SELECT', 0)
local held = redis.call('GET', key)
if not held or string.match(held, '^testlane:v1 %d+ (%x+) ') ~= ARGV[2] then return 0 end
redis.call('SELECT', tonumber(ARGV[1]))
redis.call('FLUSHDB')
redis.call('SELECT', 0)
redis.call('DEL', key)
return 1
"""


@dataclass
class RedisLease:
    """Logical database ``db`` on a server, leased to one test."""

    host: str
    port: int
    db: int
    password: str | None = field(repr=False)
    _coordinator: Any = field(repr=False)
    token: str = field(default="", repr=False)

    @property
    def channel_prefix(self) -> str:
        """The test's own pub/sub namespace: put it in front of every channel name (see module docstring)."""
        return f"tl:{self.db}:{self.token[:8]}:"

    def channel(self, name: str) -> str:
        """``name`` in the test's namespace: ``lease.channel("events")`` is ``tl:<db>:<8 hex>:events``."""
        return self.channel_prefix + name

    @property
    def url(self) -> str:
        from testlane.core.urls import ServiceUrl

        url = ServiceUrl("redis", password=self.password or None, host=self.host, port=self.port, database=str(self.db))
        return str(url)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client on the leased database (``kwargs`` go to ``redis.Redis``)."""
        import redis

        return redis.Redis(host=self.host, port=self.port, db=self.db, password=self.password, **kwargs)

    def async_client(self, **kwargs: Any) -> redis.asyncio.Redis:
        """An async redis-py client on the leased database (``kwargs`` go to ``redis.asyncio.Redis``)."""
        import redis.asyncio

        return redis.asyncio.Redis(host=self.host, port=self.port, db=self.db, password=self.password, **kwargs)

    def release(self) -> bool:
        """Flush the database and give it back; False (nothing flushed) when the lease was no longer
        ours (it expired and another holder took the database)."""
        return bool(_run(self._coordinator, _RELEASE, self.db, self.token))


def lease_database(
    coordinator: Any, host: str, port: int, *, password: str | None = None, owner: str | None = None
) -> RedisLease:
    """Lease a free logical database (1..N-2) using ``coordinator`` (a client on database 0).

    Raises :class:`ServiceError` when the server has too few databases or none is free (empty, or
    an expired testlane lease).
    """
    databases = _database_count(coordinator)
    if databases < 2:
        raise ServiceError(
            f"the Redis server at {host}:{port} has only {databases} logical database; per-test isolation "
            "needs several.",
            hint="start it with more (`--databases 1024`; testlane's own Valkey does this).",
        )
    # Database 0 coordinates the leases; the last one is the application's (mapped REDIS_URL).
    last = databases - 2 if databases > 2 else databases - 1
    count = last  # candidates 1..last
    token = secrets.token_hex(8)
    tag = "".join(ch if ch.isprintable() else "?" for ch in (owner or ""))[:200]
    from redis.exceptions import ResponseError

    try:
        reply = _run(coordinator, _CLAIM, LEASE_TTL * 1000, token, tag, 1, count, random.randrange(count))
    except ResponseError as exc:  # scripting or SELECT refused (ACLs, a proxy, fewer databases than thought)
        raise ServiceError(
            f"could not lease a logical database on the Redis server at {host}:{port}: {str(exc).strip()}",
            hint="testlane's leases need EVAL/EVALSHA, SELECT, DBSIZE, FLUSHDB, GET, SET and DEL on that server "
            "(ACLs, a proxy or a managed service may refuse them); or let testlane start its own Valkey "
            '(remove valkey.url, or set valkey.backend = "embedded").',
        ) from None
    db, leased, foreign = (int(x) for x in reply)
    if db >= 1:
        return RedisLease(host, port, db, password, coordinator, token)
    raise ServiceError(
        f"no free logical database on the Redis server at {host}:{port}: of the {count} it may lease "
        f"(1..{last}), {foreign} contain data that is not testlane's and {leased} are leased by running tests. "
        "testlane only takes empty databases (or its own expired leases) and never flushes anything else.",
        hint="empty the databases you do not need on that server, point valkey.url at a server kept for tests, "
        'or let testlane start its own Valkey (remove valkey.url, or set valkey.backend = "embedded").'
        if foreign
        else "raise the server's `databases` setting, or run fewer tests at once.",
    )


_counts: dict[int, int] = {}
_SHAS = {script: hashlib.sha1(script.encode()).hexdigest() for script in (_CLAIM, _RELEASE)}


def _run(client: Any, script: str, *args: Any) -> Any:
    """``EVALSHA`` (one round trip), ``EVAL`` the first time a server has not cached the script.

    Not redis-py's ``register_script``: its Script objects keep a reference to their client."""
    from redis.exceptions import NoScriptError

    try:
        return client.evalsha(_SHAS[script], 0, *args)
    except NoScriptError:
        return client.eval(script, 0, *args)


def _database_count(client: Any) -> int:
    key = id(client)
    if key not in _counts:
        try:
            _counts[key] = int(client.config_get("databases")["databases"])
        except Exception:
            _counts[key] = 16  # CONFIG may be disabled on managed servers; 16 is Redis' default
    return _counts[key]
