"""VAEs trained through a pixel noise model: what DivNoising and HDN share.

Both decode a latent into a signal ``s`` and score the noisy image with a fitted noise
model ``log p(x | s)`` evaluated in the normalised units the networks train in (the
model was fitted in raw units; see :class:`~bmz_cosdd.noise_models.NormalisedNoiseModel`).
They differ in their VAE (one level vs. a ladder), KL schedule (annealing vs. free bits)
and estimators, which :class:`NoiseModelVAEMethod` takes as settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from bmz_cosdd.config import BoolList, NonNegative, NonNegativeFloat, OddList, Positive, settings
from bmz_cosdd.errors import TrainingDiverged, UserError
from bmz_cosdd.methods.anisotropy import resolve_vae_z, sampling_halo
from bmz_cosdd.methods.base import CliOption, ExportedModel, ExportOptions, OptimiserSpec, PredictOptions
from bmz_cosdd.methods.vae_diagnostics import latent_diagnostics
from bmz_cosdd.methods.vae_export import export_sampling_model, sampler_for
from bmz_cosdd.nn.decoders import SignalDecoder
from bmz_cosdd.noise_models import GMMNoiseModel, HistogramNoiseModel, NormalisedNoiseModel, load_noise_model

NOISE_MODEL_KINDS = {"gmm": GMMNoiseModel, "histogram": HistogramNoiseModel}


@settings
class NoiseModelSettings:
    """The noise-model part of a DivNoising or HDN configuration.

    Parameters
    ----------
    noise_model
        File written by ``bmz-cosdd noise-model fit`` (required for a new run).
    noise_model_kind, noise_model_args, noise_model_info
        Resolved when the run starts: the model's kind, the arguments that rebuild it
        and its provenance (calibration file or bootstrap model, pairs, fit). The
        fitted values live in the checkpoints, so a run no longer needs the file.
    kl_anneal_steps
        The KL weight rises linearly from 0 to 1 over this many training batches (0: off).
    free_bits
        Each latent level's KL counts as at least this many nats per image (0: off).
    collapse_kl
        After annealing, a validation KL below this (nats per pixel) stops training with
        a posterior-collapse message (0: never).
    signal_layers, signal_hidden
        The decoder from the VAE's features to the signal.
    halo
        Context in pixels added around each tile at prediction.
    z_pool, z_kernel, z_halo
        Volumes (``spatial_dims`` 3): per VAE level (finest first) whether its down-sampling
        includes z and the z extent of its convolutions (1 or 3), and the context in planes
        above and below each tile. None (the default) chooses them when the run starts from the
        voxel size and the stack depth (:func:`bmz_cosdd.methods.anisotropy.resolve_vae_z`).
        Unused for 2-D images.
    """

    noise_model: Optional[str] = None
    noise_model_kind: Optional[str] = None
    noise_model_args: Optional[dict[str, Any]] = None
    noise_model_info: Optional[dict[str, Any]] = None
    kl_anneal_steps: NonNegative = 0
    free_bits: NonNegativeFloat = 0.0
    collapse_kl: NonNegativeFloat = 1e-3
    signal_layers: Positive = 1
    signal_hidden: Positive = 64
    halo: NonNegative = 32
    z_pool: Optional[BoolList] = None
    z_kernel: Optional[OddList] = None
    z_halo: Optional[NonNegative] = None


class NoiseModelVAE(nn.Module):
    """A VAE, its signal decoder and the normalised noise model that scores its output."""

    def __init__(
        self,
        vae: nn.Module,
        decoder: nn.Module,
        noise_model: NormalisedNoiseModel,
        n_channels: int,
        use_mean: list[bool],
        settings: NoiseModelSettings,
    ) -> None:
        super().__init__()
        self.vae = vae
        self.decoder = decoder
        self.noise_model = noise_model
        self.n_channels = n_channels
        self.use_mean = list(use_mean)
        self.kl_anneal_steps = settings.kl_anneal_steps
        self.free_bits = settings.free_bits
        self.collapse_kl = settings.collapse_kl
        self.spatial_dims = int(getattr(vae, "spatial_dims", 2))
        self.halos = sampling_halo(settings.halo, settings.z_halo, vae)  # context per spatial axis
        # Training batches seen, for the KL annealing; in the state dict so --resume is exact.
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def kl_weight(self) -> float:
        if self.kl_anneal_steps <= 0:
            return 1.0
        return min(1.0, float(self.batches_seen + 1) / self.kl_anneal_steps)


def _noise_model(settings: Any, stats: Any, n_channels: int) -> NormalisedNoiseModel:
    """The run's noise model in normalised units: rebuilt from the resolved arguments; for a
    run being set up (``stats`` given) with the fitted values from the file."""
    kind, args = settings.noise_model_kind, settings.noise_model_args
    if kind not in NOISE_MODEL_KINDS or args is None:
        raise UserError("the noise model is not resolved in this configuration (start the run with --noise-model)")
    raw = NOISE_MODEL_KINDS[kind](**args)
    if stats is not None and settings.noise_model and Path(settings.noise_model).is_file():
        fitted = load_noise_model(settings.noise_model)
        if fitted.kind != kind or fitted.constructor_args() != args:
            raise UserError(f"{settings.noise_model} changed since this run was set up")
        raw = fitted
    mean = list(stats.mean) if stats is not None else [0.0] * n_channels
    std = list(stats.std) if stats is not None else [1.0] * n_channels
    return NormalisedNoiseModel(raw, mean, std)


def resolve_noise_model(settings: Any, train_images: list, stats: Any) -> tuple[Any, list[str]]:
    """Read the noise model file once, check it fits the data, record what rebuilds it."""
    if settings.noise_model_kind is not None and settings.noise_model_args is not None:
        return settings, []  # fine-tuning a package: its model comes with the weights
    if not settings.noise_model:
        raise UserError("this method needs a pixel noise model: pass --noise-model FILE "
                        "(fit one with: bmz-cosdd noise-model fit --calibration STACK or --bootstrap RUN DATA)")
    path = Path(settings.noise_model)
    model = load_noise_model(path)
    if model.n_channels != stats.n_channels:
        raise UserError(f"the noise model {path.name} has {model.n_channels} channel(s), the data {stats.n_channels}")
    notes = []
    for c in range(stats.n_channels):
        values = torch.cat([torch.as_tensor(im[c]).flatten() for im in train_images]).double()
        sample = values[:: max(1, len(values) // 200_000)]  # torch.quantile has a size limit
        lo, hi = torch.quantile(sample, torch.tensor([0.01, 0.99], dtype=torch.float64))
        lo, hi = float(lo) * stats.std[c] + stats.mean[c], float(hi) * stats.std[c] + stats.mean[c]
        nm_lo, nm_hi = float(model.min_signal[c]), float(model.max_signal[c])
        overlap = max(0.0, min(hi, nm_hi) - max(lo, nm_lo)) / max(hi - lo, 1e-12)
        if overlap < 0.25:
            raise UserError(
                f"the noise model {path.name} covers signals {nm_lo:.4g} to {nm_hi:.4g} (channel {c}) but the training"
                f" data's 1st-99th percentiles are {lo:.4g} to {hi:.4g}: different units or a different detector?"
            )
        if overlap < 0.9:
            notes.append(f"the noise model covers {overlap:.0%} of the data's intensity range in channel {c};"
                         " outside it, its parameters at the range's ends are used")
    info = {"file": path.name, **{k: v for k, v in model.info.items() if isinstance(v, (str, int, float, bool, list))}}
    resolved = replace(settings, noise_model_kind=model.kind, noise_model_args=model.constructor_args(),
                       noise_model_info=info)
    return resolved, notes


def provenance(settings: Any) -> str:
    """One line on where the noise model came from, for model cards."""
    info = settings.noise_model_info or {}
    source = info.get("source", "unknown source")
    if source == "calibration":
        origin = f"fitted on the calibration stack {info.get('calibration', '?')} ({info.get('frames', '?')} frames)"
    elif source == "bootstrap":
        origin = f"bootstrapped from the predictions of {info.get('model', '?')}"
    else:
        origin = f"from {source}"
    args = settings.noise_model_args or {}
    shape = (f"{args.get('n_gaussians')} Gaussians, polynomials of {args.get('n_coeffs')} coefficients"
             if settings.noise_model_kind == "gmm" else f"{args.get('bins')} x {args.get('bins')} bins")
    return f"{settings.noise_model_kind} noise model ({shape}) {origin}, file {info.get('file', '?')}"



@dataclass
class NoiseModelVAEMethod:
    """DivNoising or HDN: settings that make a VAE-with-noise-model method (see the module docstring)."""

    name: str
    title: str
    summary: str
    make_config: Callable[[dict[str, Any]], Any]
    make_vae: Callable[[Any, int, int], tuple[nn.Module, str, dict[str, Any]]]  # (config, channels, spatial dims)
    use_mean: Callable[[Any], list[bool]]
    options: list[tuple[str, Any, str]]
    cite: list[tuple[str, str]]
    card: str
    describe: Callable[[Any], dict[str, str]]
    estimators: tuple[str, ...] = ("mmse",)
    optimiser: type = torch.optim.Adam
    train_defaults: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    monitor: str = "elbo"
    # What this method offers against correlated noise, for ``advise`` (e.g. HDN_3-6).
    structured_noise_hint: str = ""
    # Volumes: which levels of the VAE down-sample (finest first), and how many z_pool entries it takes.
    z_levels: Callable[[Any], tuple[list[bool], int]] = lambda cfg: ([], 0)

    def config_from_dict(self, values: dict[str, Any], device: str = "cpu", budget: Any = None) -> Any:
        return self.make_config(values)

    def cli_options(self) -> list[CliOption]:
        return [CliOption(name, tp, help, self.title) for name, tp, help in self.options]

    def resolve_config(self, config: Any, data: Any, train_images: Any, stats: Any) -> tuple[Any, list[str]]:
        config, notes = resolve_noise_model(config, list(train_images), stats)
        if data.spatial_dims == 3:
            downsamples, n_pool = self.z_levels(config)
            config, more = resolve_vae_z(config, data, list(train_images), downsamples, n_pool,
                                         lambda cfg: self.make_vae(cfg, 1, 3)[0], "VAE")
            notes += more
        return config, notes

    def build(self, config: Any, n_channels: int, stats: Any = None, spatial_dims: int = 2) -> NoiseModelVAE:
        vae, _, _ = self.make_vae(config, n_channels, spatial_dims)
        decoder = SignalDecoder(vae.features, n_channels, layers=config.signal_layers, hidden=config.signal_hidden,
                                spatial_dims=spatial_dims)
        return NoiseModelVAE(vae, decoder, _noise_model(config, stats, n_channels), n_channels,
                             self.use_mean(config), config)

    def yx_size_step(self, config: Any) -> int:
        return 2 ** sum(self.z_levels(config)[0])

    def size_step(self, model: nn.Module) -> tuple[int, ...]:
        return tuple(int(s) for s in model.vae.size_steps)

    def halo(self, model: nn.Module) -> tuple[int, ...]:
        return model.halos

    def training_losses(self, model: nn.Module, batch: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        n_pixels = batch[0].numel()
        features, kl_levels = model.vae(batch)
        signal = model.decoder(features).float()
        nll = -model.noise_model.log_likelihood(batch.float(), signal).float().mean()
        per_level = [k.float().mean() for k in kl_levels]  # nats per image, batch mean
        kl = torch.stack(per_level).sum() / n_pixels
        counted = per_level
        if model.free_bits > 0:
            counted = [torch.clamp(k, min=model.free_bits) for k in per_level]
        kl_counted = torch.stack(counted).sum() / n_pixels
        weight = model.kl_weight() if model.training else 1.0
        if model.training:
            model.batches_seen += 1
        return {"loss": nll + weight * kl_counted, "elbo": nll + kl, "nll": nll, "kl": kl}

    def diagnostics(self, model: nn.Module, batch: Tensor) -> dict[str, Any]:
        """What the latent carries (:func:`~bmz_cosdd.methods.vae_diagnostics.latent_diagnostics`)."""
        return latent_diagnostics(model, model.vae, model.decoder, batch, model.use_mean)

    def optimisers(self, model: nn.Module, lr: float, factor: float, patience: int) -> list[OptimiserSpec]:
        params = list(model.vae.parameters()) + list(model.decoder.parameters())
        opt = self.optimiser(params, lr=lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=factor, patience=patience)
        return [OptimiserSpec("vae", opt, sched, "elbo")]

    def advise(self, noise: Any, crop_size: int) -> str:
        if noise.pixel_independent:
            return "suited: fit its pixel noise model with `bmz-cosdd noise-model fit`"
        text = f"not suited: a pixel noise model cannot describe noise correlated along {noise.direction}"
        return f"{text}; {self.structured_noise_hint}" if self.structured_noise_hint else text

    def check_validation(self, model: nn.Module, losses: dict[str, float], step: int) -> None:
        annealed = model.kl_anneal_steps <= 0 or int(model.batches_seen) >= model.kl_anneal_steps
        if model.collapse_kl > 0 and annealed and losses["kl"] < model.collapse_kl:
            raise TrainingDiverged(
                f"posterior collapse: the validation KL is {losses['kl']:.2g} nats/pixel at step {step}, so the"
                " latent carries no information about the image and the output would be the data's mean; train"
                " again with another --seed or a longer --kl-anneal-steps"
            )

    def predict(self, model: nn.Module, x: Tensor, options: PredictOptions) -> dict[str, Tensor]:
        want_map = options.estimator == "map"
        sampler = sampler_for(model.vae, model.decoder, options, model.use_mean,
                              keep_samples=options.keep_samples or want_map)
        mmse, std, samples = sampler.reduce(x)
        out = {"mmse": mmse, "std": std}
        if want_map:
            from bmz_cosdd.nn.mean_shift import map_estimate

            out["map"] = torch.stack([map_estimate(samples[:, b]) for b in range(x.shape[0])]).to(mmse)
        if options.keep_samples:
            out["samples"] = samples
        return out

    def export(self, model: nn.Module, config: Any, options: ExportOptions) -> ExportedModel:
        estimator = options.estimator or "mmse"
        if estimator != "mmse":
            raise UserError(f"{self.name} packages compute the MMSE in the graph; the {estimator} estimate is "
                            "made by bmz-cosdd predict only (use --estimator mmse)")
        dims = int(model.vae.spatial_dims)
        _, vae_name, vae_kwargs = self.make_vae(config, model.n_channels, dims)
        decoder_kwargs = {"features": model.vae.features, "out_channels": model.n_channels,
                          "layers": config.signal_layers, "hidden": config.signal_hidden, "spatial_dims": dims}
        fields = {**self.describe(config), "noise_model": provenance(config),
                  "estimator": f"MMSE: mean of {options.samples} posterior samples (seed {options.seed}, drawn "
                               "inside the model)"}
        return export_sampling_model(
            model.vae, model.decoder, vae_name, vae_kwargs, decoder_kwargs, options, halo=self.halo(model),
            use_mean=model.use_mean, cite=self.cite, card=self.card, card_fields=fields,
            tags=["denoising", "unsupervised", "vae", f"{dims}d", "pytorch", *self.tags],
        )
