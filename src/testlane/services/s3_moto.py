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
  another service than S3 (moto serves every AWS service on one port; only S3 is offered here).

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
_QUERY_SCOPE = re.compile(r"X-Amz-Credential=[^&/]+(?:/|%2F)\d{8}(?:/|%2F)[^&/%]+(?:/|%2F)([a-z0-9-]+)(?:/|%2F)")

_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>testlane's S3 server answers only S3 requests signed with the run's key</Message></Error>"
)

StartResponse = Callable[..., Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def signed_for_s3(environ: dict[str, Any]) -> bool:
    """True when the request carries an S3 signature (header or presigned query; SigV2 keys are S3's)."""
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    query = str(environ.get("QUERY_STRING", ""))
    if header.startswith("AWS4-HMAC-SHA256"):
        match = _SCOPE.search(header)
        return match is not None and match.group(1) == "s3"
    if header.startswith("AWS "):
        return True  # SigV2: S3 only
    if "X-Amz-Credential=" in query:
        match = _QUERY_SCOPE.search(query)
        return match is not None and match.group(1) == "s3"
    return "AWSAccessKeyId=" in query and "Signature=" in query


def guarded(app: App) -> App:
    """``app`` refusing the control API, unsigned requests and other services (see module docstring)."""

    def guard(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path.startswith("/moto-api") or not signed_for_s3(environ):
            start_response(
                "403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(_DENIED)))]
            )
            return [_DENIED]
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
