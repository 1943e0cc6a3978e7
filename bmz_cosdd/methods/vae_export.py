"""Prediction and packaging of every VAE method (COSDD, HDN, DivNoising) through one sampler."""

from __future__ import annotations

from typing import Any

from torch import nn

from bmz_cosdd.errors import UserError
from bmz_cosdd.nn.posterior import OUTPUT_WRAPPERS, PosteriorSampler
from bmz_cosdd.methods.base import ExportedModel, ExportOptions, PredictOptions


def sampler_for(vae: nn.Module, decoder: nn.Module, options: PredictOptions, use_mean: list[bool] | None = None,
                keep_samples: bool | None = None) -> PosteriorSampler:
    """The sampling module shared by in-framework prediction and export."""
    return PosteriorSampler(
        vae, decoder, n_samples=options.samples, sample_batch=options.sample_batch, seed=options.seed,
        use_mean=use_mean, keep_samples=options.keep_samples if keep_samples is None else keep_samples,
    )


def export_sampling_model(
    vae: nn.Module,
    decoder: nn.Module,
    vae_name: str,
    vae_kwargs: dict[str, Any],
    decoder_kwargs: dict[str, Any],
    options: ExportOptions,
    halo: int | tuple[int, ...],
    use_mean: list[bool] | None = None,
    **describe: Any,
) -> ExportedModel:
    """Package ``decoder(vae(...))`` as a deterministic sampling model (in-graph seeded draws).

    ``vae_name`` and the kwargs rebuild the same networks with
    :func:`bmz_cosdd.nn.sampling_model.build_sampling_model`; ``describe`` holds
    the :class:`ExportedModel` fields a method adds (``cite``, ``tags``, ``card``,
    ``card_fields``).
    """
    import bmz_cosdd.nn.posterior as posterior
    import bmz_cosdd.nn.sampling_model as sampling_model
    import bmz_cosdd.nn.blocks as blocks
    import bmz_cosdd.nn.fast_inference as fast_inference
    import bmz_cosdd.nn.decoders as decoders
    import bmz_cosdd.nn.divnoising_vae as divnoising_vae
    import bmz_cosdd.nn.ladder_vae as ladder_vae

    outputs = list(options.outputs or ("mmse",))
    if tuple(outputs) not in OUTPUT_WRAPPERS:
        raise UserError(
            f"unsupported outputs {','.join(outputs)} (choose {' or '.join(','.join(o) for o in OUTPUT_WRAPPERS)})"
        )
    kwargs = {
        "vae": vae_name, "vae_kwargs": dict(vae_kwargs), "decoder_kwargs": dict(decoder_kwargs),
        "n_samples": options.samples, "sample_batch": options.sample_batch, "seed": options.seed,
        "outputs": outputs, "use_mean": list(use_mean) if use_mean is not None else None,
    }
    module = sampling_model.build_sampling_model(**kwargs)
    module.sampler.vae.load_state_dict(vae.state_dict())
    module.sampler.decoder.load_state_dict(decoder.state_dict())
    return ExportedModel(
        module=module.eval(), outputs=outputs, builder=sampling_model.build_sampling_model, builder_kwargs=kwargs,
        source_modules=[fast_inference, blocks, ladder_vae, divnoising_vae, decoders, posterior, sampling_model],
        size_step=tuple(int(s) for s in vae.size_steps), halo=halo, n_samples=options.samples,
        spatial_dims=int(vae.spatial_dims), **describe,
    )
