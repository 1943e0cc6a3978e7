"""Consumer checks (bioimageio.core, deepImageJ, ilastik, BioEngine) on stand-in packages, offline."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bioimageio.core")

from helpers import export_helpers  # noqa: E402

from bmz_cosdd.errors import UserError
from bmz_cosdd.export.package_zip import build_package  # noqa: E402
from bmz_cosdd.zoo import consumers  # noqa: E402
from bmz_cosdd.zoo.consumers import (  # noqa: E402
    CONSUMERS,
    ConsumerCheck,
    Rule,
    check_package,
    core_passed,
    format_checks,
)
from bmz_cosdd.export.validate import FormatResult  # noqa: E402

helpers = export_helpers()
# The stand-in packages carry the tests' own architecture source, not one bmz-cosdd writes: checking them runs
# foreign Python, which bmz-cosdd refuses without trust_code=True (see tests/zoo/test_untrusted_packages.py).
PASSED = [FormatResult("torchscript", True, []), FormatResult("pytorch_state_dict", True, [])]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    attempts = helpers.block_network(monkeypatch)
    yield attempts
    assert attempts == [], f"network was attempted: {attempts}"


def _by_name(checks: list[ConsumerCheck]) -> dict[str, ConsumerCheck]:
    return {c.consumer: c for c in checks}


def _rules(check: ConsumerCheck) -> dict[str, Rule]:
    return {r.name: r for r in check.rules}


def _rewrite(package: Path, dst: Path, members: dict[str, bytes], rdf_edits: dict[str, str] | None = None) -> Path:
    """Copy ``package`` with ``members`` replaced; their sha256 in rdf.yaml follow, plus ``rdf_edits``."""
    with zipfile.ZipFile(package) as zf:
        content = {name: zf.read(name) for name in zf.namelist()}
    rdf = content["rdf.yaml"].decode()
    for name, data in members.items():
        rdf = rdf.replace(hashlib.sha256(content[name]).hexdigest(), hashlib.sha256(data).hexdigest())
        content[name] = data
    for old, new in (rdf_edits or {}).items():
        assert old in rdf, old
        rdf = rdf.replace(old, new)
    content["rdf.yaml"] = rdf.encode()
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in content.items():
            zf.writestr(name, data)
    return dst


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _read_npy(package: Path, name: str) -> np.ndarray:
    with zipfile.ZipFile(package) as zf:
        return np.load(io.BytesIO(zf.read(name)), allow_pickle=False)


@pytest.fixture(scope="module")
def default_package(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("consumers")
    return build_package(helpers.make_content(folder / "src"), folder / "standin.zip")


@pytest.fixture(scope="module")
def default_checks(default_package) -> list[ConsumerCheck]:
    checks = check_package(default_package, device="cpu", trust_code=True)
    print(format_checks(checks))
    return checks


@pytest.mark.slow
def test_default_package(default_checks):
    assert [c.consumer for c in default_checks] == list(CONSUMERS)
    by = _by_name(default_checks)
    core = by["bioimageio.core"]
    assert core.status == "pass" and core_passed(default_checks)
    assert [r.name for r in core.rules] == ["format validation", "test torchscript", "test pytorch_state_dict"]

    dij = _rules(by["deepImageJ"])
    for name in ("single input", "axis ids", "pre/postprocessing ops", "halo and min/step",
                 "sample equals test input", "reproduction"):
        assert dij[name].status == "pass", (name, dij[name].detail)
    assert "bcyx" in dij["axis ids"].detail
    assert "min 16, step 8, halo 4" in dij["halo and min/step"].detail
    assert "0 of 4096 elements off" in dij["reproduction"].detail
    # scripted with this torch (2.13), newer than deepImageJ's libtorch 2.0: cannot be decided here
    assert dij["weights"].status == "unknown" and "libtorch 2.0" in dij["weights"].detail
    assert by["deepImageJ"].status == "unknown"

    ilastik = _rules(by["ilastik"])
    assert ilastik["one input and one output"].status == "pass"
    assert ilastik["core test"].status == "pass"
    assert ilastik["weights"].status == "unknown" and "2.7" in ilastik["weights"].detail

    bioengine = _rules(by["BioEngine"])
    assert bioengine["core test"].status == "unknown" and "0.10.4" in bioengine["core test"].detail
    assert by["BioEngine"].status == "unknown"
    assert all("\n" not in r.detail for c in default_checks for r in c.rules)


@pytest.mark.slow
def test_format_checks_lists_every_consumer(default_checks):
    text = format_checks(default_checks)
    lines = text.splitlines()
    assert lines[0].split() == ["consumer", "status", "reasons"]
    for check in default_checks:
        assert any(line.split()[:2] == check.consumer.split() + [check.status] for line in lines), check.consumer
        for rule in check.rules:
            assert f"  [{rule.status}] {rule.name}: {rule.detail}" in lines
    assert format_checks([]).endswith("(no consumers checked)")


@pytest.mark.slow
def test_mmse_std_samples_package(tmp_path):
    content = helpers.make_content(tmp_path / "src", "StandInFull", outputs=("mmse", "std", "samples"), n_samples=3)
    checks = _by_name(check_package(build_package(content, tmp_path / "full.zip"), device="cpu", trust_code=True))
    assert checks["bioimageio.core"].status == "pass"
    ilastik = _rules(checks["ilastik"])
    assert ilastik["one input and one output"].status == "fail"
    assert "3 output(s) (mmse, std, samples)" in ilastik["one input and one output"].detail
    assert checks["ilastik"].status == "fail"
    dij = _rules(checks["deepImageJ"])
    assert dij["axis ids"].status == "fail"
    assert "'samples' axis 'index'" in dij["axis ids"].detail
    assert "not representable in deepImageJ's axis order string" in dij["axis ids"].detail
    assert dij["single input"].status == "pass" and dij["reproduction"].status == "pass"
    assert checks["deepImageJ"].status == "fail"


@pytest.mark.slow
def test_tampered_test_output_fails_core_and_reproduction(default_package, tmp_path):
    expected = _read_npy(default_package, "test_output_mmse.npy")
    tampered = expected.copy()
    tampered[..., 0, :] += 1.0  # one row of 64 elements, far beyond both tolerances
    package = _rewrite(default_package, tmp_path / "tampered.zip", {"test_output_mmse.npy": _npy_bytes(tampered)})
    checks = check_package(package, device="cpu", trust_code=True)
    by = _by_name(checks)
    assert not core_passed(checks)
    assert by["bioimageio.core"].status == "fail"
    core = _rules(by["bioimageio.core"])
    assert core["format validation"].status == "pass"
    assert core["test torchscript"].status == "fail"
    reproduction = _rules(by["deepImageJ"])["reproduction"]
    assert reproduction.status == "fail"
    assert "64 of 4096 elements off" in reproduction.detail
    assert "max excess 0.99" in reproduction.detail
    assert _rules(by["deepImageJ"])["sample equals test input"].status == "pass"
    assert _rules(by["ilastik"])["core test"].status == "fail"
    assert _rules(by["BioEngine"])["core test"].status == "fail"


@pytest.mark.slow
def test_sample_differing_from_test_input(default_package, tmp_path, monkeypatch):
    import tifffile

    sample = _read_npy(default_package, "test_input.npy").copy()
    sample[0, 0, 5, 7] += 3.0
    buf = io.BytesIO()
    tifffile.imwrite(buf, sample)
    package = _rewrite(default_package, tmp_path / "sample.zip", {"sample_input.tif": buf.getvalue()})

    def no_validation(*args, **kwargs):
        raise AssertionError("validate_package must not run when results are given")

    monkeypatch.setattr(consumers, "validate_package", no_validation)
    by = _by_name(check_package(package, device="cpu", validation=PASSED, trust_code=True))
    assert by["bioimageio.core"].status == "pass"
    dij = _rules(by["deepImageJ"])
    assert dij["sample equals test input"].status == "fail"
    assert "1 of 4096 elements differ (max |d| 3)" in dij["sample equals test input"].detail
    # the conv spreads the change to a 3x3 neighbourhood
    assert dij["reproduction"].status == "fail" and "9 of 4096 elements off" in dij["reproduction"].detail


@pytest.mark.slow
@pytest.mark.parametrize(
    "version, deepimagej, ilastik, bioengine",
    [("1.13.1", "pass", "pass", "pass"), ("2.0.0", "pass", "pass", "pass"), ("2.0.1", "unknown", "pass", "pass"),
     ("2.5.1", "unknown", "pass", "pass"), ("2.7.1", "unknown", "pass", "unknown"),
     ("2.8.0", "unknown", "unknown", "unknown")],
)
def test_weights_by_declared_pytorch_version(default_package, tmp_path, version, deepimagej, ilastik, bioengine):
    current = helpers.torch.__version__.split("+")[0]
    package = _rewrite(default_package, tmp_path / "v.zip", {},
                       {f"pytorch_version: {current}": f"pytorch_version: {version}"})
    by = _by_name(check_package(package, device="cpu", validation=PASSED, trust_code=True))
    got = [_rules(by[name])["weights"].status for name in ("deepImageJ", "ilastik", "BioEngine")]
    assert got == [deepimagej, ilastik, bioengine], [_rules(by[n])["weights"].detail for n in by if n != "bioimageio.core"]
    if deepimagej == "unknown":
        assert f"scripted with pytorch {version} and deepImageJ runs libtorch 2.0" in _rules(by["deepImageJ"])[
            "weights"].detail


@pytest.mark.slow
def test_invalid_package_fails_format_validation(default_package, tmp_path):
    package = _rewrite(default_package, tmp_path / "broken.zip", {}, {"format_version: 0.5": "format_version: 9.5"})
    checks = check_package(package, device="cpu")
    assert [c.consumer for c in checks] == list(CONSUMERS)
    assert all(c.status == "fail" for c in checks)
    assert [r.name for r in checks[0].rules] == ["format validation"]
    assert not core_passed(checks)


def test_not_a_package_is_a_user_error(tmp_path):
    not_zip = tmp_path / "x.zip"
    not_zip.write_text("nope")
    for path, words in [(not_zip, "zip"), (tmp_path / "none.zip", "not found")]:
        with pytest.raises(UserError, match=words):
            check_package(path)


def test_core_passed_and_statuses():
    ok = ConsumerCheck("bioimageio.core", "pass", [Rule("format validation", "pass", "ok")])
    bad = ConsumerCheck("bioimageio.core", "fail", [Rule("test onnx", "fail", "off")])
    other = ConsumerCheck("ilastik", "pass", [])
    assert core_passed([ok, other]) and not core_passed([bad, other]) and not core_passed([other])


@pytest.mark.slow
def test_onnx_package_weights_and_reproduction(tmp_path):
    pytest.importorskip("onnxruntime")
    content = helpers.make_content(tmp_path / "src", "StandInBuffer", onnx=True)
    package = build_package(content, tmp_path / "onnx.zip")
    validation = PASSED + [FormatResult("onnx", True, [])]
    by = _by_name(check_package(package, device="cpu", validation=validation, trust_code=True))
    assert [r.name for r in by["bioimageio.core"].rules][-1] == "test onnx"
    dij = _rules(by["deepImageJ"])
    assert dij["weights"].status == "pass" and "ONNX opset 17 read from the file (deepImageJ runs <= 18)" in dij["weights"].detail
    assert dij["reproduction"].status == "pass"
    assert "torchscript: 'mmse' 0 of 4096" in dij["reproduction"].detail
    assert "onnx: 'mmse' 0 of 4096" in dij["reproduction"].detail
    assert _rules(by["ilastik"])["weights"].status == "pass"
    assert _rules(by["BioEngine"])["weights"].status == "pass"
    assert "opset 17" in _rules(by["BioEngine"])["weights"].detail
