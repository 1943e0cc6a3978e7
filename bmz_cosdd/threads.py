"""How many CPU threads this process may use, and torch set to that many.

torch starts one OpenMP thread per core of the host, whatever share of it the process has: in
a container or a cluster job limited to N cores of a larger host, those threads fight over N
cores, and OpenMP threads that spin while waiting take CPU time from other processes. This
module finds the CPUs the process may really use (affinity mask, cgroup CPU quota,
``SLURM_CPUS_PER_TASK``) and sets torch to that count. Imported before torch (the CLI does),
it also makes OpenMP threads sleep rather than spin when idle (``OMP_WAIT_POLICY=PASSIVE``,
unless the environment sets it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CGROUP_ROOT = Path("/sys/fs/cgroup")


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


def configure_threads(threads: int | None = None) -> str:
    """Set torch's intra-op threads: ``threads``, else ``OMP_NUM_THREADS`` when set, else :func:`usable_cpus`.

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
    torch.set_num_threads(count)
    return f"{count} thread{'s' if count > 1 else ''} ({why})"
