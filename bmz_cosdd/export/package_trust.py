"""What a package may make bmz-cosdd run: Python only if it is ours.

A package zip from elsewhere is untrusted input. Every verb that opens one (``predict``,
``validate``, ``check``, ``train --from``, ``upload``) holds it to two rules:

1. **Files stay inside** (:mod:`bmz_cosdd.artifacts.package_files`, checked first here too).
2. **Python runs only if it is ours.** ``pytorch_state_dict`` weights make bioimageio.core
   import the package's architecture (a source file in the package, or ``import_from`` any
   installed module) and call it; ``custom`` pre/postprocessing does the same, and Keras or
   TensorFlow weights run code the package brings. TorchScript and ONNX weights run no
   Python from the package (``torch.jit.load`` and onnxruntime execute a graph), so they are
   always allowed. State-dict weights run only if the rdf's architecture is
   ``source: FILE, callable: NAME`` (no ``import_from``), ``NAME`` is the builder this version
   of bmz-cosdd writes for the package's method and settings (``config.bmz_cosdd``), and
   the SHA-256 of ``FILE`` equals that of the source this version writes for them
   (recomputed, see :func:`bmz_cosdd.export.source_bundle.architecture_source`), or the
   user passes ``--trust-code`` (``trust_code=True``).

Examples
--------
A package whose TorchScript weights run no Python, and whose state-dict weights would
call ``os.system``:

>>> import tempfile
>>> tmp = tempfile.TemporaryDirectory()
>>> package = Path(tmp.name) / "model.zip"
>>> rdf = ("weights:\\n  torchscript: {source: weights.pt}\\n"
...        "  pytorch_state_dict: {source: weights.pth, architecture: {import_from: os, callable: system}}\\n")
>>> with zipfile.ZipFile(package, "w") as zf:
...     for name, text in [("rdf.yaml", rdf), ("weights.pt", ""), ("weights.pth", "")]:
...         zf.writestr(name, text)
>>> code = package_code(package)
>>> code.formats, list(code.untrusted)
(('torchscript', 'pytorch_state_dict'), ['pytorch_state_dict'])
>>> require_trusted_code(package, False, "testing {what} would run the package's own Python")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
bmz_cosdd.artifacts.package_files.PackageRefused: model.zip: its architecture is imported from the module 'os' (callable 'system'), ...; testing its pytorch_state_dict weights would run the package's own Python; ...
>>> tmp.cleanup()
"""

from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bmz_cosdd.artifacts.package_files import PackageRefused, checked_rdf, zip_member

#: Weight formats whose loading runs no Python from the package: always allowed.
CODE_FREE_FORMATS = ("torchscript", "onnx")
#: What to tell a user who trusts the package's author.
TRUST_HINT = "pass --trust-code if you trust the package's author"
_ARCHITECTURE_KEYS = frozenset({"source", "sha256", "callable", "kwargs"})
#: Name of the custom-processing "weight format" key in :attr:`PackageCode.untrusted`.
CUSTOM_PROCESSING = "custom processing"


@dataclass(frozen=True)
class PackageCode:
    """The Python a package would run, and which of it is not bmz-cosdd's own.

    Attributes
    ----------
    formats
        Weight formats the package has, in the rdf's order.
    untrusted
        Weight format (or :data:`CUSTOM_PROCESSING`) -> one line saying why running it would
        execute code bmz-cosdd did not write. Empty when the package runs only our code.
    """

    formats: tuple[str, ...]
    untrusted: dict[str, str] = field(default_factory=dict)

    def allowed(self, weight_format: str) -> bool:
        """True if ``weight_format`` runs no Python from the package but ours."""
        return weight_format not in self.untrusted


def _weights(rdf: dict[str, Any]) -> dict[str, Any]:
    weights = rdf.get("weights")
    return {str(k): v for k, v in weights.items() if v is not None} if isinstance(weights, dict) else {}


def _custom_processing(rdf: dict[str, Any]) -> str | None:
    """Where the rdf has a pre/postprocessing step that imports Python, or None."""
    for kind in ("inputs", "outputs"):
        for i, tensor in enumerate(rdf.get(kind) or []):
            if not isinstance(tensor, dict):
                continue
            for step_kind in ("preprocessing", "postprocessing"):
                for j, step in enumerate(tensor.get(step_kind) or []):
                    if isinstance(step, dict) and (
                        step.get("id") == "custom" or {"source", "callable", "import_from"} & set(step)
                    ):
                        return f"{kind}[{i}].{step_kind}[{j}] runs Python from the package ({step.get('source')!r})"
    return None


@functools.lru_cache(maxsize=32)
def _our_architecture(settings: str) -> tuple[str, str]:
    """SHA-256 and callable of the architecture this bmz-cosdd writes for ``settings`` (JSON of
    method, model config, channels, spatial dims and estimator); ValueError says why there is none."""
    import torch

    from bmz_cosdd.export.source_bundle import architecture_source
    from bmz_cosdd.methods.base import ExportOptions
    from bmz_cosdd.methods.registry import get_method

    values = json.loads(settings)
    method = get_method(values["method"])
    config = method.config_from_dict(values["model"])
    # The model is built only to ask the method what it exports, on the CPU (tens of milliseconds
    # even for COSDD's large preset; the meta device saved nothing and made some methods' first
    # tensor ops load torch's decompositions, ~1.5 s) without touching the caller's random numbers.
    try:
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            model = method.build(config, values["n_channels"], None, values["spatial_dims"])
            exported = method.export(model, config, ExportOptions(estimator=values["estimator"]))
    except Exception as exc:  # noqa: BLE001 - any failure means "not rebuildable"
        raise ValueError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    source = architecture_source(method.name, exported.source_modules)
    return hashlib.sha256(source.encode("utf-8")).hexdigest(), exported.builder.__name__


def _expected_architecture(rdf: dict[str, Any]) -> tuple[str, str]:
    """What this bmz-cosdd writes for the package's own settings; ValueError says why nothing."""
    from bmz_cosdd import __version__

    config = rdf.get("config")
    ours = config.get("bmz_cosdd") if isinstance(config, dict) else None
    if not isinstance(ours, dict):
        raise ValueError("it was not written by bmz-cosdd (no config.bmz_cosdd)")
    try:
        training = ours["training"]
        stats = ours["normalisation"]
        settings = json.dumps({
            "method": str(ours["method"]),
            "model": training["model"] or {},
            "n_channels": len(stats["mean"]),
            "spatial_dims": int((training.get("data") or {}).get("spatial_dims") or 2),
            "estimator": (ours.get("export") or {}).get("estimator"),
        }, sort_keys=True)
    except KeyError as exc:
        raise ValueError(f"its config.bmz_cosdd has no {exc.args[0]!r}: not a package bmz-cosdd writes") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"its config.bmz_cosdd is not what bmz-cosdd writes ({type(exc).__name__}: {exc})") from None
    try:
        return _our_architecture(settings)
    except Exception as exc:  # noqa: BLE001 - whatever fails, the source is not recognised as ours
        raise ValueError(
            f"bmz-cosdd {__version__} cannot rebuild its architecture from its config.bmz_cosdd"
            f" ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None


def _state_dict_reason(package: Path, rdf: dict[str, Any], entry: Any, base: PurePosixPath) -> str | None:
    """Why the package's state-dict architecture is not bmz-cosdd's own, or None if it is."""
    from bmz_cosdd import __version__

    arch = entry.get("architecture") if isinstance(entry, dict) else None
    if not isinstance(arch, dict):
        return "its pytorch_state_dict weights name no architecture source file"
    if "import_from" in arch:
        return (f"its architecture is imported from the module {arch.get('import_from')!r}"
                f" (callable {arch.get('callable')!r}), not from a source file bmz-cosdd writes")
    extra = sorted(set(arch) - _ARCHITECTURE_KEYS)
    if extra:
        return f"its architecture has fields bmz-cosdd does not write ({', '.join(map(str, extra))})"
    source = arch.get("source")
    if not isinstance(source, str):
        return "its architecture names no source file"
    try:
        expected_sha, expected_callable = _expected_architecture(rdf)
    except ValueError as exc:
        return str(exc)
    if arch.get("callable") != expected_callable:
        return f"its architecture callable is {arch.get('callable')!r}, not {expected_callable!r} as bmz-cosdd writes"
    with zipfile.ZipFile(package) as zf:
        got = hashlib.sha256(zf.read(zip_member(base, source))).hexdigest()
    if got != expected_sha:
        return (f"its {source} is not the architecture source bmz-cosdd {__version__} writes for it"
                f" (sha256 {got[:12]}..., expected {expected_sha[:12]}...)")
    return None


def package_code(package: str | Path) -> PackageCode:
    """Which of a package's weight formats (and processing) would run Python bmz-cosdd did not write.

    Checks :func:`~bmz_cosdd.artifacts.package_files.check_files_inside` first. Loads nothing of
    the package but its rdf and, for ``pytorch_state_dict`` weights, the bytes of the
    architecture source (hashed, never run).

    Parameters
    ----------
    package
        A package zip.

    Returns
    -------
    PackageCode
        TorchScript and ONNX weights are always allowed; ``pytorch_state_dict`` weights only
        when their architecture is byte-identical to the one this version of bmz-cosdd writes
        for the package's method and settings, with the same callable and no ``import_from``;
        Keras and TensorFlow weights and ``custom`` processing never.
    """
    package = Path(package)
    rdf, base = checked_rdf(package)
    weights = _weights(rdf)
    untrusted: dict[str, str] = {}
    for wf, entry in weights.items():
        if wf in CODE_FREE_FORMATS:
            continue
        if wf == "pytorch_state_dict":
            reason = _state_dict_reason(package, rdf, entry, base)
            if reason is not None:
                untrusted[wf] = reason
        else:
            untrusted[wf] = f"its {wf} weights run code the package brings, never written by bmz-cosdd"
    custom = _custom_processing(rdf)
    if custom is not None:
        untrusted[CUSTOM_PROCESSING] = custom
    return PackageCode(formats=tuple(weights), untrusted=untrusted)


def _what(key: str) -> str:
    return "its custom processing" if key == CUSTOM_PROCESSING else f"its {key} weights"


def _refusal(package: Path, key: str, reason: str, consequence: str, alternative: str) -> PackageRefused:
    alt = f"; {alternative}" if alternative else ""
    return PackageRefused(f"{package.name}: {reason}; {consequence.format(what=_what(key))}{alt}; {TRUST_HINT}")


def require_trusted_code(package: str | Path, trust_code: bool, consequence: str, alternative: str = "") -> PackageCode:
    """Refuse (one line) a package that would run Python bmz-cosdd did not write, unless trusted.

    Used by the verbs that may run every weight format (``validate``, ``check``) or that
    take a package as bmz-cosdd's own (``train --from``). The files rule
    (:func:`~bmz_cosdd.artifacts.package_files.check_files_inside`) holds even with ``trust_code``.

    Parameters
    ----------
    package
        A package zip.
    trust_code
        The user's ``--trust-code``: run the package's Python anyway.
    consequence
        What refusing means, for the message, e.g. ``"testing {what} would run the package's
        own Python: nothing was tested"`` (``{what}`` becomes e.g. ``its pytorch_state_dict weights``).
    alternative
        What else the user can do, for the message (may be empty).

    Returns
    -------
    PackageCode
        What the package would run.

    Raises
    ------
    PackageRefused
        When a file lies outside the package, or when ``trust_code`` is False and any weight
        format or processing step would run Python that is not bmz-cosdd's own.
    """
    package = Path(package)
    code = package_code(package)
    if code.untrusted and not trust_code:
        key, reason = next(iter(code.untrusted.items()))
        raise _refusal(package, key, reason, consequence, alternative)
    return code


def choose_weight_format(package: str | Path, weight_format: str | None, trust_code: bool) -> str | None:
    """The weight format to predict with, refusing (one line) one that would run foreign Python.

    Parameters
    ----------
    package
        A package zip.
    weight_format
        The user's choice, or None: bioimageio.core's choice if the package runs only our
        code (or with ``trust_code``), else its TorchScript weights, else its ONNX weights.
    trust_code
        The user's ``--trust-code``: any weight format may run.

    Returns
    -------
    str or None
        The format to pass to bioimageio.core (None: core's choice).

    Raises
    ------
    PackageRefused
        When a file lies outside the package, or without ``trust_code`` when the chosen
        weights (or the package's processing) would run Python that is not bmz-cosdd's own,
        naming the alternative (its TorchScript or ONNX weights, or ``--trust-code``).
    """
    package = Path(package)
    code = package_code(package)
    if trust_code:
        return weight_format
    consequence = "predicting with {what} would run the package's own Python: refused"
    if CUSTOM_PROCESSING in code.untrusted:
        raise _refusal(package, CUSTOM_PROCESSING, code.untrusted[CUSTOM_PROCESSING], consequence, "")
    safe = [wf for wf in CODE_FREE_FORMATS if wf in code.formats]
    if weight_format is None and not code.untrusted:
        return None
    if weight_format is None and safe:
        return safe[0]
    key = weight_format or next(iter(code.untrusted))
    if key not in code.untrusted:
        return weight_format
    alternative = (f"use its {'TorchScript' if safe[0] == 'torchscript' else 'ONNX'} weights"
                   f" (--weight-format {safe[0]})") if safe else "it has no TorchScript or ONNX weights"
    raise _refusal(package, key, code.untrusted[key], consequence, alternative)
