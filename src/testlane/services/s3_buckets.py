"""Buckets testlane creates on an S3 endpoint, and only those: create (tagged with the owner), empty, delete.

Every bucket a run creates is named ``tl-<run id>-...`` (:func:`~testlane.services.s3.run_bucket_prefix`).
On an existing endpoint (the ``url`` backend) it also carries the owner record as its tag
``testlane-owner`` (``testlane:v1 run=<run id> host=... pid=...``, see :mod:`testlane.databases.owner`):
a bucket is emptied or deleted only when its name starts with a run's prefix *and* its tag names that run.
"""

from __future__ import annotations

import contextlib
from typing import Any

from testlane.services.s3 import run_bucket_prefix

__all__ = ["OWNER_TAG", "create_bucket", "delete_bucket", "delete_run_buckets", "empty_bucket", "owner_tag"]

OWNER_TAG = "testlane-owner"


def create_bucket(client: Any, name: str, *, region: str, owner: str | None = None) -> None:
    """Create ``name``; ``owner``: the owner record to tag it with (existing endpoints)."""
    options: dict[str, Any] = {"Bucket": name}
    if region and region != "us-east-1":
        options["CreateBucketConfiguration"] = {"LocationConstraint": region}
    client.create_bucket(**options)
    if owner is not None:
        client.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [{"Key": OWNER_TAG, "Value": owner}]})


def owner_tag(client: Any, name: str) -> str | None:
    """The bucket's ``testlane-owner`` tag, None when it has none (or tags cannot be read)."""
    try:
        tags = client.get_bucket_tagging(Bucket=name).get("TagSet", [])
    except Exception:
        return None
    return next((str(t.get("Value", "")) for t in tags if t.get("Key") == OWNER_TAG), None)


def empty_bucket(client: Any, name: str) -> None:
    """Delete every object version, delete marker and unfinished multipart upload of ``name``."""
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=name):
        items = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in page.get("Versions", [])]
        items += [{"Key": m["Key"], "VersionId": m["VersionId"]} for m in page.get("DeleteMarkers", [])]
        for start in range(0, len(items), 1000):
            client.delete_objects(Bucket=name, Delete={"Objects": items[start : start + 1000], "Quiet": True})
    with contextlib.suppress(Exception):
        uploads = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
        for upload in uploads:
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])


def delete_bucket(client: Any, name: str) -> None:
    """Empty and delete ``name`` (a bucket already gone is fine)."""
    from botocore.exceptions import ClientError

    try:
        empty_bucket(client, name)
        client.delete_bucket(Bucket=name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise


def delete_run_buckets(client: Any, run_id: str, *, tagged: bool = True) -> list[str]:
    """Delete run ``run_id``'s buckets: named with its prefix and (``tagged``) carrying its owner tag."""
    prefix = run_bucket_prefix(run_id)
    deleted = []
    for bucket in client.list_buckets().get("Buckets", []):
        name = str(bucket["Name"])
        if not name.startswith(prefix):
            continue
        if tagged and f" run={run_id} " not in f"{owner_tag(client, name) or ''} ":
            continue
        delete_bucket(client, name)
        deleted.append(name)
    return deleted
