"""COSDD as a method: losses, optimisers and sampling prediction."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmz_cosdd.data.noise_correlation import estimate_noise_correlation
from bmz_cosdd.errors import UserError
from bmz_cosdd.methods.anisotropy import auto_z_layout, resolve_vae_z
from bmz_cosdd.nn.ladder_vae import ladder_downsampling
from bmz_cosdd.nn.posterior import PosteriorSampler
from bmz_cosdd.nn.unet import unet_receptive_field
from bmz_cosdd.methods.base import Budget, CliOption, ExportedModel, ExportOptions, OptimiserSpec, PredictOptions
from bmz_cosdd.methods.cosdd.config import (
    DEFAULT_EPOCHS,
    LONG_FIELD_LAYERS,
    PRESETS,
    ar_field_for,
    context_dropout_for,
    cosdd_config,
    ladder_size_step,
)
from bmz_cosdd.methods.cosdd.model import COSDDModel
from bmz_cosdd.nn.ar_decoder import receptive_field
from bmz_cosdd.nn.fast_inference import channels_last
from bmz_cosdd.methods.vae_diagnostics import latent_diagnostics
from bmz_cosdd.methods.vae_export import export_sampling_model, sampler_for

_CORRELATED = (
    "noise that is both signal-dependent and correlated along image {word} (noise direction `{{direction}}`),"
    " the kind produced by EMCCD and sCMOS cameras, scanning confocal microscopes and STEM detectors."
)
NOISE_SENTENCES = {
    "x": _CORRELATED.format(word="rows"),
    "y": _CORRELATED.format(word="columns"),
    "z": "noise that is both signal-dependent and correlated along Z (noise direction `{direction}`), e.g. from"
    " a detector whose readout runs across the planes of a volume.",
    "none": "signal-dependent, pixel-independent noise (noise direction `{direction}`: its noise model sees no"
    " other pixel).",
}


def _adam(params: list[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with its fused kernel (one pass per parameter instead of a dozen element-wise ops: about a
    tenth of a step's optimiser time on the CPU, same update to float rounding) where this torch has it
    for the parameters' device (the CPU from torch 2.4), the plain one elsewhere."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


class COSDD:
    """Correlated and signal-dependent noise: ladder VAE + 1-D autoregressive noise decoder."""

    name = "cosdd"
    summary = "COSDD: removes row/column-correlated, signal-dependent noise (ladder VAE + 1-D AR noise decoder)"
    monitor = "elbo"
    estimators = ("mmse", "direct")
    # Adam at 1e-3, not the paper's Adamax at 2e-3: +1.1 dB on average over 3 seeds of a tiny run on real
    # tiles (scripts/benchmark_real.py; see the README's COSDD section). 60 epochs of 100 steps: the length
    # scripts/benchmark_real.py measures tiny at (about 10 CPU-minutes on one thread).
    train_defaults: dict[str, Any] = {"lr": 1e-3, "max_epochs": DEFAULT_EPOCHS}

    def config_from_dict(self, values: dict[str, Any], device: str = "cpu", budget: Budget | None = None):
        return cosdd_config(values, device, budget)

    def cli_options(self) -> list[CliOption]:
        return [
            CliOption("direction", str, "Axis along which the noise is correlated: x (rows), y (columns), z "
                      "(3-D only), none (pixel-independent) or auto (measured from the data, as `bmz-cosdd "
                      "inspect` does; default).", "COSDD"),
            CliOption("preset", str, "Architecture preset: auto (default: on a CPU the preset with the best PSNR"
                      " in the benchmark's curves at the run's time or step limit, 6000 steps unless given; small on"
                      f" CUDA, where none were measured; the run's notes say why), {', '.join(PRESETS)}.",
                      "COSDD"),
            CliOption("n_levels", int, "Hierarchy levels of the ladder VAE (overrides the preset).", "COSDD"),
            CliOption("features", int, "Feature width of the ladder VAE (overrides the preset).", "COSDD"),
            CliOption("ar_layers", int, "Layers of the autoregressive noise decoder (its receptive field; default:"
                      " sized from the measured noise correlation length).", "COSDD"),
            CliOption("context_dropout", float, "Fraction of training crops whose noise decoder sees no earlier "
                      "pixel, so the latent must carry the signal (0: off; default: from the measured noise "
                      "correlation).", "COSDD"),
            CliOption("n_gaussians", int, "Mixture components of the noise model per pixel.", "COSDD"),
            CliOption("direct_denoiser", bool, "Also train the deterministic direct denoiser.", "COSDD"),
            CliOption("direct_loss", str, "Direct denoiser loss: mse (mean) or l1 (median).", "COSDD"),
        ]

    def resolve_config(self, config, data, train_images, stats) -> tuple[Any, list[str]]:
        config, notes = self._resolve_noise_decoder(config, data, train_images)
        if data.spatial_dims == 3:
            config, more = self._resolve_z_layout(config, data, train_images)
            notes += more
        return config, notes

    def _resolve_z_layout(self, config, data, train_images) -> tuple[Any, list[str]]:
        """The volumes' z treatment of the ladder VAE and the direct denoiser, and the z halo (see COSDDConfig)."""
        downsamples = ladder_downsampling(config.n_levels)
        config, notes = resolve_vae_z(config, data, train_images, downsamples, config.n_levels,
                                      lambda cfg: COSDDModel(cfg, 1, spatial_dims=3).vae, "ladder VAE")
        if config.direct_denoiser and (config.direct_z_pool is None or config.direct_z_kernel is None):
            depth = config.direct_depth
            layout = auto_z_layout(data, train_images, [True] * depth + [False],
                                   lambda pool, kernel: unet_receptive_field(depth, pool=pool[:depth], kernels=kernel))
            config = replace(config, direct_z_pool=config.direct_z_pool or layout.z_pool[:depth],
                             direct_z_kernel=config.direct_z_kernel or layout.z_kernel)
            notes.append(layout.reason.replace("z layout (auto)", "direct denoiser z layout (auto)"))
        return config, notes

    def _resolve_noise_decoder(self, config, data, train_images) -> tuple[Any, list[str]]:
        """The noise direction, the noise decoder's field and the context dropout, from the data when auto."""
        if config.direction == "z" and data.spatial_dims != 3:
            raise UserError("--direction z needs volumes: train with --spatial-dims 3 (and axes with Z)")
        notes = [f"preset (auto): {config.preset_reason or config.preset}"] if config.preset_auto else []
        noise = None
        needs_noise = config.ar_layers is None or config.context_dropout is None
        if config.direction == "auto" or (needs_noise and config.direction in ("x", "y", "z")):
            noise = estimate_noise_correlation(list(train_images))
        if config.direction == "auto":
            config = replace(config, direction=noise.direction)
            notes.append(f"noise direction (auto): {noise.direction}. {noise.describe()}")
        measured = noise is not None and config.direction in noise.axes
        if config.direction == "none" or not measured:
            # Blind decoder (none), or along z in stacks too thin to measure: the paper's settings.
            layers = 1 if config.direction == "none" else LONG_FIELD_LAYERS
            config = replace(config, ar_layers=layers if config.ar_layers is None else config.ar_layers,
                             context_dropout=(0.0 if config.direction == "none" else 0.5)
                             if config.context_dropout is None else config.context_dropout)
            if config.direction == "z" and needs_noise:
                notes.append(f"noise decoder (auto): field {receptive_field(config.ar_layers, config.ar_kernel)} px"
                             " along z, the paper's, and context dropout 0.5 (the correlation along z is measured"
                             " only on stacks of at least 4 planes)")
            return config, notes
        length, score = noise.length(config.direction), noise.score(config.direction)
        lags = noise.lags(config.direction)
        if config.ar_layers is None:
            layers = ar_field_for(length, lags, config.ar_kernel)
            config = replace(config, ar_layers=layers)
            notes.append(
                f"noise decoder field (auto): {receptive_field(layers, config.ar_kernel)} px along"
                f" {config.direction} ({layers} layer{'s' if layers > 1 else ''}) for a correlation length of"
                f" {length} px" + (" or more" if length >= lags else ""))
        if config.context_dropout is None:
            config = replace(config, context_dropout=context_dropout_for(score))
            why = (" (strongly correlated noise: the decoder's context explains it; hiding the context would make the"
                   " latent absorb it)" if config.context_dropout == 0 else "")
            notes.append(f"context dropout (auto): {config.context_dropout:g} for a noise correlation of {score:.2f}"
                         f" along {config.direction}{why}")
        return config, notes

    def advise(self, noise, crop_size: int) -> str:
        if noise.pixel_independent:
            return "--direction none (pixel-independent noise)"
        text = f"--direction {noise.direction}"
        if noise.cross_correlated:
            text += f"; the correlation along {noise.cross_correlated} is not modelled and may remain"
        return text

    def check_validation(self, model: nn.Module, losses: dict[str, float], step: int) -> None:
        return None

    def build(self, config, n_channels: int, stats=None, spatial_dims: int = 2) -> COSDDModel:
        return COSDDModel(config, n_channels, spatial_dims)

    def yx_size_step(self, config) -> int:
        return max(ladder_size_step(config.n_levels), 2 ** config.direct_depth if config.direct_denoiser else 1)

    def size_step(self, model: nn.Module) -> tuple[int, ...]:
        steps = [tuple(model.vae.size_steps)]
        if model.direct_denoiser is not None:
            steps.append(tuple(model.direct_denoiser.size_steps))
        return tuple(max(axis) for axis in zip(*steps))

    def halo(self, model: nn.Module) -> tuple[int, ...]:
        # A setting for the VAE (z: capped to fit the stack); the deterministic direct denoiser's receptive
        # field makes its tiling exact.
        halos = [model.halos]
        if model.direct_denoiser is not None:
            halos.append(tuple(int(r) for r in model.direct_denoiser.receptive_fields))
        return tuple(max(axis) for axis in zip(*halos))

    def training_losses(self, model: nn.Module, batch: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        # The reparameterisation draws use torch's global stream, which the trainer seeds and checkpoints.
        n_pixels = batch[0].numel()
        if batch.dim() == 4:
            # Channels-last memory: oneDNN's convolutions, forward and backward, run faster on it on the
            # CPU (every activation follows the input's layout); the same values, rounding aside.
            batch = channels_last(batch)
        bu = model.vae.bottom_up(batch)
        features, kl_levels = model.vae.top_down(bu)
        keep = None
        if model.context_dropout > 0:  # hide the earlier pixels of some crops: only the latent can explain them
            keep = (torch.rand(batch.shape[0], generator=generator) >= model.context_dropout).to(batch.device)
        nll = model.ar_decoder.nll(batch, features, keep).float().mean()
        kl = torch.stack(kl_levels, 0).float().sum(0).mean() / n_pixels
        elbo = nll + kl
        signal = model.signal_decoder(features.detach())
        signal_mse = F.mse_loss(signal.float(), batch.float())
        losses = {"elbo": elbo, "nll": nll, "kl": kl, "signal_mse": signal_mse}
        total = elbo + signal_mse
        if model.direct_denoiser is not None:
            direct = model.direct_denoiser(batch).float()
            target = signal.detach().float()
            loss_fn = F.l1_loss if model.direct_loss == "l1" else F.mse_loss
            losses["direct"] = loss_fn(direct, target)
            total = total + losses["direct"]
        losses["loss"] = total
        return losses

    def diagnostics(self, model: nn.Module, batch: Tensor) -> dict[str, Any]:
        """What the latent carries (:func:`~bmz_cosdd.methods.vae_diagnostics.latent_diagnostics`)."""
        return latent_diagnostics(model, model.vae, model.signal_decoder, batch, None)

    def optimisers(self, model: nn.Module, lr: float, factor: float, patience: int) -> list[OptimiserSpec]:
        groups = [
            ("vae", list(model.vae.parameters()) + list(model.ar_decoder.parameters()), "elbo"),
            ("signal_decoder", list(model.signal_decoder.parameters()), "signal_mse"),
        ]
        if model.direct_denoiser is not None:
            groups.append(("direct_denoiser", list(model.direct_denoiser.parameters()), "direct"))
        specs = []
        for name, params, monitor in groups:
            opt = _adam(params, lr)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=factor, patience=patience)
            specs.append(OptimiserSpec(name, opt, sched, monitor))
        return specs

    def predict(self, model: nn.Module, x: Tensor, options: PredictOptions) -> dict[str, Tensor]:
        if options.estimator == "direct":
            if model.direct_denoiser is None:
                raise UserError("this COSDD run has no direct denoiser (train with --direct-denoiser)")
            return {"direct": model.direct_denoiser(x).float()}
        # The bottom-up pass is deterministic: the sampler runs it once, then draws
        # every posterior sample through the top-down path and the signal decoder only.
        mmse, std, samples = self.sampler(model, options).reduce(x)
        out = {"mmse": mmse, "std": std}
        if options.keep_samples:
            out["samples"] = samples
        return out

    def export(self, model: nn.Module, config, options: ExportOptions) -> ExportedModel:
        import bmz_cosdd.methods.cosdd.architecture as architecture
        import bmz_cosdd.nn.blocks as blocks
        import bmz_cosdd.nn.fast_inference as fast_inference
        import bmz_cosdd.nn.unet as unet

        estimator = options.estimator or self.estimators[0]
        if estimator not in self.estimators:
            raise UserError(f"unknown estimator {estimator!r} (choose {', '.join(self.estimators)})")
        sources = [fast_inference, blocks, unet, architecture]
        fields = {
            "direction": config.direction,
            "noise_sentence": NOISE_SENTENCES[config.direction].format(direction=config.direction),
            "preset": config.preset,
            "architecture": (
                f"{config.n_levels} levels, latent channels {list(config.latent_channels)}, {config.features} "
                "features; "
                + (f"autoregressive noise decoder with a receptive field of {model.ar_decoder.receptive_field} px "
                   f"along {config.direction}" if config.direction != "none"
                   else "pixel noise decoder (no other pixel)")
                + f", {config.n_gaussians} Gaussians"
            ),
        }
        cite = [("B. Salmon and A. Krull, Unsupervised Denoising for Signal-Dependent and Row-Correlated "
                 "Imaging Noise, WACV 2025", "10.48550/arXiv.2310.07887")]
        dims = int(model.spatial_dims)
        tags = ["denoising", "cosdd", "unsupervised", "vae", f"{dims}d", "pytorch", "correlated-noise"]
        if estimator == "direct":
            if model.direct_denoiser is None:
                raise UserError("this COSDD run has no direct denoiser (train with --direct-denoiser)")
            if options.outputs not in (None, ("mmse",), ("denoised",)):
                raise UserError("the direct estimator has one output; drop --outputs")
            kwargs = {"n_channels": model.n_channels, "depth": model.direct_denoiser.depth,
                      "features": model.direct_denoiser.features, "spatial_dims": dims}
            if dims == 3:
                kwargs.update(z_pool=list(model.direct_denoiser.z_pool), z_kernel=list(model.direct_denoiser.z_kernel))
            module = architecture.build_direct_model(**kwargs)
            module.load_state_dict(model.direct_denoiser.state_dict())
            return ExportedModel(
                module=module.eval(), outputs=["denoised"], builder=architecture.build_direct_model,
                builder_kwargs=kwargs, source_modules=sources, size_step=tuple(module.size_steps),
                halo=tuple(module.receptive_fields), n_samples=None, cite=cite, tags=tags, card="cosdd.md", spatial_dims=dims,
                card_fields={**fields, "estimator": "direct denoiser (one deterministic pass, trained to "
                             f"regress the decoded signal with {config.direct_loss.upper()})"},
            )
        vae_kwargs = {
            "in_channels": model.n_channels, "n_levels": config.n_levels,
            "latent_channels": list(config.latent_channels), "features": config.features,
            "blocks_per_level": config.blocks_per_level, "spatial_dims": dims,
        }
        if dims == 3:
            vae_kwargs.update(z_pool=list(model.vae.z_pool), z_kernel=list(model.vae.z_kernel))
        decoder_kwargs = {"features": config.features, "out_channels": model.n_channels,
                          "layers": config.signal_layers, "hidden": config.signal_hidden, "spatial_dims": dims}
        return export_sampling_model(
            model.vae, model.signal_decoder, "ladder", vae_kwargs, decoder_kwargs, options, halo=self.halo(model),
            cite=cite, tags=tags, card="cosdd.md",
            card_fields={**fields, "estimator": f"MMSE: mean of {options.samples} posterior samples "
                         f"(seed {options.seed}, drawn inside the model)"},
        )

    def sampler(self, model: nn.Module, options: PredictOptions) -> PosteriorSampler:
        """The sampling module shared by prediction and export."""
        return sampler_for(model.vae, model.signal_decoder, options)
