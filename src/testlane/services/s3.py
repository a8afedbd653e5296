"""The S3 engine: moto's S3 server (the ``s3`` extra) in memory, every request signed with the run's key.

The server is :mod:`testlane.services.s3_moto` (moto's server mode behind a guard): loopback only, no
data on disk (moto keeps buckets and objects in memory: stopping the process is the whole clean-up),
its IAM user's key random per instance (an access key id and a 192-bit secret written to a 0600 file in
the instance's directory, never on a command line) and every request refused unless signed with it;
moto's unauthenticated control API is refused too.

Which user it runs as: the invoking user, also as root. The kinds that run a binary run it as the
unprivileged service user (:mod:`testlane.services.privileges`), but this server is Python code run by
the test's own interpreter, and that interpreter commonly lives where the service user cannot execute it
(``/root/.pyenv``, a virtualenv under ``/root``); making it reachable would mean opening root's home or
copying an interpreter and its site-packages per run. What the service user would protect against is
another local user reaching the server, and that is refused anyway: it listens on 127.0.0.1 only and
answers nothing unsigned (checked in tests/integration/test_s3_it.py with another local user). Its
instance directory holds only the 0600 credentials file and the log.
"""

from __future__ import annotations

import importlib.metadata
import json
import secrets
import string
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

from testlane.core.config import S3Settings, Settings
from testlane.services.base import Launch, Server
from testlane.services.credentials import new_password, write_private
from testlane.services.privileges import ServiceUser
from testlane.services.process_engine import ProcessEngine

__all__ = ["CREDENTIALS_FILE", "S3Engine", "S3Server", "moto_version", "run_bucket_prefix"]

CREDENTIALS_FILE = "credentials.json"


def moto_version() -> str | None:
    """The installed moto's version, None when the ``s3`` extra (moto, with its server) is not installed."""
    try:
        version = importlib.metadata.version("moto")
        importlib.metadata.version("flask")  # moto[server]: the server's own dependencies
        importlib.metadata.version("boto3")
    except importlib.metadata.PackageNotFoundError:
        return None
    return version


def run_bucket_prefix(run_id: str) -> str:
    """Every bucket run ``run_id`` creates starts with this (``tl-<run id>-``)."""
    return f"tl-{run_id}-"


class S3Server(Server):
    """A running (or existing) S3 endpoint: ``endpoint_url``, ``client()``, the run's credentials."""

    engine: ClassVar[str] = "s3"
    stop_signal: ClassVar[int] = 15

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT``: no credentials in it (they go to clients separately)."""
        scheme = str(self.instance.extra.get("scheme", "http"))
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.endpoint_url

    @property
    def access_key(self) -> str:
        return self.instance.user or ""

    @property
    def secret_key(self) -> str:
        return self.instance.password or ""

    @property
    def region(self) -> str:
        return str(self.instance.extra.get("region") or "us-east-1")

    @property
    def app_bucket(self) -> str:
        """The run's application bucket (``{s3.bucket}`` outside a test): never a test's."""
        return run_bucket_prefix(self.instance.run_id) + "app"

    def client(self, service: str = "s3", **kwargs: Any) -> Any:
        """A boto3 client signed with the run's key (``kwargs`` go to ``boto3.client``)."""
        import boto3

        options: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
        }
        options.update(kwargs)
        return boto3.client(service, **options)

    def ping(self, timeout: float = 2.0) -> None:
        from botocore.config import Config

        config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1})
        self.client(config=config).list_buckets()

    def env(self) -> dict[str, str]:
        return {
            "TESTLANE_S3_ENDPOINT_URL": self.endpoint_url,
            "TESTLANE_S3_ACCESS_KEY_ID": self.access_key,
            "TESTLANE_S3_SECRET_ACCESS_KEY": self.secret_key,
            "TESTLANE_S3_REGION": self.region,
        }

    def stop(self) -> None:
        """Stop the server; on an existing endpoint, delete this run's buckets first (its own only)."""
        if self.owned and not self._stopped and self.instance.backend == "url":
            from testlane.services.s3_buckets import delete_run_buckets

            try:
                delete_run_buckets(self.client(), self.instance.run_id)
            except Exception as exc:  # the reaper of the next run finds what is left
                import logging

                logging.getLogger("testlane").warning("could not delete this run's S3 buckets: %s", exc)
        super().stop()


def _access_key_id() -> str:
    """An access key id in AWS's shape: ``AKIA`` and 16 upper-case letters and digits."""
    alphabet = string.ascii_uppercase + string.digits
    return "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))


class S3Engine(ProcessEngine[S3Server]):
    """Launches :class:`S3Server` instances (moto's server mode)."""

    kind = "s3"

    @property
    def s3(self) -> S3Settings:
        return self.settings.s3

    def default_backend(self, settings: Settings) -> str:
        return "embedded"

    @property
    def user(self) -> ServiceUser | None:
        # The invoking user, also as root: the interpreter may not be reachable by the service user, and a
        # local user is kept out by signatures, not by file modes (see module docstring).
        return None

    def launch(
        self,
        name: str = "s3",
        *,
        detached: bool = False,
        die_with_parent: bool = True,
        data_source: Path | None = None,
    ) -> S3Launch:
        instance = self.new_instance(
            name,
            detached=detached,
            backend="embedded",
            user=_access_key_id(),
            password=new_password(),
            database="",
            version=moto_version() or "",
            extra={"region": self.s3.region, "server": "moto"},
        )
        options = self.launch_options(
            instance, fixed_port=self.s3.port, detached=detached, die_with_parent=die_with_parent
        )
        return S3Launch(**options)


class S3Launch(Launch):
    @property
    def credentials_file(self) -> Path:
        return self.instance_dir / CREDENTIALS_FILE

    def prepare_data(self) -> None:
        # The key goes in a file only we read: a command line is public (ps).
        creds = {"access_key": self.instance.user, "secret_key": self.instance.password}
        write_private(self.credentials_file, json.dumps(creds), self.user)

    def argv(self, port: int) -> list[str]:
        return [sys.executable, "-m", "testlane.services.s3_moto", str(port), str(self.credentials_file)]

    def make_server(self, popen: subprocess.Popen[bytes]) -> Server:
        return S3Server(self.instance, registry=self.registry, popen=popen, owned=True)
