"""Validate a package with bioimageio.core, one weight format at a time, offline.

Each weight format present is tested by ``bioimageio.core.test_model`` at its DEFAULT
tolerance (relative 1e-3, absolute 1e-3, 100 mismatched elements per million), never
with ``stop_early`` (in core 0.11 it stops after the first *passing* format and
reports success), and without touching the network.

Examples
--------
Not run as doctests: they need a package zip made by ``bmz-cosdd package`` and run
bioimageio.core on it (``tests/zoo/test_validate.py`` does); :func:`format_table`'s own
example runs.

>>> results = validate_package(Path("model.bioimageio.zip"))  # doctest: +SKIP
>>> print(format_table(results))                              # doctest: +SKIP
"""

from __future__ import annotations

import gc
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from bmz_cosdd.errors import UserError
from bmz_cosdd.artifacts.offline_bioimageio import offline_bioimageio, quiet_bioimageio
from bmz_cosdd.artifacts.package_reader import read_package_descr
from bmz_cosdd.export.package_trust import require_trusted_code

#: Weight formats in the order they are tested and reported.
WEIGHT_FORMATS = ("torchscript", "pytorch_state_dict", "onnx")
#: Warning severities (bioimageio.spec levels) surfaced in the results: WARNING and up.
_MIN_SEVERITY = 30
_MAX_LINE = 400


@dataclass
class FormatResult:
    """Outcome of core's tests for one weight format.

    Attributes
    ----------
    weight_format
        ``torchscript``, ``pytorch_state_dict`` or ``onnx``.
    passed
        Every check for this format passed.
    details
        The failing checks, one line each.
    warnings
        Warnings worth a look (e.g. elements off within tolerance, format hints), one line each.
    seconds
        Time core's test took.
    """

    weight_format: str
    passed: bool
    details: list[str]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _one_line(text: str) -> str:
    line = " ".join(str(text).replace("\\|", "|").split())
    line = re.sub(r"np\.\w+\(([^()]*)\)", r"\1", line)  # np.int64(3) -> 3
    return line if len(line) <= _MAX_LINE else line[: _MAX_LINE - 3] + "..."


@contextmanager
def _validation_settings(github_users: Sequence[str]) -> Iterator[None]:
    """Offline (see :func:`bmz_cosdd.artifacts.offline_bioimageio.offline_bioimageio`), no progress bars."""
    from bioimageio.spec._internal._settings import settings

    saved_ci = settings.CI
    try:
        settings.CI = True  # core/spec show no progress bars in CI mode
        with offline_bioimageio(github_users):
            yield
    finally:
        settings.CI = saved_ci


def _summarise(weight_format: str, summary: Any, seconds: float) -> FormatResult:
    failed: list[str] = []
    warned: list[str] = []
    for detail in summary.details:
        loc = tuple(map(str, detail.loc or ()))
        other_format = len(loc) >= 2 and loc[0] == "weights" and loc[1] != weight_format
        if other_format:
            continue
        if detail.status == "failed":
            msgs = [e.msg for e in detail.errors] or ["failed"]
            for msg in msgs:
                failed.append(_one_line(f"{detail.name}: {msg}"))
        for w in detail.warnings:
            if int(w.severity) >= _MIN_SEVERITY:
                where = ".".join(map(str, w.loc)) if w.loc else detail.name
                warned.append(_one_line(f"{where}: {w.msg}"))
    passed = summary.status == "passed" and not failed
    if not passed and not failed:
        failed.append(f"bioimageio.core reported status {summary.status!r}")
    return FormatResult(
        weight_format=weight_format,
        passed=passed,
        details=failed,
        warnings=list(dict.fromkeys(warned)),
        seconds=seconds,
    )


@contextmanager
def _collections_of_new_objects_only() -> Iterator[None]:
    """Let garbage collections inside skip the objects that exist now (``gc.freeze``).

    bioimageio.core calls ``gc.collect()`` each time it unloads a model (ten times for a
    package with three weight formats); each full collection walks every object of torch,
    pydantic and the spec (~0.2 s apiece on a 2-core machine). Nothing is frozen when this
    process has frozen objects of its own; everything is unfrozen after.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def validate_package(path: Path, device: str | None = None, trust_code: bool = False) -> list[FormatResult]:
    """Run bioimageio.core's model test once per weight format in the package.

    Testing a weight format runs it, so a package is held to the rules of
    :mod:`bmz_cosdd.export.package_trust` first: every file it names must lie inside it (else
    refused before anything is loaded; the test itself never touches the network), and if
    any of its weights would run Python that bmz-cosdd did not write (``pytorch_state_dict``
    weights whose architecture source is not byte-identical to the one this version writes
    for the package, an ``import_from`` architecture, Keras/TensorFlow weights, ``custom``
    processing), nothing is tested unless ``trust_code``.

    Parameters
    ----------
    path
        A package zip.
    device
        ``"cpu"`` or ``"cuda"`` (``"cuda:1"``...); default: core's choice (CUDA if available).
    trust_code
        Test (run) weights whose Python bmz-cosdd did not write (the ``--trust-code`` option):
        only for packages whose author you trust.

    Returns
    -------
    list of FormatResult
        One per weight format present, in the order torchscript, pytorch_state_dict, onnx
        (then any other format the package has).

    Raises
    ------
    bmz_cosdd.errors.UserError
        If the file is not a readable bioimage.io model package, names a file outside itself,
        or (without ``trust_code``) would run Python bmz-cosdd did not write (one line).
    """
    import time

    from bioimageio.core import test_model

    path = Path(path).absolute()
    descr = read_package_descr(path)
    require_trusted_code(path, trust_code, "testing {what} would run the package's own Python: nothing was tested",
                         "bmz-cosdd predict --weight-format torchscript runs a package without its Python")
    present = [wf for wf, entry in descr.weights if entry is not None]
    formats = [wf for wf in WEIGHT_FORMATS if wf in present] + [wf for wf in present if wf not in WEIGHT_FORMATS]
    if device is not None and not str(device).strip():
        raise UserError("device must be 'cpu' or 'cuda' (or e.g. 'cuda:1')")
    devices = None if device is None else [str(device)]
    people = [*descr.authors, *(getattr(descr, "maintainers", None) or [])]
    github_users = [a.github_user for a in people if a.github_user]

    results: list[FormatResult] = []
    with _validation_settings(github_users), quiet_bioimageio(), _collections_of_new_objects_only():
        for wf in formats:
            start = time.perf_counter()
            summary = test_model(path, weight_format=wf, devices=devices, stop_early=False)
            results.append(_summarise(wf, summary, time.perf_counter() - start))
    return results


def format_table(results: Sequence[FormatResult]) -> str:
    """A plain-text table, one row per weight format, then failing checks and warnings.

    Warnings every format reports (about the description itself) are listed once.

    >>> print(format_table([FormatResult("torchscript", True, [], ["a hint"], 1.25)]))
    weight format  result  time
    torchscript    passed  1.2 s
      warning: a hint
    """
    rows = [("weight format", "result", "time")]
    for r in results:
        rows.append((r.weight_format, "passed" if r.passed else "FAILED", f"{r.seconds:.1f} s"))
    w0 = max(len(r[0]) for r in rows) + 2
    w1 = max(len(r[1]) for r in rows) + 2
    lines = [f"{a:<{w0}}{b:<{w1}}{c}".rstrip() for a, b, c in rows]
    if not results:
        lines.append("(no weight formats)")
        return "\n".join(lines)
    common = [w for w in results[0].warnings if all(w in r.warnings for r in results[1:])]
    for r in results:
        for d in r.details:
            lines.append(f"  {r.weight_format}: FAILED {d}")
    for r in results:
        for w in r.warnings:
            if w not in common:
                lines.append(f"  {r.weight_format}: warning {w}")
    for w in common:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)
