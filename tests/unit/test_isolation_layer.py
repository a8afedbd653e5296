"""The isolation layer's own logic: one error for a mode an engine does not offer, whatever the engine, and a
failed step undoing the steps before it (the ExitStack)."""

from __future__ import annotations

import contextlib

import pytest

from testlane.core.errors import ConfigError
from testlane.databases.isolation import MODES, Isolated, isolation_mode


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
def test_every_engine_accepts_its_modes(engine: str) -> None:
    for mode in MODES[engine]:
        assert isolation_mode(mode, engine, "t.py::test_x") == mode


@pytest.mark.parametrize(
    ("engine", "requested", "said"),
    [
        ("postgres", "rollback", "isolation 'rollback' is not available for PostgreSQL; use one of database, "
         "transaction, schema"),
        ("mariadb", "schema", "isolation 'schema' is not available for MariaDB/MySQL (a MySQL schema is a "
         "database); use one of database, transaction"),
        ("mariadb", None, "isolation None is not available for MariaDB/MySQL; use one of database, transaction"),
        # a typo gets the list alone: the aside about schemas is for the one who asked for a schema
        ("mariadb", "transactoin", "isolation 'transactoin' is not available for MariaDB/MySQL; use one of "
         "database, transaction"),
    ],
)  # fmt: skip
def test_a_mode_the_engine_lacks_is_one_config_error_naming_the_test(engine: str, requested: object, said: str) -> None:
    """Both engines: a ConfigError (the fixtures fail the test with its message alone), not UsageError for one
    and pytest.fail for the other."""
    with pytest.raises(ConfigError) as caught:
        isolation_mode(requested, engine, "t.py::test_x")
    assert str(caught.value).startswith(f"t.py::test_x: {said}")
    assert "@pytest.mark.isolation" in str(caught.value)


class _Steps(Isolated[list[str]]):
    def __init__(self, fail_at: int | None) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.undone: list[str] = []

    def _open(self, stack: contextlib.ExitStack) -> list[str]:
        done: list[str] = []
        for step in range(3):
            if step == self.fail_at:
                raise RuntimeError(f"step {step}")
            done.append(f"step {step}")
            stack.callback(self.undone.append, f"step {step}")
        return done


def test_leaving_undoes_every_step_in_reverse_order() -> None:
    steps = _Steps(fail_at=None)
    with steps as done:
        assert done == ["step 0", "step 1", "step 2"]
        assert steps.undone == []
    assert steps.undone == ["step 2", "step 1", "step 0"]


def test_a_failed_step_undoes_the_steps_before_it() -> None:
    steps = _Steps(fail_at=2)
    with pytest.raises(RuntimeError, match="step 2"), steps:
        pass
    assert steps.undone == ["step 1", "step 0"]


def test_the_blocks_own_error_passes_through_after_the_undo() -> None:
    steps = _Steps(fail_at=None)
    with pytest.raises(KeyError), steps:
        raise KeyError("the test's own")
    assert steps.undone == ["step 2", "step 1", "step 0"]


def test_the_reaper_says_why_it_stopped_a_server() -> None:
    """A kept server stopped by `reap --kept` has no owner: its line says it was kept, not "owner None"."""
    from testlane.services.instance import Instance
    from testlane.services.registry import reap_reason

    kept = Instance("0a1b2c3d", "mariadb", "mariadb", "local", owner_pid=None, extra={"kept_until": 1.0})
    detached = Instance("0a1b2c3d", "mariadb", "mariadb", "local", owner_pid=None)
    dead = Instance("0a1b2c3d", "mariadb", "mariadb", "local", owner_pid=4321)
    assert reap_reason(kept) == "kept for failed tests' databases"
    assert reap_reason(detached) == "detached, and its server had exited"
    assert reap_reason(dead) == "owner 4321 is gone"
    assert all("None" not in reap_reason(i) for i in (kept, detached, dead))
