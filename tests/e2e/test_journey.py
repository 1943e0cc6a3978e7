"""The README's tour, typed as written: every verb of one method family, from a fresh folder, relative paths.

The commands come from the README's ``<!-- journey: NAME -->`` blocks, so the README and this test
cannot drift apart. After the tour the run folder moves elsewhere and its training data go: the run
still resumes (while the data exist where the run found them), packages and predicts from another folder.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bmz_cosdd.data.io import write_tiff
from bmz_cosdd.data.synthetic import make_dataset

README = Path(__file__).resolve().parents[2] / "README.md"


def journey(name: str) -> list[list[str]]:
    """The commands of the README block ``<!-- journey: name -->``."""
    text = README.read_text()
    block = re.search(rf"<!-- journey: {name} -->\s*```bash\n(.*?)```\s*<!-- /journey -->", text, re.S)
    assert block, f"README has no journey block {name!r}"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    assert command[0] == "bmz-cosdd", command
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "bmz_cosdd", *command[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"{shlex.join(command)} failed:\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done


@pytest.fixture()
def user_folder(tmp_path) -> Path:
    """The user's folder: ``data/noisy.tif`` and ``more/noisy.tif``, noisy 2-D images (SYX)."""
    folder = tmp_path / "my data ü"
    data = make_dataset("blobs", "row_correlated", n=8, shape=(64, 64), seed=11)
    write_tiff(folder / "data" / "noisy.tif", data.noisy[:6], "SYX")
    write_tiff(folder / "more" / "noisy.tif", data.noisy[6:], "SYX")
    return folder


def _move_and_check(folder: Path, tmp_path: Path, run_name: str, method: str) -> None:
    """Move the run elsewhere: resume from another folder; then delete the data: package and predict still work."""
    laptop = tmp_path / "laptop"
    laptop.mkdir(exist_ok=True)
    shutil.move(folder / "runs" / run_name, laptop / run_name)
    other = tmp_path / "somewhere else"
    other.mkdir(exist_ok=True)
    run(["bmz-cosdd", "train", method, "--resume", "--out", f"../laptop/{run_name}", "--max-steps", "32"], other)
    shutil.copy(folder / "more" / "noisy.tif", other / "img.tif")
    shutil.rmtree(folder / "data")
    run(["bmz-cosdd", "package", f"../laptop/{run_name}", "--out", "moved.zip", "--samples", "2", "--force"], other)
    assert (other / "moved.zip").is_file()
    run(["bmz-cosdd", "predict", f"../laptop/{run_name}", "img.tif", "--axes", "SYX", "--samples", "2",
         "--out", "out"], other)
    assert any((other / "out").glob("img_*.tif"))


@pytest.mark.slow
def test_cosdd_journey_as_typed(user_folder, tmp_path):
    for command in journey("cosdd"):
        run(command, user_folder)
    assert (user_folder / "cosdd.zip").is_file() and (user_folder / "denoised-with-package" / "noisy_mmse.tif").is_file()
    _move_and_check(user_folder, tmp_path, "cosdd", "cosdd")


@pytest.mark.slow
def test_n2v_and_noise_model_vae_journeys_as_typed(user_folder, tmp_path):
    for command in journey("n2v") + journey("divnoising"):
        run(command, user_folder)
    assert (user_folder / "n2v.zip").is_file() and (user_folder / "dn.zip").is_file()
    _move_and_check(user_folder, tmp_path, "dn", "divnoising")


def test_every_journey_command_is_a_readme_command():
    commands = [shlex.join(c) for name in ("cosdd", "n2v", "divnoising") for c in journey(name)]
    verbs = {c.split()[1] for c in commands}
    assert verbs >= {"inspect", "train", "predict", "package", "validate", "check", "upload", "noise-model"}
    assert all(c.startswith("bmz-cosdd ") for c in commands)
