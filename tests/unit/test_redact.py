"""The redaction helper and the private-file helper (issue 13, case 3), without servers.

Where credentials are actually printed and files actually written is tested on real runs in
tests/integration/test_private_state_it.py.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from testlane.core.errors import ConfigError, ServiceStartError
from testlane.core.private import ensure_private_dir, write_private_file
from testlane.core.redact import redact, redact_data, redact_nodeid, redact_url
from testlane.reports.digest import render_digest
from testlane.reports.jsonreport import document
from testlane.reports.model import Failure, RunResult
from testlane.reports.rerun import rerun_target
from testlane.services.instance import Instance


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:s3cr%40t@127.0.0.1:5432/db", "postgresql://app:***@127.0.0.1:5432/db"),
        ("postgres://app:pw@h1:5432,h2:5433/db?sslmode=off", "postgres://app:***@h1:5432,h2:5433/db?sslmode=off"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:pw@cache:6380/1", "rediss://default:***@cache:6380/1"),
        ("mysql://root:pw@127.0.0.1:3306/", "mysql://root:***@127.0.0.1:3306/"),
        ("mariadb://u:p@ss@h/db", "mariadb://u:***@h/db"),  # an unquoted "@" in the password
        ("mysql+pymysql://u:pw@h/db", "mysql+pymysql://u:***@h/db"),
        ("amqp://guest:guest@localhost:5672/%2f", "amqp://guest:***@localhost:5672/%2f"),
        ("redis://h:6379/0?password=pw&db=2", "redis://h:6379/0?password=***&db=2"),
        ("postgresql://u@h/db?sslpassword=pw&application_name=x", "postgresql://u@h/db?sslpassword=***&application_name=x"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("not a url", "not a url"),
    ],
)  # fmt: skip
def test_a_url_loses_its_password_and_nothing_else(url: str, masked: str) -> None:
    assert redact_url(url) == masked
    assert redact(f"connected to {url}, then failed.") == f"connected to {masked}, then failed."


def test_a_libpq_connection_string_is_masked_but_ordinary_text_is_not() -> None:
    assert redact("dsn host=127.0.0.1 port=5432 password=pw dbname=x") == (
        "dsn host=127.0.0.1 port=5432 password=*** dbname=x"
    )
    assert redact("host=h password='a b' user=x") == "host=h password=*** user=x"
    for text in (
        "assert password == expected",
        "E   assert 'typed' == 'stored'  (password=expected)",
        "login(user=u, password=p)",
        "f(password=x)",
        'password = "x"',  # an assignment in an excerpt of a test
        "password = get_password()",
    ):
        assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # libpq allows blanks around "=" and any white space between pairs (psycopg reads them as a password).
        ("conn failed: host=h password = hunter2 dbname=d", "conn failed: host=h password = *** dbname=d"),
        ("dsn:\nhost=h\npassword=hunter2", "dsn:\nhost=h\npassword=***"),
        # A password on its own, not in a keyword argument's shape, is still a password.
        ("failed: password=hunter2", "failed: password=***"),
        ("see password=abc.def, then", "see password=***, then"),
        ("set name=alice password=hunter2 in the form", "set name=alice password=*** in the form"),
        ("x=password=secret", "x=password=***"),
        # The text after the bracket that closes the one opened before the string stays.
        ("[host=h password=hunter2]trailing", "[host=h password=***]trailing"),
        ("{host=h password=hunter2}x", "{host=h password=***}x"),
        ("[password=x]y", "[password=***]y"),
        ("[host=h password='s\\'e]t' user=u]z", "[host=h password=*** user=u]z"),
    ],
)  # fmt: skip
def test_every_form_libpq_reads_as_a_password_is_masked(text: str, masked: str) -> None:
    # Each leaked or lost text before (a fresh user's digest, 2026-12-01): blanks around "=", pairs on lines of
    # their own, a lone password, and the text glued after a closing bracket (dropped with the mask).
    assert redact(text) == masked
    assert "hunter2" not in redact(text) and "secret" not in redact(text)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("conninfo [host=h password=secret] failed", "conninfo [host=h password=***] failed"),
        ("[host=h port=5432 password=secret]", "[host=h port=5432 password=***]"),
        ("{host=h password=secret}: refused", "{host=h password=***}: refused"),
        ("[[host=h password=secret]]", "[[host=h password=***]]"),
        ("host=h password=secret]", "host=h password=***]"),  # a closing bracket the pairs never opened
        ("host=h password=a[b] user=x", "host=h password=*** user=x"),  # brackets inside a password are its
        ("[host=h password=a[b]]", "[host=h password=***]"),
        ("[host=h password='s]cret']", "[host=h password=***]"),
        # The name the text gives it, glued on: its first "pair" is no libpq keyword.
        ("dsn={host=h password=secret}", "dsn={host=h password=***}"),
        ("conninfo=[host=h port=5 password=secret]:", "conninfo=[host=h port=5 password=***]:"),
        ("dsn=host=h password=secret", "dsn=host=h password=***"),
    ],
)  # fmt: skip
def test_a_connection_string_in_brackets_keeps_its_closing_bracket(text: str, masked: str) -> None:
    # The password's value is a run of characters without blanks: a closing bracket right after it was taken
    # for part of it, and masked with it (`[host=h password=***`).
    assert redact(text) == masked


def test_a_placeholder_in_a_url_template_is_shown() -> None:
    # An env mapping's error said `'asyncpg://{postgres.user}:***@...': postgres has no part 'pasword'`, hiding
    # the placeholder it was about. Braces are not allowed unencoded in a URL's userinfo: never a real password.
    template = "asyncpg://{postgres.user}:{postgres.pasword}@{postgres.host}/db"
    assert redact(f"{template!r}: postgres has no part 'pasword'") == f"{template!r}: postgres has no part 'pasword'"
    assert redact("mysql://u:{a}b@h/db") == "mysql://u:***@h/db"  # not a placeholder alone: masked
    assert redact("mysql://u:{s3cret}@h/db") == "mysql://u:***@h/db"  # braces, but no {service.part}: masked
    assert redact("mysql://u:%7Bsecret%7D@h/db") == "mysql://u:***@h/db"


def test_an_instance_url_with_any_password_is_masked() -> None:
    inst = Instance(run_id="r", name="postgres", engine="postgres", backend="url", user="u", password="p@ss/w:rd")
    assert "p%40ss" in inst.url
    assert redact(inst.url) == "postgresql://u:***@127.0.0.1:0"


def test_errors_and_log_records_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    error = ConfigError("postgres.url 'postgresql://u:pw@h/db' is odd.", hint="see redis://:pw@h/0")
    assert "pw" not in str(error)
    start = ServiceStartError("failed", log_tail="FATAL: conninfo host=h user=u password=pw")
    assert "password=pw" not in str(start) and "password=pw" not in start.log_tail
    with caplog.at_level(logging.DEBUG, logger="testlane"):
        logging.getLogger("testlane").warning("reaped %s at %s", "postgres", "postgresql://u:pw@h/db")
    assert caplog.records[-1].getMessage() == "reaped postgres at postgresql://u:***@h/db"


def test_reports_mask_before_they_clip() -> None:
    secret = "S3cretPassword0123456789"
    url = f"postgresql://app:{secret}@127.0.0.1:5432/{'x' * 300}"
    failure = Failure(
        nodeid="t.py::test",
        phase="call",
        kind="assertion",
        exc_type="AssertionError",
        message=f"assert {url!r} == 'y'",
        detail=[f"- {url}", "+ y"],
        logs=[f"connecting to {url}"],
        output=[f"url={url}"],
        servers={"postgres": [f"LOG: {url}"]},
    )
    from testlane.reports.grouping import group_failures

    result = RunResult(exit_code=1, duration=0.1, collected=1, groups=group_failures([failure]), notes=[url])
    result.output_tail = [url]
    for budget in (4000, 300, 80):
        assert secret not in render_digest(result, budget)
    assert secret not in str(document(result))
    assert redact_data({"a": [url, (url,)], url: 1}) == {
        "a": [redact(url), (redact(url),)],
        redact(url): 1,
    }


def test_private_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "services.json"
    target.write_text("old")
    target.chmod(0o644)
    previous = os.umask(0)
    try:
        write_private_file(target, '{"password": "x"}')
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == '{"password": "x"}'
    assert [p.name for p in tmp_path.iterdir()] == ["services.json"]  # no temporary file left


def test_private_directories(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    previous = os.umask(0)
    try:
        ensure_private_dir(run_dir)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    ensure_private_dir(run_dir, group=os.getgid())
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o710
    ensure_private_dir(run_dir)  # a later caller without a group keeps the servers' way in
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o710
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    ensure_private_dir(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    link = tmp_path / "link"
    link.symlink_to(run_dir)
    with pytest.raises(ConfigError, match="not a directory owned by the current user"):
        ensure_private_dir(link)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_run_directory_prepared_by_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "run"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(ConfigError, match="not a directory owned by the current user"):
        ensure_private_dir(theirs)


@pytest.mark.parametrize(
    ("nodeid", "masked", "target"),
    [
        (
            "tests/t.py::test_q[postgresql://postgres:pw@127.0.0.1:44271/tl_b5f57a4b_run_app-CancelledError]",
            "tests/t.py::test_q[postgresql://postgres:***@127.0.0.1:44271/tl_b5f57a4b_run_app-CancelledError]",
            "tests/t.py::test_q",
        ),
        # a URL without a password is this run's too (its port, its database): named by its function
        ("t.py::C::test_q[redis://127.0.0.1:6379/3]", "t.py::C::test_q[redis://127.0.0.1:6379/3]", "t.py::C::test_q"),
        # the closing bracket is not part of the password
        ("t.py::test_d[host=h port=1 password=pw]", "t.py::test_d[host=h port=1 password=***]", "t.py::test_d"),
        ("t.py::test_d[plain-1]", "t.py::test_d[plain-1]", "t.py::test_d[plain-1]"),
        ("t.py::test_plain", "t.py::test_plain", "t.py::test_plain"),
    ],
)
def test_a_node_id_is_masked_and_rerun_by_its_function_when_it_holds_the_runs_url(
    nodeid: str, masked: str, target: str
) -> None:
    assert redact_nodeid(nodeid) == masked
    assert rerun_target(redact_nodeid(nodeid)) == target
