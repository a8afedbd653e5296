"""Issue 15, seen 6: pub/sub is not isolated by per-test logical databases (channels are server-wide),
so testlane gives each test a channel namespace (``redis_channel_prefix``) and the application one of
the run (``{valkey.channel_prefix}`` in ``[tool.testlane.env]``).

The inner suite runs one test on both xdist workers at once (``--dist each``). Each subscribes to the
same channel name twice — raw, and inside its own namespace — meets the other worker on the raw channel
(so both are subscribed before anything is counted), publishes 200 messages on each, then a last one on
the raw channel. Pub/sub delivers messages in the order the server ran them, so once a worker heard both
workers' last messages it has heard everything either published where it listens.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.test_isolation_it import make_project, run

pytestmark = [pytest.mark.usefixtures("inner_env"), pytest.mark.timeout(300)]

PUBSUB_SUITE = """
import json, os, time

COUNT = 200
ME = os.environ["PYTEST_XDIST_WORKER"]


def read(pubsub, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.02)
        if message is not None and message["type"] == "message":
            yield message["channel"].decode(), message["data"].decode()
        elif message is not None and message["type"] == "pmessage":
            yield "pattern", message["data"].decode()


def test_same_channel_name(redis_client, redis_channel_prefix, redis_db):
    raw, mine = "events", redis_channel_prefix + "events"
    assert redis_channel_prefix == redis_db.channel_prefix and redis_db.channel(raw) == mine
    pubsub = redis_client.pubsub()
    pubsub.subscribe(raw, mine)
    pubsub.psubscribe(redis_channel_prefix + "ev*")  # a pattern inside the namespace
    heard = {raw: [], mine: [], "pattern": []}

    # Meet the other worker on the raw channel: both are subscribed once each heard that the other heard it.
    other, other_heard_me, deadline = None, False, time.monotonic() + 60
    while not (other and other_heard_me):
        assert time.monotonic() < deadline, "the other worker never showed up"
        redis_client.publish(raw, f"hello {ME} {int(other is not None)}")
        for channel, data in read(pubsub, 0.05):
            heard[channel].append(data)  # a fast other may be done before this one is through here
            if channel == raw and data.startswith("hello ") and data.split()[1] != ME:
                other, other_heard_me = data.split()[1], other_heard_me or data.split()[2] == "1"
    redis_client.publish(raw, f"hello {ME} 1")

    for i in range(COUNT):
        redis_client.publish(mine, f"{ME} {i}")
        redis_client.publish(raw, f"{ME} {i}")
    redis_client.publish(raw, f"done {ME}")
    deadline = time.monotonic() + 60
    # Its own "done" comes after its own 200 in the server's order, the other's after the other's: wait for both.
    while not {f"done {other}", f"done {ME}"} <= set(heard[raw]):
        assert time.monotonic() < deadline, "the other worker never finished"
        for channel, data in read(pubsub, 0.05):
            heard[channel].append(data)
    pubsub.close()

    with open(f"heard-{ME}.json", "w") as out:
        json.dump({"other": other, "prefix": redis_channel_prefix, "app": os.environ["APP_EVENTS"], **heard}, out)
    assert [m for m in heard[mine] if not m.startswith(ME + " ")] == []  # nothing of the other's
"""


def test_the_channel_prefix_isolates_pubsub_between_workers_and_raw_channels_do_not(
    pytester: pytest.Pytester,
) -> None:
    project = make_project(pytester, services='["valkey"]')
    with (project / "pyproject.toml").open("a") as pyproject:
        pyproject.write('\n[tool.testlane.env]\nAPP_EVENTS = "{valkey.channel_prefix}events"\n')
    pytester.makepyfile(test_pubsub_it=PUBSUB_SUITE)
    run(pytester, "-n", "2", "--dist", "each").assert_outcomes(passed=2)

    heard = {path.name: json.loads(path.read_text()) for path in sorted(project.glob("heard-gw*.json"))}
    assert sorted(heard) == ["heard-gw0.json", "heard-gw1.json"]
    for name, seen in heard.items():
        me, other = name[len("heard-") : -len(".json")], seen["other"]
        assert other in ("gw0", "gw1") and other != me
        mine = seen[seen["prefix"] + "events"]
        # In its namespace a worker hears its own 200 messages, in order, and none of the other's ...
        assert mine == [f"{me} {i}" for i in range(200)]
        # ... and through a pattern inside the namespace the same (no separate subscription leaks in).
        assert sorted(seen["pattern"], key=lambda m: int(m.split()[1])) == mine
        # On the raw channel name it hears every one of the other worker's: a logical database does not
        # isolate pub/sub (the behaviour the namespace is for).
        assert [m for m in seen["events"] if m.startswith(f"{other} ")] == [f"{other} {i}" for i in range(200)]
    prefixes = {seen["prefix"] for seen in heard.values()}
    assert len(prefixes) == 2 and all(p.startswith("tl:") and p.endswith(":") for p in prefixes)
    # The application's namespace (from [tool.testlane.env]) is the run's: one for both workers, not a test's.
    [app] = {seen["app"] for seen in heard.values()}
    assert app.startswith("tl:") and app.endswith(":app:events") and not app.startswith(tuple(prefixes))


def test_an_unknown_valkey_part_in_the_env_mapping_names_the_parts(pytester: pytest.Pytester) -> None:
    project = make_project(pytester, services='["valkey"]')
    with (project / "pyproject.toml").open("a") as pyproject:
        pyproject.write('\n[tool.testlane.env]\nAPP_EVENTS = "{valkey.prefix}events"\n')
    pytester.makepyfile(test_x_it="def test_x():\n    pass\n")
    result = run(pytester)
    assert result.ret != 0
    output = result.stdout.str() + result.stderr.str()
    assert "valkey has no part 'prefix'" in output
    assert "channel_prefix" in output
    assert "Traceback" not in output
