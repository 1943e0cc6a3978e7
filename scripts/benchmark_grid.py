"""What the grid benchmarks share (``benchmark_real.py``, ``benchmark_volumes.py``): a timed run of the CLI,
the run's own quality report, and the worker processes that train and score one (case, method) each.

Not a benchmark itself; the scripts import it from their own folder.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence


def timed_cli(args: Sequence[str], cwd: Path, threads: int) -> dict:
    """Run ``python -m bmz_cosdd ARGS`` in ``cwd`` with ``threads`` OpenMP threads.

    Returns its wall and CPU time (seconds, the child's user + system time) and its stderr lines;
    raises RuntimeError with the stderr when it fails.
    """
    cmd = [sys.executable, "-m", "bmz_cosdd", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return {"wall_s": wall, "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "stderr": done.stderr.strip().splitlines()}


def read_quality(run: Path) -> dict | None:
    """The run's ``quality.json`` (its assessment without ground truth), None when it wrote none."""
    path = run / "quality.json"
    return json.loads(path.read_text()) if path.is_file() else None


def quality_fields(quality: dict | None, stderr: Sequence[str]) -> dict:
    """The result fields every grid benchmark reports from a run: its flags, gain estimate, residual
    warnings and what it chose from the data (its ``(auto)`` lines)."""
    quality = quality or {}
    return {"flagged": quality.get("flagged"), "flags": quality.get("flags"),
            "estimated_gain_db": quality.get("estimated_gain_db"), "residual_warnings": quality.get("warnings"),
            "chose": [line for line in stderr if "(auto)" in line]}


def run_workers(script: str, work: Sequence[tuple[str, str]], worker_args: Callable[[str], list[str]],
                threads: int, jobs: int, echo_errors: bool = False) -> list[dict]:
    """Run ``script --one CASE LABEL *worker_args(LABEL)`` for every (case, label) of ``work``, ``jobs`` at once.

    Each worker prints one JSON result on its last stdout line; the results come back in the order of
    ``work`` and are echoed to stderr as they finish. A failed worker gives ``{"case", "method", "error"}``
    with its last three stderr lines (echoed too with ``echo_errors``).
    """

    def launch(item: tuple[str, str]) -> dict:
        case, label = item
        cmd = [sys.executable, script, "--one", case, label, *worker_args(label)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            result = {"case": case, "method": label, "error": done.stderr.strip().splitlines()[-3:]}
            if not echo_errors:
                return result
        else:
            result = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(result), file=sys.stderr, flush=True)
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(launch, work))
