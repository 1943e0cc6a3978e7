"""How many CPU threads this process may use, and torch set to that many.

torch starts one OpenMP thread per core of the host, whatever share of it the process has: in
a container or a cluster job limited to N cores of a larger host, those threads fight over N
cores, and OpenMP threads that spin while waiting take CPU time from other processes. This
module finds the CPUs the process may really use (affinity mask, cgroup CPU quota,
``SLURM_CPUS_PER_TASK``), leaves out those that other processes keep busy when it starts, and
sets torch to that count. Imported before torch (the CLI does), it also makes OpenMP threads
sleep rather than spin when idle (``OMP_WAIT_POLICY=PASSIVE``, unless the environment sets it).

Why the busy CPUs are left out: a team of OpenMP threads waits at every operation for its
slowest member, so one thread more than the free CPUs stalls the whole team whenever the
scheduler parks it. Measured on a 2-core VM (150 training steps of COSDD's ``tiny`` preset):
alone, 17.9 s with one thread and 28.0 s with two; a second training started beside it took
64-70 s with two threads each, and 17.3 s (with the first at 36 s) when the second used one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Collection
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_STAT = Path("/proc/stat")

_chosen: tuple[int, str] | None = None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs granted by the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``); None without a quota.

    Parameters
    ----------
    root
        Where the cgroup file system is mounted.
    proc_cgroup
        The process's cgroup membership file (v2: one line ``0::/path``).

    Returns
    -------
    float or None
        Quota divided by period, e.g. 1.5 for ``150000 100000``.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "cpu.max").write_text("150000 100000\\n")
    >>> cgroup_cpu_quota(folder, folder / "missing")
    1.5
    >>> _ = (folder / "cpu.max").write_text("max 100000\\n")
    >>> cgroup_cpu_quota(folder, folder / "missing") is None
    True
    """
    candidates = []
    try:
        for line in proc_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                candidates.append(root / line[3:].lstrip("/") / "cpu.max")
    except OSError:
        pass
    candidates.append(root / "cpu.max")
    for path in candidates:
        try:
            quota, period = path.read_text().split()[:2]
        except (OSError, ValueError):
            continue
        return None if quota == "max" else _ratio(quota, period)
    for folder in ("cpu", "cpu,cpuacct"):  # cgroup v1
        try:
            quota = (root / folder / "cpu.cfs_quota_us").read_text().strip()
            period = (root / folder / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            continue
        return None if quota.startswith("-") else _ratio(quota, period)
    return None


def _ratio(quota: str, period: str) -> float | None:
    try:
        value = int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def usable_cpus() -> tuple[int, str]:
    """The number of CPUs this process may keep busy, and why.

    The smallest of: the CPUs in the process's affinity mask (``taskset``, ``numactl``, a
    container's cpuset), the cgroup CPU quota rounded down (at least 1; ``docker --cpus``,
    Kubernetes limits, systemd ``CPUQuota``) and ``SLURM_CPUS_PER_TASK``.

    Returns
    -------
    (int, str)
        The count and a phrase naming its source, e.g. ``(2, "a cgroup CPU quota of 2.0")``.
    """
    try:
        count = len(os.sched_getaffinity(0))
        choices = [(count, f"{count} CPUs in the process's affinity mask")]
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
        choices = [(count, f"{count} CPUs")]
    quota = cgroup_cpu_quota()
    if quota is not None:
        choices.append((max(1, math.floor(quota)), f"a cgroup CPU quota of {quota:g}"))
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        choices.append((int(slurm), f"SLURM_CPUS_PER_TASK={slurm}"))
    return min(choices, key=lambda choice: choice[0])


def _cpu_times(stat: Path) -> dict[int, tuple[int, int]]:
    """(busy, total) clock ticks of every CPU in ``/proc/stat``; busy is all but idle and iowait."""
    times = {}
    for line in stat.read_text().splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
            total = sum(ticks)
            times[int(name[3:])] = (total - ticks[3] - ticks[4], total)
    return times


_Snapshot = tuple[float, float, dict[int, tuple[int, int]]]


def _snapshot(stat: Path) -> _Snapshot | None:
    """(wall clock, this process's CPU seconds, :func:`_cpu_times`), None where the table is unreadable."""
    try:
        wall, own = time.monotonic(), sum(os.times()[:2])
        return wall, own, _cpu_times(stat)
    except (OSError, ValueError):
        return None


_IMPORTED = _snapshot(PROC_STAT)  # the process's start-up (imports) is the first window watched


def busy_cpus(cpus: Collection[int], seconds: float = 0.1, stat: Path = PROC_STAT) -> float | None:
    """How many of ``cpus`` other processes keep busy: the busy share of each over a recent window,
    summed, less this process's own CPU time.

    The window is this process's start-up, from the import of this module (1-2 s of imports
    in the command line, long enough that two jobs started together see each other), or,
    when that is under 0.1 s or over 5 s old, ``seconds`` of sleep from now. Linux only.

    Parameters
    ----------
    cpus
        CPU numbers, e.g. ``os.sched_getaffinity(0)``.
    seconds
        How long to watch when the start-up window does not serve (the kernel counts in
        ticks of 10 ms: 0.1 s resolves a tenth of a CPU).
    stat
        The kernel's CPU time table.

    Returns
    -------
    float or None
        Between 0 and ``len(cpus)``; None where ``stat`` cannot be read or lacks one of ``cpus``.
    """
    before = _IMPORTED if stat == PROC_STAT else None
    if before is None or not 0.1 <= time.monotonic() - before[0] <= 5.0:
        before = _snapshot(stat)
        time.sleep(seconds)
    after = _snapshot(stat)
    if before is None or after is None:
        return None
    return _others_busy(before, after, cpus)


def _others_busy(before: _Snapshot, after: _Snapshot, cpus: Collection[int]) -> float | None:
    """CPUs of ``cpus`` busy between two snapshots, less this process's share; None if a CPU is missing."""
    busy = 0.0
    for cpu in cpus:
        if cpu not in before[2] or cpu not in after[2]:
            return None
        ticks = after[2][cpu][1] - before[2][cpu][1]
        busy += (after[2][cpu][0] - before[2][cpu][0]) / ticks if ticks > 0 else 0.0
    own = (after[1] - before[1]) / max(after[0] - before[0], 1e-3)
    return min(float(len(cpus)), max(0.0, busy - own))


def free_cpus(count: int, why: str) -> tuple[int, str]:
    """``count`` usable CPUs less those other processes keep busy now (:func:`busy_cpus`), at least 1.

    Parameters
    ----------
    count, why
        :func:`usable_cpus`'s answer.

    Returns
    -------
    (int, str)
        The count and why; ``count`` and ``why`` themselves when nothing is busy or the
        load cannot be read.
    """
    try:
        mask = os.sched_getaffinity(0)
    except AttributeError:
        return count, why
    busy = busy_cpus(mask)
    if busy is None:
        return count, why
    free = max(1, min(count, math.floor(len(mask) - busy + 0.5)))
    if free >= count:
        return count, why
    return free, f"{why}, less {busy:.1f} busy with other processes when it started"


def configure_threads(threads: int | None = None) -> str:
    """Set torch's intra-op threads: ``threads``, else ``OMP_NUM_THREADS`` when set, else the free CPUs.

    The free CPUs are :func:`usable_cpus` less those other processes keep busy when this is
    called (:func:`free_cpus`): a second job started beside a first takes the CPUs left.

    Parameters
    ----------
    threads
        The ``--threads`` option; None chooses as above.

    Returns
    -------
    str
        What was set and why, e.g. ``"2 threads (2 CPUs in the process's affinity mask)"``.

    Raises
    ------
    bmz_cosdd.errors.UserError
        For ``threads`` below 1.
    """
    import torch

    from bmz_cosdd.errors import UserError

    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be at least 1, got {threads}")
        count, why = threads, "--threads"
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        count, why = int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    else:
        count, why = usable_cpus()
        if count > 1:
            count, why = free_cpus(count, why)
    torch.set_num_threads(count)
    global _chosen
    _chosen = (count, why)
    return f"{count} thread{'s' if count > 1 else ''} ({why})"


def threads_in_use() -> tuple[int, str]:
    """torch's intra-op thread count and why: :func:`configure_threads`'s choice while torch still has it."""
    import torch

    count = torch.get_num_threads()
    if _chosen is not None and _chosen[0] == count:
        return _chosen
    return count, "set by the caller" if _chosen is not None else "torch's default"
