"""The ``TESTLANE_*`` variables that are not settings: declared once, with what they mean.

Settings have a variable each (``TESTLANE_POSTGRES_BACKEND`` for ``postgres.backend``; see
:mod:`testlane.core.config`). The variables below are the others: the ones a run passes to its own
processes (pytest, xdist workers, set-up commands), the service coordinates testlane exports for
tests and for ``testlane services env``, and the lane switch ``TESTLANE_IT``. Everything that sets or
reads one of them uses the name from here, so :func:`testlane.core.config.load_settings` can tell a
misspelt setting variable (a configuration error) from a variable testlane itself put there.

The table in docs/configuration.md ("Variables that are not settings") is generated from
:data:`VARIABLES` (``python -m testlane.core.environment``; a test compares).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from testlane.core.errors import ConfigError

__all__ = [
    "CHOSEN_DATA_ROOT",
    "CONFIG",
    "EGRESS_ALLOW",
    "EGRESS_REPORT",
    "FALSE_WORDS",
    "IT",
    "OWNER_PID",
    "REPORTED_FILE",
    "RERUN_PREFIX",
    "RUN_ID",
    "RUN_SETTINGS",
    "SERVICES_FILE",
    "START_FD",
    "TRUE_WORDS",
    "VARIABLES",
    "Variable",
    "bookkeeping_names",
    "declared_names",
    "integration_lane_from_env",
    "parse_flag",
    "run_scoped_names",
    "variables_table_markdown",
]

PREFIX = "TESTLANE_"

# The truth values of every yes/no setting and of TESTLANE_IT (one spelling everywhere).
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class Variable:
    """A ``TESTLANE_*`` variable that is not a setting: ``name``, who sets it, and what it means."""

    name: str
    set_by: str
    meaning: str
    run_scoped: bool = False  # describes one run: a nested `testlane run` must not inherit it
    # testlane sets it in its own processes as the run goes (possibly while a test runs, e.g. when a fixture
    # starts the first server): not the test's doing, so the discipline check neither reports nor restores it.
    bookkeeping: bool = False


IT = "TESTLANE_IT"
CONFIG = "TESTLANE_CONFIG"
RUN_ID = "TESTLANE_RUN_ID"
OWNER_PID = "TESTLANE_OWNER_PID"
SERVICES_FILE = "TESTLANE_SERVICES_FILE"
CHOSEN_DATA_ROOT = "TESTLANE_CHOSEN_DATA_ROOT"
RERUN_PREFIX = "TESTLANE_RERUN_PREFIX"
REPORTED_FILE = "TESTLANE_REPORTED_FILE"
START_FD = "TESTLANE_START_FD"
RUN_SETTINGS = "TESTLANE_RUN_SETTINGS"
EGRESS_ALLOW = "TESTLANE_EGRESS_ALLOW"
EGRESS_REPORT = "TESTLANE_EGRESS_REPORT"
WORKER_ADDOPTS = "TESTLANE_WORKER_ADDOPTS"

_RUN = "`testlane run`"
_COORD = "`testlane run`, the plugin, `testlane services env`"
_OWNED = "`testlane run`, the plugin"

VARIABLES: tuple[Variable, ...] = (
    Variable(
        IT,
        "you, `testlane run`",
        "The integration lane is on: `1`, `true`, `yes`, `on` (like `pytest --it`); `0`, `false`, `no`, `off` or "
        "empty: off. Any other value is an error.",
    ),
    Variable(
        CONFIG,
        "you, `testlane run`",
        "The pyproject.toml to read instead of searching upward (`--config`). One that names no file, or one that "
        "is not TOML, is an error, opted in or not (see [lanes.md](lanes.md#what-opting-in-turns-on)).",
    ),
    Variable(
        RUN_ID,
        _OWNED,
        "The run's id (8 hex characters; appears in directory and database names). Not set by `testlane services "
        "env`: each pytest session against detached services is its own run (its own test databases and leases, "
        "cleaned up with it: dropped when the session ends, on Ctrl-C too; a SIGKILLed session's by `testlane reap` "
        "or the next session, see [services.md](services.md#lifecycle-and-reaping)).",
        run_scoped=True,
        bookkeeping=True,
    ),
    Variable(
        OWNER_PID,
        _OWNED,
        "The process that owns the run; its servers are reaped once it is gone. Not set by `testlane services "
        "env`: detached services have no owner (they run until `testlane services stop`).",
        run_scoped=True,
        bookkeeping=True,
    ),
    Variable(
        SERVICES_FILE,
        _COORD,
        "JSON description of the run's servers (used by the pytest plugin and its xdist workers).",
        run_scoped=True,
        bookkeeping=True,
    ),
    Variable(
        CHOSEN_DATA_ROOT,
        "testlane",
        "The data directory chosen for this run (see `data_dir`), inherited by the run's processes.",
        bookkeeping=True,
    ),
    Variable(
        "TESTLANE_POSTGRES_URL",
        _COORD,
        "e.g. `postgresql://postgres:<password>@127.0.0.1:41234/postgres` (the run's random password: see "
        "[services.md](services.md#who-can-get-in-postgres)).",
        run_scoped=True,
    ),
    Variable("TESTLANE_POSTGRES_HOST", _COORD, "PostgreSQL's host, as in `TESTLANE_POSTGRES_URL`.", run_scoped=True),
    Variable("TESTLANE_POSTGRES_PORT", _COORD, "PostgreSQL's port.", run_scoped=True),
    Variable("TESTLANE_POSTGRES_USER", _COORD, "PostgreSQL's user.", run_scoped=True),
    Variable("TESTLANE_POSTGRES_PASSWORD", _COORD, "PostgreSQL's password (when it has one).", run_scoped=True),
    Variable(
        "TESTLANE_REDIS_URL",
        _COORD,
        "e.g. `redis://:<password>@127.0.0.1:41235/0` (the password is random per instance, see "
        "[services.md](services.md#credentials-valkey-and-mariadb)).",
        run_scoped=True,
    ),
    Variable("TESTLANE_VALKEY_URL", _COORD, "The same as `TESTLANE_REDIS_URL`.", run_scoped=True),
    Variable("TESTLANE_REDIS_HOST", _COORD, "Valkey's host.", run_scoped=True),
    Variable("TESTLANE_REDIS_PORT", _COORD, "Valkey's port.", run_scoped=True),
    Variable("TESTLANE_MARIADB_URL", _COORD, "MariaDB's URL, when a MariaDB service runs.", run_scoped=True),
    Variable("TESTLANE_MARIADB_HOST", _COORD, "MariaDB's host.", run_scoped=True),
    Variable("TESTLANE_MARIADB_PORT", _COORD, "MariaDB's port.", run_scoped=True),
    Variable("TESTLANE_MARIADB_USER", _COORD, "MariaDB's user.", run_scoped=True),
    Variable("TESTLANE_S3_ENDPOINT_URL", _COORD, "The S3 endpoint, e.g. `http://127.0.0.1:41237`.", run_scoped=True),
    Variable("TESTLANE_S3_ACCESS_KEY_ID", _COORD, "The run's S3 access key id.", run_scoped=True),
    Variable(
        "TESTLANE_S3_SECRET_ACCESS_KEY",
        _COORD,
        "The run's S3 secret key (random per run on the embedded server, see [services.md](services.md#s3)).",
        run_scoped=True,
    ),
    Variable("TESTLANE_S3_REGION", _COORD, "The region S3 clients sign for.", run_scoped=True),
    Variable(
        "TESTLANE_NATS_URL",
        _COORD,
        "e.g. `nats://app:<password>@127.0.0.1:41236`: the application's account on the run's NATS server "
        "(see [services.md](services.md#nats-jetstream)).",
        run_scoped=True,
    ),
    Variable("TESTLANE_NATS_HOST", _COORD, "NATS's host.", run_scoped=True),
    Variable("TESTLANE_NATS_PORT", _COORD, "NATS's port.", run_scoped=True),
    Variable(
        "TESTLANE_MQTT_URL",
        _COORD,
        "e.g. `mqtt://testlane:<password>@127.0.0.1:41236` (the broker's random password; see "
        "[services.md](services.md#mqtt-mosquitto)).",
        run_scoped=True,
    ),
    Variable("TESTLANE_MQTT_HOST", _COORD, "The MQTT broker's host.", run_scoped=True),
    Variable("TESTLANE_MQTT_PORT", _COORD, "The MQTT broker's port.", run_scoped=True),
    Variable(
        "TESTLANE_RABBITMQ_URL",
        _COORD,
        "e.g. `amqp://tl_1a2b3c4d:<password>@127.0.0.1:41236/%2F` (a random user and password per run).",
        run_scoped=True,
    ),
    Variable("TESTLANE_RABBITMQ_HOST", _COORD, "RabbitMQ's host.", run_scoped=True),
    Variable("TESTLANE_RABBITMQ_PORT", _COORD, "RabbitMQ's AMQP port.", run_scoped=True),
    Variable(
        "TESTLANE_RABBITMQ_MANAGEMENT_URL", _COORD, "RabbitMQ's management HTTP API (no credentials).", run_scoped=True
    ),
    Variable(
        "TESTLANE_VALKEY_PASSWORD",
        "the `container` backend",
        "Valkey's password inside its container only (read by `valkey-server -` from standard input).",
    ),
    Variable(
        "TESTLANE_NATS_PASSWORD",
        "the `container` backend",
        "NATS's password inside its container only (its configuration is written from it there).",
    ),
    Variable(
        "TESTLANE_MQTT_PASSWORD",
        "the `container` backend",
        "Mosquitto's password inside its container only (fed to `mosquitto_ctrl dynsec init` on standard input).",
    ),
    Variable(
        RERUN_PREFIX,
        _RUN,
        "The `testlane run ... --` command as typed; the digest's rerun commands start with it.",
        run_scoped=True,
    ),
    Variable(
        REPORTED_FILE,
        _RUN,
        "A file pytest's reporter creates once it reported (absent: pytest died first).",
        run_scoped=True,
    ),
    Variable(
        START_FD,
        _RUN,
        "The pipe on which pytest, started beside the services, receives their variables (cli/pytest_child.py).",
        run_scoped=True,
    ),
    Variable(
        RUN_SETTINGS,
        _RUN,
        "The pyproject.toml `testlane run` read its settings from (`none`: none found): pytest's plugin stops when "
        "pytest's rootdir would have it read another one that has a [tool.testlane] table.",
        run_scoped=True,
    ),
    Variable(EGRESS_ALLOW, "the template build", "Where set-up commands may connect (their network guard)."),
    Variable(EGRESS_REPORT, "the template build", "Where set-up commands record the connections they were refused."),
    Variable(
        WORKER_ADDOPTS,
        "the plugin, for pytest-xdist's workers",
        "A worker's `PYTEST_ADDOPTS` as the controller had it, before the controller added its rootdir and "
        "configuration file to it (`--rootdir`, `--config-file`); restored and removed as the worker starts.",
    ),
    Variable(
        "TESTLANE_CI_CONTAINERS",
        "testlane's own CI (`.ci/run`)",
        "`0` skips setting up Podman for the container backend's tests.",
    ),
)


def run_scoped_names() -> tuple[str, ...]:
    """The variables that describe one run (its id, owner, servers, reports)."""
    return tuple(v.name for v in VARIABLES if v.run_scoped)


def bookkeeping_names() -> frozenset[str]:
    """The variables testlane sets for itself as a run goes (never a test's change to the environment)."""
    return frozenset(v.name for v in VARIABLES if v.bookkeeping)


def declared_names() -> frozenset[str]:
    """Every declared variable's name."""
    return frozenset(v.name for v in VARIABLES)


def parse_flag(text: str) -> bool | None:
    """A yes/no value as written in the environment: True, False, or None when it is neither."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def integration_lane_from_env(environ: Mapping[str, str]) -> bool:
    """Whether ``TESTLANE_IT`` in ``environ`` turns the integration lane on. The one place it is parsed
    (processes read it through :attr:`testlane.core.runenv.RunEnv.integration_lane`).

    Unset or a false value: False. A value that is neither true nor false raises :class:`ConfigError`
    (``TESTLANE_IT=maybe`` must not quietly run the unit lane alone).
    """
    value = environ.get(IT)
    if value is None:
        return False
    flag = parse_flag(value)
    if flag is None:
        raise ConfigError(
            f"${IT} = {value!r} is neither true nor false.",
            hint=f"set {IT}=1 to run the integration lane (or unset it, or {IT}=0, for the unit lane alone).",
        )
    return flag


def variables_table_markdown() -> str:
    """The table of these variables docs/configuration.md embeds exactly."""
    rows = ["| variable | set by | meaning |", "|---|---|---|"]
    for v in VARIABLES:
        rows.append(f"| `{v.name}` | {v.set_by} | {v.meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # pragma: no cover - documentation helper
    print(variables_table_markdown(), end="")
