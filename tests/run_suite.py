"""The whole test suite as `make test` runs it: two phases, one summary.

1. every test not marked ``serial`` in worker processes (pytest-xdist, ``--dist loadgroup``: tests
   that share a heavy fixture carry one ``xdist_group`` and run on one worker), each worker with
   ``cores // workers`` compute threads (set in conftest.py from PYTEST_XDIST_WORKER_COUNT);
2. the ``serial`` tests (several processes of their own, kill timing, wall-clock bounds) alone, with
   the whole machine.

Each phase prints its wall time and how many cores it kept busy (the CPU seconds of the processes
it started over its wall time: below the core count, some core sat idle). Then the suite's wall
time, the slowest items (set-up included) and one closing line
``suite: N passed, N failed, N skipped``. Extra arguments go to both pytest runs (e.g. a file or
``-k``). RECFACE_TEST_WORKERS overrides the number of workers (default: the cores, at most 4).
Exit status: non-zero when either phase fails."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLOWEST = 10


def _workers() -> int:
    env = os.environ.get("RECFACE_TEST_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(4, os.cpu_count() or 1))


def _children_cpu() -> float:
    """User + system CPU seconds of every finished child process (pytest and what it started)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _cases(xml: Path) -> list[tuple[str, float, str]]:
    """(test id, seconds, outcome) of every test case in a junit file (none when it is absent)."""
    if not xml.exists():
        return []
    out = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag for child in case}
        outcome = ("failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed")
        out.append((name, float(case.get("time") or 0.0), outcome))
    return out


def _split_marker(argv: list[str]) -> tuple[str | None, list[str]]:
    """A ``-m EXPR`` among the arguments, and the rest (each phase adds its own marker to it)."""
    rest, expr, it = [], None, iter(argv)
    for a in it:
        if a == "-m":
            expr = next(it, None)
        elif a.startswith("-m") and len(a) > 2:
            expr = a[2:]
        else:
            rest.append(a)
    return expr, rest


def main(argv: list[str]) -> int:
    workers = _workers()
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="recface-suite-"))
    expr, argv = _split_marker(argv)
    both = (lambda m: f"({expr}) and ({m})") if expr else (lambda m: m)
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    phases = [
        ("parallel", ["-m", both("not serial")] + (["-n", str(workers), "--dist", "loadgroup"] if workers > 1 else [])),
        ("serial", ["-m", both("serial")]),
    ]
    codes, cases = {}, []
    for name, opts in phases:
        xml = tmp / f"{name}.xml"
        print(f"== phase {name}: {' '.join(opts)}", flush=True)
        start, cpu = time.monotonic(), _children_cpu()
        codes[name] = subprocess.call(base + opts + [f"--junitxml={xml}"] + argv, cwd=REPO)
        secs, used = time.monotonic() - start, _children_cpu() - cpu
        print(f"== phase {name}: exit {codes[name]} in {secs:.0f} s, {used:.0f} CPU s "
              f"({used / max(secs, 1e-9):.2f} of {os.cpu_count()} cores busy)", flush=True)
        cases += _cases(xml)
    wall = time.monotonic() - t0
    counts = {k: sum(1 for c in cases if c[2] == k) for k in ("passed", "failed", "skipped")}
    print(f"\n{SLOWEST} slowest items (set-up included):")
    for name, secs, outcome in sorted(cases, key=lambda c: -c[1])[:SLOWEST]:
        print(f"  {secs:7.1f} s  {name}  [{outcome}]")
    print(f"suite wall time: {wall / 60:.1f} min ({wall:.0f} s) with {workers} workers")
    # pytest exit 5 = nothing collected: fine for one phase (e.g. a -k that selects no serial test)
    ok = all(c in (0, 5) for c in codes.values()) and cases and counts["failed"] == 0
    print(f"suite: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
