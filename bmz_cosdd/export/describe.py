"""The model description (format 0.5) of a package's content, built with bioimageio.spec's classes.

The description is built with bioimageio.spec's Python classes (never hand-written
YAML). The package's test outputs are produced by running its own TorchScript weights
through bioimageio.core's prediction pipeline (:mod:`bmz_cosdd.export.core_outputs`), so
pre- and postprocessing are exactly core's and ``bioimageio.core.test_model`` reproduces
them at its default tolerance.

Conventions of the package
--------------------------
- One input ``input`` with axes ``batch, channel, y, x`` (``batch, channel, z, y, x``
  for a 3-D model; spec 0.5 normalises the
  single letters ``b`` and ``c`` to ``batch`` and ``channel``; consumers such as
  deepImageJ map them back to ``b`` and ``c``).
- Outputs in the order of :attr:`PackageContent.outputs`: intensity outputs (``mmse``,
  ``denoised``) and ``std`` share the input's axes; ``samples`` has the axes
  ``batch, index, channel, [z,] y, x``. Spatial output axes reference the input's axes and
  carry the halo.
- Preprocessing ``fixed_zero_mean_unit_variance`` with the training statistics and
  postprocessing ``scale_linear`` back to raw intensities. bioimageio.core and
  deepImageJ (JDLL) both compute ``(x - mean) / (std + 1e-6)``; the package therefore
  stores ``std - 1e-6`` so that consumers divide by exactly the training ``std``, and the
  postprocessing multiplies by the training ``std``. The round trip is exact.
- The scripted module takes the normalised ``(B, C, [Z,] Y, X)`` float32 input and returns
  one tensor (one output) or a tuple of tensors in the order of ``outputs``.

Examples
--------
Not run as doctests: a content needs a trained model's weights and test input (the tests
make a stand-in, see ``tests/export/test_rdf.py``).

>>> files = package_zip.stage_files(content, Path("stage"))           # doctest: +SKIP
>>> descr = describe_model(content, files, with_test_outputs=False)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

from bmz_cosdd.export.package_content import (
    CORE_STD_EPS,
    Author,
    Maintainer,
    PackageContent,
    onnx_opset,
    plain_release,
    yaml_value,
)

#: Id of the package's one input tensor.
INPUT_ID = "input"


def _maintainer(v0_5: Any, maintainer: Maintainer) -> Any:
    """Only the fields given (spec writes explicit None values into the YAML)."""
    extra = {"name": maintainer.name} if maintainer.name else {}
    return v0_5.Maintainer(github_user=maintainer.github_user, **extra)


def _author(v0_5: Any, author: Author) -> Any:
    """Only the fields given (spec writes explicit None values into the YAML)."""
    fields = {k: getattr(author, k) for k in ("affiliation", "github_user", "orcid")}
    return v0_5.Author(name=author.name, **{k: v for k, v in fields.items() if v})



def _channel_names(n: int) -> list[str]:
    return [str(i) for i in range(n)]


def _spatial_output_axes(v0_5: Any, halos: Sequence[int], spatial_axes: Sequence[str]) -> list:
    axes = []
    for aid, halo in zip(spatial_axes, halos):
        size = v0_5.SizeReference(tensor_id=v0_5.TensorId(INPUT_ID), axis_id=v0_5.AxisId(aid))
        if halo > 0:
            axes.append(v0_5.SpaceOutputAxisWithHalo(id=v0_5.AxisId(aid), size=size, halo=halo))
        else:
            axes.append(v0_5.SpaceOutputAxis(id=v0_5.AxisId(aid), size=size))
    return axes


def _scale_linear(v0_5: Any, gain: Sequence[float], offset: Sequence[float]) -> list:
    """``x * gain + offset`` per channel (nothing if it is the identity)."""
    if all(g == 1.0 for g in gain) and all(o == 0.0 for o in offset):
        return []
    if len(gain) == 1:
        kwargs = v0_5.ScaleLinearKwargs(gain=float(gain[0]), offset=float(offset[0]))
    else:
        kwargs = v0_5.ScaleLinearAlongAxisKwargs(
            axis=v0_5.AxisId("channel"), gain=[float(g) for g in gain], offset=[float(o) for o in offset]
        )
    return [v0_5.ScaleLinearDescr(kwargs=kwargs)]


def _preprocessing(v0_5: Any, mean: Sequence[float], std: Sequence[float]) -> list:
    # core and JDLL divide by (std + 1e-6): store std - 1e-6 so they divide by std.
    stored = [float(s) - CORE_STD_EPS for s in std]
    if len(mean) == 1:
        kwargs = v0_5.FixedZeroMeanUnitVarianceKwargs(mean=float(mean[0]), std=stored[0])
    else:
        kwargs = v0_5.FixedZeroMeanUnitVarianceAlongAxisKwargs(
            axis=v0_5.AxisId("channel"), mean=[float(m) for m in mean], std=stored
        )
    return [v0_5.FixedZeroMeanUnitVarianceDescr(kwargs=kwargs)]


_OUTPUT_TEXT = {
    "mmse": "MMSE estimate: mean of the posterior samples (raw intensities)",
    "denoised": "Denoised image (raw intensities)",
    "deconvolved": "Denoised and deconvolved image, before the PSF (raw intensities)",
    "std": "Pixel-wise standard deviation of the posterior samples",
    "samples": "Posterior samples along the index axis (raw intensities)",
}


def describe_model(content: PackageContent, files: dict[str, Any], with_test_outputs: bool) -> Any:
    """The ModelDescr of ``content`` whose files are the staged ``files``.

    Build it inside a ``bioimageio.spec.ValidationContext`` rooted at the staging folder.

    Parameters
    ----------
    content
        What the package holds (checked by :func:`~bmz_cosdd.export.package_content.check_content`).
    files
        The staged files by key (see :func:`bmz_cosdd.export.package_zip.stage_files`), with
        ``test_output_NAME`` and ``sample_output_NAME`` for each output when
        ``with_test_outputs``.
    with_test_outputs
        False for the draft that produces the test outputs, True for the final description.

    Returns
    -------
    bioimageio.spec.model.v0_5.ModelDescr
        The description.
    """
    from bioimageio.spec.model import v0_5

    c = content
    F = v0_5.FileDescr
    channel_names = _channel_names(c.n_channels)
    f32 = v0_5.IntervalOrRatioDataDescr(type="float32")

    input_axes = [
        v0_5.BatchAxis(),
        v0_5.ChannelAxis(id=v0_5.AxisId("channel"), channel_names=channel_names),
        *[
            v0_5.SpaceInputAxis(id=v0_5.AxisId(aid), size=v0_5.ParameterizedSize(min=low, step=step))
            for aid, low, step in zip(c.spatial_axes, c.mins, c.steps)
        ],
    ]
    inputs = [
        v0_5.InputTensorDescr(
            id=v0_5.TensorId(INPUT_ID),
            description="Raw noisy image (intensities as recorded)",
            axes=input_axes,
            test_tensor=F(source=files["test_input"]),
            sample_tensor=F(source=files["sample_input"]),
            data=f32,
            preprocessing=_preprocessing(v0_5, c.mean, c.std),
        )
    ]

    outputs = []
    for name in c.outputs:
        axes: list = [v0_5.BatchAxis()]
        if name == "samples":
            axes.append(v0_5.IndexOutputAxis(id=v0_5.AxisId("index"), size=int(c.n_samples)))
        axes.append(v0_5.ChannelAxis(id=v0_5.AxisId("channel"), channel_names=channel_names))
        axes.extend(_spatial_output_axes(v0_5, c.halos, c.spatial_axes))
        offset = [0.0] * c.n_channels if name == "std" else list(c.mean)
        outputs.append(
            v0_5.OutputTensorDescr(
                id=v0_5.TensorId(name),
                description=_OUTPUT_TEXT[name],
                axes=axes,
                test_tensor=F(source=files[f"test_output_{name}"]) if with_test_outputs else None,
                sample_tensor=F(source=files[f"sample_output_{name}"]) if with_test_outputs else None,
                data=f32,
                postprocessing=_scale_linear(v0_5, list(c.std), offset),
            )
        )

    pytorch_version = v0_5.Version(plain_release(c.pytorch_version))
    has_sd = c.state_dict is not None
    weights: dict[str, Any] = {
        "torchscript": v0_5.TorchscriptWeightsDescr(
            source=files["torchscript"],
            pytorch_version=pytorch_version,
            parent="pytorch_state_dict" if has_sd else None,
        )
    }
    if has_sd:
        weights["pytorch_state_dict"] = v0_5.PytorchStateDictWeightsDescr(
            source=files["state_dict"],
            architecture=v0_5.ArchitectureFromFileDescr(
                source=files["architecture_source"],
                callable=v0_5.Identifier(c.architecture_callable),
                kwargs=yaml_value(c.architecture_kwargs, "architecture_kwargs"),
            ),
            pytorch_version=pytorch_version,
        )
    if c.onnx is not None:
        weights["onnx"] = v0_5.OnnxWeightsDescr(
            source=files["onnx"],
            opset_version=onnx_opset(c.onnx),
            parent="pytorch_state_dict" if has_sd else "torchscript",
        )

    optional: dict[str, Any] = {}
    if c.git_repo:
        optional["git_repo"] = v0_5.HttpUrl(c.git_repo)
    if files["attachments"]:
        optional["attachments"] = [F(source=p) for p in files["attachments"]]
    if c.maintainers:
        optional["maintainers"] = [_maintainer(v0_5, m) for m in c.maintainers]
    return v0_5.ModelDescr(
        name=c.name,
        description=c.description,
        authors=[_author(v0_5, a) for a in c.authors],
        version=v0_5.Version(str(c.version)),
        license=v0_5.LicenseId(c.license),
        tags=list(c.tags),
        cite=[v0_5.CiteEntry(text=t, doi=v0_5.Doi(d)) for t, d in c.cite],
        documentation=F(source=files["documentation"]),
        covers=[F(source=p) for p in files["covers"]],
        **optional,
        inputs=inputs,
        outputs=outputs,
        weights=v0_5.WeightsDescr(**weights),
        config=v0_5.Config(
            bioimageio=v0_5.BioimageioConfig(),
            bmz_cosdd=yaml_value(c.config, "config"),
        ),
    )
