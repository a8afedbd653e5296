"""The owner record: one format, rendered and parsed in one place, anchored."""

from __future__ import annotations

import os
import socket

import pytest

from testlane.databases.owner import OwnerRecord, this_host


@pytest.mark.parametrize("hostname", ["ci-runner-7", "_odd host!", "..", "é.example"])
def test_a_record_of_this_host_always_parses_back(monkeypatch: pytest.MonkeyPatch, hostname: str) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    record = OwnerRecord.for_run("0a1b2c3d", os.getpid())
    assert record.host == this_host() and record.ctime is not None
    assert OwnerRecord.parse(record.render()) == record


@pytest.mark.parametrize(
    "text",
    [
        "testlane:v1 run=0a1b2c3d host=h pid=1 ctime=- created=1 ",
        " testlane:v1 run=0a1b2c3d host=h pid=1 ctime=- created=1",
        "testlane:v1 run=0a1b2c3d host=h pid=1 ctime=- created=1\nmore",
        "testlane:v1 run=0A1B2C3D host=h pid=1 ctime=- created=1",
        "testlane:v1 run=0a1b2c3d host=h pid=0 ctime=- created=1",
        "testlane:v1 run=0a1b2c3d host=h ctime=- created=1",
        "testlane:v2 run=0a1b2c3d host=h pid=1 ctime=- created=1",
        "testlane run=0a1b2c3d host=h pid=1 ctime=None created=1",
        "",
    ],
)
def test_anything_but_exactly_one_record_is_not_a_record(text: str) -> None:
    assert OwnerRecord.parse(text) is None


def test_a_record_names_only_its_own_runs_databases() -> None:
    record = OwnerRecord.parse("testlane:v1 run=0a1b2c3d host=h pid=1 ctime=12.50 created=1")
    assert record is not None and record == OwnerRecord("0a1b2c3d", "h", 1, 12.5, 1)
    assert record.names("tl_0a1b2c3d_gw0_3") and record.names("tl_0a1b2c3d_main_m1")
    assert not record.names("tl_0a1b2c3e_gw0_3")
    assert not record.names("tl_tpl_0a1b2c3d0a1b2c3d")
    assert not record.names("app_0a1b2c3d_gw0_3")
