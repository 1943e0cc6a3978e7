"""Small convolutional building blocks shared by the VAEs and the U-Net, and the
factories that pick a layer's 2-D or 3-D class.

All modules are TorchScript-compatible (``torch.jit.script``) and take tensors
shaped (B, C, Y, X), or (B, C, Z, Y, X) with ``spatial_dims=3``.

Anisotropic volumes
-------------------
Microscopy stacks are often thin (tens of planes) with a Z step several times the
pixel size, so the 3-D networks can treat Z differently per resolution level:

- ``z_pool[l]``: whether the pooling of level ``l`` (and the matching upsampling)
  halves Z too; without it only Y and X are halved (:class:`Downsample` and
  :class:`Upsample` with ``pool_z=False``, stride / scale (1, 2, 2));
- ``z_kernel[l]``: the Z extent of the convolutions of level ``l`` (odd; 0 or
  None = the Y/X extent, the isotropic default); 1 means no mixing along Z.

The defaults (Z pooled everywhere, Z extent as Y and X) give exactly the
isotropic networks. A caller that knows the voxel size can follow the nnU-Net
rule (Isensee et al., Nature Methods 2021): going down the levels, pool an axis
and use kernel 3 along it only while its spacing is within 2x of the finest
spacing of that level (each pooling doubles the spacing of the pooled axes), and
kernel 1 otherwise. 2-D networks ignore both settings.

Receptive fields are computed analytically, per axis, with :class:`Reach`.
"""


from typing import Final, List, NamedTuple, Optional, Sequence, Tuple, Type, Union

import torch
from torch import Tensor, nn

from bmz_cosdd.nn.fast_inference import fold_batch_norm, mish_

__all__ = [
    "GatedResBlock",
    "Downsample",
    "Upsample",
    "Reach",
    "anisotropy",
    "same_conv",
    "check_odd_kernel",
    "check_z_kernel",
    "check_multiples",
    "check_spatial_dims",
    "check_spatial_size",
    "conv_class",
    "batch_norm_class",
    "max_pool_class",
    "channel_dropout_class",
    "sum_except_batch",
]


def check_odd_kernel(kernel_size: int) -> None:
    """Raise ``ValueError`` unless ``kernel_size`` is a positive odd integer ("same" padding needs it)."""
    if kernel_size < 1 or kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")


def check_z_kernel(z_kernel: Optional[int]) -> int:
    """Return the Z extent of a convolution as an int: 0 (or None) = as Y and X, else a positive odd integer."""
    if z_kernel is None or z_kernel == 0:
        return 0
    if z_kernel < 1 or z_kernel % 2 != 1:
        raise ValueError(f"z_kernel must be a positive odd integer (or 0 for the Y/X size), got {z_kernel}")
    return int(z_kernel)


def check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` as an int; ``ValueError`` unless it is 2 (Y, X) or 3 (Z, Y, X)."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return int(spatial_dims)


def conv_class(spatial_dims: int) -> Union[Type[nn.Conv2d], Type[nn.Conv3d]]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return nn.Conv3d if check_spatial_dims(spatial_dims) == 3 else nn.Conv2d


def batch_norm_class(spatial_dims: int) -> Union[Type[nn.BatchNorm2d], Type[nn.BatchNorm3d]]:
    """``nn.BatchNorm2d`` or ``nn.BatchNorm3d``."""
    return nn.BatchNorm3d if check_spatial_dims(spatial_dims) == 3 else nn.BatchNorm2d


def max_pool_class(spatial_dims: int) -> Union[Type[nn.MaxPool2d], Type[nn.MaxPool3d]]:
    """``nn.MaxPool2d`` or ``nn.MaxPool3d``."""
    return nn.MaxPool3d if check_spatial_dims(spatial_dims) == 3 else nn.MaxPool2d


def channel_dropout_class(spatial_dims: int) -> Union[Type[nn.Dropout2d], Type[nn.Dropout3d]]:
    """``nn.Dropout2d`` or ``nn.Dropout3d`` (drops whole channels)."""
    return nn.Dropout3d if check_spatial_dims(spatial_dims) == 3 else nn.Dropout2d


def _and_join(items: List[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1]


def check_multiples(sizes: List[int], step: List[int]) -> None:
    """Raise ``ValueError`` unless every spatial size ([Z,] Y, X) is a multiple of its step.

    ``step`` holds one step per axis ([Z,] Y, X); eager callers may pass one int for
    every axis. (The annotation says ``List[int]`` so that scripted graphs hold no
    ``Union``: TorchScript drops the int branch, torch 2.0 loads the result.)

    Examples
    --------
    >>> check_multiples([8, 16, 18], 4)
    Traceback (most recent call last):
    ...
    ValueError: input Z, Y and X must be multiples of 4, got 8 x 16 x 18
    >>> check_multiples([3, 16, 18], [1, 4, 4])
    Traceback (most recent call last):
    ...
    ValueError: input Z, Y and X must be multiples of 1, 4 and 4, got 3 x 16 x 18
    """
    steps = [step for _ in sizes] if isinstance(step, int) else step
    if len(steps) != len(sizes):
        raise ValueError(f"got {len(steps)} steps for {len(sizes)} spatial sizes")
    for i in range(len(sizes)):
        if sizes[i] % steps[i] != 0:
            names = ["Z", "Y", "X"][3 - len(sizes):]
            multiple = str(steps[0]) if min(steps) == max(steps) else _and_join([str(s) for s in steps])
            got = " x ".join([str(s) for s in sizes])
            raise ValueError(f"input {_and_join(names)} must be multiples of {multiple}, got {got}")


def check_spatial_size(x: Tensor, step: List[int], spatial_dims: int) -> None:
    """Raise ``ValueError`` unless ``x`` is (B, C, [Z,] Y, X) with every spatial size a multiple of its step.

    ``step`` holds one step per axis ([Z,] Y, X); eager callers may pass one int for
    every axis (see :func:`check_multiples`).
    """
    if x.dim() != spatial_dims + 2:
        names = ["Z", "Y", "X"][3 - spatial_dims:]
        raise ValueError(f"expected a (B, C, {', '.join(names)}) input, got {x.dim()} dimensions")
    check_multiples(x.shape[2:], step)


def anisotropy(
    z_pool: Optional[Sequence[bool]],
    z_kernel: Optional[Sequence[Optional[int]]],
    n_pool: int,
    n_kernel: int,
    spatial_dims: int,
) -> Tuple[List[bool], List[int]]:
    """Checked per-level Z settings of a network: (``z_pool``, ``z_kernel``) as lists.

    ``z_pool`` must have ``n_pool`` entries and ``z_kernel`` ``n_kernel`` (each odd, or
    0 / None for the Y/X extent); None stands for the isotropic default (all True,
    all 0). 2-D networks have no Z: the lengths and values are still checked, then
    the defaults are returned.
    """
    pool = [True] * n_pool
    kernel = [0] * n_kernel
    if z_pool is not None:
        if len(z_pool) != n_pool:
            raise ValueError(f"z_pool must have {n_pool} entries, got {len(z_pool)}")
        pool = [bool(p) for p in z_pool]
    if z_kernel is not None:
        if len(z_kernel) != n_kernel:
            raise ValueError(f"z_kernel must have {n_kernel} entries, got {len(z_kernel)}")
        kernel = [check_z_kernel(k) for k in z_kernel]
    if check_spatial_dims(spatial_dims) == 2:
        return [True] * n_pool, [0] * n_kernel
    return pool, kernel


def same_conv(
    cin: int, cout: int, kernel_size: int, spatial_dims: int, z_kernel: int = 0, bias: bool = True
) -> nn.Module:
    """A "same"-padded convolution, ``kernel_size`` along every axis but Z, ``z_kernel`` (0 = ``kernel_size``) along Z.

    With ``z_kernel`` 0 (or equal to ``kernel_size``, or in 2-D) it is exactly
    ``conv_class(spatial_dims)(cin, cout, kernel_size, padding=kernel_size // 2, bias=bias)``.
    """
    conv = conv_class(spatial_dims)
    z_kernel = check_z_kernel(z_kernel)
    if spatial_dims == 2 or z_kernel in (0, kernel_size):
        return conv(cin, cout, kernel_size, padding=kernel_size // 2, bias=bias)
    return conv(
        cin, cout, (z_kernel, kernel_size, kernel_size), padding=(z_kernel // 2, kernel_size // 2, kernel_size // 2),
        bias=bias,
    )


class Reach(NamedTuple):
    """Receptive field along one axis, by interval arithmetic (plain Python, not scripted).

    A feature at grid index ``o`` of grid step ``step`` (in input pixels) depends on
    input pixels ``step * o + lo`` to ``step * o + hi``. Start from ``Reach()`` (the
    input itself) and apply the network's layers in order; where paths join, take
    :meth:`merge`. Borders (padding) are ignored, so the result is exact away from
    them.

    Examples
    --------
    >>> Reach().conv(3).down().conv(3).up()
    Reach(lo=-6, hi=5, step=1)
    """

    lo: int = 0
    hi: int = 0
    step: int = 1

    def conv(self, kernel: int) -> "Reach":
        """A "same" convolution of odd extent ``kernel`` with stride 1."""
        r = (kernel // 2) * self.step
        return Reach(self.lo - r, self.hi + r, self.step)

    def down(self, kernel: int = 3) -> "Reach":
        """A "same"-padded strided convolution (stride 2) of odd extent ``kernel``: output o reads 2o - r .. 2o + r."""
        r = (kernel // 2) * self.step
        return Reach(self.lo - r, self.hi + r, 2 * self.step)

    def up(self) -> "Reach":
        """Linear x2 interpolation (``align_corners=False``): fine index p reads coarse p/2 - 1 .. (p + 1)/2."""
        return Reach(self.lo - self.step, self.hi + self.step // 2, self.step // 2)

    def merge(self, other: "Reach") -> "Reach":
        """Union of two paths on the same grid (concatenation, addition)."""
        if other.step != self.step:
            raise ValueError(f"cannot merge grids of steps {self.step} and {other.step}")
        return Reach(min(self.lo, other.lo), max(self.hi, other.hi), self.step)

    @property
    def halfwidth(self) -> int:
        """Largest distance between an output pixel and an input pixel that can change it."""
        return max(-self.lo, self.hi)


def sum_except_batch(t: Tensor) -> Tensor:
    """Sum over every dimension but the first: (B, ...) -> (B,)."""
    return t.sum(dim=[d for d in range(1, t.dim())])


def _norm(channels: int, batch_norm: bool, spatial_dims: int) -> nn.Module:
    return batch_norm_class(spatial_dims)(channels) if batch_norm else nn.Identity()


class _MishFunction(torch.autograd.Function):
    """Mish and its derivative for training, each a few element-wise passes (about half the CPU time of
    ``nn.Mish``'s forward and backward). The forward is :func:`~bmz_cosdd.nn.fast_inference.mish_`'s
    one-exponential form, ``x / q`` with ``q = 1 + 1 / (e + e^2 / 2)``, ``e = exp(x)``; the backward is
    ``t + x * sigmoid(x) * (1 - t^2)`` with ``t = tanh(softplus(x)) = 1 / q``, from the saved ``x`` and ``q``.
    Where ``e`` overflows, ``q`` is 1 (Mish is ``x``, its slope 1); where it underflows, ``q`` is infinite
    (Mish is 0, its slope ``x * sigmoid(x)``, 0 too)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        q = torch.exp(x)
        q.addcmul_(q, q, value=0.5)
        q.reciprocal_().add_(1.0)
        ctx.save_for_backward(x, q)
        return x / q

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        x, q = ctx.saved_tensors
        t = q.reciprocal()
        slope = torch.addcmul(torch.ones_like(t), t, t, value=-1.0)  # 1 - t^2
        slope.mul_(torch.sigmoid(x)).mul_(x).add_(t)
        return grad * slope


@torch.jit.unused
def _mish_autograd(x: Tensor) -> Tensor:
    return _MishFunction.apply(x)


class Mish(nn.Module):
    """``nn.Mish``, computed with :class:`_MishFunction` in eager mode; TorchScript (the packages)
    compiles ``torch.nn.functional.mish``. Equal to float rounding (a few ulps)."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting() or torch.jit.is_tracing():  # exported graphs hold the standard op
            return torch.nn.functional.mish(x)
        return _mish_autograd(x)


class GatedResBlock(nn.Module):
    """Residual block: (conv, batch norm, Mish) x 2, a gated unit, added to the input.

    The gated unit is a 1x1 convolution to ``2 * channels`` split into ``a`` and ``b``
    and combined as ``a * sigmoid(b)``; the result is added to the block's input, so
    the block keeps the number of channels and the spatial size.

    Parameters
    ----------
    channels : int
        Number of input and output channels.
    kernel_size : int, default 3
        Odd size of the two spatial convolutions ("same" zero padding).
    batch_norm : bool, default True
        Batch normalisation after each convolution; without it the convolutions get a bias.
    dropout : float, default 0.0
        Dropout probability applied after the first activation.
    spatial_dims : {2, 3}, default 2
        Tensors (B, C, Y, X) or (B, C, Z, Y, X).
    z_kernel : int, default 0
        In 3-D, odd Z extent of the two spatial convolutions; 0 = ``kernel_size`` (isotropic).

    Examples
    --------
    >>> block = GatedResBlock(8)
    >>> block(torch.zeros(2, 8, 16, 16)).shape
    torch.Size([2, 8, 16, 16])
    """

    spatial_dims: Final[int]
    batch_norm: Final[bool]
    norm_eps: List[float]

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        batch_norm: bool = True,
        dropout: float = 0.0,
        spatial_dims: int = 2,
        z_kernel: int = 0,
    ) -> None:
        super().__init__()
        check_odd_kernel(kernel_size)
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.batch_norm = bool(batch_norm)
        conv = conv_class(spatial_dims)
        self.channels = channels
        self.conv1 = same_conv(channels, channels, kernel_size, spatial_dims, z_kernel, bias=not batch_norm)
        self.norm1 = _norm(channels, batch_norm, spatial_dims)
        self.conv2 = same_conv(channels, channels, kernel_size, spatial_dims, z_kernel, bias=not batch_norm)
        self.norm2 = _norm(channels, batch_norm, spatial_dims)
        # TorchScript reads a batch norm's constants (eps) only inside its own methods.
        self.norm_eps = [float(getattr(norm, "eps", 0.0)) for norm in (self.norm1, self.norm2)]
        self.act = Mish()
        self.drop = nn.Dropout(dropout)
        self.gate = conv(channels, 2 * channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = self.drop(h)
        h = self.act(self.norm2(self.conv2(h)))
        g = self.gate(h)
        c = self.channels
        return x + g[:, :c] * torch.sigmoid(g[:, c:])

    def infer(self, x: Tensor) -> Tensor:
        """``forward`` in evaluation mode, computed faster; ``forward`` itself in training mode.

        Batch norm folded into the convolutions, Mish in place, the gate's two halves as
        two convolutions (contiguous outputs). Same shapes as ``forward``; give ``x`` in
        channels-last memory for speed (:mod:`bmz_cosdd.nn.fast_inference`).
        """
        if self.training:
            return self.forward(x)
        w1 = self.conv1.weight
        b1 = self.conv1.bias
        w2 = self.conv2.weight
        b2 = self.conv2.bias
        if self.batch_norm:
            n1, n2 = self.norm1, self.norm2
            e1, e2 = self.norm_eps[0], self.norm_eps[1]
            w1, b1 = fold_batch_norm(w1, b1, n1.running_mean, n1.running_var, n1.weight, n1.bias, e1)
            w2, b2 = fold_batch_norm(w2, b2, n2.running_mean, n2.running_var, n2.weight, n2.bias, e2)
        h = mish_(self.conv1._conv_forward(x, w1, b1))
        h = mish_(self.conv2._conv_forward(h, w2, b2))
        c = self.channels
        wg = self.gate.weight
        bg = self.gate.bias
        ba: Optional[Tensor] = None
        bb: Optional[Tensor] = None
        if bg is not None:
            ba = bg[:c]
            bb = bg[c:]
        a = self.gate._conv_forward(h, wg[:c], ba)
        b = self.gate._conv_forward(h, wg[c:], bb)
        return a.mul_(b.sigmoid_()).add_(x)


class Downsample(nn.Module):
    """Halve the spatial sizes (Y and X, and Z in 3-D unless ``pool_z=False``) with a strided 3x3 convolution.

    Stride 2 and padding 1 along every halved axis: an input of size n gives
    ceil(n / 2), even sizes are halved exactly. An axis that is not halved (Z with
    ``pool_z=False``) keeps its size: stride 1 along it, extent ``z_kernel``.

    Parameters
    ----------
    cin, cout : int
        Input and output channels.
    spatial_dims : {2, 3}, default 2
        Tensors (B, C, Y, X) or (B, C, Z, Y, X).
    pool_z : bool, default True
        In 3-D, halve Z too; False gives stride (1, 2, 2). Ignored in 2-D.
    z_kernel : int, default 0
        Z extent (odd) of the convolution when ``pool_z`` is False; 0 = 3, as Y and X.
        When Z is halved the extent stays 3: a stride-2 kernel of extent 1 would
        skip every other plane.

    Examples
    --------
    >>> Downsample(4, 8, spatial_dims=3, pool_z=False)(torch.zeros(1, 4, 5, 16, 16)).shape
    torch.Size([1, 8, 5, 8, 8])
    """

    spatial_dims: Final[int]
    pool_z: Final[bool]

    def __init__(self, cin: int, cout: int, spatial_dims: int = 2, pool_z: bool = True, z_kernel: int = 0) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.pool_z = bool(pool_z)
        z_kernel = check_z_kernel(z_kernel) or 3
        if spatial_dims == 3 and not pool_z:
            self.conv = nn.Conv3d(cin, cout, (z_kernel, 3, 3), stride=(1, 2, 2), padding=(z_kernel // 2, 1, 1))
        else:
            self.conv = conv_class(spatial_dims)(cin, cout, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the spatial sizes: bi- or trilinear interpolation (``align_corners=False``), then a 1x1 convolution.

    Interpolation rather than transposed convolution avoids checkerboard artefacts.
    In 3-D with ``pool_z=False`` only Y and X are doubled (scale factors (1, 2, 2);
    a scale of 1 reproduces Z exactly).

    Parameters
    ----------
    cin, cout : int
        Input and output channels.
    spatial_dims : {2, 3}, default 2
        Tensors (B, C, Y, X) (bilinear) or (B, C, Z, Y, X) (trilinear).
    pool_z : bool, default True
        In 3-D, double Z too (undoing a :class:`Downsample` that halved it). Ignored in 2-D.

    Examples
    --------
    >>> Upsample(8, 4, spatial_dims=3, pool_z=False)(torch.zeros(1, 8, 5, 8, 8)).shape
    torch.Size([1, 4, 5, 16, 16])
    """

    # Final: TorchScript compiles only the branch of this module's dimensionality and Z scaling.
    spatial_dims: Final[int]
    pool_z: Final[bool]

    def __init__(self, cin: int, cout: int, spatial_dims: int = 2, pool_z: bool = True) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.pool_z = bool(pool_z)
        self.conv = conv_class(spatial_dims)(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self._scale_up(x))

    def infer(self, x: Tensor) -> Tensor:
        """``forward`` with the 1x1 convolution first, at the coarse resolution (a quarter, or an
        eighth, of the work). The interpolation is linear per channel with weights that sum to 1,
        so it commutes with a 1x1 convolution and its bias: equal up to float rounding."""
        return self._scale_up(self.conv(x))

    def _scale_up(self, x: Tensor) -> Tensor:
        # The aten ops, not F.interpolate: scripting F.interpolate compiles every mode,
        # including ops (lanczos) that torch 2.0 - deepImageJ's libtorch - cannot load.
        # A scale factor rather than an output size: ONNX then gets a Resize by scales,
        # which works for every input size (a size is traced as a constant).
        if self.spatial_dims == 3:
            if self.pool_z:
                x = torch.ops.aten.upsample_trilinear3d(x, None, False, [2.0, 2.0, 2.0])
            else:
                x = torch.ops.aten.upsample_trilinear3d(x, None, False, [1.0, 2.0, 2.0])
        else:
            x = torch.ops.aten.upsample_bilinear2d(x, None, False, [2.0, 2.0])
        return x
