"""Load a package's TorchScript weights in another PyTorch (e.g. 2.0.1, as in deepImageJ) and compare.

deepImageJ runs TorchScript through libtorch 2.0; a file scripted with a newer torch
may use ops that 2.0 does not know. This script extracts the weights and test data of
a package, runs the weights in the interpreter given by ``--python`` (a separate
virtual environment with the old torch), applies the package's pre- and
post-processing, and compares with the package's test output at bioimageio.core's
default tolerance. Prints JSON. Not part of CI (it needs the old torch installed).

Example
-------
    python3 -m venv /tmp/t20 && /tmp/t20/bin/pip install torch==2.0.1 "numpy<2"
    python scripts/check_torch20.py model.zip --python /tmp/t20/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import yaml

RUNNER = r"""
import sys, json, numpy as np, torch
module = torch.jit.load(sys.argv[1], map_location="cpu")
x = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    runs = [module(x) for _ in range(3)]
first, second, third = [r[0] if isinstance(r, tuple) else r for r in runs]
np.save(sys.argv[3], first.numpy())
# The profiling executor optimises the graph after the first call: later calls may differ from
# the first by float rounding (about 1e-7), never by different random draws.
print(json.dumps({"torch": torch.__version__, "repeat_max_abs_diff": float((first - second).abs().max()),
                  "repeat_identical_after_first": bool(torch.equal(second, third))}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--python", required=True, help="interpreter of the environment with the old torch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(args.package) as zf:
        work = Path(tmp)
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        weights = rdf["weights"]["torchscript"]["source"]
        test_input = rdf["inputs"][0]["test_tensor"]["source"]
        test_output = rdf["outputs"][0]["test_tensor"]["source"]
        for name in (weights, test_input, test_output):
            zf.extract(name, work)
        stats = rdf["config"]["bmz_cosdd"]["normalisation"]
        mean = np.asarray(stats["mean"], np.float64)[None, :, None, None]
        std = np.asarray(stats["std"], np.float64)[None, :, None, None]
        raw = np.load(work / test_input)
        np.save(work / "normalised.npy", ((raw - mean) / std).astype(np.float32))
        run = subprocess.run(
            [args.python, "-c", RUNNER, str(work / weights), str(work / "normalised.npy"), str(work / "out.npy")],
            capture_output=True, text=True,
        )
        if run.returncode != 0:
            print(json.dumps({"package": str(args.package), "loaded": False,
                              "error": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "failed"}))
            raise SystemExit(1)
        info = json.loads(run.stdout.strip().splitlines()[-1])
        output = np.load(work / "out.npy").astype(np.float64) * std + mean
        expected = np.load(work / test_output).astype(np.float64)
        diff = np.abs(output - expected)
        # bioimageio.core's default: |d| <= 1e-3 + 1e-3 * |expected|, at most 100 mismatches per million
        mismatched = float(np.mean(diff > 1e-3 + 1e-3 * np.abs(expected)) * 1e6)
        result = {
            "package": str(args.package), "loaded": True, **info,
            "max_abs_diff": float(diff.max()), "mismatched_ppm": mismatched,
            "passes_default_tolerance": mismatched <= 100,
            # deepImageJ's own check: |d| <= 1.5e-4 + 1e-4 * |expected|
            "passes_deepimagej_tolerance": bool(np.all(diff <= 1.5e-4 + 1e-4 * np.abs(expected))),
        }
        print(json.dumps(result, indent=1))
        if not result["passes_default_tolerance"]:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
