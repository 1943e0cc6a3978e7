"""Helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path


def tiny_config(data_path: Path, **train: object) -> dict:
    """A COSDD config small enough to train a few steps in seconds on 2 CPU cores."""
    return {
        "method": "cosdd",
        "model": {"preset": "tiny", "direction": "x", "n_levels": 2, "latent_channels": [4],
                  "features": 8, "ar_layers": 3, "ar_hidden": 8, "signal_hidden": 8,
                  "direct_denoiser": True, "direct_depth": 1, "direct_features": 4, "halo": 8},
        "data": {"paths": [str(data_path)], "axes": "SYX", "crop_size": 32, "val_fraction": 0.25, "val_crops": 4},
        "train": {"batch_size": 2, "max_steps": 6, "max_epochs": None, "steps_per_epoch": 3, "seed": 0, **train},
    }


def write_zip(path: Path, members: dict[str, str]) -> Path:
    """A zip holding ``members`` (name -> text), names written as given (even ``../x``)."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def tiny_blind_spot_config(method: str, data_path: Path, model: dict | None = None, **train: object) -> dict:
    """A config of the N2V family (``n2v``, ``n2v2``, ``structn2v``, ``psf-n2v``) that trains in seconds."""
    return {
        "method": method,
        "model": {"depth": 2, "features": 8, "masked_fraction": 0.05, **(model or {})},
        "data": {"paths": [str(data_path)], "axes": "SYX", "crop_size": 32, "val_fraction": 0.25, "val_crops": 4},
        "train": {"batch_size": 4, "max_steps": 6, "max_epochs": None, "steps_per_epoch": 3, "seed": 0, **train},
    }


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    """Run ``bmz-cosdd args`` in-process; return (exit code, stdout, stderr)."""
    import pytest

    from bmz_cosdd.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else (0 if exc.value.code is None else 1)
    return code, out, err


def export_helpers():
    """The stand-in model and its package content, defined in tests/export/test_rdf.py."""
    import importlib.util
    import sys

    name = "bmz_cosdd_test_rdf_helpers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "export" / "test_rdf.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def assert_one_line_error(code: int, out: str, err: str, words: str) -> None:
    """A user error: exit code 2, one line on stderr starting with ``error:`` that names ``words``."""
    assert code == 2, (out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert words.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err


def assert_readable_png(path, min_height: int = 300, min_width: int = 600, min_ink: float = 0.2) -> None:
    """The PNG exists, has a figure's size and is not blank (its pixels vary; at least ``min_ink`` of it is
    not white: images fill much of a figure, line plots little)."""
    import matplotlib.image

    pixels = matplotlib.image.imread(path)[..., :3]
    assert pixels.shape[0] >= min_height and pixels.shape[1] >= min_width, pixels.shape
    assert pixels.std() > 0.1, pixels.std()
    assert (pixels.min(-1) < 0.9).mean() > min_ink  # a blank figure is white


def yx_grid(trained) -> tuple[int, int]:
    """(size step, halo) of a loaded run along x (a method gives one value or one per spatial axis)."""
    from bmz_cosdd.data.axes import per_axis

    dims = trained.config.data.spatial_dims
    return (per_axis(trained.method.size_step(trained.model), dims)[-1],
            per_axis(trained.method.halo(trained.model), dims)[-1])
