"""The Noise2Void family as methods: one class, four registered variants.

N2V, N2V2, StructN2V and PSF-N2V differ only in their settings (U-Net options,
replacement rule, blind mask, PSF), so each is an instance of
:class:`BlindSpotMethod` with its own defaults, options, citation and model card.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from bmz_cosdd.data.axes import per_axis_text
from bmz_cosdd.errors import UserError
from bmz_cosdd.methods.anisotropy import auto_z_layout
from bmz_cosdd.methods.base import CliOption, ExportedModel, ExportOptions, OptimiserSpec, PredictOptions
from bmz_cosdd.methods.n2v.architecture import BlindSpotNet, build_blind_spot_model
from bmz_cosdd.methods.n2v.config import N2VConfig, n2v_config
from bmz_cosdd.methods.n2v.masker import BlindSpotMasker
from bmz_cosdd.methods.n2v.psf import gaussian_psf, read_psf
from bmz_cosdd.methods.n2v.struct_mask import estimate_struct_mask, format_struct_mask, mask_for, parse_struct_mask
from bmz_cosdd.nn.unet import unet_receptive_field


class BlindSpotModel(nn.Module):
    """The trained network plus what training needs besides it (masker, positivity floor)."""

    def __init__(
        self, config: N2VConfig, n_channels: int, psf: np.ndarray | None, floor: Sequence[float], spatial_dims: int = 2
    ) -> None:
        super().__init__()
        self.n_channels = n_channels
        self.spatial_dims = spatial_dims
        self.net = BlindSpotNet(
            n_channels, config.depth, config.features, config.kernel_size, config.batch_norm,
            config.blur_pool, config.top_skip, config.psf_size, spatial_dims=spatial_dims,
            z_pool=_z(config.z_pool, spatial_dims), z_kernel=_z(config.z_kernel, spatial_dims),
        )
        if psf is not None:
            self.net.psf.set_kernel(psf)
        # Normalised value of the background intensity, per channel: the deconvolved
        # output should not fall below it (PSF-N2V's positivity constraint).
        self.register_buffer("positivity_floor", torch.tensor(list(floor), dtype=torch.float32))
        self.positivity = config.positivity
        self.masker = BlindSpotMasker(
            fraction=config.masked_fraction, window=config.window, replacement=config.replacement,
            blind_mask=_blind_mask(config, crop_size=None),
        )


def _blind_mask(config: N2VConfig, crop_size: int | None) -> np.ndarray | None:
    if config.struct_mask is None:
        return None
    return parse_struct_mask(config.struct_mask, crop_size if crop_size is not None else 1 << 30)


def _psf_kernel(config: N2VConfig) -> np.ndarray | None:
    """The normalised, centred, square PSF of ``config`` (None without a PSF)."""
    if config.psf_file is not None:
        kernel = read_psf(config.psf_file)
    elif config.psf_sigma is not None:
        kernel = gaussian_psf(config.psf_sigma)
    else:
        return None
    side = max(kernel.shape)
    dy, dx = (side - kernel.shape[0]) // 2, (side - kernel.shape[1]) // 2
    return np.pad(kernel, ((dy, side - kernel.shape[0] - dy), (dx, side - kernel.shape[1] - dx)))



_OPTIONS: dict[str, tuple[Any, str]] = {
    "depth": (int, "U-Net poolings."),
    "features": (int, "U-Net channels of the first level (doubled per level)."),
    "kernel_size": (int, "U-Net convolution size (odd)."),
    "batch_norm": (bool, "U-Net batch normalisation."),
    "blur_pool": (bool, "Max-blur-pool instead of max-pool (N2V2)."),
    "top_skip": (bool, "Keep the full-resolution skip connection (N2V2 drops it)."),
    "masked_fraction": (float, "Fraction of pixels masked per crop, in (0, 0.5]."),
    "window": (int, "Odd side of the window a masked pixel's replacement comes from."),
    "replacement": (str, "neighbour (N2V) or median (N2V2) replacement of masked pixels."),
    "struct_mask": (str, "Blind mask: auto, none, x:SPAN, y:SPAN (odd span) or a .npy/.tif/.txt 0/1 array."),
    "psf_sigma": (float, "Gaussian PSF sigma in pixels."),
    "psf_file": (str, "2-D PSF image (TIFF or .npy); overrides --psf-sigma."),
    "positivity": (float, "Weight of the positivity loss on the deconvolved output."),
    "background": (float, "Background (camera offset) in raw intensities, the deconvolution's zero."),
    "z_pool": (str, "Volumes: per U-Net level (finest first) whether pooling includes z, e.g. 0,1 (default: from"
                    " the voxel size and stack depth)."),
    "z_kernel": (str, "Volumes: z extent of each level's convolutions, bottleneck last, e.g. 1,3,3 (default: from"
                      " the voxel size and stack depth)."),
}
_COMMON_OPTIONS = ("depth", "features", "kernel_size", "batch_norm", "blur_pool", "top_skip",
                   "masked_fraction", "window", "replacement", "z_pool", "z_kernel")


def _z(values: Any, spatial_dims: int) -> Any:
    """A z setting for the network: a list for volumes, None for 2-D images (where it has no meaning)."""
    return list(values) if values is not None and spatial_dims == 3 else None


@dataclass
class BlindSpotMethod:
    """One member of the Noise2Void family, defined by its defaults (see the module docstring)."""

    name: str
    summary: str
    title: str
    defaults: dict[str, Any]
    train_defaults: dict[str, Any]
    cite: list[tuple[str, str]]
    extra_options: tuple[str, ...] = ()
    estimators: tuple[str, ...] = ("denoised",)
    tags: list[str] = field(default_factory=list)
    monitor: str = "loss"

    def config_from_dict(self, values: dict[str, Any], device: str = "cpu", budget: Any = None) -> N2VConfig:
        return n2v_config(values, self.defaults)

    def cli_options(self) -> list[CliOption]:
        panel = self.title
        return [CliOption(name, *_OPTIONS[name], panel) for name in _COMMON_OPTIONS + self.extra_options]

    def advise(self, noise, crop_size: int) -> str:
        if "struct_mask" in self.extra_options:
            choice = mask_for(noise, crop_size)
            return f"--struct-mask {choice.spec}" + (" (no mask needed)" if choice.spec == "none" else "")
        if noise.pixel_independent:
            return "suited (pixel-independent noise)"
        return f"not suited: its blind spot leaves the noise correlated along {noise.direction}"

    def diagnostics(self, model: nn.Module, batch: Tensor) -> dict[str, Any]:
        return {}  # deterministic: no latent to examine

    def check_validation(self, model: nn.Module, losses: dict[str, float], step: int) -> None:
        return None

    def resolve_config(self, config: N2VConfig, data, train_images, stats) -> tuple[N2VConfig, list[str]]:
        notes = []
        if isinstance(config.struct_mask, str) and config.struct_mask.strip().lower() == "auto":
            choice = estimate_struct_mask(list(train_images), data.crop_size)
            config = replace(config, struct_mask=None if choice.spec == "none" else choice.spec)
            notes.append(f"struct mask (auto): {choice.spec}. {choice.reason}")
        _blind_mask(config, data.crop_size)  # span larger than the crop: one clear line now
        if data.spatial_dims == 3 and (config.z_pool is None or config.z_kernel is None):
            layout = auto_z_layout(data, train_images, [True] * config.depth + [False],
                                   lambda pool, kernel: unet_receptive_field(
                                       config.depth, config.kernel_size, config.blur_pool, config.top_skip,
                                       pool=pool[:config.depth], kernels=kernel))
            config = replace(config, z_pool=config.z_pool or layout.z_pool[:config.depth],
                             z_kernel=config.z_kernel or layout.z_kernel)
            notes.append(layout.reason)
        kernel = _psf_kernel(config)
        config = replace(config, psf_size=0 if kernel is None else int(kernel.shape[0]))
        if kernel is not None and kernel.shape[0] > data.crop_size:
            notes.append(
                f"the PSF ({kernel.shape[0]} px) is larger than the {data.crop_size} px crops; its tails are"
                " convolved with replicated borders"
            )
        return config, notes

    def build(self, config: N2VConfig, n_channels: int, stats=None, spatial_dims: int = 2) -> BlindSpotModel:
        # A new run (stats given) installs its PSF; a loaded model takes it from the state dict.
        psf = _psf_kernel(config) if stats is not None and config.psf_size > 0 else None
        if psf is not None and psf.shape[0] != config.psf_size:
            raise UserError(f"the PSF is now {psf.shape[0]} px but the run was set up with {config.psf_size} px")
        if stats is not None:
            floor = [(config.background - m) / s for m, s in zip(stats.mean, stats.std)]
        else:
            floor = [0.0] * n_channels
        return BlindSpotModel(config, n_channels, psf, floor, spatial_dims)

    def yx_size_step(self, config: N2VConfig) -> int:
        return 2 ** config.depth

    def size_step(self, model: nn.Module) -> tuple[int, ...]:
        return tuple(int(s) for s in model.net.size_steps)

    def halo(self, model: nn.Module) -> tuple[int, ...]:
        return tuple(int(h) for h in model.net.halos)

    def training_losses(self, model: nn.Module, batch: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        masked = model.masker(batch, generator)
        z, denoised = model.net.both(masked.inputs)
        mask = masked.loss_mask
        error = (denoised.float() - batch.float())[mask]
        mse = (error**2).mean() if error.numel() else denoised.sum() * 0.0
        losses = {"masked_mse": mse}
        total = mse
        if model.net.has_psf and model.positivity > 0:
            floor = model.positivity_floor.view([1, -1] + [1] * (z.ndim - 2))
            losses["positivity"] = torch.relu(floor - z.float()).mean()
            total = total + model.positivity * losses["positivity"]
        losses["loss"] = total
        return losses

    def optimisers(self, model: nn.Module, lr: float, factor: float, patience: int) -> list[OptimiserSpec]:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=factor, patience=patience)
        return [OptimiserSpec("unet", opt, sched, "loss")]

    def predict(self, model: nn.Module, x: Tensor, options: PredictOptions) -> dict[str, Tensor]:
        z, denoised = model.net.both(x)
        out = {"denoised": denoised.float()}
        if options.estimator == "deconvolved":
            out["deconvolved"] = z.float()
        return out

    def export(self, model: nn.Module, config: N2VConfig, options: ExportOptions) -> ExportedModel:
        import bmz_cosdd.methods.n2v.architecture as architecture
        import bmz_cosdd.methods.n2v.psf as psf
        import bmz_cosdd.nn.blocks as blocks
        import bmz_cosdd.nn.fast_inference as fast_inference
        import bmz_cosdd.nn.unet as unet

        estimator = options.estimator or self.estimators[0]
        if estimator not in self.estimators:
            raise UserError(f"{self.name} has no estimator {estimator!r} (choose {', '.join(self.estimators)})")
        if options.outputs not in (None, (estimator,)):
            raise UserError(f"{self.name} packages have one output ({estimator}); drop --outputs")
        kwargs = {
            "n_channels": model.n_channels, "depth": config.depth, "features": config.features,
            "kernel_size": config.kernel_size, "batch_norm": config.batch_norm, "blur_pool": config.blur_pool,
            "top_skip": config.top_skip, "psf_size": config.psf_size, "deconvolved": estimator == "deconvolved",
            "spatial_dims": int(model.spatial_dims),
        }
        if int(model.spatial_dims) == 3:
            kwargs.update(z_pool=list(model.net.unet.z_pool), z_kernel=list(model.net.unet.z_kernel))
        module = build_blind_spot_model(**kwargs)
        module.load_state_dict(model.net.state_dict())
        blind = _blind_mask(config, None)
        fields = {
            "method_title": self.title,
            "architecture": (
                f"U-Net, depth {config.depth}, {config.features} first-level features, {config.kernel_size}x"
                f"{config.kernel_size} convolutions, batch norm {'on' if config.batch_norm else 'off'}, "
                f"{'max-blur-pool' if config.blur_pool else 'max-pool'}, "
                f"{'with' if config.top_skip else 'without'} the full-resolution skip; receptive field "
                f"{per_axis_text(model.net.unet.receptive_fields)} px each side"
                + (f"; z pooled at levels {list(model.net.unet.z_pool)}, z kernels {list(model.net.unet.z_kernel)}"
                   if int(model.spatial_dims) == 3 else "")
            ),
            "masking": (
                f"{config.masked_fraction:.2%} of the pixels per crop (stratified), replaced by "
                + ("a uniformly chosen neighbour" if config.replacement == "neighbour" else "the median")
                + f" of their {config.window}x{config.window} window"
                + (f"; blind mask {format_struct_mask(blind)}" if blind is not None else "")
            ),
            "psf_text": self._psf_text(config),
            "estimator": "deconvolved output (before the PSF)" if estimator == "deconvolved" else "denoised image",
        }
        return ExportedModel(
            module=module.eval(), outputs=[estimator], builder=build_blind_spot_model, builder_kwargs=kwargs,
            source_modules=[fast_inference, blocks, unet, psf, architecture], size_step=tuple(module.size_steps),
            halo=tuple(module.halos),
            n_samples=None, cite=self.cite,
            tags=["denoising", f"{model.spatial_dims}d", "pytorch", "self-supervised", *self.tags],
            card=[f"{self.name}.md", "blind_spot.md"], card_fields=fields, spatial_dims=int(model.spatial_dims),
        )

    @staticmethod
    def _psf_text(config: N2VConfig) -> str:
        if config.psf_size == 0:
            return "none"
        if config.psf_file:
            source = f"read from {Path(config.psf_file).name}"
        else:
            source = f"Gaussian, sigma {config.psf_sigma} px"
        return (f"{source}, {config.psf_size}x{config.psf_size} px, sum 1; positivity weight {config.positivity}"
                f" above background {config.background}")
