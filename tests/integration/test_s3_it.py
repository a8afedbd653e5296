"""The ``s3`` service kind (issue 18): moto's S3 server with enforced signatures, a bucket per test.

Real servers throughout: start/stop, what an unsigned, wrongly signed or foreign request gets, another
local user, reaping after SIGKILL of the owner, bucket isolation across tests and across ``-n 2``, the env
mapping per test, ``testlane doctor``/``services``, configuration errors naming the key, the ``url``
backend (pointed at a server started here) touching only testlane's own buckets.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")

from botocore import UNSIGNED  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from testlane.core.errors import ConfigError  # noqa: E402
from testlane.core.runtime import RunContext, is_root  # noqa: E402
from testlane.databases.owner import OwnerRecord  # noqa: E402
from testlane.databases.s3_isolation import BucketPool  # noqa: E402
from testlane.services.s3 import S3Server  # noqa: E402
from testlane.services.s3_buckets import create_bucket  # noqa: E402
from testlane.services.stack import ServiceStack  # noqa: E402
from tests.helpers import (  # noqa: E402
    FOREIGN_PLUGINS_OFF,
    clean_env,
    dead_pid,
    inner_pyproject,
    leftovers,
    run_cli,
    run_inner,
    server_processes,
    wait_for_file,
    wait_gone,
)

pytestmark = pytest.mark.timeout(300)
needs_root = pytest.mark.skipif(not is_root(), reason="needs root (a second local user)")
ONE_TRY = Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=5)


def _stack(settings: Any) -> ServiceStack:
    return ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid()))


def _client(server: S3Server, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "endpoint_url": server.endpoint_url,
        "region_name": "us-east-1",
        "aws_access_key_id": server.access_key,
        "aws_secret_access_key": server.secret_key,
        "config": ONE_TRY,
    }
    options.update(kwargs)
    return boto3.client("s3", **options)


def _error_code(call: Any) -> str:
    try:
        call()
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    raise AssertionError("the request was accepted")


def _http_status(url: str, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# -- start, stop, credentials ------------------------------------------------------------------------


def test_start_exports_signed_coordinates_and_stop_leaves_nothing(settings_for: Any, data_dir: Path) -> None:
    settings = settings_for(services=["s3"])
    with _stack(settings) as stack:
        server = stack.start()["s3"]
        assert isinstance(server, S3Server)
        env = stack.env()
        assert env["TESTLANE_S3_ENDPOINT_URL"] == server.endpoint_url == f"http://127.0.0.1:{server.port}"
        assert env["TESTLANE_S3_ACCESS_KEY_ID"].startswith("AKIA") and len(env["TESTLANE_S3_ACCESS_KEY_ID"]) == 20
        assert len(env["TESTLANE_S3_SECRET_ACCESS_KEY"]) >= 32
        assert env["TESTLANE_S3_REGION"] == "us-east-1"
        client = server.client()
        client.create_bucket(Bucket="tl-own-check")
        client.put_object(Bucket="tl-own-check", Key="k", Body=b"v")
        assert client.get_object(Bucket="tl-own-check", Key="k")["Body"].read() == b"v"
        # the secret is in a 0600 file and the services record, never on a command line
        proc = psutil.Process(server.pid or 0)
        assert server.secret_key not in " ".join(proc.cmdline())
        creds = Path(server.instance.instance_dir or "") / "credentials.json"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        assert server.secret_key not in server.log_tail(200)
        assert server.secret_key not in repr(server)
        procs = server_processes(data_dir)
        assert procs
    assert wait_gone(procs) == []
    assert leftovers(data_dir) == []


def test_unsigned_wrongly_signed_and_foreign_requests_are_refused(settings_for: Any) -> None:
    with _stack(settings_for(services=["s3"])) as stack:
        server: S3Server = stack.start()["s3"]  # type: ignore[assignment]
        server.client().create_bucket(Bucket="private-bucket")
        unsigned = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name="us-east-1",
            config=ONE_TRY.merge(Config(signature_version=UNSIGNED)),
        )
        assert _error_code(unsigned.list_buckets) == "AccessDenied"
        assert _error_code(lambda: unsigned.list_objects_v2(Bucket="private-bucket")) == "AccessDenied"
        wrong_secret = _client(server, aws_secret_access_key="x" * 40)
        assert _error_code(wrong_secret.list_buckets) == "SignatureDoesNotMatch"
        unknown_key = _client(server, aws_access_key_id="AKIAAAAAAAAAAAAAAAAA")
        assert _error_code(unknown_key.list_buckets) == "InvalidAccessKeyId"
        # moto serves every AWS service on the port: only S3 is answered, and its control API never
        iam = boto3.client(
            "iam",
            endpoint_url=server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            config=ONE_TRY,
        )
        with pytest.raises(ClientError):
            iam.list_users()
        for path in ("/", "/private-bucket", "/moto-api/", "/moto-api/data.json"):
            assert _http_status(server.endpoint_url + path) == 403, path
        assert _http_status(server.endpoint_url + "/moto-api/reset", "POST") == 403
        # moto checks signatures in the Authorization header only: a presigned URL is refused, not a 500
        presigned = server.client().generate_presigned_url("list_objects_v2", Params={"Bucket": "private-bucket"})
        assert _http_status(presigned) == 403
        # still there, still ours
        assert [b["Name"] for b in server.client().list_buckets()["Buckets"]] == ["private-bucket"]


@needs_root
def test_another_local_user_gets_nothing(settings_for: Any, hostile_user: str) -> None:
    """The server runs as the invoking user (root here): another user reaches the port, but nothing answers
    without the run's key, and the key's file is out of reach."""
    with _stack(settings_for(services=["s3"])) as stack:
        server: S3Server = stack.start()["s3"]  # type: ignore[assignment]
        server.client().create_bucket(Bucket="secret-bucket")
        creds = Path(server.instance.instance_dir or "") / "credentials.json"
        user = pwd.getpwnam(hostile_user)
        script = textwrap.dedent(
            f"""
            import urllib.request, urllib.error, sys
            out = []
            for method, path in [("GET", "/"), ("GET", "/secret-bucket"), ("PUT", "/mine"),
                                 ("GET", "/moto-api/data.json"), ("POST", "/moto-api/reset")]:
                try:
                    code = urllib.request.urlopen(urllib.request.Request("{server.endpoint_url}" + path, method=method),
                                                  timeout=5).status
                except urllib.error.HTTPError as exc:
                    code = exc.code
                out.append(str(code))
            try:
                open({str(creds)!r}).read()
                out.append("read")
            except OSError:
                out.append("denied")
            print(" ".join(out))
            """
        )
        result = subprocess.run(
            ["/usr/bin/python3", "-c", script],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
            timeout=60,
        )
        assert result.stdout.split() == ["403", "403", "403", "403", "403", "denied"], result.stderr
        assert [b["Name"] for b in server.client().list_buckets()["Buckets"]] == ["secret-bucket"]


OWNER_SCRIPT = textwrap.dedent(
    """
    import os, pathlib, sys
    from testlane.core.config import load_settings
    from testlane.core.runtime import RunContext
    from testlane.core.waiting import wait_until
    from testlane.services.stack import ServiceStack

    settings = load_settings(overrides={"services": ["s3"]})
    ctx = RunContext.from_settings(settings, owner=os.getpid())
    stack = ServiceStack(settings, ctx, die_with_parent=sys.argv[2] == "1")
    stack.start()
    pathlib.Path(sys.argv[1]).write_text(ctx.run_id)
    wait_until(lambda: False, timeout=600, what="being killed")
    """
)


@pytest.mark.parametrize("die_with_parent", [True, False], ids=["dies-with-owner", "reaped"])
def test_sigkill_of_the_owner_leaves_no_server(
    project: Path, data_dir: Path, tmp_path: Path, die_with_parent: bool
) -> None:
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    marker, script = tmp_path / "started", tmp_path / "owner.py"
    script.write_text(OWNER_SCRIPT)
    owner = subprocess.Popen(
        [sys.executable, str(script), str(marker), "1" if die_with_parent else "0"], cwd=project, env=env
    )
    try:
        wait_for_file(marker)
        run_id = marker.read_text()
        servers = server_processes(data_dir / run_id)
        assert servers
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        if die_with_parent:
            assert wait_gone(servers) == []  # at once: the parent-death signal
        else:
            assert all(p.is_running() for p in servers)
        reaped = run_cli(["reap"], cwd=project, env=env)
        assert reaped.returncode == 0, reaped.stderr
        assert wait_gone(servers) == []
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


def test_starts_in_parallel_with_other_services(settings_for: Any) -> None:
    with _stack(settings_for(services=["s3", "valkey"])) as stack:
        servers = stack.start()
        assert set(servers) == {"s3", "valkey"}
        servers["s3"].ping()
        servers["valkey"].ping()


# -- the bucket pool ---------------------------------------------------------------------------------------


def test_pool_hands_out_empty_unique_buckets_and_deletes_them(settings_for: Any) -> None:
    with _stack(settings_for(services=["s3"])) as stack:
        server: S3Server = stack.start()["s3"]  # type: ignore[assignment]
        client = server.client()
        pool = BucketPool(server, size=2)
        names = []
        for _ in range(5):
            bucket = pool.lease()
            assert client.list_objects_v2(Bucket=bucket.name).get("KeyCount") == 0
            client.put_object(Bucket=bucket.name, Key="a/b", Body=b"x")
            client.put_bucket_versioning(Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"})
            client.put_object(Bucket=bucket.name, Key="a/b", Body=b"y")
            names.append(bucket.name)
            pool.release(bucket)
        pool.close()
        assert len(set(names)) == 5
        assert all(n.startswith(f"tl-{server.instance.run_id}-") and 3 <= len(n) <= 63 for n in names)
        assert client.list_buckets()["Buckets"] == []


# -- the plugin: a bucket per test, the env mapping, -n 2 ---------------------------------------------------

INNER_TESTS = textwrap.dedent(
    """
    import json, os, pathlib
    import pytest

    OUT = pathlib.Path(os.environ["S3_OUT"])

    def record(name, **data):
        (OUT / f"{name}-{os.getpid()}.json").write_text(json.dumps(data))

    def test_run_level_mapping(s3):
        assert os.environ["S3_ENDPOINT"] == s3.endpoint_url
        assert os.environ["S3_BUCKET"] == f"tl-{s3.instance.run_id}-app"
        s3.client().head_bucket(Bucket=os.environ["S3_BUCKET"])  # created for the application

    @pytest.mark.parametrize("n", range(6))
    def test_bucket_is_the_tests_own(s3_bucket, n):
        client = s3_bucket.client()
        assert client.list_objects_v2(Bucket=s3_bucket.name).get("KeyCount") == 0
        client.put_object(Bucket=s3_bucket.name, Key="who", Body=str(n).encode())
        assert os.environ["S3_BUCKET"] == s3_bucket.name
        assert os.environ["S3_ENDPOINT"] == s3_bucket.endpoint_url
        assert os.environ["S3_KEY"] == s3_bucket.server.access_key and os.environ["S3_SECRET"]
        record(f"bucket{n}", bucket=s3_bucket.name, app=os.environ.get("UNRELATED"))

    def test_mapping_restored_after_a_bucket_test(s3):
        assert os.environ["S3_BUCKET"] == f"tl-{s3.instance.run_id}-app"
    """
)

INNER_ENV = textwrap.dedent(
    """
    [tool.testlane.env]
    S3_ENDPOINT = "{s3.url}"
    S3_BUCKET = "{s3.bucket}"
    S3_KEY = "{s3.access_key}"
    S3_SECRET = "{s3.secret_key}"
    S3_REGION = "{s3.region}"
    """
)


@pytest.mark.usefixtures("inner_env")
@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "n2"])
def test_a_bucket_per_test_under_the_plugin(
    pytester: pytest.Pytester, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("S3_OUT", str(out))
    pytester.makefile(".toml", pyproject=inner_pyproject(services='["s3"]', testlane=INNER_ENV))
    pytester.makepyfile(test_s3_inner=INNER_TESTS)
    args = ("-n", str(workers)) if workers else ()
    result = run_inner(pytester, "-q", *args)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=8)
    names = [json.loads(p.read_text())["bucket"] for p in out.glob("bucket*.json")]
    assert len(names) == 6 and len(set(names)) == 6
    if workers:
        assert len({p.name.rsplit("-", 1)[1] for p in out.glob("bucket*.json")}) == 2  # both workers served
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


def test_testlane_run_exports_the_coordinates_and_the_mapping(project: Path, data_dir: Path, tmp_path: Path) -> None:
    (project / "pyproject.toml").write_text(inner_pyproject(services='["s3"]', testlane=INNER_ENV))
    (project / "test_run.py").write_text(
        textwrap.dedent(
            """
            import os, boto3

            def test_coordinates():
                client = boto3.client(
                    "s3",
                    endpoint_url=os.environ["TESTLANE_S3_ENDPOINT_URL"],
                    region_name=os.environ["TESTLANE_S3_REGION"],
                    aws_access_key_id=os.environ["TESTLANE_S3_ACCESS_KEY_ID"],
                    aws_secret_access_key=os.environ["TESTLANE_S3_SECRET_ACCESS_KEY"],
                )
                assert os.environ["S3_ENDPOINT"] == os.environ["TESTLANE_S3_ENDPOINT_URL"]
                client.head_bucket(Bucket=os.environ["S3_BUCKET"])

            def test_bucket(s3_bucket):
                assert os.environ["S3_BUCKET"] == s3_bucket.name
            """
        )
    )
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    result = run_cli(["run", "--", "-q", "-p", "no:cacheprovider", *FOREIGN_PLUGINS_OFF], cwd=project, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


@pytest.mark.usefixtures("plain_env")
def test_s3_bucket_needs_the_integration_lane(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", pyproject=inner_pyproject(services="[]"))
    pytester.makepyfile(test_unit="def test_unit(s3_bucket):\n    pass\n")
    result = run_inner(pytester, "-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unit lane but uses testlane's service fixture 's3_bucket'*"])


# -- the url backend: an existing endpoint, only testlane's own buckets touched ------------------------------


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "n2"])
def test_url_backend_touches_only_its_own_buckets(
    settings_for: Any,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    inner_env: Path,
    tmp_path: Path,
    workers: int,
) -> None:
    with _stack(settings_for(services=["s3"])) as stack:
        existing: S3Server = stack.start()["s3"]  # type: ignore[assignment]
        admin = existing.client()
        admin.create_bucket(Bucket="someone-elses")
        admin.put_object(Bucket="someone-elses", Key="keep", Body=b"1")
        # a testlane-looking bucket without a record, and a dead run's bucket of this host
        admin.create_bucket(Bucket="tl-0badf00d-untagged")
        dead = OwnerRecord.for_run("0deadbee", dead_pid()).render()
        create_bucket(admin, "tl-0deadbee-abc123-1", region="us-east-1", owner=dead)
        admin.put_object(Bucket="tl-0deadbee-abc123-1", Key="junk", Body=b"1")
        # killed between creating and tagging: untagged, but its pool's tagged bucket proves the owner gone;
        # an untagged bucket of another pool of that run has no such proof and stays
        admin.create_bucket(Bucket="tl-0deadbee-abc123-2")
        admin.create_bucket(Bucket="tl-0deadbee-fedcba-1")
        out = tmp_path / "out"
        out.mkdir()
        monkeypatch.setenv("S3_OUT", str(out))
        monkeypatch.setenv("TESTLANE_S3_SERVER_ACCESS_KEY", existing.access_key)
        monkeypatch.setenv("TESTLANE_S3_SERVER_SECRET_KEY", existing.secret_key)
        pytester.makefile(
            ".toml",
            pyproject=inner_pyproject(
                services='["s3"]',
                testlane=INNER_ENV + f'\n[tool.testlane.s3]\nbackend = "url"\nurl = "{existing.endpoint_url}"\n',
            ),
        )
        pytester.makepyfile(test_s3_inner=INNER_TESTS)
        result = run_inner(pytester, "-q", *(("-n", str(workers)) if workers else ()))
        output = result.stdout.str() + result.stderr.str()
        assert result.ret == 0, output
        assert existing.secret_key not in output
        result.assert_outcomes(passed=8)
        remaining = sorted(b["Name"] for b in admin.list_buckets()["Buckets"])
        assert remaining == ["someone-elses", "tl-0badf00d-untagged", "tl-0deadbee-fedcba-1"]
        assert admin.get_object(Bucket="someone-elses", Key="keep")["Body"].read() == b"1"


# -- configuration, doctor, services ------------------------------------------------------------------------


def test_configuration_errors_name_the_key(settings_for: Any) -> None:
    with pytest.raises(ConfigError, match=r"s3\.backend = \"local\""):
        _stack(settings_for(services=["s3"], s3__backend="local")).start()
    with pytest.raises(ConfigError, match=r"s3\.access_key is empty"):
        _stack(settings_for(services=["s3"], s3__backend="url", s3__url="http://127.0.0.1:9")).start()
    with pytest.raises(ConfigError, match=r"s3\.url"):
        _stack(settings_for(services=["s3"], s3__url="s3://bucket", s3__access_key="a", s3__secret_key="b")).start()


def test_doctor_and_services_commands(project: Path, data_dir: Path) -> None:
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    doctor = run_cli(["doctor"], cwd=project, env=env)
    report = doctor.stdout + doctor.stderr
    assert "s3 (embedded)" in report and "moto" in report, report
    started = run_cli(["services", "start", "s3"], cwd=project, env=env)
    assert started.returncode == 0, started.stderr
    try:
        status = run_cli(["services", "status"], cwd=project, env=env)
        shown = status.stdout + status.stderr
        assert "s3" in shown and "running" in shown, shown
        exported = run_cli(["services", "env"], cwd=project, env=env)
        lines = dict(
            line.removeprefix("export ").split("=", 1)
            for line in exported.stdout.splitlines()
            if line.startswith("export ")
        )
        assert lines["TESTLANE_S3_SECRET_ACCESS_KEY"] not in status.stdout + status.stderr + started.stderr
        client = boto3.client(
            "s3",
            endpoint_url=lines["TESTLANE_S3_ENDPOINT_URL"],
            region_name=lines["TESTLANE_S3_REGION"],
            aws_access_key_id=lines["TESTLANE_S3_ACCESS_KEY_ID"],
            aws_secret_access_key=lines["TESTLANE_S3_SECRET_ACCESS_KEY"],
            config=ONE_TRY,
        )
        assert client.list_buckets()["Buckets"] == []
    finally:
        stopped = run_cli(["services", "stop"], cwd=project, env=env)
    assert stopped.returncode == 0
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


def test_cold_and_warm_start_figures(settings_for: Any) -> None:
    """Not a benchmark: the start stays well under the budget the docs quote (measured medians there)."""
    times = []
    for _ in range(3):
        begin = time.perf_counter()
        with _stack(settings_for(services=["s3"])) as stack:
            stack.start()
            times.append(time.perf_counter() - begin)
    assert sorted(times)[1] < 10.0, times
