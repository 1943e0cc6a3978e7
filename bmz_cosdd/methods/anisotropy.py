"""How a 3-D network treats z: which levels pool it and how far each level's kernels reach along it.

Microscopy stacks are usually anisotropic (a z step 2-5 times the pixel size) and thin (tens of
planes). A network that pools and convolves z like y and x then has a z receptive field, halo,
minimum size and size step far larger than the stack warrants. The automatic layout follows the
rule of nnU-Net (Isensee et al., Nature Methods 18, 2021): at each level, an axis gets a kernel
of 3 (context from its neighbours) and is pooled only while its spacing is within twice the
finest spacing at that level; in-plane pooling doubles the y/x spacing, so z joins in once the
in-plane resolution has come down to it. Two limits of the data come on top: pooling z must leave
at least two planes of a training crop, and the z receptive field must fit the stack (its
minimum package size, ``2 * halo + 1`` planes, at most the stack's depth), taken off the coarsest
levels first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from bmz_cosdd.artifacts.run_folder import package_grid

#: A level convolves along z (kernel 3) and may pool z while the z spacing is at most this many
#: times the in-plane spacing at that level (nnU-Net's anisotropy threshold).
ANISOTROPY_LIMIT = 2.0
#: Planes a training crop keeps at the coarsest z-pooled level.
MIN_CROP_PLANES = 2


@dataclass
class ZLayout:
    """The z treatment of a 3-D network, per level (finest first), and why it was chosen.

    Attributes
    ----------
    z_pool
        One per level: whether that level's down-sampling (and the matching up-sampling)
        includes z. Levels that do not down-sample at all hold False.
    z_kernel
        One per level: the z extent of the level's convolution kernels (3 or 1).
    reason
        One sentence for the run's notes: the voxel size and stack depth it came from.
    """

    z_pool: list[bool]
    z_kernel: list[int]
    reason: str


def choose_z_layout(
    downsamples: Sequence[bool],
    z_ratio: Optional[float],
    crop_depth: int,
    stack_depth: int,
    z_halo: Optional[Callable[[list[bool], list[int]], int]] = None,
) -> ZLayout:
    """The automatic z layout of a 3-D network.

    Parameters
    ----------
    downsamples
        One per level (finest first): whether the level down-samples y and x.
    z_ratio
        The z step divided by the pixel size in y/x, from the file's metadata; None when the
        file records none (then z counts as sampled like y and x).
    crop_depth
        Planes of the training crops.
    stack_depth
        Planes of the thinnest training stack: the z halo must let a package accept it.
    z_halo
        The network's exact z halo (planes each side) for a layout, for networks whose halo is
        their receptive field (the blind-spot U-Net): coarse levels lose their z context until
        the package's minimum z size fits the stack. None: the layout is not trimmed (a sampling
        model's halo is a setting, capped with :func:`fitted_z_halo` instead).

    Returns
    -------
    ZLayout
        Per-level pooling and kernels, and the reason.

    Examples
    --------
    >>> rf = lambda pool, kernel: sum(k // 2 * 2 ** sum(pool[:i]) for i, k in enumerate(kernel))
    >>> layout = choose_z_layout([True, True], 4.0, 16, 40, rf)  # z step 4 px: z joins at the second level
    >>> layout.z_kernel, layout.z_pool
    ([1, 3], [False, True])
    >>> choose_z_layout([True, True], 1.0, 16, 40, rf).z_pool
    [True, True]
    >>> choose_z_layout([True, True], 1.0, 8, 8, rf).z_kernel  # an 8-plane stack: the coarse level loses z
    [3, 1]
    """
    ratio = float(z_ratio) if z_ratio and z_ratio > 0 else 1.0
    z_pool, z_kernel = [], []
    xy, z, planes = 1.0, ratio, int(crop_depth)
    for down in downsamples:
        near = z <= ANISOTROPY_LIMIT * xy
        z_kernel.append(3 if near else 1)
        pool = bool(down) and near and planes // 2 >= MIN_CROP_PLANES
        z_pool.append(pool)
        if down:
            xy *= 2
        if pool:
            z *= 2
            planes //= 2
    trimmed = 0
    for level in reversed(range(len(z_kernel)) if z_halo is not None else []):
        # fit the stack: drop z context from the coarsest level down
        if package_grid(z_halo(z_pool, z_kernel), 2 ** sum(z_pool))[1] <= stack_depth:
            break
        if z_kernel[level] > 1 or z_pool[level]:
            z_kernel[level], z_pool[level] = 1, False
            trimmed += 1
    source = f"z step {ratio:.3g} x the pixel size" if z_ratio else "no voxel size recorded (z taken as y and x)"
    levels = len(z_kernel)
    reason = (f"z layout (auto): {source}, {stack_depth}-plane stack, {crop_depth}-plane crops: z pooled at"
              f" {sum(z_pool)} of {levels} levels, z kernels {','.join(map(str, z_kernel))} (finest first;"
              f" nnU-Net's rule: context and pooling along z only where planes are within"
              f" {ANISOTROPY_LIMIT:g}x the pixel spacing)")
    if z_halo is not None:
        reason += f"; z halo {z_halo(z_pool, z_kernel)} planes"
    if trimmed:
        reason += f" ({trimmed} coarse level(s) without z context, so a {stack_depth}-plane stack fits)"
    return ZLayout(z_pool, z_kernel, reason)


def auto_z_layout(data: Any, train_images: Sequence[Any], downsamples: Sequence[bool],
                  z_halo: Optional[Callable[[list[bool], list[int]], int]] = None) -> ZLayout:
    """:func:`choose_z_layout` for a run: voxel size from the first training file's metadata, stack depth
    from the thinnest training volume, crop depth from the data settings.

    Parameters
    ----------
    data
        The run's :class:`~bmz_cosdd.config.DataConfig` (``paths``, ``pattern``, ``crop_depth``, ``crop_size``).
    train_images
        The training volumes, each (C, Z, Y, X).
    downsamples, z_halo
        As for :func:`choose_z_layout`.
    """
    from bmz_cosdd.data.io import find_files
    from bmz_cosdd.data.physical_sizes import read_physical_sizes

    files = [f for item in data.paths for f in find_files(item, data.pattern)]
    ratio = z_ratio_of(read_physical_sizes(files[0])) if files else None
    stack = min(int(image.shape[-3]) for image in train_images)
    return choose_z_layout(downsamples, ratio, data.crop_depth or data.crop_size, stack, z_halo)


def resolve_vae_z(config: Any, data: Any, train_images: Sequence[Any], downsamples: Sequence[bool], n_pool: int,
                  build_vae: Callable[[Any], Any], name: str = "VAE") -> tuple[Any, list[str]]:
    """A sampling model's ``z_pool``, ``z_kernel`` (when None: :func:`auto_z_layout`) and ``z_halo``.

    The z halo (when None) is the model's ``halo`` capped by the VAE's z receptive field and by
    the thinnest training stack (:func:`fitted_z_halo`): a sampling model's halo is context, not
    an exact receptive field, and its package must take the stacks it was trained on.

    Parameters
    ----------
    config
        A method's settings with ``z_pool``, ``z_kernel``, ``z_halo`` and ``halo``.
    data, train_images, downsamples
        As for :func:`auto_z_layout`.
    n_pool
        Entries of ``z_pool`` the VAE takes (its levels, or its poolings).
    build_vae
        Builds the 3-D VAE of a resolved config (for its ``receptive_fields`` and ``size_steps``).
    name
        The network, for the notes.

    Returns
    -------
    tuple
        The config with the three settings resolved, and the lines for the run's notes.
    """
    from dataclasses import replace

    notes = []
    if config.z_pool is None or config.z_kernel is None:
        layout = auto_z_layout(data, train_images, downsamples)
        config = replace(config, z_pool=config.z_pool or layout.z_pool[:n_pool],
                         z_kernel=config.z_kernel or layout.z_kernel)
        notes.append(layout.reason.replace("z layout (auto)", f"{name} z layout (auto)"))
    if config.z_halo is None:
        vae = build_vae(config)
        stack = min(int(image.shape[-3]) for image in train_images)
        z_halo = fitted_z_halo(sampling_halo(config.halo, None, vae)[0], vae.size_steps[0], stack)
        config = replace(config, z_halo=z_halo)
        notes.append(f"z halo (auto): {z_halo} planes above and below each tile (the halo {config.halo}, the"
                     f" {name}'s z field {vae.receptive_fields[0]}, and a package must take the {stack}-plane stack)")
    return config, notes


def sampling_halo(halo: int, z_halo: Optional[int], vae: Any) -> tuple[int, ...]:
    """A sampling model's context per spatial axis: ``halo`` in y and x; for volumes, ``z_halo`` along z,
    or (when None: a model made outside a run) ``halo`` capped by the VAE's z receptive field."""
    if vae.spatial_dims != 3:
        return (int(halo),) * 2
    return (int(min(halo, vae.receptive_fields[0]) if z_halo is None else z_halo), int(halo), int(halo))


def fitted_z_halo(halo: int, z_step: int, stack_depth: int) -> int:
    """The largest z halo up to ``halo`` whose package minimum z size fits a stack of ``stack_depth`` planes.

    Examples
    --------
    >>> fitted_z_halo(32, 2, 16), fitted_z_halo(3, 1, 16)
    (6, 3)
    """
    for h in range(max(int(halo), 0), 0, -1):
        if package_grid(h, z_step)[1] <= stack_depth:
            return h
    return 0


def z_ratio_of(sizes: dict[str, float]) -> Optional[float]:
    """z step / y-x pixel size from physical sizes in micrometres (``{"X": .., "Y": .., "Z": ..}``), or None."""
    z, y, x = sizes.get("Z"), sizes.get("Y"), sizes.get("X")
    inplane = [s for s in (y, x) if s]
    if not z or not inplane:
        return None
    return float(z) / (sum(inplane) / len(inplane))
