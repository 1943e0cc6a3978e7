"""The demo, the README's main job, end to end with a tiny budget."""

from bmz_cosdd.demo import run_demo


def test_demo_inspects_trains_and_denoises(tmp_path):
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", budget=3, samples=3, progress=False, say=lines.append)
    assert result.direction == "x"  # measured from the data (row-correlated stripes), as inspect does
    assert result.steps > 0  # 3 s of training: plumbing only; the README gives the 180 s figures
    assert 15 < result.psnr_noisy < 30 and 0 < result.ssim_noisy < 1 and 0 < result.ssim_mmse < 1
    for path in (result.figure, result.denoised, result.noise_report, result.noise_report.with_suffix(".json")):
        assert path.is_file(), path
    assert any(line.startswith("inspect: noise correlated along x") for line in lines)
