"""Per-migration checkpoints (issue 19): an edited migration replays only from the nearest unchanged prefix.

* A snapshot build keeps checkpoints; the next build whose steps share a prefix starts from the
  longest matching one and applies only the rest (SQL files and Alembic revisions alike).
* The template built so equals one built from scratch (``pg_dump`` of schema and data), after editing
  the last migration, a middle one, adding one and removing one; the cluster runs start from holds no
  checkpoint.
* A failing replayed migration fails with the message a full build gives, and stores no snapshot.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest
from psycopg import sql

from testlane.core.config import load_settings
from testlane.core.errors import MigrationError
from testlane.core.runtime import RunContext
from testlane.databases import template
from testlane.databases.migrations import AlembicMigrations, SqlFolder
from testlane.databases.snapshots import SnapshotCache, keep_after
from testlane.databases.template import TemplateSpec
from testlane.services.postgres import PostgresEngine
from testlane.services.registry import Registry

REPLAY = re.compile(r"replaying (\d+) of (\d+) migration steps")


@pytest.fixture(autouse=True)
def _checkpoint_every_step_kept(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """These migrations take milliseconds: keep their checkpoints anyway (the default keeps one only after
    ``CHECKPOINT_WORTH_S`` of migrations), except in the test of that rule."""
    if "worth" not in request.node.name:
        monkeypatch.setattr(template, "CHECKPOINT_WORTH_S", 0.0)


def _engine(data_dir: Path, cache_dir: Path, project: Path, *, checkpoints: int = 4) -> PostgresEngine:
    project.mkdir(parents=True, exist_ok=True)
    (project / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "0"\n')
    values = {"data_dir": str(data_dir), "cache_dir": str(cache_dir), "db.checkpoints": str(checkpoints)}
    settings = load_settings(start=project, environ={}, overrides=values)
    context = RunContext.from_settings(settings, owner=os.getpid())
    context.ensure_dirs()
    return PostgresEngine(settings, context, Registry(context))


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
        with server.connect() as admin:
            template = sql.Identifier(spec.name(server.version))
            admin.execute(sql.SQL("CREATE DATABASE compare TEMPLATE {}").format(template))
            names = [r[0] for r in admin.execute("SELECT datname FROM pg_database ORDER BY 1").fetchall()]
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
        return proc.stdout, names
    finally:
        server.stop()


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
