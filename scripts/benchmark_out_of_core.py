"""Peak memory of out-of-core prediction against image size: it must stay flat as images grow.

Trains a tiny N2V run for a few steps (the network's quality is beside the point), writes square
Zarr images of each size chunk by chunk (never whole in memory), and predicts each in a fresh
process (`bmz-cosdd predict RUN IMAGE.zarr --tile T`), recording that process's peak RSS
(ru_maxrss) and wall time. Prints one JSON document.

    python scripts/benchmark_out_of_core.py --sizes 2048,4096,8192,16384 --tile 1024
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import resource, sys
from bmz_cosdd.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("PEAK_RSS_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _write_zarr(path: Path, size: int, chunk: int, seed: int) -> None:
    import zarr

    z = zarr.create_array(str(path), shape=(size, size), chunks=(chunk, chunk), dtype="float32")
    rng = np.random.default_rng(seed)
    for y in range(0, size, chunk):
        for x in range(0, size, chunk):
            h, w = min(chunk, size - y), min(chunk, size - x)
            z[y : y + h, x : x + w] = (100 + 10 * rng.standard_normal((h, w))).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2048,4096,8192,16384")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a temporary one).")
    args = parser.parse_args()

    from bmz_cosdd.data.io import write_tiff
    from bmz_cosdd.data.synthetic import make_dataset
    from bmz_cosdd.training.session import train

    work = args.work or Path(tempfile.mkdtemp(prefix="bmz-ooc-"))
    work.mkdir(parents=True, exist_ok=True)
    data = make_dataset("blobs", "poisson_gaussian", n=4, shape=(64, 64), seed=0)
    write_tiff(work / "train.tif", data.noisy, "SYX")
    run = work / "run"
    train({"method": "n2v", "model": {"depth": 2, "features": 8},
           "data": {"paths": [str(work / "train.tif")], "axes": "SYX", "crop_size": 32},
           "train": {"batch_size": 4, "max_steps": 4, "max_epochs": None, "steps_per_epoch": 2}},
          run, progress=False)

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        image = work / f"img{size}.zarr"
        _write_zarr(image, size, args.chunk, size)
        out = work / f"out{size}"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, "predict", str(run), str(image), "--axes", "YX",
                               "--tile", str(args.tile), "--out", str(out), "--quiet"],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
        peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KIB")]
        rows.append({
            "size": size, "megapixels": round(size * size / 1e6, 1),
            "image_mib_float32": round(size * size * 4 / 2**20),
            "peak_rss_mib": round(int(peak[0].split()[1]) / 1024) if peak else None,
            "seconds": round(seconds, 1), "exit_code": proc.returncode,
        })
        print(json.dumps(rows[-1]), file=sys.stderr)
        shutil.rmtree(image)
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"tile": args.tile, "chunk": args.chunk, "network": "n2v depth 2, 8 features",
                      "results": rows}, indent=2))
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
