"""The web harness against real servers and sockets: live servers start, serve and stop leaving nothing
behind; WebSocket waits time out on silent servers with messages that say what arrived."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from testlane import (
    LiveServer,
    ServiceStartError,
    WsClient,
    WsClosed,
    WsConnectError,
    WsTimeout,
)
from testlane.pytest_plugin.web import FROZEN_AT, WsClients


def make_app() -> FastAPI:
    """A small app: HTTP endpoints, and WebSocket endpoints that talk, stay silent, broadcast or hang up."""
    app = FastAPI()
    app.state.sockets = set()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/now")
    async def now() -> dict[str, float | str]:
        return {"time": time.time(), "datetime": dt.datetime.now(dt.UTC).isoformat()}

    @app.get("/upstream")
    async def upstream() -> Any:
        async with httpx.AsyncClient() as client:
            response = await client.get("https://api.example.com/v1/status")
        return response.json()

    @app.get("/forever")
    async def forever() -> StreamingResponse:
        async def lines() -> AsyncIterator[bytes]:
            n = 0
            while True:
                yield f"line {n}\n".encode()
                n += 1
                await asyncio.sleep(0.05)

        return StreamingResponse(lines())

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "system", "message": "Connected"})
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                data = await websocket.receive_json()
                if "id" in data:
                    await websocket.send_json({"type": "noise"})  # overtakes the answer
                    await websocket.send_json({"id": data["id"], "success": True, "data": data.get("payload")})
                else:
                    await websocket.send_json(data)

    @app.websocket("/silent")
    async def silent(websocket: WebSocket) -> None:
        await websocket.accept()
        with contextlib.suppress(WebSocketDisconnect):
            await websocket.receive_text()  # never answers

    @app.websocket("/one-chunk")
    async def one_chunk(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "chunk", "delta": "Hel"})
        await websocket.send_json({"type": "status", "busy": True})
        with contextlib.suppress(WebSocketDisconnect):
            await websocket.receive_text()

    @app.websocket("/hang-up")
    async def hang_up(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"type": "chunk", "delta": "Hel"})
        await websocket.close(code=4000, reason="bye")

    @app.websocket("/room")
    async def room(websocket: WebSocket) -> None:
        await websocket.accept()
        app.state.sockets.add(websocket)
        try:
            await websocket.send_json({"type": "joined", "count": len(app.state.sockets)})
            while True:
                text = await websocket.receive_text()
                for other in list(app.state.sockets):
                    await other.send_json({"type": "said", "text": text})
        except WebSocketDisconnect:
            pass
        finally:
            app.state.sockets.discard(websocket)

    @app.websocket("/ignores-cancel")
    async def ignores(websocket: WebSocket) -> None:
        await websocket.accept()
        await asyncio.sleep(3600)  # never reads: only cancellation ends it

    return app


def server_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("live-server-")]


def refuses(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def server(live_server: Any) -> LiveServer:
    started: LiveServer = live_server(make_app())
    return started


# --------------------------------------------------------------------------- live server


def test_a_live_server_serves_on_a_free_port_and_stops_leaving_nothing() -> None:
    with LiveServer(make_app()) as server:
        port = server.port
        assert server.running and port > 0
        assert server.url == f"http://127.0.0.1:{port}"
        assert server.ws_url == f"ws://127.0.0.1:{port}"
        assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
        assert server_threads() == [server.name]
    assert not server.running
    assert server_threads() == []
    assert refuses(port)
    with pytest.raises(RuntimeError, match="is not running"):
        _ = server.url


def test_stopping_frees_the_port() -> None:
    server = LiveServer(make_app()).start()
    port = server.port
    server.stop()
    server.stop()  # idempotent
    assert refuses(port)
    assert server_threads() == []


def test_each_server_gets_its_own_port(live_server: Any) -> None:
    first, second = live_server(make_app()), live_server(make_app())
    assert first.port != second.port
    assert httpx.get(f"{second.url}/health").status_code == 200


def test_stop_force_closes_open_connections(server: LiveServer, ws_client: WsClients) -> None:
    talking = ws_client(f"{server.ws_url}/echo")
    talking.wait_for_message({"type": "system"})
    silent = ws_client(f"{server.ws_url}/silent")
    with httpx.Client(timeout=5) as http, http.stream("GET", f"{server.url}/forever") as response:
        lines = response.iter_lines()
        assert next(lines) == "line 0"  # a response in the middle of streaming
        started = time.monotonic()
        server.stop()
        elapsed = time.monotonic() - started
        with pytest.raises(httpx.HTTPError):
            for _ in lines:
                pass
    assert elapsed < 4, f"stop took {elapsed:.2f}s"
    for client in (talking, silent):
        with pytest.raises(WsClosed, match=r"was closed \(code 1006\)"):
            client.recv(timeout=2)
        assert client.closed
    assert server_threads() == []


def test_a_handler_that_ignores_its_disconnect_is_cancelled_after_the_grace(ws_client: WsClients) -> None:
    server = LiveServer(make_app(), grace=1).start()
    ws_client(f"{server.ws_url}/ignores-cancel")
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 4  # the grace (1 s), then the handler is cancelled
    assert server_threads() == []


def test_a_failing_lifespan_is_a_start_error_with_the_app_s_traceback() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("database unreachable at startup")
        yield

    with pytest.raises(ServiceStartError) as caught:
        LiveServer(FastAPI(lifespan=lifespan)).start()
    text = str(caught.value)
    assert "live server for fastapi.applications.FastAPI did not start: uvicorn exited during startup" in text
    assert "RuntimeError: database unreachable at startup" in text
    assert "hint:" in text
    assert server_threads() == []


def test_a_taken_port_is_a_start_error_saying_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServiceStartError, match=r"(?i)address already in use"):
            LiveServer(make_app(), port=port).start()
    assert server_threads() == []


def test_the_app_sees_the_test_s_frozen_clock(server: LiveServer, frozen_time: Any) -> None:
    now = httpx.get(f"{server.url}/now").json()
    assert now["time"] == FROZEN_AT.timestamp()
    assert now["datetime"] == "2024-01-01T12:00:00+00:00"
    frozen_time.shift(60)
    assert httpx.get(f"{server.url}/now").json()["time"] == FROZEN_AT.timestamp() + 60


@pytest.mark.frozen_time("2030-05-01T09:30:00+00:00")
def test_the_frozen_instant_can_be_chosen(frozen_time: Any) -> None:
    assert dt.datetime.now(dt.UTC) == dt.datetime(2030, 5, 1, 9, 30, tzinfo=dt.UTC)


def test_the_app_s_outgoing_calls_are_mocked_while_the_test_reaches_the_server(
    server: LiveServer, http_mock: Any
) -> None:
    route = http_mock.get("https://api.example.com/v1/status").respond(200, json={"upstream": "mocked"})
    response = httpx.get(f"{server.url}/upstream")  # loopback: passes through to the live server
    assert response.json() == {"upstream": "mocked"}  # the app's own call, from the server's thread: mocked
    assert route.call_count == 1


def test_an_unmocked_call_from_the_app_is_recorded(server: LiveServer, http_mock: Any) -> None:
    response = httpx.get(f"{server.url}/upstream")
    assert response.status_code == 500  # the app did not handle the error
    assert http_mock.unmocked == ["GET https://api.example.com/v1/status"]
    http_mock.unmocked.clear()  # expected here; otherwise the fixture fails the test in teardown


# --------------------------------------------------------------------------- WebSocket client


def test_a_silent_server_times_out_saying_what_was_awaited(server: LiveServer, ws_client: WsClients) -> None:
    client = ws_client(f"{server.ws_url}/silent")
    started = time.monotonic()
    with pytest.raises(WsTimeout) as caught:
        client.wait_for_message({"type": "system"}, timeout=0.3)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 4
    assert str(caught.value) == (
        f'no message matching {{"type": "system"}} arrived within 0.3s on {server.ws_url}/silent'
        "\n  other messages received and still pending: none"
    )


def test_collect_short_of_n_says_received_k_of_n_and_what_arrived(server: LiveServer, ws_client: WsClients) -> None:
    client = ws_client(f"{server.ws_url}/one-chunk")
    with pytest.raises(WsTimeout) as caught:
        client.collect(3, {"type": "chunk"}, timeout=0.5)
    assert str(caught.value) == (
        f'received 1 of 3 messages matching {{"type": "chunk"}} within 0.5s on {server.ws_url}/one-chunk'
        '\n  received (1):\n    {"type": "chunk", "delta": "Hel"}'
        '\n  other messages received and still pending (1):\n    {"type": "status", "busy": true}'
    )
    assert caught.value.matched == [{"type": "chunk", "delta": "Hel"}]


def test_a_server_that_hangs_up_mid_wait_says_so(server: LiveServer, ws_client: WsClients) -> None:
    client = ws_client(f"{server.ws_url}/hang-up")
    with pytest.raises(WsClosed) as caught:
        client.collect(3, {"type": "chunk"}, timeout=5)
    assert str(caught.value).startswith(
        f"{server.ws_url}/hang-up was closed (code 4000, 'bye') before the wait was over: "
        'received 1 of 3 messages matching {"type": "chunk"}'
    )
    assert (caught.value.code, caught.value.reason) == (4000, "bye")
    with pytest.raises(WsClosed, match=r"^cannot send to .*/hang-up: it was closed \(code 4000, 'bye'\)$"):
        client.send({"too": "late"})


def test_command_answers_match_their_id_whatever_arrives_first(server: LiveServer, ws_client: WsClients) -> None:
    client = ws_client(f"{server.ws_url}/echo")
    first = client.command("add", {"a": 1})
    second = client.command("add", {"a": 2})
    assert (first["data"], second["data"]) == ({"a": 1}, {"a": 2})
    assert first["id"] != second["id"]
    assert client.pending == [{"type": "system", "message": "Connected"}, {"type": "noise"}, {"type": "noise"}]


def test_several_clients_for_a_broadcast(server: LiveServer, ws_client: WsClients) -> None:
    clients = ws_client.many(3, f"{server.ws_url}/room")
    for expected, client in enumerate(clients, start=1):
        assert client.wait_for_message({"type": "joined"})["count"] == expected
    clients[0].send("hello room")
    for client in clients:
        assert client.wait_for_message({"type": "said"}) == {"type": "said", "text": "hello room"}


@pytest.mark.asyncio
async def test_the_client_works_the_same_from_an_async_test(server: LiveServer, ws_client: WsClients) -> None:
    client = ws_client(f"{server.ws_url}/echo")  # blocking waits: the server runs on its own loop
    await asyncio.sleep(0)
    assert client.command("add", {"a": 3})["data"] == {"a": 3}


def test_opening_times_out_on_a_server_that_never_answers_the_handshake() -> None:
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()  # the kernel accepts the connection; nobody reads the upgrade request
        url = f"ws://127.0.0.1:{mute.getsockname()[1]}/chat"
        started = time.monotonic()
        with pytest.raises(WsTimeout, match=rf"^timed out after 0.3s opening a WebSocket to {url}$"):
            WsClient.connect(url, timeout=0.3)
        assert time.monotonic() - started < 4


def test_opening_fails_clearly_when_nothing_listens_or_the_path_is_wrong(server: LiveServer) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(WsConnectError, match=rf"could not connect to ws://127.0.0.1:{port}/x"):
        WsClient.connect(f"ws://127.0.0.1:{port}/x", timeout=1)
    with pytest.raises(WsConnectError, match=r"refused the WebSocket handshake .* HTTP 403") as caught:
        WsClient.connect(f"{server.ws_url}/no-such-endpoint")
    assert caught.value.status == 403


def test_opening_fails_clearly_when_the_server_is_not_a_websocket_server(live_server: Any) -> None:
    async def plain(scope: Any, receive: Any, send: Any) -> None:  # answers everything with 200, upgrades nothing
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"hello"})
        elif scope["type"] == "websocket":
            await send({"type": "websocket.http.response.start", "status": 200, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"not here"})

    server = live_server(plain, lifespan="off")
    with pytest.raises(WsConnectError, match=rf"{server.ws_url}/ws.*HTTP 200"):
        WsClient.connect(f"{server.ws_url}/ws")


def test_closing_clients_ends_their_reader_threads(server: LiveServer) -> None:
    before = {t.ident for t in threading.enumerate()}
    clients = [WsClient.connect(f"{server.ws_url}/echo") for _ in range(3)]
    assert len({t.ident for t in threading.enumerate()} - before) == 3  # websockets.sync reads in a thread
    for client in clients:
        client.close()
        client.close()  # idempotent
    assert {t.ident for t in threading.enumerate()} - before == set()
