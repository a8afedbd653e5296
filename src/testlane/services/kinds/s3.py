"""The ``s3`` service kind: moto's S3 server from PyPI (the ``s3`` extra) as ``embedded``, or an existing
S3 endpoint (``url``: ``s3.url`` with ``s3.access_key`` and ``s3.secret_key``). The engine is
:class:`~testlane.services.s3.S3Engine`; the handle :class:`~testlane.services.s3.S3Server`.

There is no ``local`` or ``container`` backend: no S3 server is installed as system packages here, and a
MinIO or ``motoserver/moto`` container is run the user's way and given as ``url`` (docs/services.md says
why moto: it is the one S3-compatible server that installs from PyPI).

In ``[tool.testlane.env]``: ``{s3.url}`` is the endpoint (``http://127.0.0.1:PORT``, no credentials in
it), ``{s3.access_key}``/``{s3.secret_key}``/``{s3.region}`` the run's, and ``{s3.bucket}`` the run's
application bucket ``tl-<run id>-app`` (created when the mapping is applied), never a test's; during a
test using ``s3_bucket`` the same variables name that test's bucket.
"""

from __future__ import annotations

from testlane.core.config import Settings
from testlane.core.errors import BinaryNotFoundError, ConfigError
from testlane.services.base import Server
from testlane.services.instance import Instance
from testlane.services.kinds import register
from testlane.services.kinds.kind import BackendChoice, DoctorCheck, ServiceKind
from testlane.services.s3 import S3Engine, S3Server, moto_version

__all__ = ["S3Kind"]

INSTALL_HINT = 'pip install "testlane[s3]" (moto\'s server and boto3)'


class S3Kind(ServiceKind):
    name = "s3"
    display = "S3"
    schemes = ("http", "https")
    default_port = 80
    default_user = None
    default_database = ""
    engine = S3Engine
    handle = S3Server
    env_names = (
        "TESTLANE_S3_ENDPOINT_URL",
        "TESTLANE_S3_ACCESS_KEY_ID",
        "TESTLANE_S3_SECRET_ACCESS_KEY",
        "TESTLANE_S3_REGION",
    )
    backends = ("embedded", "url")
    backend_hint = (
        'use "embedded" (moto\'s S3 server: ' + INSTALL_HINT + ') or "url" (an existing endpoint: MinIO, a '
        "motoserver/moto or LocalStack container you run, with s3.url, s3.access_key and s3.secret_key)."
    )
    default_env_driver = "http"

    def embedded(self, settings: Settings) -> str | None:
        version = moto_version()
        return None if version is None else f"moto {version} (the s3 extra) is installed"

    def choose_auto(self, settings: Settings) -> BackendChoice | None:
        """``embedded`` when moto is installed; else there is nothing else to try (no local or container S3)."""
        embedded = self.embedded(settings)
        if embedded is None:
            raise BinaryNotFoundError(
                "no way to run s3: moto's S3 server is not installed and s3.url is not set.",
                hint=f"{INSTALL_HINT}; or set s3.url (with s3.access_key and s3.secret_key) to an existing endpoint.",
            )
        return BackendChoice(self.name, "embedded", f"auto: {embedded}")

    def local(self, settings: Settings) -> str:
        raise BinaryNotFoundError(
            "there are no local S3 binaries testlane runs.", hint=f"{INSTALL_HINT}, or set s3.url to an endpoint."
        )

    def adopt_url(self, instance: Instance, settings: Settings) -> None:
        """The existing endpoint's credentials come from ``s3.access_key``/``s3.secret_key`` (or the URL)."""
        s3 = settings.s3
        instance.user = s3.access_key or instance.user
        instance.password = s3.secret_key or instance.password
        if not instance.user or not instance.password:
            missing = "s3.access_key" if not instance.user else "s3.secret_key"
            raise ConfigError(
                f's3.backend is "url" but {missing} is empty.',
                hint="set s3.access_key and s3.secret_key (TESTLANE_S3_SERVER_ACCESS_KEY, "
                "TESTLANE_S3_SERVER_SECRET_KEY) to the endpoint's credentials.",
            )
        scheme = str(instance.extra.get("url", "http")).split("://", 1)[0]
        instance.extra["scheme"] = scheme
        if scheme == "https" and instance.port == self.default_port:
            instance.port = 443
        instance.extra["region"] = s3.region
        instance.database = ""

    def server_version(self, server: Server) -> str:
        assert isinstance(server, S3Server)
        if server.instance.backend != "url":
            return server.instance.version
        headers = server.client().list_buckets().get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return str(headers.get("server", ""))

    def env_value(self, part: str, driver: str | None, server: Server, database: str) -> str:
        assert isinstance(server, S3Server)
        values = {
            "url": server.endpoint_url,
            "access_key": server.access_key,
            "secret_key": server.secret_key,
            "region": server.region,
            "bucket": server.app_bucket,
        }
        return values[part]

    def doctor_checks(self, settings: Settings) -> list[DoctorCheck]:
        version = moto_version()
        if version is not None:
            return [DoctorCheck("ok", "s3 (embedded)", f"moto {version} (server mode, in memory)")]
        wanted = (settings.s3.backend or settings.backend) == "embedded" or "s3" in settings.services
        status = "fail" if wanted and not settings.s3.url else "warn"
        return [DoctorCheck(status, "s3 (embedded)", "moto[server] and boto3 are not installed", INSTALL_HINT)]


register(S3Kind())
