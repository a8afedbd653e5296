"""RabbitMQ queue seams: competing consumers, a consumer that dies holding a message, a slow consumer.

Built on :mod:`testlane.seams.queue` (every consumer records what it received in a
:class:`~testlane.seams.queue.Deliveries` log; the assertions list what each consumer got). With pika:

* :class:`Consumer` — a consumer on its own connection in a thread (prefetch 1, manual acks): it
  records each message (with RabbitMQ's ``redelivered`` flag), calls ``handler(body)`` — the code under
  test, a ``Callable[[str], object]`` called with the message body decoded as UTF-8 (``"job-3"``, the
  same text ``body=`` arguments, :class:`~testlane.seams.queue.Deliveries` and failure messages use;
  what it returns is ignored, an exception it raises kills the consumer) — and acks after it
  (``ack_before_handling=True`` is the classic bug, for showing what the seams catch). ``hold=True``
  keeps the message unacked until :meth:`Consumer.kill` (its TCP connection shut down under pika, as
  when its process dies) or :meth:`Consumer.stop`.
* :class:`ConsumerProcess` — the same in a child process, to be killed with
  :func:`~testlane.seams.kill.kill_process`.
* :func:`assert_exactly_once` — (a) two consumers on one queue: each message handled exactly once.
* :func:`assert_redelivered_after_death` — (b) a consumer dies holding an unacked message: the broker
  requeues it when the connection goes and the survivor receives it once, flagged ``redelivered``
  (about 2 ms after the death on testlane's node).
* :func:`assert_slow_consumer_redelivered` — (c) a consumer paused past ``consumer_timeout``: the broker closes its
  channel (PRECONDITION_FAILED) and the message goes to another consumer, flagged ``redelivered``.
  RabbitMQ 3.10 has no per-queue ``x-consumer-timeout`` (3.12 added it; 3.10 ignores the argument:
  measured). The node-wide ``consumer_timeout`` is read when a channel opens, so on testlane's own node
  the seam sets it (``rabbitmqctl eval``), opens the slow consumer's channel, and sets it back: only
  channels opened in that window (about a second) get the short deadline. The node checks it every
  ``channel_tick_interval``, lowered to 1 s on testlane's node (default 60 s). Not on the ``url`` and
  ``container`` backends.

Example (a test in the integration lane, fixture ``rabbitmq_vhost``; docs/seams.md has more)::

    from testlane.seams.rabbitmq import assert_exactly_once


    def test_each_job_is_handled_once(rabbitmq_vhost):
        handled = []

        def handle_job(body: str) -> None:  # the code under test: the body as text
            handled.append(body)

        assert_exactly_once(rabbitmq_vhost, messages=10, handler=handle_job)
        assert sorted(handled) == sorted(f"job-{i}" for i in range(1, 11))
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from testlane.core.errors import SeamError
from testlane.core.waiting import WaitTimeout, wait_until
from testlane.seams.kill import kill_process
from testlane.seams.queue import Deliveries, assert_delivered_once, assert_redelivered

if TYPE_CHECKING:
    import pika

    from testlane.services.rabbitmq import RabbitMqServer

__all__ = [
    "Consumer",
    "ConsumerProcess",
    "Handler",
    "assert_exactly_once",
    "assert_redelivered_after_death",
    "assert_slow_consumer_redelivered",
    "declare_queue",
    "publish",
]

Handler = Callable[[str], object]
"""``handler(body: str) -> object``: the code under test, called with the message body decoded as UTF-8."""


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def _params(target: Any) -> pika.ConnectionParameters:
    """Connection parameters from a ``rabbitmq_vhost``, a ``rabbitmq`` server handle, or parameters."""
    make = getattr(target, "connection_parameters", None)
    return make() if callable(make) else target


def _server(target: Any) -> RabbitMqServer:
    from testlane.services.rabbitmq import RabbitMqServer

    server = getattr(target, "server", target)
    if not isinstance(server, RabbitMqServer):
        raise SeamError("this seam needs a rabbitmq_vhost or the rabbitmq fixture (testlane's own node)")
    return server


def _url(target: Any) -> str:
    url = getattr(target, "url", None)
    if not isinstance(url, str):
        raise SeamError("a consumer process needs a rabbitmq_vhost or the rabbitmq fixture (an AMQP URL)")
    return url


def declare_queue(target: Any, name: str = "") -> str:
    """Declare a (non-durable) queue ``name`` (default: ``tl_seam_<hex>``) on ``target``; its name."""
    import pika

    name = name or f"tl_seam_{secrets.token_hex(4)}"
    with contextlib.closing(pika.BlockingConnection(_params(target))) as conn:
        conn.channel().queue_declare(name)
    return name


def publish(target: Any, queue: str, bodies: Iterable[bytes | str]) -> None:
    """Publish ``bodies`` to ``queue`` through the default exchange, with publisher confirms."""
    import pika

    with contextlib.closing(pika.BlockingConnection(_params(target))) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish("", queue, body.encode() if isinstance(body, str) else body)


class Consumer:
    """A pika consumer in a thread, recording into ``deliveries`` as ``name`` (see module docstring).

    ``handler(body: str)`` gets each message body decoded as UTF-8 (``"job-3"``, as in ``Deliveries``);
    the message is acked after it returns, and an exception it raises makes the consumer die unacked."""

    def __init__(
        self,
        target: Any,
        queue: str,
        name: str,
        deliveries: Deliveries,
        *,
        handler: Handler | None = None,
        ack_before_handling: bool = False,
        hold: bool = False,
        prefetch: int = 1,
        around_channel: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        self.around_channel = around_channel or contextlib.nullcontext
        self.params = _params(target)
        self.queue = queue
        self.name = name
        self.deliveries = deliveries
        self.handler = handler
        self.ack_before_handling = ack_before_handling
        self.hold = hold
        self.prefetch = prefetch
        self.acked = 0
        self.failed: BaseException | None = None  # what the handler raised (the consumer then died)
        self.closed_by: BaseException | None = None  # what ended the consumer (a broker's channel close...)
        self.holding = threading.Event()
        self.killed_at: float | None = None
        self._consuming = threading.Event()
        self._stop = threading.Event()
        self._release = threading.Event()
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._thread = threading.Thread(target=self._run, name=f"rabbitmq-consumer-{name}", daemon=True)

    def start(self, timeout: float = 10.0) -> Consumer:
        """Connect and subscribe (in the thread); returns once it consumes."""
        self._thread.start()
        wait_until(
            lambda: self._consuming.is_set() or self.closed_by is not None,
            timeout=timeout,
            what=f"consumer {self.name} to subscribe to {self.queue}",
        )
        if self.closed_by is not None:
            raise SeamError(f"consumer {self.name} could not subscribe to {self.queue}: {self.closed_by!r}")
        return self

    def _run(self) -> None:
        import pika

        try:
            conn = self._conn = pika.BlockingConnection(self.params)
            with self.around_channel():
                channel = self._channel = conn.channel()
            channel.basic_qos(prefetch_count=self.prefetch)
            channel.basic_consume(self.queue, self._on_message, auto_ack=False)
            self._consuming.set()
            while not self._stop.is_set() and channel.is_open:
                conn.process_data_events(time_limit=0.02)
            if self.killed_at is None:
                conn.process_data_events(time_limit=0)  # a close the broker sent while the handler held
            if channel.is_closed and self.closed_by is None:
                self.closed_by = getattr(channel._impl, "_closing_reason", None) or SeamError("channel closed")
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.closed_by = exc
        finally:
            if self._conn is not None and self.killed_at is None:
                with contextlib.suppress(Exception):
                    self._conn.close()

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.deliveries.record(self.name, body, redelivered=bool(method.redelivered))
        if self.ack_before_handling:
            channel.basic_ack(method.delivery_tag)
            self.acked += 1
        if self.hold:
            self.holding.set()
            self._release.wait()  # until killed or stopped: never acked
            return
        if self.handler is not None:
            try:
                self.handler(_text(body))
            except Exception as exc:  # the handler crashed: the consumer dies as its process would
                self.failed = exc
                self.killed_at = time.monotonic()
                self._drop_connection()
                self._stop.set()
                return
        if not self.ack_before_handling:
            channel.basic_ack(method.delivery_tag)
            self.acked += 1

    def kill(self, timeout: float = 10.0) -> None:
        """Die as a killed process would: the TCP connection is shut down under pika (no channel or
        connection close, no ack); the broker requeues what this consumer held."""
        self.killed_at = time.monotonic()
        self._drop_connection()
        self._stop.set()
        self._release.set()
        self._thread.join(timeout)

    def _drop_connection(self) -> None:
        sock = getattr(getattr(getattr(self._conn, "_impl", None), "_transport", None), "_sock", None)
        if not isinstance(sock, socket.socket):
            raise SeamError(f"consumer {self.name} has no open connection to kill")
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    @property
    def unacked(self) -> int:
        """Messages received and not acked (requeued by the broker once this consumer is gone)."""
        return len(self.deliveries.of(self.name)) - self.acked

    def stop(self, timeout: float = 10.0) -> None:
        """Stop consuming and close the connection (a message still held is requeued by the broker)."""
        self._stop.set()
        self._release.set()
        self._thread.join(timeout)

    def __enter__(self) -> Consumer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_PROCESS_CONSUMER = """
import os, sys, pika
conn = pika.BlockingConnection(pika.URLParameters(os.environ["RABBITMQ_SEAM_URL"]))
channel = conn.channel()
channel.basic_qos(prefetch_count=1)
def on_message(channel, method, properties, body):
    sys.stdout.write(f"{int(method.redelivered)} {body.hex()}\\n")
    sys.stdout.flush()
    if os.environ.get("RABBITMQ_SEAM_HOLD") != "1":
        channel.basic_ack(method.delivery_tag)
channel.basic_consume(os.environ["RABBITMQ_SEAM_QUEUE"], on_message, auto_ack=False)
sys.stdout.write("consuming\\n")
sys.stdout.flush()
channel.start_consuming()
"""


class ConsumerProcess:
    """A consumer in a child process (``hold``: it never acks), relaying what it receives into
    ``deliveries`` as ``name``; :meth:`kill` SIGKILLs it (:func:`kill_process`). The URL reaches the
    child in its environment, never on its command line."""

    def __init__(self, target: Any, queue: str, name: str, deliveries: Deliveries, *, hold: bool = True) -> None:
        self.url, self.queue, self.name, self.deliveries, self.hold = _url(target), queue, name, deliveries, hold
        self.proc: subprocess.Popen[str] | None = None
        self.killed_at: float | None = None
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> ConsumerProcess:
        env = {
            **os.environ,
            "RABBITMQ_SEAM_URL": self.url,
            "RABBITMQ_SEAM_QUEUE": self.queue,
            "RABBITMQ_SEAM_HOLD": "1" if self.hold else "0",
        }
        proc = self.proc = subprocess.Popen(
            [sys.executable, "-c", _PROCESS_CONSUMER], stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout is not None
        consuming = threading.Event()

        def relay() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == "consuming":
                    consuming.set()
                    continue
                flag, _, body = line.strip().partition(" ")
                self.deliveries.record(self.name, bytes.fromhex(body), redelivered=flag == "1")

        self._reader = threading.Thread(target=relay, name=f"rabbitmq-consumer-{self.name}", daemon=True)
        self._reader.start()
        wait_until(
            lambda: consuming.is_set() or proc.poll() is not None,
            timeout=timeout,
            what=f"consumer process {self.name} to subscribe",
        )
        if not consuming.is_set():
            raise SeamError(f"consumer process {self.name} exited with code {proc.returncode} before subscribing")
        return self

    def kill(self) -> None:
        """SIGKILL the process and wait until it has exited."""
        if self.proc is not None:
            self.killed_at = time.monotonic()
            kill_process(self.proc)
            if self._reader is not None:
                self._reader.join(5)


@contextlib.contextmanager
def _consumers(consumers: list[Consumer]) -> Iterator[list[Consumer]]:
    try:
        for consumer in consumers:
            consumer.start()
        yield consumers
    finally:
        for consumer in consumers:
            if consumer.killed_at is None:
                consumer.stop()


def _delete_queue(target: Any, queue: str) -> None:
    import pika

    with contextlib.suppress(Exception), contextlib.closing(pika.BlockingConnection(_params(target))) as conn:
        conn.channel().queue_delete(queue)


def _ready_count(target: Any, queue: str) -> int:
    import pika

    with contextlib.closing(pika.BlockingConnection(_params(target))) as conn:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)


def assert_exactly_once(
    target: Any,
    *,
    messages: int = 10,
    consumers: tuple[str, ...] = ("a", "b"),
    handler: Handler | None = None,
    ack_before_handling: bool = False,
    timeout: float = 10.0,
) -> Deliveries:
    """(a) ``consumers`` compete on one queue of ``target`` (a ``rabbitmq_vhost``); ``messages`` jobs
    (``job-1``...) are published; each must be received exactly once. ``handler(body: str)`` is the code
    under test, called by each consumer with the body as text (``"job-3"``) before it acks; raising
    kills that consumer (its message is redelivered to another). Waits until every job arrived, was
    acked and the queue is empty (so a redelivery cannot still come), then asserts; returns the log."""
    __tracebackhide__ = True
    deliveries = Deliveries()
    queue = declare_queue(target)
    jobs = [f"job-{n}" for n in range(1, messages + 1)]
    try:
        made = [
            Consumer(target, queue, name, deliveries, handler=handler, ack_before_handling=ack_before_handling)
            for name in consumers
        ]
        with _consumers(made):
            publish(target, queue, jobs)
            with contextlib.suppress(WaitTimeout):  # the assertion says what arrived
                deliveries.wait_for(messages, timeout=timeout)
                # Settled: every live consumer acked what it got, what dead ones held came back (counted
                # by them: a redelivery cannot still be on its way), and nothing is left in the queue.
                wait_until(
                    lambda: (
                        all(c.unacked == 0 for c in made if c.killed_at is None)
                        and len(deliveries) >= messages + sum(c.unacked for c in made if c.killed_at is not None)
                        and _ready_count(target, queue) == 0
                    ),
                    timeout=timeout,
                    what=f"the consumers to ack every message of {queue}",
                )
        assert_delivered_once(deliveries, jobs)
    finally:
        _delete_queue(target, queue)
    return deliveries


def assert_redelivered_after_death(
    target: Any,
    *,
    body: str = "job-1",
    process: bool = False,
    ack_before_handling: bool = False,
    timeout: float = 5.0,
) -> Deliveries:
    """(b) consumer ``doomed`` receives ``body`` and dies holding it (its connection dropped; with
    ``process``, its process SIGKILLed); consumer ``survivor`` must then receive it exactly once more,
    flagged ``redelivered``. ``ack_before_handling`` makes ``doomed`` ack on receipt (the bug this seam
    catches). Returns the log; ``deliveries.redelivery_ms`` is the time from the death to the redelivery."""
    __tracebackhide__ = True
    deliveries = Deliveries()
    queue = declare_queue(target)
    try:
        survivor = Consumer(target, queue, "survivor", deliveries)
        if process:
            doomed_proc = ConsumerProcess(target, queue, "doomed", deliveries).start()
            publish(target, queue, [body])
            deliveries.wait_for(1, timeout=timeout)
            if ack_before_handling:
                raise SeamError("ack_before_handling is for the thread consumer (process=False)")
            with _consumers([survivor]):
                doomed_proc.kill()
                killed_at = doomed_proc.killed_at
                _await_redelivery(deliveries, timeout)
        else:
            doomed = Consumer(target, queue, "doomed", deliveries, hold=True, ack_before_handling=ack_before_handling)
            with _consumers([doomed]):
                publish(target, queue, [body])
                doomed.holding.wait(timeout)
                with _consumers([survivor]):
                    doomed.kill()
                    killed_at = doomed.killed_at
                    _await_redelivery(deliveries, timeout)
        _timing(deliveries, killed_at)
        _assert_redelivered_flagged(deliveries, body, "doomed", "survivor")
    finally:
        _delete_queue(target, queue)
    return deliveries


def _await_redelivery(deliveries: Deliveries, timeout: float) -> None:
    with contextlib.suppress(WaitTimeout):  # the assertion says what arrived
        deliveries.wait_for(2, timeout=timeout)


def _timing(deliveries: Deliveries, since: float | None) -> None:
    items = deliveries.all
    started = deliveries._started
    if since is not None and len(items) >= 2:
        deliveries.redelivery_ms = max(0.0, (started + items[1].at - since) * 1000)  # type: ignore[attr-defined]


def _assert_redelivered_flagged(deliveries: Deliveries, body: str, first: str, then: str) -> None:
    __tracebackhide__ = True
    assert_redelivered(deliveries, body, first=first, then=then)
    again = [d for d in deliveries.of(then) if d.body == body]
    if again and not again[0].redelivered:
        raise AssertionError(
            f"expected {body} to reach {then} flagged redelivered=True (RabbitMQ sets it on a requeued "
            f"message), but it was not:\n" + deliveries.report([first, then])
        )


def assert_slow_consumer_redelivered(
    target: Any,
    *,
    body: str = "job-1",
    consumer_timeout_ms: int = 2000,
    timeout: float | None = None,
) -> Deliveries:
    """(c) consumer ``slow`` receives ``body`` and stalls past ``consumer_timeout_ms``: the broker must
    close its channel and consumer ``fast`` receive the message once more, flagged ``redelivered``.
    testlane's own node only (see module docstring). ``deliveries.slow_closed_by`` is what ended
    ``slow``'s channel."""
    __tracebackhide__ = True
    server = _server(target)
    deliveries = Deliveries()
    queue = declare_queue(target)
    deadline = timeout if timeout is not None else consumer_timeout_ms / 1000 + 5.0

    @contextlib.contextmanager
    def short_deadline() -> Iterator[None]:
        # consumer_timeout is read when a channel opens: set around opening the slow consumer's channel.
        server.rabbitmqctl("eval", f"application:set_env(rabbit, consumer_timeout, {int(consumer_timeout_ms)}).")
        try:
            yield
        finally:
            server.rabbitmqctl("eval", "application:unset_env(rabbit, consumer_timeout).")

    slow = Consumer(target, queue, "slow", deliveries, hold=True, around_channel=short_deadline)
    fast = Consumer(target, queue, "fast", deliveries)
    try:
        with _consumers([slow]):
            publish(target, queue, [body])
            slow.holding.wait(deadline)
            with _consumers([fast]):
                _await_redelivery(deliveries, deadline)
        deliveries.slow_closed_by = slow.closed_by  # type: ignore[attr-defined]
        _assert_redelivered_flagged(deliveries, body, "slow", "fast")
    finally:
        _delete_queue(target, queue)
    return deliveries
