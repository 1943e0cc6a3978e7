"""bioimageio.core validates stand-in packages per weight format, offline, at default tolerance."""

from __future__ import annotations

import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("bioimageio.core")

from helpers import export_helpers  # noqa: E402

from bmz_cosdd.errors import UserError
from bmz_cosdd.export.package_zip import build_package  # noqa: E402
from bmz_cosdd.export.validate import FormatResult, format_table, validate_package  # noqa: E402

helpers = export_helpers()
TIMINGS: dict[str, float] = {}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    attempts = helpers.block_network(monkeypatch)
    yield attempts
    assert attempts == [], f"network was attempted: {attempts}"


def _validate(package: Path, label: str) -> list[FormatResult]:
    start = time.perf_counter()
    # the stand-ins' architecture source is the tests' own, not bmz-cosdd's: testing it needs trust_code
    results = validate_package(package, device="cpu", trust_code=True)
    TIMINGS[label] = time.perf_counter() - start
    print(f"validate_package({label}): {TIMINGS[label]:.1f} s")
    print(format_table(results))
    return results


@pytest.fixture(scope="module")
def default_package(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("validate")
    return build_package(helpers.make_content(folder / "src"), folder / "standin.zip")


@pytest.mark.slow
def test_default_package_passes_every_format(default_package):
    results = _validate(default_package, "default")
    assert [r.weight_format for r in results] == ["torchscript", "pytorch_state_dict"]
    assert all(r.passed for r in results), format_table(results)
    assert all(r.details == [] for r in results)
    assert all(r.seconds > 0 for r in results)
    # the one hint about the description: no maintainer / author with a GitHub user
    assert any("maintainers" in w for w in results[0].warnings)


@pytest.mark.slow
def test_mmse_std_samples_package_passes(tmp_path):
    content = helpers.make_content(tmp_path / "src", "StandInFull", outputs=("mmse", "std", "samples"), n_samples=3)
    results = _validate(build_package(content, tmp_path / "full.zip"), "mmse+std+samples")
    assert [r.weight_format for r in results] == ["torchscript", "pytorch_state_dict"]
    assert all(r.passed for r in results), format_table(results)


@pytest.mark.slow
def test_torchscript_only_multichannel_package_passes_offline_with_github_user(tmp_path):
    """A GitHub user and a repository URL would make spec go online: the network stays untouched."""
    content = helpers.make_content(tmp_path / "src", n_channels=2, state_dict=False)
    content = replace(content, authors=[helpers.Author("Test Person", github_user="no-such-user-bmz-cosdd")],
                      git_repo="https://github.com/example-org/bmz-cosdd")
    results = _validate(build_package(content, tmp_path / "ts.zip"), "torchscript only, 2 channels")
    assert [(r.weight_format, r.passed) for r in results] == [("torchscript", True)], format_table(results)
    assert not any("maintainers" in w for w in results[0].warnings)


@pytest.mark.slow
def test_onnx_with_buffer_noise_passes(tmp_path):
    pytest.importorskip("onnxruntime")
    content = helpers.make_content(tmp_path / "src", "StandInBuffer", onnx=True)
    results = _validate(build_package(content, tmp_path / "onnx.zip"), "buffer noise + onnx")
    assert [r.weight_format for r in results] == ["torchscript", "pytorch_state_dict", "onnx"]
    assert all(r.passed for r in results), format_table(results)


@pytest.mark.slow
def test_onnx_of_seeded_sampler_fails_and_says_why(tmp_path):
    """Tracing for ONNX drops torch.manual_seed: RandomNormalLike cannot reproduce the test output."""
    pytest.importorskip("onnxruntime")
    content = helpers.make_content(tmp_path / "src", "StandIn", onnx=True)
    results = _validate(build_package(content, tmp_path / "seeded_onnx.zip"), "seeded noise + onnx")
    by_format = {r.weight_format: r for r in results}
    assert by_format["torchscript"].passed and by_format["pytorch_state_dict"].passed
    onnx = by_format["onnx"]
    assert not onnx.passed
    assert any("Reproduce test outputs" in d and "disagree" in d for d in onnx.details), onnx.details
    assert all("\n" not in d for d in onnx.details)
    table = format_table(results)
    assert "onnx" in table and "FAILED" in table


def test_validate_rejects_non_packages(tmp_path):
    not_zip = tmp_path / "x.zip"
    not_zip.write_text("nope")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../evil", "x")
    for path, words in [(not_zip, "zip"), (evil, "escapes"), (tmp_path / "none.zip", "not found")]:
        with pytest.raises(UserError, match=words):
            validate_package(path)


def test_format_table_lists_failures_and_shared_warnings():
    results = [
        FormatResult("torchscript", True, [], ["w shared", "w ts"], 1.0),
        FormatResult("onnx", False, ["Reproduce test outputs (onnx): 90% off"], ["w shared"], 0.5),
    ]
    lines = format_table(results).splitlines()
    assert lines[0].split() == ["weight", "format", "result", "time"]
    assert lines[1].split()[:2] == ["torchscript", "passed"]
    assert lines[2].split()[:2] == ["onnx", "FAILED"]
    assert "  onnx: FAILED Reproduce test outputs (onnx): 90% off" in lines
    assert "  torchscript: warning w ts" in lines
    assert sum("w shared" in line for line in lines) == 1
    assert format_table([]).endswith("(no weight formats)")
