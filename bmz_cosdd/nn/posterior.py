"""One sampling wrapper for every VAE method: encode once, draw N latents, decode, reduce.

The same module serves in-framework prediction (eager) and the exported model
(``torch.jit.script``), so both give the same numbers for the same seed. Its
randomness is reproducible everywhere: ``torch.manual_seed(seed)`` runs inside
``forward`` and every standard-normal draw is made on the CPU and then moved to
the input's device (CUDA has its own random stream). The draws are shared by all
images of a batch, so an image's result does not depend on what it is batched
with. No ``torch.Generator`` appears in the graph: TorchScript files holding one
do not load in torch 2.0 (deepImageJ's libtorch).

Images (B, C, Y, X) and volumes (B, C, Z, Y, X) go through the same code: the
sampler follows the spatial dimensions of its input and of the VAE's latents.
"""

from typing import Final, List, Optional, Tuple

import torch
from torch import Tensor, nn

#: On the CPU the inference form decodes at most this many output pixels (samples x
#: images x pixels) at once, fewer samples than ``sample_batch`` where needed: beyond
#: about this size the activations spill out of the core's cache and a sample costs
#: more (reference preset, one thread: 64x64 images 3x cheaper per sample in batches
#: of 16 than alone, 512x512 images 15% cheaper alone than in batches of 4).
CPU_BATCH_PIXELS = 65536


class PosteriorSampler(nn.Module):
    """MMSE, standard deviation and samples of ``decoder(top_down(bottom_up(x), eps))``.

    Works on inputs (B, C, [Z,] Y, X) of the VAE's spatial dimensionality.

    Parameters
    ----------
    vae
        A ladder or DivNoising VAE (``bottom_up``, ``top_down``, ``latent_shapes``).
    decoder
        Maps the VAE's output features to the image (e.g. COSDD's signal decoder).
    n_samples
        Posterior samples per image.
    sample_batch
        Samples decoded at once (on the CPU, in the inference form, at most
        :data:`CPU_BATCH_PIXELS` output pixels at once). The results do not depend on it.
    seed
        Seed of the latent draws.
    use_mean
        Per level (index 0 = finest): take the posterior mean instead of a sample.
    keep_samples
        Also return the samples (otherwise an empty tensor stands in their place).
    fast
        In evaluation mode, decode with the networks' inference form where they have
        one (``vae.prepare_sampling`` / ``vae.sample_features``, ``decoder.infer``; see
        :mod:`bmz_cosdd.nn.fast_inference`): equal to the training form up to float
        rounding, several times cheaper on the CPU. False always runs ``top_down`` and
        ``decoder`` as trained (for comparisons).

    Notes
    -----
    :meth:`reduce` builds no autograd graph (it runs under ``torch.no_grad``).
    """

    n_samples: int
    sample_batch: int
    seed: int
    keep_samples: bool
    use_mean: List[bool]
    cpu_batch_pixels: int
    # Final: TorchScript compiles only the paths that the networks offer.
    fast_vae: Final[bool]
    fast_decoder: Final[bool]

    def __init__(
        self,
        vae: nn.Module,
        decoder: nn.Module,
        n_samples: int = 100,
        sample_batch: int = 10,
        seed: int = 0,
        use_mean: Optional[List[bool]] = None,
        keep_samples: bool = False,
        fast: bool = True,
    ) -> None:
        super().__init__()
        if n_samples < 1 or sample_batch < 1:
            raise ValueError("n_samples and sample_batch must be at least 1")
        self.vae = vae
        self.decoder = decoder
        self.n_samples = n_samples
        self.sample_batch = min(sample_batch, n_samples)
        self.seed = seed
        self.keep_samples = keep_samples
        self.use_mean = list(use_mean) if use_mean is not None else [False] * len(vae.latent_channels)
        self.cpu_batch_pixels = CPU_BATCH_PIXELS
        self.fast_vae = bool(fast) and hasattr(vae, "sample_features") and hasattr(vae, "prepare_sampling")
        self.fast_decoder = bool(fast) and hasattr(decoder, "infer")

    def _draw(self, k: int, batch: int, spatial: List[int], device: torch.device) -> List[Tensor]:
        # Sample by sample, level by level: the stream of draws, and so the result,
        # does not depend on how many samples are decoded at once.
        shapes = self.vae.latent_shapes(spatial)
        per_level: List[List[Tensor]] = [[] for _ in shapes]
        for _ in range(k):
            for level, shape in enumerate(shapes):
                per_level[level].append(torch.randn([1] + shape, dtype=torch.float32))
        eps: List[Tensor] = []
        for level, shape in enumerate(shapes):
            noise = torch.cat(per_level[level], 0).to(device)
            noise = noise.unsqueeze(1).expand([k, batch] + shape)
            eps.append(noise.reshape([k * batch] + shape))
        return eps

    def reduce(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(mmse, std, samples) for a normalised (B, C, [Z,] Y, X) input; samples is (N, B, C, [Z,] Y, X) or empty."""
        with torch.no_grad():
            return self._reduce(x)

    def _features(self, bu: List[Tensor], prepared: List[Tensor], eps: List[Tensor], k: int) -> Tensor:
        """VAE features of k samples per image: (k * B, features, [Z,] Y, X), sample i of image b at row i * B + b."""
        if self.fast_vae:
            if not self.vae.training:
                return self.vae.sample_features(prepared, eps, self.use_mean)
        repeated = [level.repeat([k] + [1] * (level.dim() - 1)) for level in bu]
        features, _ = self.vae.top_down(repeated, eps, self.use_mean, False)
        return features

    def _decode(self, features: Tensor) -> Tensor:
        if self.fast_decoder:
            if not self.decoder.training:
                return self.decoder.infer(features)
        return self.decoder(features)

    def _reduce(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        torch.manual_seed(self.seed)
        batch = x.shape[0]
        bu = self.vae.bottom_up(x)
        prepared: List[Tensor] = []
        step = self.sample_batch
        if self.fast_vae:
            if not self.vae.training:
                prepared = self.vae.prepare_sampling(bu)
                if x.device.type == "cpu":
                    step = min(step, max(1, self.cpu_batch_pixels // max(1, x[0, 0].numel() * batch)))
        mean = torch.zeros(0)
        m2 = torch.zeros(0)
        kept: List[Tensor] = []
        count = 0
        while count < self.n_samples:
            k = min(step, self.n_samples - count)
            eps = self._draw(k, batch, x.shape[2:], x.device)
            chunk = self._decode(self._features(bu, prepared, eps, k)).float().contiguous()
            chunk = chunk.reshape([k, batch] + list(chunk.shape[1:]))
            if self.keep_samples:
                kept.append(chunk)
            # Chan's pairwise update in float64: exact enough for thousands of samples.
            chunk64 = chunk.double()
            chunk_mean = chunk64.mean(0)
            chunk_m2 = ((chunk64 - chunk_mean) ** 2).sum(0)
            if count == 0:
                mean = chunk_mean
                m2 = chunk_m2
            else:
                total = count + k
                delta = chunk_mean - mean
                mean = mean + delta * (k / total)
                m2 = m2 + chunk_m2 + delta * delta * (count * k / total)
            count += k
        if count > 1:
            std = torch.sqrt(m2 / (count - 1))
        else:
            std = torch.zeros_like(mean)
        samples = torch.cat(kept, 0) if self.keep_samples else torch.zeros(0, device=x.device)
        return mean.float(), std.float(), samples

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        return self.reduce(x)


class MMSEOutput(nn.Module):
    """Exported model with exactly one output: the MMSE (ilastik needs one input and one output)."""

    def __init__(self, sampler: PosteriorSampler) -> None:
        super().__init__()
        self.sampler = sampler

    def forward(self, x: Tensor) -> Tensor:
        mmse, _, _ = self.sampler.reduce(x)
        return mmse


class MMSEStdOutput(nn.Module):
    """Exported model with two outputs: MMSE and per-pixel posterior standard deviation."""

    def __init__(self, sampler: PosteriorSampler) -> None:
        super().__init__()
        self.sampler = sampler

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        mmse, std, _ = self.sampler.reduce(x)
        return mmse, std


class MMSEStdSamplesOutput(nn.Module):
    """Exported model with three outputs: MMSE, std and the samples as (B, N, C, [Z,] Y, X)."""

    def __init__(self, sampler: PosteriorSampler) -> None:
        super().__init__()
        self.sampler = sampler

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        mmse, std, samples = self.sampler.reduce(x)
        return mmse, std, samples.transpose(0, 1)


OUTPUT_WRAPPERS = {
    ("mmse",): MMSEOutput,
    ("mmse", "std"): MMSEStdOutput,
    ("mmse", "std", "samples"): MMSEStdSamplesOutput,
}
