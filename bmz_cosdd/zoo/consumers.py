"""Which consumers of the BioImage Model Zoo can run a package, rule by rule, offline.

Four consumers are checked: bioimageio.core itself (run here), deepImageJ (JDLL engine),
ilastik (bioimageio.core inside tiktorch) and the BioEngine (the website's runner). Only
bioimageio.core is actually run; for the others the package is checked against what is
known about them (single input, axis letters, the operations and library versions they
run, ...). Every rule ends ``"pass"``, ``"fail"`` or ``"unknown"``: what cannot be
decided here, offline, is ``"unknown"`` with the reason, never ``"pass"``.

Examples
--------
Not run as doctests: they need a package zip made by ``bmz-cosdd package`` and run
bioimageio.core on it (``tests/zoo/test_consumers.py`` does); :func:`format_checks`'s own
example runs.

>>> checks = check_package(Path("model.bioimageio.zip"))  # doctest: +SKIP
>>> print(format_checks(checks))                          # doctest: +SKIP
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from bmz_cosdd.errors import UserError
from bmz_cosdd.artifacts.core_run import predict_whole
from bmz_cosdd.artifacts.offline_bioimageio import offline_bioimageio, quiet_bioimageio
from bmz_cosdd.artifacts.package_files import PackageRefused, check_zip_members
from bmz_cosdd.artifacts.package_reader import read_package_descr
from bmz_cosdd.export.package_trust import require_trusted_code
from bmz_cosdd.export.validate import FormatResult, validate_package

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
CORE, DEEPIMAGEJ, ILASTIK, BIOENGINE = "bioimageio.core", "deepImageJ", "ilastik", "BioEngine"
#: Consumers in the order they are reported.
CONSUMERS = (CORE, DEEPIMAGEJ, ILASTIK, BIOENGINE)

#: Pre/postprocessing operations deepImageJ (JDLL) implements.
DEEPIMAGEJ_OPS = frozenset(
    {
        "binarize",
        "clip",
        "ensure_dtype",
        "fixed_zero_mean_unit_variance",
        "scale_linear",
        "scale_range",
        "sigmoid",
        "zero_mean_unit_variance",
    }
)
#: Axis ids deepImageJ can put into its axis order string, and the letter each becomes.
DEEPIMAGEJ_AXIS_LETTERS = {"b": "b", "batch": "b", "c": "c", "channel": "c", "z": "z", "y": "y", "x": "x"}
DEEPIMAGEJ_MAX_OPSET = 18
#: Newest libtorch deepImageJ runs. Version limits compare as many release parts as they have.
DEEPIMAGEJ_TORCH = (2, 0, 0)
#: deepImageJ's zoo check: |d| <= ABS + REL * |expected|.
DEEPIMAGEJ_ABS, DEEPIMAGEJ_REL = 1.5e-4, 1e-4
#: pytorch in tiktorch (ilastik): 2.7, patch release not known.
ILASTIK_TORCH = (2, 7)
#: BioEngine's torch, onnxruntime (newest opset it runs) and bioimageio.core.
BIOENGINE_TORCH = (2, 5, 1)
BIOENGINE_MAX_OPSET = 21
BIOENGINE_CORE = "0.10.4"

#: libtorch's default CPU seed: what a freshly started deepImageJ draws from (it never seeds).
_LIBTORCH_DEFAULT_SEED = 67280421310721
_TORCH_FORMATS = ("torchscript", "pytorch_state_dict")
_MAX_DETAIL = 400


@dataclass
class Rule:
    """One requirement of a consumer and whether the package meets it.

    Attributes
    ----------
    name
        Short name, e.g. ``"single input"``.
    status
        ``"pass"``, ``"fail"`` or ``"unknown"``.
    detail
        One line: why, with the numbers.
    """

    name: str
    status: str
    detail: str


@dataclass
class ConsumerCheck:
    """A consumer's verdict on a package.

    Attributes
    ----------
    consumer
        ``"bioimageio.core"``, ``"deepImageJ"``, ``"ilastik"`` or ``"BioEngine"``.
    status
        ``"fail"`` if any rule fails, else ``"unknown"`` if any rule is unknown, else ``"pass"``.
    rules
        The rules checked, in order.
    """

    consumer: str
    status: str
    rules: list[Rule]


def _one_line(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_DETAIL else line[: _MAX_DETAIL - 3] + "..."


def _rule(name: str, status: str, detail: str) -> Rule:
    return Rule(name, status, _one_line(detail))


def _overall(statuses: Sequence[str]) -> str:
    if FAIL in statuses:
        return FAIL
    if UNKNOWN in statuses:
        return UNKNOWN
    return PASS


def _best(statuses: Sequence[str]) -> str:
    """Status of "some weight format works": pass beats unknown beats fail."""
    if PASS in statuses:
        return PASS
    if UNKNOWN in statuses:
        return UNKNOWN
    return FAIL


def _consumer(name: str, rules: list[Rule]) -> ConsumerCheck:
    return ConsumerCheck(name, _overall([r.status for r in rules]), rules)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


# --------------------------------------------------------------------------- weights


def _weights(descr: Any) -> dict[str, Any]:
    return {wf: entry for wf, entry in descr.weights if entry is not None}


def _torch_release(entry: Any) -> tuple[str, tuple[int, ...] | None]:
    """The declared pytorch_version as text and as its release numbers, None if unreadable."""
    declared = getattr(entry, "pytorch_version", None)
    text = "" if declared is None else str(declared)
    m = re.match(r"^\s*(\d+(?:\.\d+)*)", text)
    return text, tuple(int(p) for p in m.group(1).split(".")) if m else None


def _at_most(release: tuple[int, ...], limit: tuple[int, ...]) -> bool:
    """``release <= limit`` on the first ``len(limit)`` parts (missing parts are 0)."""
    padded = (release + (0,) * len(limit))[: len(limit)]
    return padded <= limit


def _onnx_opset(entry: Any) -> tuple[int | None, str]:
    """Default-domain opset of the ONNX weights (read from the file) and where it came from."""
    try:
        import onnx
    except ImportError:
        declared = getattr(entry, "opset_version", None)
        return (int(declared) if declared is not None else None), "declared (onnx package not installed)"
    try:
        with offline_bioimageio(), quiet_bioimageio():
            data = entry.get_reader().read()
        model = onnx.load_model_from_string(data)
    except Exception as e:  # noqa: BLE001 - a broken file is reported, not raised
        return None, f"unreadable ({type(e).__name__}: {e})"
    opsets = [int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return (opsets[0] if opsets else None), "read from the file"


def _torch_weight_status(wf: str, entry: Any, limit: tuple[int, ...], runtime: str) -> tuple[str, str]:
    """Can ``runtime`` (pytorch/libtorch ``limit``) load weights declared with some pytorch version?"""
    label = "TorchScript" if wf == "torchscript" else "state dict"
    text, release = _torch_release(entry)
    if release is None:
        return UNKNOWN, f"{label} declares no readable pytorch_version ({text or 'none'})"
    if _at_most(release, limit):
        return PASS, f"{label} declared with pytorch {text} (<= {runtime})"
    verb = "scripted" if wf == "torchscript" else "saved"
    return UNKNOWN, f"{label} was {verb} with pytorch {text}, newer than {runtime}: loading not checked here"


# --------------------------------------------------------------------------- bioimageio.core


def _core_rules(descr: Any, validation: Sequence[FormatResult]) -> list[Rule]:
    rules = [_rule("format validation", PASS, f"loads as a valid bioimage.io ModelDescr (format {descr.format_version})")]
    if not validation:
        rules.append(_rule("test", FAIL, "bioimageio.core tested no weight format"))
    for result in validation:
        if result.passed:
            detail = "passed at default tolerance (relative 1e-3, absolute 1e-3, 100 mismatches per million)"
            rules.append(_rule(f"test {result.weight_format}", PASS, detail))
        else:
            first = result.details[0] if result.details else "failed"
            rules.append(_rule(f"test {result.weight_format}", FAIL, first))
    return rules


# --------------------------------------------------------------------------- deepImageJ


def _single_input(descr: Any) -> Rule:
    ids = ", ".join(str(t.id) for t in descr.inputs)
    n = len(descr.inputs)
    if n == 1:
        return _rule("single input", PASS, f"1 input ({ids})")
    return _rule("single input", FAIL, f"{n} inputs ({ids}): deepImageJ runs single-input models only")


def _axis_ids(descr: Any) -> Rule:
    orders: list[str] = []
    problems: list[str] = []
    for kind, tensors in (("input", descr.inputs), ("output", descr.outputs)):
        for t in tensors:
            letters = ""
            for a in t.axes:
                letter = DEEPIMAGEJ_AXIS_LETTERS.get(str(a.id))
                if letter is None:
                    problems.append(
                        f"{kind} '{t.id}' axis '{a.id}' ({a.type}) is not representable in deepImageJ's axis order"
                        " string (b, c, z, y, x)"
                    )
                    letter = "?"
                letters += letter
            orders.append(f"{kind} '{t.id}' {letters}")
    if problems:
        return _rule("axis ids", FAIL, "; ".join(problems))
    return _rule("axis ids", PASS, "; ".join(orders))


def _ops(descr: Any) -> Rule:
    seen: list[str] = []
    bad: list[str] = []
    for kind, tensors, attr in (("input", descr.inputs, "preprocessing"), ("output", descr.outputs, "postprocessing")):
        for t in tensors:
            for op in getattr(t, attr) or []:
                op_id = str(op.id)
                seen.append(op_id)
                if op_id not in DEEPIMAGEJ_OPS:
                    bad.append(f"{kind} '{t.id}' {attr} '{op_id}'")
    if bad:
        return _rule("pre/postprocessing ops", FAIL, f"deepImageJ does not implement: {', '.join(bad)}")
    used = ", ".join(dict.fromkeys(seen)) or "none"
    return _rule("pre/postprocessing ops", PASS, f"all supported ({used})")


def _onnx_status(weights: Any, max_opset: int, runner: str) -> tuple[str, str]:
    """Status and note for ONNX weights that ``runner`` runs up to opset ``max_opset``."""
    opset, source = _onnx_opset(weights)
    if opset is None:
        return UNKNOWN, f"ONNX opset {source}"
    if opset <= max_opset:
        return PASS, f"ONNX opset {opset} {source} ({runner} runs <= {max_opset})"
    return FAIL, f"ONNX opset {opset} {source} > {max_opset}, the newest {runner} runs"


def _add(statuses: list[str], notes: list[str], result: tuple[str, str]) -> None:
    statuses.append(result[0])
    notes.append(result[1])


def _deepimagej_weights(weights: dict[str, Any]) -> Rule:
    statuses: list[str] = []
    notes: list[str] = []
    if "onnx" in weights:
        _add(statuses, notes, _onnx_status(weights["onnx"], DEEPIMAGEJ_MAX_OPSET, "deepImageJ"))
    if "torchscript" in weights:
        text, release = _torch_release(weights["torchscript"])
        if release is None:
            statuses.append(UNKNOWN)
            notes.append(f"TorchScript declares no readable pytorch_version ({text or 'none'})")
        elif _at_most(release, DEEPIMAGEJ_TORCH):
            statuses.append(PASS)
            notes.append(f"TorchScript declared with pytorch {text} (deepImageJ runs libtorch <= 2.0.0)")
        else:
            statuses.append(UNKNOWN)
            notes.append(
                f"TorchScript was scripted with pytorch {text} and deepImageJ runs libtorch 2.0:"
                " whether it loads is not checked here"
            )
    others = [wf for wf in weights if wf not in ("onnx", "torchscript", "pytorch_state_dict")]
    for wf in others:
        statuses.append(UNKNOWN)
        notes.append(f"{wf} weights are not checked here")
    if not statuses:
        return _rule("weights", FAIL, "only pytorch_state_dict weights: deepImageJ cannot run them")
    return _rule("weights", _best(statuses), "; ".join(notes))


def _input_halos(descr: Any, tensor: Any) -> dict[str, int]:
    """Largest halo (in input pixels) any output declares along each axis of input ``tensor``."""
    scales = {str(a.id): float(getattr(a, "scale", 1.0) or 1.0) for a in tensor.axes}
    halos: dict[str, int] = {}
    for out in descr.outputs:
        for a in out.axes:
            halo = getattr(a, "halo", None)
            ref = getattr(a, "size", None)
            if not halo or str(getattr(ref, "tensor_id", "")) != str(tensor.id):
                continue
            axis_id = str(ref.axis_id)
            # as bioimageio.spec's get_halos: output halo scaled to the referenced input axis
            pad = int(halo / float(getattr(a, "scale", 1.0) or 1.0) * scales.get(axis_id, 1.0))
            halos[axis_id] = max(halos.get(axis_id, 0), pad)
    return halos


def _halo_min_step(descr: Any) -> Rule:
    parts: list[str] = []
    bad: list[str] = []
    for t in descr.inputs:
        halos = _input_halos(descr, t)
        for a in t.axes:
            size = getattr(a, "size", None)
            if a.type != "space" or not hasattr(size, "min") or not hasattr(size, "step"):
                continue
            low, step, halo = int(size.min), int(size.step), halos.get(str(a.id), 0)
            text = f"{t.id}.{a.id}: min {low}, step {step}, halo {halo} (min - 2*halo = {low - 2 * halo})"
            parts.append(text)
            if low - 2 * halo < 1:
                bad.append(text)
    if bad:
        return _rule("halo and min/step", FAIL, "min - 2*halo must be >= 1: " + "; ".join(bad))
    if not parts:
        return _rule("halo and min/step", PASS, "no spatial input axis with a parameterized size (fixed sizes)")
    return _rule("halo and min/step", PASS, "; ".join(parts))


def _load(file_descr: Any) -> np.ndarray:
    from bioimageio.spec.utils import load_image

    with offline_bioimageio(), quiet_bioimageio():
        return np.asarray(load_image(file_descr))


def _source_name(file_descr: Any) -> str:
    return str(getattr(file_descr, "source", file_descr))


def _same_array(sample: np.ndarray, test: np.ndarray) -> tuple[bool, str]:
    """Exact comparison; singleton axes (a TIFF reader may drop them) are ignored."""
    a, b = sample, test
    if a.shape != b.shape:
        if a.size != b.size or np.squeeze(a).shape != np.squeeze(b).shape:
            return False, f"shapes differ: {a.shape} vs {b.shape}"
        a, b = np.squeeze(a), np.squeeze(b)
    equal = a == b
    if equal.all():
        return True, f"identical, shape {test.shape}"
    off = int((~equal).sum())
    with np.errstate(invalid="ignore"):
        max_d = float(np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    return False, f"{off} of {equal.size} elements differ (max |d| {_fmt(max_d)})"


def _sample_equals_test(descr: Any) -> Rule:
    parts: list[str] = []
    statuses: list[str] = []
    for t in descr.inputs:
        if t.sample_tensor is None:
            statuses.append(UNKNOWN)
            parts.append(f"input '{t.id}' has no sample_tensor (deepImageJ's zoo check runs the sample)")
            continue
        names = f"{_source_name(t.sample_tensor)} vs {_source_name(t.test_tensor)}"
        try:
            same, why = _same_array(_load(t.sample_tensor), _load(t.test_tensor))
        except Exception as e:  # noqa: BLE001 - an unreadable file is a finding
            same, why = False, f"unreadable: {type(e).__name__}: {e}"
        statuses.append(PASS if same else FAIL)
        parts.append(f"input '{t.id}' {names}: {why}")
    return _rule("sample equals test input", _overall(statuses), "; ".join(parts))


def _runnable_by_deepimagej(weights: dict[str, Any]) -> list[str]:
    formats = []
    if "torchscript" in weights:
        formats.append("torchscript")
    if "onnx" in weights:
        opset, _ = _onnx_opset(weights["onnx"])
        if opset is not None and opset <= DEEPIMAGEJ_MAX_OPSET:
            formats.append("onnx")
    return formats


@contextmanager
def _fresh_torch_rng(device: str | None) -> Iterator[None]:
    import torch

    devices = list(range(torch.cuda.device_count())) if device and str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(_LIBTORCH_DEFAULT_SEED)
        yield


def _predict_sample(descr: Any, weight_format: str, arrays: dict[str, np.ndarray], device: str | None) -> Any:
    """Pre-process, predict whole (no halo padding or cropping), post-process: core's test procedure."""
    from bioimageio.core import Sample, Tensor
    from bioimageio.core.digest_spec import get_axes_infos

    members = {t.id: Tensor.from_numpy(arrays[str(t.id)], dims=get_axes_infos(t)) for t in descr.inputs}
    sample = Sample(members=members, stat={}, id="sample")
    devices = [str(device)] if device else None
    with _fresh_torch_rng(device), offline_bioimageio(), quiet_bioimageio():
        return predict_whole(descr, sample, weight_format, devices)


def _compare_output(name: str, got: np.ndarray, expected: np.ndarray) -> tuple[bool, str]:
    if got.shape != expected.shape:
        return False, f"'{name}' shape {got.shape} vs test output {expected.shape}"
    e = expected.astype(np.float64)
    d = np.abs(got.astype(np.float64) - e)
    excess = d - (DEEPIMAGEJ_ABS + DEEPIMAGEJ_REL * np.abs(e))
    off = int((~(excess <= 0)).sum())  # NaN counts as off
    max_d = float(np.nanmax(d)) if np.isfinite(d).any() else float("nan")
    if off:
        max_excess = float(np.nanmax(excess)) if np.isfinite(excess).any() else float("nan")
        return False, f"'{name}' {off} of {e.size} elements off, max excess {_fmt(max_excess)} (max |d| {_fmt(max_d)})"
    return True, f"'{name}' 0 of {e.size} elements off (max |d| {_fmt(max_d)})"


def _reproduction(descr: Any, weights: dict[str, Any], device: str | None) -> Rule:
    tolerance = f"|d| <= {DEEPIMAGEJ_ABS:g} + {DEEPIMAGEJ_REL:g}*|expected|"
    formats = _runnable_by_deepimagej(weights)
    if not formats:
        return _rule("reproduction", UNKNOWN, "no TorchScript or ONNX (opset <= 18) weights to run as deepImageJ would")
    missing = [str(t.id) for t in descr.inputs if t.sample_tensor is None]
    if missing:
        return _rule("reproduction", UNKNOWN, f"no sample_tensor for input(s) {', '.join(missing)}: nothing to run")
    try:
        arrays = {}
        for t in descr.inputs:
            sample, test = _load(t.sample_tensor), _load(t.test_tensor)
            if sample.ndim != len(t.axes) and sample.size == test.size:
                sample = sample.reshape(test.shape)  # a TIFF reader may drop singleton axes
            arrays[str(t.id)] = sample
        expected = {str(t.id): _load(t.test_tensor) for t in descr.outputs}
    except Exception as e:  # noqa: BLE001 - an unreadable tensor is a finding
        return _rule("reproduction", FAIL, f"cannot read the sample/test tensors: {type(e).__name__}: {e}")
    statuses: list[str] = []
    parts: list[str] = []
    for wf in formats:
        try:
            result = _predict_sample(descr, wf, arrays, device)
        except Exception as e:  # noqa: BLE001 - a model that does not run is a finding
            statuses.append(FAIL)
            parts.append(f"{wf}: prediction of the sample failed: {type(e).__name__}: {e}")
            continue
        checks = []
        for out in descr.outputs:
            tensor = result.members.get(out.id)
            if tensor is None:
                checks.append((False, f"'{out.id}' missing from the prediction"))
                continue
            checks.append(_compare_output(str(out.id), np.asarray(tensor.data), expected[str(out.id)]))
        ok = all(c[0] for c in checks)
        statuses.append(PASS if ok else FAIL)
        parts.append(f"{wf}: " + ", ".join(c[1] for c in checks))
    status = FAIL if FAIL in statuses else PASS
    head = f"sample input predicted whole (no halo padding) vs test output at {tolerance}: "
    return _rule("reproduction", status, head + "; ".join(parts))


def _deepimagej_rules(descr: Any, weights: dict[str, Any], device: str | None) -> list[Rule]:
    return [
        _single_input(descr),
        _axis_ids(descr),
        _ops(descr),
        _deepimagej_weights(weights),
        _halo_min_step(descr),
        _sample_equals_test(descr),
        _reproduction(descr, weights, device),
    ]


# --------------------------------------------------------------------------- ilastik, BioEngine


def _ilastik_rules(descr: Any, weights: dict[str, Any], core: ConsumerCheck) -> list[Rule]:
    n_in, n_out = len(descr.inputs), len(descr.outputs)
    outs = ", ".join(str(t.id) for t in descr.outputs)
    io = f"{n_in} input(s), {n_out} output(s) ({outs})"
    if (n_in, n_out) == (1, 1):
        rules = [_rule("one input and one output", PASS, io)]
    else:
        rules = [_rule("one input and one output", FAIL, f"{io}: ilastik needs exactly one input and one output")]
    if core.status == PASS:
        rules.append(_rule("core test", PASS, "bioimageio.core passed here (ilastik runs it inside tiktorch)"))
    else:
        rules.append(_rule("core test", FAIL, f"bioimageio.core did not pass: {_first_problem(core)}"))
    statuses: list[str] = []
    notes: list[str] = []
    for wf, entry in weights.items():
        if wf == "onnx":
            statuses.append(PASS)
            notes.append("ONNX weights (tiktorch runs onnxruntime)")
        elif wf in _TORCH_FORMATS:
            status, note = _torch_weight_status(wf, entry, ILASTIK_TORCH, "tiktorch's pytorch 2.7")
            statuses.append(status)
            notes.append(note)
        else:
            statuses.append(UNKNOWN)
            notes.append(f"{wf} weights are not checked here")
    rules.append(_rule("weights", _best(statuses), "; ".join(notes)))
    return rules


def _bioengine_rules(weights: dict[str, Any], core: ConsumerCheck) -> list[Rule]:
    statuses: list[str] = []
    notes: list[str] = []
    if "onnx" in weights:
        _add(statuses, notes, _onnx_status(weights["onnx"], BIOENGINE_MAX_OPSET, "BioEngine's onnxruntime 1.20.1"))
    for wf in _TORCH_FORMATS:
        if wf in weights:
            status, note = _torch_weight_status(wf, weights[wf], BIOENGINE_TORCH, "BioEngine's torch 2.5.1")
            statuses.append(status)
            notes.append(note)
    for wf in weights:
        if wf not in ("onnx", *_TORCH_FORMATS):
            statuses.append(UNKNOWN)
            notes.append(f"{wf} weights are not checked here")
    rules = [_rule("weights", _best(statuses), "; ".join(notes))]
    if core.status == PASS:
        detail = f"bioimageio.core {_core_version()} passed here; BioEngine runs core {BIOENGINE_CORE}, not tested"
        rules.append(_rule("core test", UNKNOWN, detail))
    else:
        rules.append(_rule("core test", FAIL, f"bioimageio.core did not pass here: {_first_problem(core)}"))
    return rules


def _core_version() -> str:
    try:
        from importlib.metadata import version

        return version("bioimageio.core")
    except Exception:  # noqa: BLE001 - only used in a message
        return "(unknown version)"


def _first_problem(check: ConsumerCheck) -> str:
    bad = [r for r in check.rules if r.status != PASS]
    return f"{bad[0].name}: {bad[0].detail}" if bad else check.status


# --------------------------------------------------------------------------- public


def check_package(
    path: Path, device: str | None = None, validation: list[FormatResult] | None = None, trust_code: bool = False
) -> list[ConsumerCheck]:
    """Check a package against bioimageio.core, deepImageJ, ilastik and the BioEngine.

    Checking runs the package, so it is held to the rules of
    :mod:`bmz_cosdd.export.package_trust` first, as :func:`~bmz_cosdd.export.validate.validate_package`
    is: files named outside it are refused before anything is loaded (and nothing touches the
    network), and a package that would run Python bmz-cosdd did not write (e.g.
    ``pytorch_state_dict`` weights whose architecture source is not byte-identical to ours) is
    refused unless ``trust_code``.

    bioimageio.core's test runs here (every weight format, default tolerance, offline);
    deepImageJ's zoo check is emulated by predicting the sample input with core and
    comparing with the test output at deepImageJ's tolerance. Everything else is checked
    against what each consumer is known to support.

    Parameters
    ----------
    path
        A package zip.
    device
        ``"cpu"`` or ``"cuda"`` for core's test and the sample prediction (default: core's choice).
    validation
        Results of :func:`bmz_cosdd.export.validate.validate_package` for this package if
        already computed; otherwise it is run.
    trust_code
        Run weights whose Python bmz-cosdd did not write (the ``--trust-code`` option): only
        for packages whose author you trust.

    Returns
    -------
    list of ConsumerCheck
        One per consumer, in the order of :data:`CONSUMERS`.

    Raises
    ------
    bmz_cosdd.errors.UserError
        If ``path`` is missing, not a zip, has members escaping its folder, names a file
        outside itself, or (without ``trust_code``) would run Python bmz-cosdd did not write.
        A zip that is not a valid model fails the ``format validation`` rule instead.
    """
    path = Path(path)
    check_zip_members(path)
    try:
        descr = read_package_descr(path)
    except PackageRefused:
        raise  # a file outside the package: refused, not a finding
    except UserError as e:
        failed = _rule("format validation", FAIL, str(e))
        reason = _rule("format validation", FAIL, f"the package does not load: {e}")
        return [_consumer(CORE, [failed])] + [_consumer(name, [reason]) for name in CONSUMERS[1:]]
    require_trusted_code(path, trust_code, "checking {what} would run the package's own Python: nothing was"
                         " checked", "bmz-cosdd predict --weight-format torchscript runs a package without its Python")

    if validation is None:
        validation = validate_package(path, device=device, trust_code=trust_code)
    weights = _weights(descr)
    core = _consumer(CORE, _core_rules(descr, validation))
    return [
        core,
        _consumer(DEEPIMAGEJ, _deepimagej_rules(descr, weights, device)),
        _consumer(ILASTIK, _ilastik_rules(descr, weights, core)),
        _consumer(BIOENGINE, _bioengine_rules(weights, core)),
    ]


def format_checks(checks: Sequence[ConsumerCheck]) -> str:
    """A plain-text table: one row per consumer with its status, then its rules indented.

    >>> print(format_checks([ConsumerCheck("ilastik", "fail", [Rule("core test", "fail", "why")])]))
    consumer  status  reasons
    ilastik   fail
      [fail] core test: why
    """
    rows = [("consumer", "status")] + [(c.consumer, c.status) for c in checks]
    w0 = max(len(r[0]) for r in rows) + 2
    w1 = max(len(r[1]) for r in rows) + 2
    lines = [f"{'consumer':<{w0}}{'status':<{w1}}reasons"]
    for c in checks:
        lines.append(f"{c.consumer:<{w0}}{c.status}")
        for r in c.rules:
            lines.append(f"  [{r.status}] {r.name}: {r.detail}")
    if not checks:
        lines.append("(no consumers checked)")
    return "\n".join(lines)


def core_passed(checks: Sequence[ConsumerCheck]) -> bool:
    """True if the bioimageio.core entry of ``checks`` passed."""
    return any(c.consumer == CORE and c.status == PASS for c in checks)

