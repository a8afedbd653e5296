"""Per-migration checkpoints (issue 19): an edited migration replays only from the nearest unchanged prefix.

* A snapshot build keeps checkpoints; the next build whose steps share a prefix starts from the
  longest matching one and applies only the rest (SQL files and Alembic revisions alike).
* The template built so equals one built from scratch (``pg_dump`` of schema and data), after editing
  the last migration, a middle one, adding one and removing one; the cluster runs start from holds no
  checkpoint.
* A failing replayed migration fails with the message a full build gives, and stores no snapshot.
* After an edit, a run that stores the snapshot after its tests (``store_later``) starts its own server from the
  nearest checkpoint and replays the rest there: no builder server before its tests; the snapshot stored afterwards
  equals a full build, and so does the template the run's tests saw. A migration failing there fails as a
  builder's build does and leaves nothing behind. A first build, a replay known to be long, and a checkpoint
  pruned while the run starts from it use the builder first. Runs of ``pytest --it`` (plain, xdist) and
  ``testlane run`` show the order: the run's tests start before the new snapshot exists, the next run starts
  from it; two concurrent runs each build on their own server and one snapshot is stored.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from testlane.core.config import Settings, load_settings
from testlane.core.errors import MigrationError
from testlane.core.runtime import RunContext
from testlane.databases import snapshots, template
from testlane.databases.migrations import AlembicMigrations, SqlFolder
from testlane.databases.provision import start_services
from testlane.databases.snapshots import RunBuild, SnapshotCache, keep_after
from testlane.databases.template import TemplateSpec
from testlane.services.cache import remove_entry
from testlane.services.postgres import PostgresEngine, PostgresLaunch, PostgresServer
from testlane.services.registry import Registry
from testlane.services.stack import ServiceStack
from tests.helpers import TESTLANE, clean_env, leftovers, server_processes

REPLAY = re.compile(r"replaying (\d+) of (\d+) migration steps")


@pytest.fixture(autouse=True)
def _checkpoint_every_step_kept(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """These migrations take milliseconds: keep their checkpoints anyway (the default keeps one only after
    ``CHECKPOINT_WORTH_S`` of migrations), except in the test of that rule."""
    if "worth" not in request.node.name:
        monkeypatch.setattr(template, "CHECKPOINT_WORTH_S", 0.0)


def _settings(data_dir: Path, cache_dir: Path, project: Path, *, checkpoints: int = 4) -> Settings:
    project.mkdir(parents=True, exist_ok=True)
    (project / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "0"\n')
    values = {"data_dir": str(data_dir), "cache_dir": str(cache_dir), "db.checkpoints": str(checkpoints)}
    return load_settings(start=project, environ={}, overrides=values)


def _engine(data_dir: Path, cache_dir: Path, project: Path, *, checkpoints: int = 4) -> PostgresEngine:
    settings = _settings(data_dir, cache_dir, project, checkpoints=checkpoints)
    context = RunContext.from_settings(settings, owner=os.getpid())
    context.ensure_dirs()
    return PostgresEngine(settings, context, Registry(context))


def _run_stack(engine: PostgresEngine, data_dir: Path) -> ServiceStack:
    """The services of a run, as ``testlane run`` makes them, sharing ``engine``'s cache and project; its own
    data root ``data_dir`` (what it leaves there is the run's)."""
    settings = engine.settings
    values = {"data_dir": str(data_dir), "cache_dir": str(settings.cache_dir), "db.checkpoints": "4"}
    run_settings = load_settings(start=settings.project_root, environ={}, overrides=values)
    return ServiceStack(run_settings, RunContext.from_settings(run_settings, owner=os.getpid()))


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the Postgres servers started from now on (the run's is ``postgres``, a snapshot's builder
    ``postgres-build-...``): :meth:`PostgresEngine.launch` recorded, then called as it is."""
    names: list[str] = []
    launch = PostgresEngine.launch

    def recorded(self: PostgresEngine, name: str = "postgres", **options: Any) -> PostgresLaunch:
        names.append(name)
        return launch(self, name, **options)

    monkeypatch.setattr(PostgresEngine, "launch", recorded)
    return names


def _build(engine: PostgresEngine, spec: TemplateSpec, caplog: pytest.LogCaptureFixture) -> tuple[Path, int | None]:
    """The snapshot for ``spec`` and how many steps the build replayed (None: built from scratch)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="testlane"):
        cluster = SnapshotCache(engine).ensure(spec)
    found = [REPLAY.search(r.getMessage()) for r in caplog.records]
    replayed = [int(m.group(1)) for m in found if m]
    return cluster, (replayed[0] if replayed else None)


def _dump(engine: PostgresEngine, cluster: Path, spec: TemplateSpec) -> tuple[str, list[str]]:
    """``pg_dump`` (schema and data) of a clone of ``spec``'s template in ``cluster``, and its databases."""
    server = engine.start("postgres-compare", data_source=cluster)
    try:
        return _dump_server(engine, server, spec)
    finally:
        server.stop()


def _dump_server(engine: PostgresEngine, server: PostgresServer, spec: TemplateSpec) -> tuple[str, list[str]]:
    """``pg_dump`` of a clone of ``spec``'s template on a running ``server`` (the clone dropped after), and its
    databases."""
    with server.connect() as admin:
        template = sql.Identifier(spec.name(server.version))
        admin.execute(sql.SQL("CREATE DATABASE compare TEMPLATE {}").format(template))
        names = [r[0] for r in admin.execute("SELECT datname FROM pg_database ORDER BY 1").fetchall()]
    try:
        pg_dump = str(engine.binaries().exe("pg_dump"))
        proc = subprocess.run(
            [pg_dump, "--no-owner", "--restrict-key=k", "-d", server.dsn("compare")],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 and "restrict-key" in proc.stderr:  # pg_dump before 17.6 / 18.0
            proc = subprocess.run(
                [pg_dump, "--no-owner", "-d", server.dsn("compare")], capture_output=True, text=True, check=True
            )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout, [name for name in names if name != "compare"]
    finally:
        with server.connect() as admin:
            admin.execute("DROP DATABASE compare")


def _write(folder: Path, files: dict[str, str]) -> None:
    for old in folder.glob("*"):
        old.unlink()
    for name, text in files.items():
        (folder / name).write_text(text)


def _sql_files(count: int) -> dict[str, str]:
    return {
        f"{n:03d}_t{n}.sql": f"CREATE TABLE t{n} (id serial PRIMARY KEY, v{n} text);\n"
        f"INSERT INTO t{n} (v{n}) VALUES ('{n}');\n"
        for n in range(1, count + 1)
    }


def _fresh_cache(engine: PostgresEngine, label: str) -> Path:
    """Another cache (inside the test's, which the service user can reach): a build there starts from scratch."""
    path = engine.context.cache_dir / f"fresh-{label.replace(' ', '-')}"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    return path


def _full_builds(tmp_path: Path, data_dir: Path, engine: PostgresEngine) -> PostgresEngine:
    """An engine whose every build starts from scratch: ``db.checkpoints = 0`` (none kept, none resumed from), in
    a cache of its own. One per test, so its base cluster is made (``initdb``) once, not once per comparison."""
    return _engine(data_dir, _fresh_cache(engine, "full builds"), tmp_path / "app", checkpoints=0)


def _equal_to_a_full_build(
    spec: TemplateSpec, incremental: Path, engine: PostgresEngine, full: PostgresEngine, label: str
) -> None:
    fresh = SnapshotCache(full).ensure(spec)
    assert not (fresh.parent / "checkpoints").exists(), "a full build, resuming from nothing"
    mine, mine_dbs = _dump(engine, incremental, spec)
    theirs, theirs_dbs = _dump(full, fresh, spec)
    assert mine == theirs, label
    assert mine_dbs == theirs_dbs, f"{label}: the cluster runs start from holds no checkpoint"
    assert not any(name.startswith("tl_ck_") for name in mine_dbs)


def test_keep_after_doubles_back_from_the_end() -> None:
    assert sorted(keep_after(60)) == [52, 56, 58, 59]
    assert sorted(keep_after(60, limit=6)) == [28, 44, 52, 56, 58, 59]
    assert keep_after(1) == frozenset()
    assert sorted(keep_after(3)) == [1, 2]
    assert keep_after(60, limit=0) == frozenset()


def test_sql_folder_edits_replay_from_the_nearest_checkpoint_and_equal_a_full_build(
    tmp_path: Path, data_dir: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _engine(data_dir, cache_dir, tmp_path / "app")
    full = _full_builds(tmp_path, data_dir, engine)
    folder = tmp_path / "migrations"
    folder.mkdir()
    files = _sql_files(12)
    _write(folder, files)
    _cluster, replayed = _build(engine, TemplateSpec((SqlFolder(folder),)), caplog)
    assert replayed is None, "the first build starts from the base cluster"

    files["012_t12.sql"] += "ALTER TABLE t12 ADD COLUMN edited int DEFAULT 7;\n"  # the last one edited
    _write(folder, files)
    spec = TemplateSpec((SqlFolder(folder),))
    cluster, replayed = _build(engine, spec, caplog)
    assert replayed == 1
    _equal_to_a_full_build(spec, cluster, engine, full, "last edited")

    files["013_t13.sql"] = "CREATE TABLE t13 (id int REFERENCES t12);\n"  # one added
    _write(folder, files)
    spec = TemplateSpec((SqlFolder(folder),))
    cluster, replayed = _build(engine, spec, caplog)
    assert replayed == 1, "resumed from the previous template"
    _equal_to_a_full_build(spec, cluster, engine, full, "added")

    files["006_t6.sql"] = files["006_t6.sql"].replace("text", "varchar(20)")  # a middle one: 8 of 13 steps back
    _write(folder, files)
    spec = TemplateSpec((SqlFolder(folder),))
    cluster, replayed = _build(engine, spec, caplog)
    assert replayed is not None and 8 <= replayed < 13, replayed
    _equal_to_a_full_build(spec, cluster, engine, full, "middle edited")

    del files["013_t13.sql"]  # one removed: the prefix of 12 is a checkpoint of the last build
    _write(folder, files)
    spec = TemplateSpec((SqlFolder(folder),))
    cluster, replayed = _build(engine, spec, caplog)
    assert replayed == 0
    _equal_to_a_full_build(spec, cluster, engine, full, "removed")


def _databases(engine: PostgresEngine, cluster: Path) -> list[str]:
    """The checkpoints and templates a stored cluster holds."""
    server = engine.start("postgres-list", data_source=cluster)
    try:
        with server.connect() as admin:
            rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'tl%' ORDER BY 1").fetchall()
        return [name for (name,) in rows]
    finally:
        server.stop()


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_the_last_checkpoint_has_a_cluster_of_its_own_which_a_run_after_an_edit_of_the_last_step_starts_from(
    tmp_path: Path, data_dir: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture, launched: list[str]
) -> None:
    engine = _engine(data_dir, cache_dir, tmp_path / "app")
    full = _full_builds(tmp_path, data_dir, engine)
    folder = tmp_path / "migrations"
    folder.mkdir()
    files = _sql_files(9)  # checkpoints after 8, 7, 5 and 1 steps
    _write(folder, files)
    first, _ = _build(engine, TemplateSpec((SqlFolder(folder),)), caplog)
    steps = TemplateSpec((SqlFolder(folder),)).steps()
    names = {n: template.checkpoint_name(steps[n - 1].key) for n in (1, 5, 7, 8)}
    last, every = first.parent / "last", first.parent / "checkpoints"
    held = _databases(engine, last)
    assert names[8] in held and not {names[1], names[5], names[7]} & set(held), held
    assert {names[1], names[5], names[7]} <= set(_databases(engine, every))
    assert not any(name.startswith("tl_ck_") for name in _databases(engine, first)), "runs start without them"
    assert _size(last) < _size(every)

    files["009_t9.sql"] += "ALTER TABLE t9 ADD COLUMN edited int;\n"
    _write(folder, files)
    spec = TemplateSpec((SqlFolder(folder),))
    start = SnapshotCache(engine).start_for_run(spec)
    assert isinstance(start, RunBuild) and start.data == last and start.checkpoints.start == 8
    launched.clear()
    stack = _run_stack(engine, data_dir / "run")
    try:
        start_services(stack, ["postgres"], spec=spec, store_later=True)
        assert launched == ["postgres"] and stack.servers["postgres"].instance.extra["data_source"] == str(last)
        stack.run_deferred()
    finally:
        stack.stop()
    stored = SnapshotCache(engine).lookup(spec)
    assert stored is not None
    _equal_to_a_full_build(spec, stored, engine, full, "last edited, from its own cluster")

    # Its build resumed from last/ (only the checkpoint after 8 steps there): the others are recorded as before.
    records = json.loads((stored.parent / "checkpoints.json").read_text())["databases"]
    assert records[steps[4].key] == [f"{first.parent.name}/checkpoints", names[5]]
    assert records[steps[7].key] == [f"{first.parent.name}/last", names[8]]


def _alembic_project(root: Path, count: int, *, last: str = "") -> Path:
    versions = root / "alembic" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/alembic\n")
    (root / "alembic" / "env.py").write_text(
        textwrap.dedent("""
        from alembic import context
        from sqlalchemy import engine_from_config, pool

        config = context.config
        connectable = engine_from_config(config.get_section(config.config_ini_section), prefix="sqlalchemy.",
                                         poolclass=pool.NullPool)
        with connectable.connect() as connection:
            context.configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
        """)
    )
    for n in range(1, count + 1):
        extra = last if n == count else ""
        (versions / f"{n:04d}_step.py").write_text(
            textwrap.dedent(f"""
            import os
            from alembic import op
            import sqlalchemy as sa

            revision = "{n:04d}"
            down_revision = {f'"{n - 1:04d}"' if n > 1 else None}

            def upgrade():
                with open(os.environ["CKPT_RUNS"], "a") as runs:
                    runs.write(revision + "\\n")
                op.create_table("a{n}", sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.Text))
                op.execute("INSERT INTO a{n} (v) VALUES ('{n}')")
                {extra or "pass"}
            """)
        )
    return root / "alembic.ini"


def test_an_edited_last_alembic_revision_is_the_only_one_that_runs_again(
    tmp_path: Path, data_dir: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs.txt"
    monkeypatch.setenv("CKPT_RUNS", str(runs))
    engine = _engine(data_dir, cache_dir, tmp_path / "app")
    full = _full_builds(tmp_path, data_dir, engine)
    ini = _alembic_project(tmp_path / "proj", 10)
    _build(engine, TemplateSpec((AlembicMigrations(ini),)), caplog)
    assert runs.read_text().split() == [f"{n:04d}" for n in range(1, 11)]

    runs.unlink()
    _alembic_project(tmp_path / "proj", 10, last='op.add_column("a10", sa.Column("edited", sa.Integer))')
    spec = TemplateSpec((AlembicMigrations(ini),))
    cluster, replayed = _build(engine, spec, caplog)
    assert (replayed, runs.read_text().split()) == (1, ["0010"])
    _equal_to_a_full_build(spec, cluster, engine, full, "alembic last edited")

    runs.unlink()
    (tmp_path / "proj" / "alembic" / "env.py").write_text(
        (tmp_path / "proj" / "alembic" / "env.py").read_text() + "\n# edited\n"
    )
    _build(engine, TemplateSpec((AlembicMigrations(ini),)), caplog)
    assert len(runs.read_text().split()) == 10, "env.py is part of every step: all replayed"


def test_a_failing_replayed_migration_fails_as_a_full_build_does_and_stores_nothing(
    tmp_path: Path, data_dir: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CKPT_RUNS", str(tmp_path / "runs.txt"))
    engine = _engine(data_dir, cache_dir, tmp_path / "app")
    ini = _alembic_project(tmp_path / "proj", 6)
    good = TemplateSpec((AlembicMigrations(ini),))
    good_cluster, _ = _build(engine, good, caplog)
    before = sorted(p.name for p in good_cluster.parent.parent.iterdir() if p.is_dir())

    _alembic_project(tmp_path / "proj", 6, last='op.execute("INSERT INTO a6 (nope) VALUES (1)")')
    broken = TemplateSpec((AlembicMigrations(ini),))
    with caplog.at_level(logging.INFO, logger="testlane"), pytest.raises(MigrationError) as incremental:
        SnapshotCache(engine).ensure(broken)
    assert any(REPLAY.search(r.getMessage()) for r in caplog.records), "it did resume from a checkpoint"
    # A full build (nothing kept, nothing resumed from) in the same cache: its base cluster is already made.
    fresh = _engine(data_dir, cache_dir, tmp_path / "app", checkpoints=0)
    with pytest.raises(MigrationError) as full:
        SnapshotCache(fresh).ensure(broken)
    assert str(incremental.value) == str(full.value)
    assert 'column "nope" of relation "a6" does not exist' in str(incremental.value)
    assert "0006_step.py" in str(incremental.value)
    after = sorted(p.name for p in good_cluster.parent.parent.iterdir() if p.is_dir())
    assert after == before, "no half-built snapshot (not even its staging directory)"
    assert SnapshotCache(engine).lookup(broken) is None
    assert SnapshotCache(engine).lookup(good) == good_cluster


def test_checkpoints_are_kept_only_when_the_migrations_before_them_were_worth_it(
    tmp_path: Path, data_dir: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(template, "CHECKPOINT_WORTH_S", 0.3)
    engine = _engine(data_dir, cache_dir, tmp_path / "app")
    folder = tmp_path / "migrations"
    folder.mkdir()
    files = _sql_files(6)
    _write(folder, files)
    first, _ = _build(engine, TemplateSpec((SqlFolder(folder),)), caplog)
    assert not (first.parent / "checkpoints").exists(), "milliseconds of migrations: no copy stored"

    files["001_t1.sql"] += "SELECT pg_sleep(0.4);\n"  # the first step now costs more than a copy
    _write(folder, files)
    second, replayed = _build(engine, TemplateSpec((SqlFolder(folder),)), caplog)
    assert replayed is None
    assert (second.parent / "checkpoints").is_dir(), "slow migrations: their checkpoints are stored"

    files["006_t6.sql"] += "ALTER TABLE t6 ADD COLUMN edited int;\n"
    _write(folder, files)
    _cluster, replayed = _build(engine, TemplateSpec((SqlFolder(folder),)), caplog)
    assert replayed == 1


def test_checkpoints_are_kept_when_only_the_last_migrations_are_slow(
    tmp_path: Path, data_dir: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a fresh user: 8 files whose last four were slow kept no copy (the pace of the first four
    was taken for the whole build's)."""
    monkeypatch.setattr(template, "CHECKPOINT_WORTH_S", 0.3)
    engine = _engine(data_dir, cache_dir, tmp_path / "app")
    folder = tmp_path / "migrations"
    folder.mkdir()
    files = _sql_files(8)
    for n in (5, 6):
        files[f"{n:03d}_t{n}.sql"] += "SELECT pg_sleep(0.2);\n"
    _write(folder, files)
    first, _ = _build(engine, TemplateSpec((SqlFolder(folder),)), caplog)
    assert (first.parent / "checkpoints").is_dir(), "copies after 6 and 7 of 8 steps: 0.4 s of migrations before them"

    files["008_t8.sql"] += "ALTER TABLE t8 ADD COLUMN edited int;\n"
    _write(folder, files)
    _cluster, replayed = _build(engine, TemplateSpec((SqlFolder(folder),)), caplog)
    assert replayed == 1


def test_a_build_whose_migrations_were_shown_cheap_makes_one_call_not_worth_splitting(
    tmp_path: Path, data_dir: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stop is one more call of the migration tool (for Alembic, env.py again: about 30 ms each). Once a
    build measured the migrations as cheaper than a copy is worth, the next build of the same prefix applies
    them in one call (bench/migration_edit.py: the build after an edit, 0.15 s of 0.55 s)."""
    calls: list[tuple[int, int]] = []
    real = SqlFolder.apply_steps

    def counting(self: SqlFolder, target: template.Target, start: int, stop: int) -> None:
        calls.append((start, stop))
        real(self, target, start, stop)

    monkeypatch.setattr(SqlFolder, "apply_steps", counting)
    engine = _engine(data_dir, cache_dir, tmp_path / "app")
    folder = tmp_path / "migrations"
    folder.mkdir()
    files = _sql_files(6)
    _write(folder, files)
    first, _ = _build(engine, TemplateSpec((SqlFolder(folder),)), caplog)
    assert calls == [(0, 2), (2, 4), (4, 5), (5, 6)], "nothing known yet: a stop before each possible copy"
    assert not (first.parent / "checkpoints").exists()

    calls.clear()
    files["006_t6.sql"] += "ALTER TABLE t6 ADD COLUMN edited int;\n"
    _write(folder, files)
    second, _ = _build(engine, TemplateSpec((SqlFolder(folder),)), caplog)
    assert calls == [(0, 6)], "the first build showed 5 steps take milliseconds: no stop among them"
    full = _full_builds(tmp_path, data_dir, engine)
    _equal_to_a_full_build(TemplateSpec((SqlFolder(folder),)), second, engine, full, "one call")

    calls.clear()
    (first.parent / "checkpoints.json").unlink()  # as retention would prune the first build's snapshot
    files["006_t6.sql"] += "ALTER TABLE t6 ADD COLUMN again int;\n"
    _write(folder, files)
    _build(engine, TemplateSpec((SqlFolder(folder),)), caplog)
    assert calls == [(0, 6)], "what the first build measured was written again by the second"

    calls.clear()
    files["001_t1.sql"] += "SELECT pg_sleep(1.1);\n"  # every key changes: nothing known about this chain
    _write(folder, files)
    third, _ = _build(engine, TemplateSpec((SqlFolder(folder),)), caplog)
    assert calls == [(0, 2), (2, 4), (4, 5), (5, 6)]
    assert (third.parent / "checkpoints").is_dir(), "1.1 s before the stops: copies kept"


def _replayed(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [int(m.group(1)) for m in (REPLAY.search(r.getMessage()) for r in caplog.records) if m]


def test_after_an_edit_the_runs_own_server_replays_the_rest_and_the_snapshot_is_stored_after_the_tests(
    tmp_path: Path,
    data_dir: Path,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    launched: list[str],
) -> None:
    runs = tmp_path / "runs.txt"
    monkeypatch.setenv("CKPT_RUNS", str(runs))
    engine = _engine(data_dir, cache_dir, tmp_path / "app")
    full = _full_builds(tmp_path, data_dir, engine)
    ini = _alembic_project(tmp_path / "proj", 6)
    _build(engine, TemplateSpec((AlembicMigrations(ini),)), caplog)  # the snapshot, and its checkpoints

    _alembic_project(tmp_path / "proj", 6, last='op.add_column("a6", sa.Column("edited", sa.Integer))')
    spec = TemplateSpec((AlembicMigrations(ini),))
    cache = SnapshotCache(engine)
    runs.unlink()
    launched.clear()
    caplog.clear()
    stack = _run_stack(engine, data_dir / "run")
    try:
        with caplog.at_level(logging.INFO, logger="testlane"):
            start_services(stack, ["postgres"], spec=spec, store_later=True)
        assert launched == ["postgres"], "no builder server before the tests"
        assert (runs.read_text().split(), _replayed(caplog)) == (["0006"], [1]), "from the checkpoint after 5 steps"
        assert cache.lookup(spec) is None and stack.deferred == 1, "the snapshot is left for after the tests"
        seen, databases = _dump_server(engine, stack.servers["postgres"], spec)  # what the run's tests clone
        assert "edited" in seen

        stack.run_deferred()  # the tests are done
        assert len(launched) == 2 and launched[1].startswith("postgres-build-"), launched
        assert runs.read_text().split() == ["0006", "0006"], "the builder replays the same step, from the same place"
        stored = cache.lookup(spec)
        assert stored is not None
    finally:
        stack.stop()
    assert server_processes(data_dir / "run") == [] and leftovers(data_dir / "run") == []
    _equal_to_a_full_build(spec, stored, engine, full, "stored after the tests")
    assert seen == _dump(full, SnapshotCache(full).ensure(spec), spec)[0], "the run's own template is a full build's"
    assert spec.name(engine.binaries().version) in databases

    runs.unlink()
    launched.clear()
    stack = _run_stack(engine, data_dir / "run")
    try:
        start_services(stack, ["postgres"], spec=spec, store_later=True)
        assert launched == ["postgres"] and stack.deferred == 0 and not runs.exists(), "the next run: the snapshot"
        assert stack.servers["postgres"].instance.extra["data_source"] == str(stored)
    finally:
        stack.stop()


def test_a_migration_failing_on_the_runs_own_server_fails_as_on_a_builder_and_leaves_nothing(
    tmp_path: Path,
    data_dir: Path,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    launched: list[str],
) -> None:
    monkeypatch.setenv("CKPT_RUNS", str(tmp_path / "runs.txt"))
    engine = _engine(data_dir, cache_dir, tmp_path / "app")
    ini = _alembic_project(tmp_path / "proj", 6)
    good_cluster, _ = _build(engine, TemplateSpec((AlembicMigrations(ini),)), caplog)
    before = sorted(p.name for p in good_cluster.parent.parent.iterdir())

    _alembic_project(tmp_path / "proj", 6, last='op.execute("INSERT INTO a6 (nope) VALUES (1)")')
    broken = TemplateSpec((AlembicMigrations(ini),))
    launched.clear()
    stack = _run_stack(engine, data_dir / "run")
    try:
        with pytest.raises(MigrationError) as on_run_server:
            start_services(stack, ["postgres"], spec=broken, store_later=True)
        assert launched == ["postgres"], "it failed on the run's own server"
        assert stack.deferred == 0, "nothing left to store"
    finally:
        stack.stop()
    assert server_processes(data_dir / "run") == [] and leftovers(data_dir / "run") == []
    assert sorted(p.name for p in good_cluster.parent.parent.iterdir()) == before, "the cache untouched, no lock taken"
    with pytest.raises(MigrationError) as on_builder:
        SnapshotCache(engine).ensure(broken)
    assert str(on_run_server.value) == str(on_builder.value)
    assert on_run_server.value.cause == on_builder.value.cause
    assert 'column "nope" of relation "a6" does not exist' in str(on_run_server.value)
    assert SnapshotCache(engine).lookup(broken) is None


def test_a_first_build_and_a_replay_known_to_be_long_use_the_builder_first(
    tmp_path: Path, data_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, launched: list[str]
) -> None:
    """Replaying on the run's server runs the replayed steps twice (the builder replays them after the tests):
    only for steps earlier builds measured as short."""
    engine = _engine(data_dir, cache_dir, tmp_path / "app")
    folder = tmp_path / "migrations"
    folder.mkdir()
    files = _sql_files(4)
    _write(folder, files)
    for step in ("first build", "long replay"):
        if step == "long replay":
            files["004_t4.sql"] += "ALTER TABLE t4 ADD COLUMN edited int;\n"
            _write(folder, files)
            monkeypatch.setattr(snapshots, "RUN_SERVER_REPLAY_S", 0.0)  # whatever the replay took: too long
        launched.clear()
        stack = _run_stack(engine, data_dir / "run")
        try:
            start_services(stack, ["postgres"], spec=TemplateSpec((SqlFolder(folder),)), store_later=True)
            assert launched[0].startswith("postgres-build-") and launched[1:] == ["postgres"], (step, launched)
            assert stack.deferred == 0, step
        finally:
            stack.stop()


def test_a_checkpoint_pruned_while_the_run_starts_from_it_makes_the_run_build_the_snapshot_first(
    tmp_path: Path,
    data_dir: Path,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    launched: list[str],
) -> None:
    engine = _engine(data_dir, cache_dir, tmp_path / "app")
    folder = tmp_path / "migrations"
    folder.mkdir()
    files = _sql_files(4)
    _write(folder, files)
    old, _ = _build(engine, TemplateSpec((SqlFolder(folder),)), caplog)
    files["004_t4.sql"] += "ALTER TABLE t4 ADD COLUMN edited int;\n"
    _write(folder, files)
    spec = TemplateSpec((SqlFolder(folder),))
    start_for_run = SnapshotCache.start_for_run

    def pruned_meanwhile(self: SnapshotCache, spec: TemplateSpec) -> Path | RunBuild:
        start = start_for_run(self, spec)
        assert isinstance(start, RunBuild) and start.data == old.parent / "last"
        assert remove_entry(old.parent) is not None  # as `testlane cache prune` or another project's retention
        return start

    monkeypatch.setattr(SnapshotCache, "start_for_run", pruned_meanwhile)
    launched.clear()
    stack = _run_stack(engine, data_dir / "run")
    try:
        start_services(stack, ["postgres"], spec=spec, store_later=True)
        assert launched[0] == "postgres" and launched[1].startswith("postgres-build-") and launched[2:] == ["postgres"]
        assert stack.deferred == 0
        assert stack.servers["postgres"].instance.extra["data_source"] == str(SnapshotCache(engine).lookup(spec))
    finally:
        stack.stop()
    assert server_processes(data_dir / "run") == [] and leftovers(data_dir / "run") == []


SEED = """
import os


def seed(conn):
    with open(os.environ["SEED_RUNS"], "a") as runs:
        runs.write("seed\\n")
    conn.execute("INSERT INTO t3 (v3) VALUES ('seeded')")
"""

FIRST_TEST = """
import json, os
from pathlib import Path


def test_first(pg_conn):
    cache = Path(os.environ["TESTLANE_CACHE_DIR"])
    columns = pg_conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 't3' ORDER BY 1"
    ).fetchall()
    Path(os.environ["SEEN"]).write_text(json.dumps({
        "seed_runs": len(Path(os.environ["SEED_RUNS"]).read_text().split()),
        "snapshots": sorted(p.parent.name for p in cache.glob("snapshots/*/cluster")),
        "columns": [c for (c,) in columns],
    }))
"""

RUNNERS = {
    "pytest": [sys.executable, "-m", "pytest", "--it", "-q", "-p", "no:cacheprovider"],
    "pytest-xdist": [sys.executable, "-m", "pytest", "--it", "-q", "-p", "no:cacheprovider", "-n", "2"],
    "testlane-run": [TESTLANE, "run", "--", "-q", "-p", "no:cacheprovider"],
}


def _seeded_project(root: Path) -> dict[str, str]:
    """A project of three SQL files and a seed step that counts its runs in ``$SEED_RUNS``; the files, to edit."""
    (root / "migrations").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0"\n\n[tool.testlane]\nservices = ["postgres"]\n\n'
        '[tool.testlane.db]\nmigrations = "migrations"\nseed = ["seeding:seed"]\n\n'
        '[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n'
    )
    files = _sql_files(3)
    _write(root / "migrations", files)
    (root / "seeding.py").write_text(SEED)
    (root / "test_first.py").write_text(FIRST_TEST)
    return files


def _inner_env(data_dir: Path, cache_dir: Path, seed_runs: Path, seen: Path) -> dict[str, str]:
    return clean_env(
        {
            "TESTLANE_DATA_DIR": str(data_dir),
            "TESTLANE_CACHE_DIR": str(cache_dir),
            "SEED_RUNS": str(seed_runs),
            "SEEN": str(seen),
        }
    )


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_a_run_after_an_edit_starts_its_tests_before_the_snapshot_and_the_next_run_starts_from_it(
    tmp_path: Path, data_dir: Path, cache_dir: Path, runner: str
) -> None:
    project = tmp_path / "project"
    files = _seeded_project(project)
    seed_runs, seen = tmp_path / "seed-runs.txt", tmp_path / "seen.json"
    env = _inner_env(data_dir, cache_dir, seed_runs, seen)

    def run() -> tuple[dict[str, Any], str]:
        proc = subprocess.run(RUNNERS[runner], cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(seen.read_text()), proc.stdout + proc.stderr

    first, _ = run()  # a first build: by a builder, before the tests (nothing of this history was measured)
    assert (first["seed_runs"], len(first["snapshots"])) == (1, 1)

    files["003_t3.sql"] += "ALTER TABLE t3 ADD COLUMN edited int;\n"
    _write(project / "migrations", files)
    edited, output = run()
    assert "on this run's server" in output or runner == "pytest-xdist"  # (a worker's progress is not shown)
    assert edited["seed_runs"] == 2, "the template built on the run's own server, no builder before the tests"
    assert edited["snapshots"] == first["snapshots"], "the new snapshot is stored after the tests"
    assert "edited" in edited["columns"]
    assert len(seed_runs.read_text().split()) == 3, "then the builder"
    assert len(list(cache_dir.glob("snapshots/*/cluster"))) == 2

    unchanged, output = run()
    assert "building the migrated template" not in output
    assert unchanged["seed_runs"] == 3 and len(unchanged["snapshots"]) == 2, "started from the stored snapshot"
    assert unchanged["columns"] == edited["columns"]
    assert server_processes(data_dir) == [] and leftovers(data_dir) == []


def test_two_concurrent_runs_after_an_edit_each_build_on_their_own_server_and_one_stores_the_snapshot(
    tmp_path: Path, data_dir: Path, cache_dir: Path
) -> None:
    """Each run's tests see the whole edited template; one snapshot is stored (never waited for by the other run),
    whole: the next run starts from it."""
    project = tmp_path / "project"
    files = _seeded_project(project)
    seed_runs = tmp_path / "seed-runs.txt"
    argv = [*RUNNERS["pytest"], "-n", "2"]

    def env(label: str) -> dict[str, str]:
        return _inner_env(data_dir, cache_dir, seed_runs, tmp_path / f"seen-{label}.json")

    first = subprocess.run(argv, cwd=project, env=env("first"), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr

    files["003_t3.sql"] += "ALTER TABLE t3 ADD COLUMN edited int;\n"
    _write(project / "migrations", files)
    procs = [
        subprocess.Popen(argv, cwd=project, env=env(label), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for label in ("x", "y")
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    for label in ("x", "y"):
        seen = json.loads((tmp_path / f"seen-{label}.json").read_text())
        assert "edited" in seen["columns"], label
    assert len(seed_runs.read_text().split()) == 1 + 2 + 1, "first build, each run's own server, one snapshot build"
    assert len(list(cache_dir.glob("snapshots/*/cluster"))) == 2
    assert not list(cache_dir.glob("snapshots/.*.tmp")) and not list(cache_dir.glob("snapshots/*/.*.tmp"))

    after = subprocess.run(argv, cwd=project, env=env("after"), capture_output=True, text=True, timeout=300)
    assert after.returncode == 0, after.stdout + after.stderr
    assert len(seed_runs.read_text().split()) == 4, "the next run starts from the stored snapshot"
    assert json.loads((tmp_path / "seen-after.json").read_text())["columns"] == seen["columns"]
    assert server_processes(data_dir) == [] and leftovers(data_dir) == []
