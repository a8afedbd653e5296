"""The web harness: test HTTP and WebSocket backends through their real interfaces.

One module per concept, none imported until used (uvicorn, websockets, respx, polyfactory load
lazily):

``live_server``  :class:`LiveServer` — any ASGI app served by uvicorn on a free port, in a thread
``websocket``    :class:`WsClient` — a WebSocket client whose every wait has a deadline
``mocks``        :func:`http_mock` — respx, strict: an unmocked request fails, naming its URL
``streams``      :func:`fake_stream` — async-generator stand-ins for streamed responses
``spies``        :class:`Spies` — call-through spies and stubs, restored together
``factories``    :func:`seed`, :func:`aseed` — factory-built rows written through a real session

The pytest fixtures built on them (``live_server``, ``ws_client``, ``http_mock``, ``frozen_time``,
``spy``) live in :mod:`testlane.pytest_plugin.web`; docs/web.md walks through all of it.
"""
