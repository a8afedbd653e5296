"""The s3 kind without a server: which requests its guard lets through, its settings and env parts."""

from __future__ import annotations

import pytest

from testlane.core.config import load_settings
from testlane.core.envmap import Reference, validate_mapping
from testlane.core.errors import ConfigError
from testlane.services.backends import choose_backend
from testlane.services.s3_moto import guarded, signed_for_s3

V4 = "AWS4-HMAC-SHA256 Credential=AKIAX/20261130/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=ab"


@pytest.mark.parametrize(
    ("environ", "passes"),
    [
        ({"HTTP_AUTHORIZATION": V4.format(service="s3")}, True),
        ({"HTTP_AUTHORIZATION": V4.format(service="iam")}, False),
        ({"HTTP_AUTHORIZATION": V4.format(service="sts")}, False),
        ({"HTTP_AUTHORIZATION": "AWS AKIAX:sig"}, True),
        ({"QUERY_STRING": "X-Amz-Credential=AKIAX%2F20261130%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=1"}, 0),
        ({"QUERY_STRING": "AWSAccessKeyId=AKIAX&Signature=x&Expires=1"}, False),
        ({}, False),
        ({"HTTP_AUTHORIZATION": "Bearer x"}, False),
    ],
)
def test_only_requests_signed_for_s3_pass(environ: dict[str, str], passes: bool) -> None:
    assert signed_for_s3(environ) is bool(passes)


def test_the_control_api_is_refused_even_when_signed() -> None:
    seen: list[str] = []

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        seen.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"ok"]

    statuses: list[str] = []
    guard = guarded(app)
    auth = {"HTTP_AUTHORIZATION": V4.format(service="s3")}
    guard({"PATH_INFO": "/moto-api/reset", **auth}, lambda status, headers: statuses.append(status))
    guard({"PATH_INFO": "/bucket", **auth}, lambda status, headers: statuses.append(status))
    body = guard({"PATH_INFO": "/b/k", "QUERY_STRING": "AWSAccessKeyId=A&Signature=s&Expires=1"}, lambda *a: None)
    assert statuses == ["403 Forbidden", "200 OK"] and seen == ["/bucket"]
    assert b"presigned URLs are not supported" in b"".join(body)


def test_env_parts_and_backends() -> None:
    parsed = validate_mapping({"B": "{s3.bucket}", "E": "{s3.url}", "K": "{s3.secret_key}"})
    assert parsed["B"] == [Reference("s3", "bucket")]
    with pytest.raises(ConfigError, match="s3 has no part 'database'"):
        validate_mapping({"X": "{s3.database}"})
    settings = load_settings(environ={}, overrides={"s3.backend": "local"})
    with pytest.raises(ConfigError, match=r's3\.backend = "local"') as info:
        choose_backend("s3", settings)
    assert "embedded" in (info.value.hint or "")
    url = load_settings(environ={"TESTLANE_S3_SERVER_URL": "http://127.0.0.1:9000"})
    assert choose_backend("s3", url).backend == "url"
    assert choose_backend("s3", load_settings(environ={})).backend == "embedded"
