"""The embedded S3 server: moto's server mode, with every request signed by the run's key.

Run as ``python -m testlane.services.s3_moto PORT CREDENTIALS_FILE`` (by :mod:`testlane.services.s3`).
moto accepts any credentials by default; here, before the server listens:

* the run's IAM user (``testlane``, every ``s3:*`` action allowed) and its access key are created *in
  this process*, from the 0600 credentials file the engine wrote (the secret is never on a command line);
* ``INITIAL_NO_AUTH_ACTION_COUNT`` is 0: no request goes through unauthenticated. (moto's own recipe
  lets the first N requests through to create that user over HTTP: another local user could race the
  run for those N and create a user of their own. Created in-process, there is no window.)
* moto's control API (``/moto-api/``: reset the state, read every object, change the count above) takes
  no credentials at all, so it is refused; so is any request that carries no signature, or one signed for
  another service than S3 (moto serves every AWS service on one port; only S3 is offered here), and a
  presigned URL (moto checks signatures in the ``Authorization`` header only: it would fail with a 500).

Everything is in memory: nothing is written but the log.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["USER", "main"]

USER = "testlane"
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([a-z0-9-]+)/aws4_request")

_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>@MESSAGE@</Message></Error>'
)

StartResponse = Callable[..., Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def signed_for_s3(environ: dict[str, Any]) -> bool:
    """True when the request carries an S3 signature in its ``Authorization`` header (SigV4 scoped to S3,
    or SigV2, which is S3's only)."""
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    if header.startswith("AWS4-HMAC-SHA256"):
        match = _SCOPE.search(header)
        return match is not None and match.group(1) == "s3"
    return header.startswith("AWS ")


def presigned(environ: dict[str, Any]) -> bool:
    """True for a presigned URL (the signature in the query string)."""
    query = str(environ.get("QUERY_STRING", ""))
    return "X-Amz-Credential=" in query or ("AWSAccessKeyId=" in query and "Signature=" in query)


def _refuse(start_response: StartResponse, message: bytes) -> list[bytes]:
    body = _DENIED.replace(b"@MESSAGE@", message)
    start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


def guarded(app: App) -> App:
    """``app`` refusing the control API, unsigned requests and other services (see module docstring)."""

    def guard(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith("/moto-api"):
            return _refuse(start_response, b"moto's control API is not served by testlane's S3 server")
        if not signed_for_s3(environ):
            if presigned(environ):
                # moto checks signatures in the Authorization header only (a presigned URL fails with a 500)
                return _refuse(
                    start_response,
                    b"presigned URLs are not supported by testlane's embedded S3 server (moto); use the url backend",
                )
            return _refuse(start_response, b"testlane's S3 server answers only S3 requests signed with the run's key")
        return app(environ, start_response)

    return guard


def bootstrap(access_key: str, secret_key: str) -> None:
    """The run's IAM user with full S3 access and its key (ours, not one moto makes up)."""
    from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
    from moto.iam.models import iam_backends

    backend = iam_backends[DEFAULT_ACCOUNT_ID]["global"]
    backend.create_user(region_name="us-east-1", user_name=USER)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    backend.put_user_policy(USER, "s3-all", json.dumps(policy))
    key = backend.create_access_key(USER)
    backend.access_keys.pop(key.physical_resource_id, None)
    user = backend.get_user(USER)
    key.access_key_id, key.secret_access_key = access_key, secret_key
    backend.access_keys[key.physical_resource_id] = key
    assert user.access_keys[-1] is key


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    port, credentials_file = int(args[0]), args[1]
    with open(credentials_file) as f:
        creds = json.load(f)
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # read by moto.settings when it is imported
    os.environ["MOTO_PORT"] = str(port)
    from moto import settings
    from moto.server import (  # type: ignore[attr-defined]
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    bootstrap(creds["access_key"], creds["secret_key"])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, guarded(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
