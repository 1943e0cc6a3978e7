"""Foreign packages are untrusted: their Python never runs unless it is ours or trusted, their files stay inside.

A real package of a tiny COSDD run is altered five ways (a payload appended to its architecture
source, an ``import_from: os`` / ``callable: system`` architecture, a weights source that is an
absolute path outside the zip, an ``http://`` source, a ``../`` source; also a test tensor and an
attachment named outside). Every verb that opens a package (predict, validate, check,
train --from) refuses each in one line, no payload runs and no socket connects.
"""

from __future__ import annotations

import hashlib
import socket
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml

pytest.importorskip("bioimageio.core")

from helpers import assert_one_line_error, export_helpers, run_cli  # noqa: E402

from bmz_cosdd.errors import UserError  # noqa: E402
from bmz_cosdd.artifacts.package_files import PackageRefused, check_files_inside  # noqa: E402
from bmz_cosdd.export.package_trust import choose_weight_format, package_code  # noqa: E402

ARCH = "architecture.py"


@pytest.fixture(autouse=True)
def network_attempts(monkeypatch):
    """Every socket connection fails and is recorded; none may be attempted."""
    attempts = export_helpers().block_network(monkeypatch)
    yield attempts
    assert attempts == [], f"network was attempted: {attempts}"


@pytest.fixture(scope="module")
def package(trained_run, tmp_path_factory) -> Path:
    from bmz_cosdd.export.package import PackageMeta, package_run
    from bmz_cosdd.methods.base import ExportOptions

    out = tmp_path_factory.mktemp("trust") / "genuine.zip"
    # a 6-step run is flagged as worse than its input: force; validation is other tests' business
    package_run(trained_run, out, ExportOptions(samples=2, sample_batch=2), PackageMeta(name="tiny COSDD"),
                validate=False, say=lambda m: None, force=True)
    return out


def _altered(package: Path, dst: Path, members: dict[str, bytes] | None = None,
             edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Copy ``package`` with ``members`` replaced (their sha256 in the rdf follow) and the rdf edited."""
    with zipfile.ZipFile(package) as zf:
        content = {name: zf.read(name) for name in zf.namelist()}
    rdf = yaml.safe_load(content["rdf.yaml"])
    for name, data in (members or {}).items():
        old, new = hashlib.sha256(content[name]).hexdigest(), hashlib.sha256(data).hexdigest()
        rdf = _replaced(rdf, old, new)
        content[name] = data
    if edit is not None:
        edit(rdf)
    content["rdf.yaml"] = yaml.safe_dump(rdf, sort_keys=False).encode()
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in content.items():
            zf.writestr(name, data)
    return dst


def _replaced(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {k: _replaced(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_replaced(v, old, new) for v in node]
    return new if node == old else node


def _member(package: Path, name: str) -> bytes:
    with zipfile.ZipFile(package) as zf:
        return zf.read(name)


@pytest.fixture(scope="module")
def listener():
    """A local port that records whether anything connected to it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        sock.setblocking(False)
        yield sock


def _no_connection(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


@pytest.fixture(scope="module")
def hostile(package, tmp_path_factory, listener) -> dict[str, tuple[Path, str]]:
    """name -> (altered package, words its refusal names); payloads would create ``sentinel``."""
    folder = tmp_path_factory.mktemp("hostile")
    sentinel = folder / "sentinel"
    port = listener.getsockname()[1]
    outside = folder / "outside_weights.pt"
    outside.write_bytes(_member(package, "weights_torchscript.pt"))
    outside_npy = folder / "outside_input.npy"
    outside_npy.write_bytes(_member(package, "test_input.npy"))
    payload = f"\nimport pathlib\npathlib.Path({str(sentinel)!r}).write_text('payload ran')\n".encode()

    def system(rdf):
        rdf["weights"]["pytorch_state_dict"]["architecture"] = {
            "import_from": "os", "callable": "system", "kwargs": {"command": f"touch {sentinel}"}}

    def set_source(fmt: str, value: str) -> Callable[[dict], None]:
        def edit(rdf):
            rdf["weights"][fmt]["source"] = value
        return edit

    def test_input(rdf):
        rdf["inputs"][0]["test_tensor"]["source"] = str(outside_npy)

    def attachment(rdf):
        rdf["attachments"][0]["source"] = f"https://127.0.0.1:{port}/training_state.pt"

    cases = {
        "payload": (_altered(package, folder / "payload.zip", {ARCH: _member(package, ARCH) + payload}),
                    "--trust-code"),
        "os_system": (_altered(package, folder / "os_system.zip", edit=system), "--trust-code"),
        "absolute": (_altered(package, folder / "absolute.zip", edit=set_source("torchscript", str(outside))),
                     "outside the package"),
        "http": (_altered(package, folder / "http.zip",
                          edit=set_source("torchscript", f"http://127.0.0.1:{port}/x.pt")), "outside the package"),
        "dotdot": (_altered(package, folder / "dotdot.zip",
                            edit=set_source("pytorch_state_dict", "../weights_state_dict.pt")), "outside the package"),
        "test_tensor": (_altered(package, folder / "test_tensor.zip", edit=test_input), "outside the package"),
        "attachment": (_altered(package, folder / "attachment.zip", edit=attachment), "outside the package"),
    }
    (folder / "weights_state_dict.pt").write_bytes(_member(package, "weights_state_dict.pt"))  # what ../ would reach
    return {"sentinel": sentinel, **cases}


CASES = ["payload", "os_system", "absolute", "http", "dotdot", "test_tensor", "attachment"]


def _verbs(path: Path, data: Path, out: Path) -> dict[str, list]:
    return {
        "predict": ["predict", path, data, "--axes", "SYX", "--weight-format", "pytorch_state_dict",
                    "--out", out / "predicted"],
        "validate": ["validate", path, "--device", "cpu"],
        "check": ["check", path, "--device", "cpu"],
        "train --from": ["train", "cosdd", data, "--axes", "SYX", "--from", path, "--out", out / "ft",
                         "--max-steps", "1", "--quiet"],
    }


@pytest.mark.parametrize("case", CASES)
def test_every_verb_refuses_in_one_line(case, hostile, noisy_stack, tmp_path, capsys, listener):
    path, words = hostile[case]
    for verb, args in _verbs(path, noisy_stack, tmp_path).items():
        code, out, err = run_cli(args, capsys)
        assert_one_line_error(code, out, err, words)
        assert path.name in err, (verb, err)
        assert not hostile["sentinel"].exists(), verb
    assert not (tmp_path / "predicted").exists() and not (tmp_path / "ft").exists()
    assert _no_connection(listener)


def test_refusals_say_why_and_name_the_alternative(hostile, noisy_stack, tmp_path, capsys):
    code, out, err = run_cli(_verbs(hostile["payload"][0], noisy_stack, tmp_path)["predict"], capsys)
    assert_one_line_error(code, out, err, "--weight-format torchscript")
    assert "architecture.py is not the architecture source bmz-cosdd" in err and "pytorch_state_dict" in err
    code, out, err = run_cli(_verbs(hostile["os_system"][0], noisy_stack, tmp_path)["validate"], capsys)
    assert_one_line_error(code, out, err, "imported from the module 'os' (callable 'system')")
    for case, where in [("absolute", "weights.torchscript.source is an absolute path"),
                        ("http", "weights.torchscript.source is a URL"),
                        ("dotdot", "weights.pytorch_state_dict.source is a path that leaves the package"),
                        ("test_tensor", "inputs[0].test_tensor.source is an absolute path"),
                        ("attachment", "attachments[0].source is a URL")]:
        with pytest.raises(PackageRefused, match=rf"refused before loading anything: {where}".replace("[", r"\[")):
            check_files_inside(hostile[case][0])


@pytest.mark.slow
def test_untrusted_package_predicts_with_torchscript_by_default(hostile, noisy_stack, tmp_path, capsys):
    """Without --weight-format the payload package runs its TorchScript weights, never its Python."""
    path = hostile["payload"][0]
    assert choose_weight_format(path, None, trust_code=False) == "torchscript"
    code, out, err = run_cli(["predict", path, noisy_stack, "--axes", "SYX", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert (tmp_path / "o" / "noisy_mmse.tif").is_file()
    assert not hostile["sentinel"].exists()


@pytest.mark.slow
def test_genuine_package_runs_its_state_dict(package, noisy_stack, tmp_path, capsys):
    """Its architecture source is byte-identical to the one this bmz-cosdd writes: trusted without --trust-code."""
    code_ = package_code(package)
    assert code_.untrusted == {} and set(code_.formats) == {"torchscript", "pytorch_state_dict"}
    assert choose_weight_format(package, None, trust_code=False) is None  # core's choice
    code, out, err = run_cli(["predict", package, noisy_stack, "--axes", "SYX", "--weight-format",
                              "pytorch_state_dict", "--out", tmp_path / "sd"], capsys)
    assert code == 0, err
    import tifffile

    denoised = tifffile.imread(tmp_path / "sd" / "noisy_mmse.tif")
    assert denoised.shape[0] == 4 and np.isfinite(denoised).all()


@pytest.mark.slow
def test_trust_code_lets_a_modified_source_run(package, noisy_stack, tmp_path, capsys):
    harmless = _altered(package, tmp_path / "harmless.zip", {ARCH: _member(package, ARCH) + b"\n# a comment\n"})
    args = ["predict", harmless, noisy_stack, "--axes", "SYX", "--weight-format", "pytorch_state_dict"]
    code, out, err = run_cli([*args, "--out", tmp_path / "refused"], capsys)
    assert_one_line_error(code, out, err, "--trust-code")
    assert not (tmp_path / "refused").exists()
    code, out, err = run_cli([*args, "--trust-code", "--out", tmp_path / "trusted"], capsys)
    assert code == 0, err
    assert (tmp_path / "trusted" / "noisy_mmse.tif").is_file()


@pytest.mark.slow
def test_the_payload_is_real(hostile, noisy_stack, tmp_path):
    """The refusals above matter: trusted explicitly, the altered source does run its payload."""
    from bmz_cosdd.zoo.package_prediction import predict_files_with_package

    sentinel = hostile["sentinel"]
    try:
        predict_files_with_package(hostile["payload"][0], [noisy_stack], "SYX", tmp_path / "o",
                                   weight_format="pytorch_state_dict", trust_code=True)
        assert sentinel.read_text() == "payload ran"
    finally:
        sentinel.unlink(missing_ok=True)


def test_files_outside_are_refused_even_with_trust_code(hostile, noisy_stack, tmp_path, capsys):
    for case in ("absolute", "http", "dotdot"):
        path, words = hostile[case]
        for args in _verbs(path, noisy_stack, tmp_path).values():
            code, out, err = run_cli([*args, "--trust-code"], capsys)
            assert_one_line_error(code, out, err, words)


def test_custom_processing_and_foreign_formats_are_untrusted(package, tmp_path):
    def custom(rdf):
        rdf["outputs"][0]["postprocessing"].append({"id": "custom", "callable": "f", "source": ARCH})

    def keras(rdf):
        rdf["weights"]["keras_hdf5"] = {"source": ARCH, "tensorflow_version": "2.10"}

    code = package_code(_altered(package, tmp_path / "custom.zip", edit=custom))
    assert list(code.untrusted) == ["custom processing"]
    with pytest.raises(UserError, match="custom processing|runs Python from the package"):
        choose_weight_format(tmp_path / "custom.zip", "torchscript", trust_code=False)
    code = package_code(_altered(package, tmp_path / "keras.zip", edit=keras))
    assert list(code.untrusted) == ["keras_hdf5"] and code.allowed("torchscript")


def test_missing_member_and_duplicate_names_are_refused(package, tmp_path):
    def missing(rdf):
        rdf["covers"][0]["source"] = "nowhere.png"

    with pytest.raises(PackageRefused, match="covers\\[0\\].source is a file the package does not hold"):
        check_files_inside(_altered(package, tmp_path / "missing.zip", edit=missing))
    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(twice, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        with pytest.warns(UserWarning, match="Duplicate name"):
            dst.writestr(ARCH, b"print('second copy')\n")
    with pytest.raises(PackageRefused, match="two members named 'architecture.py'"):
        check_files_inside(twice)
