"""A configured port that is taken: the error's hint names the key that sets it (once21), for every kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from testlane.core.config import iter_options
from testlane.core.errors import PortUnavailableError
from testlane.services.ports import reserve_port

PORT_KEYS = sorted(o.key for o in iter_options() if o.key.endswith("port") and "." in o.key)


def test_every_service_s_port_setting_is_known() -> None:
    assert {"postgres.port", "valkey.port", "mariadb.port", "rabbitmq.management_port"} <= set(PORT_KEYS)


@pytest.mark.parametrize("key", PORT_KEYS)
def test_a_taken_port_names_the_key_that_sets_it(tmp_path: Path, taken_port: int, key: str) -> None:
    option = next(o for o in iter_options() if o.key == key)
    with pytest.raises(PortUnavailableError) as info:
        reserve_port(tmp_path, fixed=taken_port, setting=key)
    table, _, name = key.rpartition(".")
    assert str(info.value) == (
        f"port {taken_port} on 127.0.0.1 is already in use.\n  hint: stop what listens there, or set {key} to 0 "
        f"({name} = 0 in [tool.testlane.{table}], or {option.env}=0) so testlane picks a free one."
    )
