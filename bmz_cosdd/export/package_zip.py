"""Writing a package zip: the content's files staged under their package names, described, written atomically.

:func:`build_package` checks the content, stages its files, describes them once without
test outputs, runs that draft through bioimageio.core for the test outputs
(:mod:`bmz_cosdd.export.core_outputs`), describes them again with the outputs, and lets
bioimageio.spec write the zip, offline and quiet, under a temporary name renamed into
place. Reading a package back is :mod:`bmz_cosdd.artifacts.package_reader`.

Examples
--------
Not run as doctests: a content needs a trained model's weights and test input (the tests
make a stand-in, see ``tests/export/test_rdf.py``), and building runs bioimageio.core.

>>> content = PackageContent(...)                        # doctest: +SKIP
>>> build_package(content, Path("model.bioimageio.zip"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bmz_cosdd.artifacts.offline_bioimageio import offline_bioimageio, quiet_bioimageio
from bmz_cosdd.export.describe import describe_model
from bmz_cosdd.export.package_content import PackageContent, check_content
from bmz_cosdd.export.core_outputs import core_test_outputs


def _github_users(content: PackageContent) -> list[str]:
    return [a.github_user for a in [*content.authors, *content.maintainers] if a.github_user]



def stage_files(content: PackageContent, stage: Path) -> dict[str, Any]:
    """Copy the content's files into ``stage`` under the names they get in the package.

    Parameters
    ----------
    content
        What the package holds (checked).
    stage
        An empty folder.

    Returns
    -------
    dict
        Staged path by key: ``documentation``, ``covers`` and ``attachments`` (lists),
        ``torchscript``, ``state_dict`` and ``architecture_source`` (with a state dict),
        ``onnx`` (with ONNX weights), ``test_input`` (``.npy``) and ``sample_input`` (``.tif``).

    Raises
    ------
    ValueError
        If two attachments have the same name.
    """
    c = content
    files: dict[str, Any] = {}

    def put(key: str, src: Path, name: str) -> None:
        dst = stage / name
        shutil.copyfile(src, dst)
        files[key] = dst

    put("documentation", c.documentation, "README.md")
    files["covers"] = []
    for i, cover in enumerate(c.covers):
        dst = stage / f"cover{i}{Path(cover).suffix.lower()}"
        shutil.copyfile(cover, dst)
        files["covers"].append(dst)
    files["attachments"] = []
    att_dir = stage / "attachments"
    for att in c.attachments:
        att_dir.mkdir(exist_ok=True)
        dst = att_dir / Path(att).name
        if dst.exists():
            raise ValueError(f"two attachments are named {Path(att).name}")
        shutil.copyfile(att, dst)
        files["attachments"].append(dst)
    put("torchscript", c.torchscript, "weights_torchscript.pt")
    if c.state_dict is not None:
        put("state_dict", c.state_dict, "weights_state_dict.pt")
        put("architecture_source", c.architecture_source, Path(c.architecture_source).name)
    if c.onnx is not None:
        put("onnx", c.onnx, "weights.onnx")

    arr = np.ascontiguousarray(np.load(c.test_input, allow_pickle=False), dtype=np.float32)
    files["test_input"] = _save_npy(stage / "test_input.npy", arr)
    files["sample_input"] = _save_tif(stage / "sample_input.tif", arr)
    return files


def _save_npy(path: Path, arr: np.ndarray) -> Path:
    np.save(path, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
    return path


def _save_tif(path: Path, arr: np.ndarray) -> Path:
    import tifffile

    tifffile.imwrite(path, np.ascontiguousarray(arr, dtype=np.float32))
    return path



def build_package(content: PackageContent, out_zip: Path, work_dir: Path | None = None) -> Path:
    """Write the bioimage.io package of ``content`` to ``out_zip`` and return its path.

    The zip appears atomically (written next to ``out_zip`` under a temporary name, then
    renamed); on any failure nothing is left behind and an existing ``out_zip`` is kept.

    Parameters
    ----------
    content
        What goes into the package.
    out_zip
        Destination, conventionally ``*.bioimageio.zip``.
    work_dir
        Folder for the temporary staging directory (default: the system's).

    Raises
    ------
    ValueError
        When ``content`` breaks a rule (one line naming it).
    """
    from bioimageio.spec import ValidationContext, save_bioimageio_package

    check_content(content)
    out_zip = Path(out_zip).absolute()
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    partial = out_zip.parent / f".{out_zip.name}.{uuid.uuid4().hex[:8]}.partial"

    with tempfile.TemporaryDirectory(prefix="bmz-package-", dir=work_dir) as tmp:
        stage = Path(tmp)
        try:
            with offline_bioimageio(_github_users(content)), quiet_bioimageio():
                files = stage_files(content, stage)
                with ValidationContext(root=stage, perform_io_checks=True, log_warnings=False):
                    draft = describe_model(content, files, with_test_outputs=False)
                for name, arr in core_test_outputs(draft).items():
                    files[f"test_output_{name}"] = _save_npy(stage / f"test_output_{name}.npy", arr)
                    files[f"sample_output_{name}"] = _save_tif(stage / f"sample_output_{name}.tif", arr)
                with ValidationContext(root=stage, perform_io_checks=True, log_warnings=False):
                    descr = describe_model(content, files, with_test_outputs=True)
                save_bioimageio_package(descr, output_path=partial)
            os.replace(partial, out_zip)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return out_zip
