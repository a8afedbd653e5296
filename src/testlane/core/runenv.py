"""The run environment: testlane's own variables, read and written in one place.

A run passes its state to its processes (pytest, xdist workers, set-up commands, gate checks) as
environment variables, declared once in :mod:`testlane.core.environment`. :class:`RunEnv` is the typed
form of them, and the only code that reads or writes them: the entry points (the pytest plugin, the
CLI, :mod:`testlane.db`, :mod:`testlane.core.runtime` for a run's defaults) take a :class:`RunEnv` from
``os.environ`` (:meth:`RunEnv.current`) and hand the values lower layers need down as arguments;
processes they start get :meth:`RunEnv.child_environ`. ``tests/unit/test_layers.py`` checks that no other
module reads these variables.

Settings variables (``TESTLANE_POSTGRES_BACKEND``...) are read with the settings
(:func:`testlane.core.config.load_settings`), not here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass

from testlane.core import environment

__all__ = ["RUN_VARIABLES", "XDIST_WORKER", "XDIST_WORKER_COUNT", "RunEnv", "restore"]

# Set by pytest-xdist in its workers; testlane only reads them.
XDIST_WORKER = "PYTEST_XDIST_WORKER"
XDIST_WORKER_COUNT = "PYTEST_XDIST_WORKER_COUNT"

# field name -> variable, for the variables testlane writes (to_environ); the xdist ones are read only.
_WRITTEN = {
    "it": environment.IT,
    "config_file": environment.CONFIG,
    "run_id": environment.RUN_ID,
    "owner_pid": environment.OWNER_PID,
    "services_file": environment.SERVICES_FILE,
    "chosen_data_root": environment.CHOSEN_DATA_ROOT,
    "rerun_prefix": environment.RERUN_PREFIX,
    "reported_file": environment.REPORTED_FILE,
    "run_settings": environment.RUN_SETTINGS,
    "egress_allow": environment.EGRESS_ALLOW,
    "egress_report": environment.EGRESS_REPORT,
}

# Every variable RunEnv reads. The services' coordinates (TESTLANE_POSTGRES_URL...) are not run state: each
# server's env() writes its own, for the tests and the application.
RUN_VARIABLES: tuple[str, ...] = (*_WRITTEN.values(), XDIST_WORKER, XDIST_WORKER_COUNT)


def _text(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _number(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class RunEnv:
    """testlane's run variables, typed. ``None``: unset (or empty). See docs/configuration.md.

    ``it`` is ``TESTLANE_IT`` as written (parsed by :attr:`integration_lane`, which raises for a value that
    is neither true nor false, so only a reader of the lane sees that error); ``owner_pid`` and
    ``xdist_worker_count`` are ``None`` unless the variable holds digits.
    """

    it: str | None = None  # TESTLANE_IT
    config_file: str | None = None  # TESTLANE_CONFIG
    run_id: str | None = None  # TESTLANE_RUN_ID
    owner_pid: int | None = None  # TESTLANE_OWNER_PID
    services_file: str | None = None  # TESTLANE_SERVICES_FILE
    chosen_data_root: str | None = None  # TESTLANE_CHOSEN_DATA_ROOT
    rerun_prefix: str | None = None  # TESTLANE_RERUN_PREFIX
    reported_file: str | None = None  # TESTLANE_REPORTED_FILE
    run_settings: str | None = None  # TESTLANE_RUN_SETTINGS
    egress_allow: str | None = None  # TESTLANE_EGRESS_ALLOW
    egress_report: str | None = None  # TESTLANE_EGRESS_REPORT
    xdist_worker: str | None = None  # PYTEST_XDIST_WORKER (gw0, gw1...)
    xdist_worker_count: int | None = None  # PYTEST_XDIST_WORKER_COUNT

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> RunEnv:
        """The run variables in ``environ`` (values stripped; empty counts as unset, except ``TESTLANE_IT``,
        where empty means off)."""
        it = environ.get(environment.IT)
        return cls(
            it=it,
            config_file=_text(environ, environment.CONFIG),
            run_id=_text(environ, environment.RUN_ID),
            owner_pid=_number(environ, environment.OWNER_PID),
            services_file=_text(environ, environment.SERVICES_FILE),
            chosen_data_root=_text(environ, environment.CHOSEN_DATA_ROOT),
            rerun_prefix=_text(environ, environment.RERUN_PREFIX),
            reported_file=_text(environ, environment.REPORTED_FILE),
            run_settings=_text(environ, environment.RUN_SETTINGS),
            egress_allow=_text(environ, environment.EGRESS_ALLOW),
            egress_report=_text(environ, environment.EGRESS_REPORT),
            xdist_worker=_text(environ, XDIST_WORKER),
            xdist_worker_count=_number(environ, XDIST_WORKER_COUNT),
        )

    @classmethod
    def current(cls) -> RunEnv:
        """This process's run variables (``os.environ`` now): for entry points, not for lower layers."""
        return cls.from_environ(os.environ)

    def to_environ(self) -> dict[str, str]:
        """The ``TESTLANE_*`` variables that are set, as an environment (the xdist ones are pytest-xdist's)."""
        out: dict[str, str] = {}
        for field, name in _WRITTEN.items():
            value = getattr(self, field)
            if value is not None:
                out[name] = str(value)
        return out

    def replace(self, **changes: str | int | None) -> RunEnv:
        """A copy with ``changes`` (field names, e.g. ``run_id="0a1b2c3d"``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def child_environ(self, base: Mapping[str, str], *, drop: Iterable[str] = ()) -> dict[str, str]:
        """The environment for a child process: ``base`` without the variables that describe a run (a child
        of a new run must not inherit the outer run's) nor ``drop``, then these variables."""
        gone = {*environment.run_scoped_names(), *drop}
        return {**{k: v for k, v in base.items() if k not in gone}, **self.to_environ()}

    def write(self, environ: MutableMapping[str, str]) -> dict[str, str | None]:
        """Set these variables in ``environ`` (usually ``os.environ``); return what they were (``None``:
        unset), for :func:`restore`."""
        values = self.to_environ()
        saved = {key: environ.get(key) for key in values}
        environ.update(values)
        return saved

    @property
    def integration_lane(self) -> bool:
        """Whether ``TESTLANE_IT`` turns the integration lane on (raises :class:`ConfigError` for a value
        that is neither true nor false; see :func:`testlane.core.environment.integration_lane_from_env`)."""
        return environment.integration_lane_from_env({} if self.it is None else {environment.IT: self.it})

    @property
    def worker(self) -> str:
        """``gw0``, ``gw1``... under pytest-xdist, ``main`` otherwise (lowercase: part of database names)."""
        return (self.xdist_worker or "main").lower()

    @property
    def workers(self) -> int:
        """How many xdist workers the run has (1 without xdist)."""
        return self.xdist_worker_count or 1

    def owned_by(self, pid: int) -> bool:
        """Whether ``pid`` owns the run (``TESTLANE_OWNER_PID``)."""
        return self.owner_pid == pid


def restore(environ: MutableMapping[str, str], saved: Mapping[str, str | None]) -> None:
    """Undo :meth:`RunEnv.write` (or any change recorded the same way): ``None`` unsets."""
    for key, value in saved.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
