"""The architecture file of state-dict weights: every exported model's modules bundle without a name clash."""

from __future__ import annotations

import types

import pytest

from bmz_cosdd.export.source_bundle import bundle_sources


def _module(name: str, source: str, tmp_path) -> types.ModuleType:
    import importlib.util

    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_modules_defining_one_name_are_refused(tmp_path):
    a = _module("mod_a", "def helper(x):\n    return x\n", tmp_path)
    b = _module("mod_b", "def helper(x, y):\n    return x + y\n", tmp_path)
    with pytest.raises(ValueError, match="mod_a and mod_b both define helper"):
        bundle_sources([a, b], "t")


@pytest.mark.parametrize("names", [
    ["blocks", "ladder_vae", "divnoising_vae", "decoders", "posterior", "sampling_model"],  # VAE sampling models
    ["blocks", "unet"],  # the N2V family and COSDD's direct denoiser
])
def test_the_exported_modules_bundle(names):
    import importlib

    modules = [importlib.import_module(f"bmz_cosdd.nn.{name}") for name in names]
    source = bundle_sources(modules, "t")
    compile(source, "architecture.py", "exec")
