"""The web fixtures on generated projects: spies restored between tests, the strict HTTP mock failing a test
that swallowed the error, live servers refused by the unit lane, and no leak left by servers or clients."""

from __future__ import annotations

import pytest

from tests.helpers import plain_project, run_inner

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("plain_env")]

APP = """
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

def make_app():
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_json({"type": "system", "message": "Connected"})
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass

    return app
"""


def test_spies_are_restored_after_each_test(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(
        test_spies="""
        import json

        class Clock:
            def now(self):
                return 1

        def test_1_spies_and_stubs(spy):
            spy(Clock, "now")
            spy.stub(json, "dumps", return_value="stubbed")
            assert Clock().now() == 1 and json.dumps([]) == "stubbed"

        def test_2_fails_while_stubbed(spy):
            spy.stub(Clock, "now", return_value=99)
            assert Clock().now() == 1

        def test_3_sees_the_originals():
            assert json.dumps([]) == "[]"
            assert Clock().now() == 1
            assert not hasattr(Clock.now, "mock")
        """
    )
    run_inner(pytester).assert_outcomes(passed=2, failed=1)


def test_an_unmocked_request_fails_the_test_even_when_swallowed(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(
        test_http="""
        import httpx

        def fetch_rates():
            try:
                return httpx.get("https://rates.example.com/v2/eur?fresh=1").json()
            except Exception:
                return {}  # a "resilient" client hides the failure

        def test_swallowed(http_mock):
            assert fetch_rates() == {}

        def test_mocked(http_mock):
            http_mock.get("https://rates.example.com/v2/eur").respond(200, json={"usd": 1.1})
            assert fetch_rates() == {"usd": 1.1}

        def test_raised(http_mock):
            httpx.get("https://other.example.com/")
        """
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_swallowed*made HTTP requests that no http_mock route matches (the code under test swallowed*",
            "*GET https://rates.example.com/v2/eur?fresh=1*",
            "*UnmockedRequestError: HTTP request not mocked: GET https://other.example.com/*",
        ]
    )
    assert "test_raised - Failed" not in result.stdout.str()  # the raised one fails once, not again in teardown


def test_live_server_in_the_unit_lane_says_how_to_fix_it(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(app=APP)
    pytester.makepyfile(test_unit="from app import make_app\n\ndef test_x(live_server):\n    live_server(make_app())\n")
    result = run_inner(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*test_x uses live_server in the unit lane, which blocks connections to 127.0.0.1*unit_allow_hosts*"]
    )


def test_live_server_in_the_unit_lane_when_loopback_is_allowed(pytester: pytest.Pytester) -> None:
    plain_project(pytester, '[tool.testlane.lanes]\nunit_allow_hosts = ["127.0.0.1"]')
    pytester.makepyfile(app=APP)
    pytester.makepyfile(
        test_unit="""
        from app import make_app

        def test_x(live_server, ws_client):
            server = live_server(make_app())
            assert ws_client(server.ws_url + "/ws").recv() == {"type": "system", "message": "Connected"}
        """
    )
    run_inner(pytester).assert_outcomes(passed=1)


def test_servers_and_clients_leave_nothing_the_leak_detector_sees(pytester: pytest.Pytester) -> None:
    plain_project(pytester, '[tool.testlane.discipline]\nleaks = "fail"')
    pytester.makepyfile(app=APP)
    pytester.makepyfile(
        test_web_it="""
        from app import make_app
        from testlane import LiveServer

        def test_fixtures_clean_up(live_server, ws_client):
            servers = [live_server(make_app()), live_server(make_app())]
            for server in servers:
                for client in ws_client.many(2, server.ws_url + "/ws"):
                    client.wait_for_message({"type": "system"})

        def test_context_manager_cleans_up():
            with LiveServer(make_app()) as server:
                assert server.port

        def test_a_server_left_running_is_reported():
            LiveServer(make_app()).start()
        """
    )
    result = run_inner(pytester, "--it")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        ["*test_a_server_left_running_is_reported left running: thread 'live-server-*listening socket 127.0.0.1:*"]
    )


def test_a_server_stops_before_the_fixtures_set_up_before_it_are_torn_down(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(
        test_order_it="""
        import contextlib
        import pytest
        from fastapi import FastAPI

        events = []

        def app():
            @contextlib.asynccontextmanager
            async def lifespan(app):
                events.append("server up")
                yield
                events.append("server down")
            return FastAPI(lifespan=lifespan)

        @pytest.fixture
        def database():  # stands for pg_database: requested *after* live_server, set up after it
            events.append("database up")
            yield
            events.append("database down")

        def test_serves(live_server, database):
            live_server(app())

        def test_order():
            assert events == ["database up", "server up", "server down", "database down"]
        """
    )
    run_inner(pytester, "--it").assert_outcomes(passed=2)
