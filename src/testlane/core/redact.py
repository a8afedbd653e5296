"""Masking credentials in everything testlane shows or writes for people and tools to read.

One helper for every output: the run banner, the digest, the JSON and JSON Lines reports, the
``testlane`` log, error messages, ``testlane services status`` and ``testlane doctor``. What is a
credential, and what is only text that looks like one:

* the password in a URL's userinfo, whatever the scheme (``postgresql://u:SECRET@h/db``,
  ``redis://:SECRET@h:6379/0``, ``rediss://``, ``mysql://``, ``mariadb://``, ``amqp://``, ...);
* the value of a password-like query parameter in a URL (``?password=SECRET``, ``&pwd=``,
  ``sslpassword=``, ``token=``, ...);
* ``password=SECRET`` inside a libpq connection string (``host=h port=5432 password=SECRET``):
  a run of ``keyword=value`` pairs separated by blanks or line breaks, a blank allowed around ``=``
  (``password = SECRET``), that libpq (``psycopg``) accepts; the closing bracket of a bracket opened just
  before the run is the text around it (``[host=h password=***]tail``), and so are closing brackets it ends
  with but never opened, and a name glued to its front (``dsn=host=h password=***``,
  ``conninfo={host=h password=***}``);
* ``password=SECRET`` on its own (``failed: password=***``), unless it has the shape of a keyword argument
  in code: after ``(`` or ``,`` (``login(user=u, password=p)``).

Everything else is left alone: ``assert password == expected``, ``password = "x"`` in an excerpt of a
test, or a URL without a password. The mask is ``***``; the user name, host, port,
database and the other parameters stay, so a message still says where testlane connected.

URLs are taken apart with :mod:`urllib.parse` (the same split the drivers use), conninfo strings are
checked with ``psycopg.conninfo`` (imported only when a candidate is seen). A regular expression only
*finds* candidates in free text: a URL needs a ``scheme://`` and ends at a blank or a quote.
"""

from __future__ import annotations

import logging
import re
from typing import TypeVar
from urllib.parse import SplitResult, unquote, urlsplit

__all__ = ["MASK", "REFERENCE", "RedactingFilter", "redact", "redact_data", "redact_nodeid", "redact_url"]

MASK = "***"

# Query parameters whose value is a secret (compared without case, after unquoting).
SECRET_PARAMS = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "sslpassword",
        "secret",
        "token",
        "access_token",
        "auth_token",
        "api_key",
        "apikey",
        "requirepass",
    }
)

# A URL in free text: scheme://, then anything up to a blank, a quote or a bracket; trailing
# punctuation (a full stop, a comma, a closing parenthesis) is not part of it.
_URL = re.compile(r"""\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'"<>`]*[^\s'"<>`.,;:!?)\]}]""")

# libpq conninfo: keyword=value pairs separated by blanks or line breaks (libpq skips any white space, around
# "=" too); a value is 'quoted' or has no blank, quote, comma or parenthesis (so Python keyword arguments,
# ``f(user=u, password=p)``, never form a run).
_VALUE = r"""(?:'(?:[^'\\]|\\.)*'|[^\s'",()]++)"""
_PAIR = rf"[A-Za-z_]+[ \t]*=[ \t]*{_VALUE}"
_CONNINFO_RUN = re.compile(rf"(?<![\w=]){_PAIR}(?:\s+{_PAIR})+")
_PASSWORD_PAIR = re.compile(rf"(?<![\w])(password[ \t]*=[ \t]*){_VALUE}")
# ``password=...`` on its own, not as a keyword argument (after "(" or ","), not masked already.
_LONE_PASSWORD = re.compile(rf"(?<![\w.(,])(?<!,[ \t])password=(?!\*\*\*(?:[^\w]|$)){_VALUE}")
_MAY_HOLD_PASSWORD = re.compile(r"password[ \t]*=")

T = TypeVar("T")


# A reference in a ``[tool.testlane.env]`` template standing for the password (``{postgres.password}``, a
# misspelt ``{postgres.pasword}``): shown, or an error about that very reference could not say which one it
# means. Only that shape (``{service.part[:driver]}``, which testlane.core.envmap parses with it; braces are
# not even allowed unencoded in a URL's userinfo, RFC 3986): ``{s3cret}`` is masked like any password.
REFERENCE = r"(?P<service>[a-z][a-z0-9]*)\.(?P<part>[a-z_]+)(?::(?P<driver>[a-z0-9_+]+))?"
_PLACEHOLDER = re.compile(rf"\{{{REFERENCE}\}}")


def _redact_netloc(netloc: str) -> str:
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or ":" not in userinfo or _PLACEHOLDER.fullmatch(userinfo.partition(":")[2]):
        return netloc
    user = userinfo.partition(":")[0]
    return f"{user}:{MASK}@{hostport}"


def _redact_query(query: str) -> str:
    if "=" not in query:
        return query
    pieces = []
    for piece in query.split("&"):
        key, eq, value = piece.partition("=")
        if eq and value and unquote(key).strip().lower() in SECRET_PARAMS:
            piece = f"{key}={MASK}"
        pieces.append(piece)
    return "&".join(pieces)


def redact_url(url: str) -> str:
    """``url`` with its password masked: ``postgresql://u:***@h:5432/db``, ``redis://h/0?password=***``.

    Any scheme. A URL without a password, or text that is not a URL, is returned unchanged.
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced "[" in the host: mask the userinfo the simple way
        head, sep, rest = url.partition("://")
        netloc, slash, tail = rest.partition("/")
        return f"{head}{sep}{_redact_netloc(netloc)}{slash}{tail}"
    netloc = _redact_netloc(parts.netloc)
    query = _redact_query(parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment).geturl()


def _is_conninfo(text: str) -> bool:
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # pragma: no cover - psycopg is a dependency; without it, trust the shape
        return True
    try:
        return "password" in conninfo_to_dict(text)
    except Exception:  # not something libpq accepts: not a connection string
        return False


# A closing bracket and the one that opens it.
_OPENERS = {"]": "[", "}": "{"}
_CLOSERS = {"[": "]", "{": "}"}


def _without_closers(text: str, opened: str = "") -> tuple[str, str]:
    """``text`` split before the text around a connection string that its last value swallowed.

    ``opened``: the bracket just before the string (``[host=h password=pw]tail``): its first closer not opened
    in ``text`` ends the string. Otherwise the closing brackets ``text`` ends with but never opened
    (``host=h password=pw]``). A bracket a password opens stays its (``password=a[b]``); one it only closes
    is shown — the price of not masking the text after it."""
    if opened:
        closer, depth, quoted, escaped = _CLOSERS[opened], 0, False, False
        for i, char in enumerate(text):
            if quoted:  # inside a 'quoted value' (a backslash escapes the next character)
                escaped, quoted = (False, True) if escaped else (char == "\\", char != "'")
            elif char == "'":
                quoted = True
            elif char == opened:
                depth += 1
            elif char == closer:
                if depth == 0:
                    return text[:i], text[i:]
                depth -= 1
    end = len(text.rstrip(".,;:!?"))  # `[host=h password=pw]:` - punctuation after such a bracket is the text's too
    closed = end
    while end and text[end - 1] in _OPENERS:
        closer = text[end - 1]
        if text.count(_OPENERS[closer], 0, end) >= text.count(closer, 0, end):
            break
        end -= 1
    if end == closed:
        return text, ""
    return text[:end], text[end:]


def _mask_passwords(text: str) -> str:
    return _PASSWORD_PAIR.sub(lambda m: m.group(1) + MASK, text)


def _redact_conninfo(match: re.Match[str]) -> str:
    text = match.group(0)
    if not _MAY_HOLD_PASSWORD.search(text):
        return text
    before = match.string[match.start() - 1] if match.start() else ""
    # The run may start with the name it is given in the text, glued to it: `dsn=host=h password=pw`,
    # `conninfo={host=h password=pw}` (the first "pair" is no libpq keyword, so the whole run is no conninfo).
    rest = text.partition("=")[2]
    inner = rest.lstrip(" \t").lstrip("[{")
    lead = text[: len(text) - len(inner)]
    for head, candidate, opened in (("", text, before), (lead, inner, lead[-1:])):
        body, tail = _without_closers(candidate, opened if opened in _CLOSERS else "")
        if (not head or _CONNINFO_RUN.fullmatch(body)) and _is_conninfo(body):
            return head + _mask_passwords(body) + tail
    return text


def _redact_lone(match: re.Match[str]) -> str:
    before = match.string[match.start() - 1] if match.start() else ""
    body, tail = _without_closers(match.group(0), before if before in _CLOSERS else "")
    return _mask_passwords(body) + tail


def redact(text: str) -> str:
    """``text`` with every credential in a URL or a libpq connection string masked (see the module doc).

    Cheap when there is nothing to mask (two substring checks), so it can run on every line.
    """
    if not text:
        return text
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    if "password" in text and _MAY_HOLD_PASSWORD.search(text):
        text = _CONNINFO_RUN.sub(_redact_conninfo, text)
        if "password=" in text:
            text = _LONE_PASSWORD.sub(_redact_lone, text)
    return text


def redact_nodeid(nodeid: str) -> str:
    """A pytest node id with every credential in it masked: :func:`redact` of its path and test name, and of
    its parameter set's id on its own (``test_q[host=h password=***]``: the closing bracket is not taken for
    the end of a password)."""
    base, bracket, params = nodeid.partition("[")
    if bracket and params.endswith("]"):
        return f"{redact(base)}[{redact(params[:-1])}]"
    return redact(nodeid)


def redact_data(value: T) -> T:
    """``value`` with :func:`redact` applied to every string inside it (dicts, lists and tuples, nested).

    Returns a new object of the same shape; the input is not changed.
    """
    if isinstance(value, str):
        return redact(value)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {redact_data(k): redact_data(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [redact_data(v) for v in value]  # type: ignore[return-value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(redact_data(v) for v in value)  # type: ignore[return-value]
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials in the formatted message of every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
