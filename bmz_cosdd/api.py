"""The Python API: the same verbs as the CLI.

Examples
--------
>>> from bmz_cosdd import api
>>> result = api.train({"method": "cosdd", "data": {"paths": ["noisy/"], "axes": "SYX"},
...                     "model": {"direction": "x"}, "train": {"max_time": 600}}, "runs/mine")  # doctest: +SKIP
>>> trained = api.load_run("runs/mine")                                                          # doctest: +SKIP
>>> out = api.predict_image(trained, image[None], api.PredictOptions(samples=100))              # doctest: +SKIP
>>> report = api.predict_with_sampling_view(trained, ["noisy.tif"], "YX", "out", target="clean.tif")  # doctest: +SKIP
>>> api.package("runs/mine", "mine.zip", api.ExportOptions(samples=100))                          # doctest: +SKIP
>>> report = api.inspect(["noisy/"], "SYX", "noise_report.png")                                 # doctest: +SKIP
>>> api.validate("mine.zip")                                                                     # doctest: +SKIP
>>> print(api.evaluate("denoised/", "clean/", axes="SYX", pattern="*_mmse.tif").format_table())  # doctest: +SKIP
"""

from bmz_cosdd.analysis.evaluation_report import EvaluationResult, evaluate
from bmz_cosdd.analysis.noise_inspection import NoiseReport
from bmz_cosdd.analysis.noise_inspection import inspect_files as inspect
from bmz_cosdd.analysis.sampling_view import SamplingReport, mean_of_k_psnr, predict_with_sampling_view
from bmz_cosdd.demo import run_demo as demo
from bmz_cosdd.export.package import PackageMeta
from bmz_cosdd.export.package import package_run as package
from bmz_cosdd.inference.predictor import TrainedModel, load_run, predict_files, predict_image
from bmz_cosdd.methods.base import ExportOptions, PredictOptions
from bmz_cosdd.noise_models import load_noise_model
from bmz_cosdd.noise_models.workflow import fit_noise_model
from bmz_cosdd.training.session import build_config, resume, train
from bmz_cosdd.zoo.validate import validate_package as validate

__all__ = [
    "EvaluationResult",
    "NoiseReport",
    "ExportOptions",
    "PackageMeta",
    "PredictOptions",
    "SamplingReport",
    "TrainedModel",
    "build_config",
    "demo",
    "evaluate",
    "fit_noise_model",
    "inspect",
    "load_noise_model",
    "load_run",
    "mean_of_k_psnr",
    "package",
    "predict_files",
    "predict_image",
    "predict_with_sampling_view",
    "resume",
    "train",
    "validate",
]
