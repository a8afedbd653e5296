"""Service URLs: the one type testlane parses, builds and rewrites database and Redis URLs with.

``postgresql://user:pass@host:5432/db?options=...``, ``mysql+pymysql://root:pass@host:3306/db``,
``redis://:pass@host:6379/0``: a scheme (with an optional ``+driver``), a user name and a password
(percent-encoded, so ``@ / : %`` in a password survive), a host (an IPv6 literal in brackets; a Unix
socket directory percent-encoded, ``%2Ftmp%2Fsock``), a port, a database (the path without its ``/``)
and query parameters. Every URL testlane hands out or reads goes through :class:`ServiceUrl`; nothing
else rewrites one by hand (``str.replace`` on a scheme, a regular expression, ``urlsplit`` + f-strings).
Masking a password for display stays :func:`testlane.core.redact.redact_url`'s job (one helper).

Why not a library's URL type (issue 17 weighed three):

* ``sqlalchemy.engine.URL`` fits the shape best, but SQLAlchemy is an optional extra here, and
  importing it loads the whole package: 260-330 ms measured on the development machine, more than
  testlane's whole warm start in a fresh process (0.236 s, docs/benchmarks.md), paid by every pytest
  process that builds a URL. It also drops a password that has no user name (Valkey's
  ``redis://:pass@host``) when rendering.
* ``psycopg.conninfo`` is libpq's parser: Postgres only, and it renders ``key=value`` strings, not URLs.
* redis-py's ``parse_url``: Redis only, and it returns connection keyword arguments, not a URL.

So this type is written by hand over :mod:`urllib.parse` (the split redis-py and dj-database-url use;
already imported by the interpreter's start-up path, so it costs nothing), and its tests check every
URL it renders against the drivers' own parsers (libpq through psycopg, SQLAlchemy, redis-py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from testlane.core.redact import redact_url

__all__ = ["ServiceUrl"]

# Schemes SQLAlchemy spells differently (it dropped ``postgres://`` in 1.4).
_SQLALCHEMY_DIALECT = {"postgres": "postgresql"}


@dataclass(frozen=True)
class ServiceUrl:
    """A parsed service URL; :meth:`parse` reads one, ``str()`` renders it, :meth:`set` changes parts.

    ``user``, ``password``, ``host`` and ``database`` are plain (decoded) text; ``query`` keeps the
    parameters' order. ``repr()`` never shows the password.
    """

    scheme: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> ServiceUrl:
        """``text`` taken apart; raises ``ValueError`` (without the password) when it is not a URL."""
        try:
            parts = urlsplit(text)
            port = parts.port  # validates it
        except ValueError as exc:
            raise ValueError(f"{redact_url(text)!r} is not a valid URL: {exc}") from None
        if not parts.scheme or text[: len(parts.scheme) + 3].lower() != f"{parts.scheme}://":
            # Not echoed: without a scheme nothing says which part would be a password.
            raise ValueError("the value is not a URL (expected scheme://host...)")
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        # The host as written (urlsplit's ``hostname`` lower-cases it, which would change a socket path).
        host = hostinfo[1 : hostinfo.find("]")] if hostinfo.startswith("[") else hostinfo.partition(":")[0]
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return cls(
            scheme=parts.scheme,
            user=unquote(user) if user else None,
            password=unquote(password) if colon else None,
            host=unquote(host) if host else None,
            port=port,
            database=unquote(path) if path else None,
            query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
        )

    def __str__(self) -> str:
        auth = ""
        if self.user or self.password is not None:
            # A password without a user name (Valkey's ``requirepass``) is ``redis://:password@host``.
            auth = quote(self.user or "", safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"  # an IPv6 literal
        elif "/" in host:
            host = quote(host, safe="")  # a Unix socket directory, as libpq reads it
        port = f":{self.port}" if self.port is not None else ""
        path = f"/{quote(self.database, safe='')}" if self.database else ""
        query = f"?{urlencode(self.query, quote_via=quote, safe='')}" if self.query else ""
        return f"{self.scheme}://{auth}{host}{port}{path}{query}"

    def set(self, **changes: object) -> ServiceUrl:
        """A copy with ``changes`` (any field: ``database=``, ``scheme=``, ``password=``...)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def with_query(self, params: Mapping[str, str] | Iterable[tuple[str, str]]) -> ServiceUrl:
        """A copy with ``params`` added; a parameter already there is replaced in place."""
        new = dict(params.items() if isinstance(params, Mapping) else params)
        kept = [(k, new.pop(k) if k in new else v) for k, v in self.query]
        return dataclasses.replace(self, query=(*kept, *new.items()))

    @property
    def dialect(self) -> str:
        """The scheme without its driver: ``postgresql`` for ``postgresql+asyncpg``."""
        return self.scheme.partition("+")[0]

    def for_sqlalchemy(self, driver: str) -> ServiceUrl:
        """The same target for SQLAlchemy with ``driver``: ``postgresql+psycopg://...``, ``mysql+pymysql://...``."""
        dialect = _SQLALCHEMY_DIALECT.get(self.dialect, self.dialect)
        return self.set(scheme=f"{dialect}+{driver}")
