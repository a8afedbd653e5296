"""A service kind defined only in the tests: Python's own HTTP server (``python -m http.server``).

It shows that adding a service is one module plus its registration (:func:`register_httpd`): nothing in
``src/`` names it, yet the stack starts and stops it, the registry records and reaps it, its variables and
``[tool.testlane.env]`` parts render, and ``testlane services``/``doctor`` list it.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from testlane.core.config import Settings
from testlane.services import kinds
from testlane.services.base import Launch, Server
from testlane.services.kinds import DoctorCheck, Section, ServiceKind
from testlane.services.privileges import ServiceUser
from testlane.services.process_engine import ProcessEngine

NAME = "httpd"


class HttpServer(Server):
    engine: ClassVar[str] = NAME

    def ping(self, timeout: float = 2.0) -> None:
        with urllib.request.urlopen(f"http://{self.host}:{self.port}/", timeout=timeout) as answer:
            answer.read()

    def env(self) -> dict[str, str]:
        return {"TESTLANE_HTTPD_URL": self.url, "TESTLANE_HTTPD_PORT": str(self.port)}


class HttpdLaunch(Launch):
    def argv(self, port: int) -> list[str]:
        return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", "."]

    def make_server(self, popen: subprocess.Popen[bytes]) -> Server:
        return HttpServer(self.instance, registry=self.registry, popen=popen, owned=True)


class HttpdEngine(ProcessEngine[HttpServer]):
    kind = NAME

    @property
    def user(self) -> ServiceUser | None:
        # As root, the real kinds run as the service user; the test's interpreter may live where that user
        # cannot reach it (/root/.pyenv), and this server holds nothing to protect: it runs as we do.
        return None

    def launch(
        self,
        name: str,
        *,
        detached: bool = False,
        die_with_parent: bool = True,
        data_source: Path | None = None,
    ) -> Launch:
        instance = self.new_instance(name, detached=detached, backend=self.backend, version=sys.version.split()[0])
        options = self.launch_options(instance, fixed_port=0, detached=detached, die_with_parent=die_with_parent)
        return HttpdLaunch(**options)


@dataclass(frozen=True)
class HttpdSection:
    backend: str = "local"
    url: str = ""
    port: int = 0


class HttpdKind(ServiceKind):
    name: ClassVar[str] = NAME
    display: ClassVar[str] = "Python's HTTP server"
    schemes: ClassVar[tuple[str, ...]] = ("http",)
    default_port: ClassVar[int] = 80
    handle: ClassVar[type[Server]] = HttpServer
    engine: ClassVar[type[ProcessEngine[Any]]] = HttpdEngine
    env_names: ClassVar[tuple[str, ...]] = ("TESTLANE_HTTPD_URL", "TESTLANE_HTTPD_PORT")
    backends: ClassVar[tuple[str, ...]] = ("local", "url")
    env_parts: ClassVar[tuple[str, ...]] = ("url", "host", "port")
    env_drivers: ClassVar[dict[str, str]] = {"http": "http"}
    aliases: ClassVar[tuple[str, ...]] = ("webserver",)

    def section(self, settings: Settings) -> Section:
        return HttpdSection()

    def local(self, settings: Settings) -> str:
        return sys.executable

    def doctor_checks(self, settings: Settings) -> list[DoctorCheck]:
        return [DoctorCheck("ok", f"{NAME} (local)", f"{sys.executable} -m http.server")]


def register_httpd() -> ServiceKind:
    """The one line that adds the kind."""
    return kinds.register(HttpdKind())
