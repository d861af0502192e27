"""Every path on the encoder's device and in its dtype (issue 26).

CI has no GPU, so the CPU suite catches the class of fault a GPU shows (an input, baseline, mask, noise or
Hessian left on another device or in another dtype) with a float64 copy of a trained encoder: every
explainer, metric, adapter, example method and MetaQuantus test (lfeval.diagnostics' paths) must give the
float32 run's numbers within float32 tolerance. The same holds for inputs given as float64 NumPy or float16
tensors. The CUDA tests at the end run where there is a GPU (benchmarks/bench_gpu.py runs them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lfeval
from lfeval import diagnostics
from lfeval.precision import applied, current, precise, use

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine (the CPU proxies run above)")


def _assert_all_ok(table, what: str):
    bad = table[~table["ok"]]
    assert bad.empty, f"{what}: {len(bad)} of {len(table)} paths differ or fail:\n{bad.to_string()}"
    assert len(table) == len(diagnostics.path_names())


def test_the_paths_cover_every_registered_method(ae):
    """A new built-in explainer or example method must join the checked paths (else it escapes this check)."""
    from lfeval.explain.base import EXPLAINERS
    from lfeval.explain.examples import EXAMPLE_METHODS

    names = set(diagnostics.path_names())
    assert set(EXPLAINERS) <= names, set(EXPLAINERS) - names
    assert set(EXAMPLE_METHODS) <= names, set(EXAMPLE_METHODS) - names
    assert len(names) >= 26


def test_float64_encoder_equals_float32_on_every_path(ae, digits):
    table = diagnostics.compare_placements(ae, digits, dtype=torch.float64)
    _assert_all_ok(table, "float64 encoder")
    # a float64 copy computes in float64: the results differ from float32 in the last bits, not exactly
    assert (table.loc[["Saliency", "IntegratedGradients", "RepresentationShift", "tracin"], "relative_error"] > 0).all()


def test_inputs_as_float64_numpy_and_float16_tensors(ae, digits):
    """The boundary converts any array or tensor dtype; digits are multiples of 1/16, exact in float16."""
    _assert_all_ok(diagnostics.compare_placements(ae, digits, inputs=lambda a: a.astype(np.float64)),
                   "float64 NumPy inputs")
    table = diagnostics.compare_placements(ae, digits, dtype=torch.float64,
                                           inputs=lambda a: torch.as_tensor(a, dtype=torch.float16))
    _assert_all_ok(table, "float16 tensors into a float64 encoder")


def test_bfloat16_network_runs_every_path_at_bfloat16_accuracy(ae, digits):
    """A bfloat16 network (8-bit mantissa) runs everywhere; inputs, masks and attributions stay float32.
    Its attributions agree with float32 to a few percent of the largest value (measured: at most 3.3%)."""
    table = diagnostics.compare_placements(ae, digits, dtype=torch.bfloat16, tolerance=0.05)
    assert table["error"].eq("").all(), table[table["error"] != ""]
    attributions = ["Saliency", "IntegratedGradients", "GradientShap", "Occlusion", "RELAX", "COCOA"]
    assert (table.loc[attributions, "relative_error"] < 0.05).all(), table.loc[attributions]
    assert (table.loc[attributions, "relative_error"] > 1e-4).all()  # it really computed in bfloat16


def test_bf16_precision_autocasts_every_path(ae, digits):
    """lfeval.precision.use("bf16") runs the encoder's forward under bfloat16 autocast (on the CPU too, where it
    checks the same code): every path runs (layer inputs captured under autocast are bfloat16: influence
    functions' Hessian once failed on them), and attributions stay within bfloat16 accuracy of float32."""
    reference = diagnostics.run_paths(ae, digits)
    with use("bf16"):
        table = diagnostics.compare_results(reference, diagnostics.run_paths(ae, digits), tolerance=0.05)
    assert table["error"].eq("").all(), table[table["error"] != ""]
    attributions = ["Saliency", "IntegratedGradients", "GradientShap", "RELAX", "cosine", "influence"]
    assert (table.loc[attributions, "relative_error"] < 0.05).all(), table.loc[attributions]
    assert table.loc["Saliency", "relative_error"] > 1e-4  # the forward pass really ran in bfloat16


def test_encoder_moves_its_pretext_model_and_places_inputs(ae):
    enc = ae.copy().double()
    assert enc.dtype == torch.float64 and enc.data_dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in enc.pretext_model.parameters())
    assert ae.dtype == torch.float32  # the copy moved, not the original
    x = torch.rand(3, 1, 8, 8, dtype=torch.float16, requires_grad=True)
    placed = enc.place(x)
    assert placed.dtype == torch.float64 and placed.device == enc.device
    enc(x).sum().backward()  # differentiable back to the caller's tensor, in its dtype
    assert x.grad is not None and x.grad.dtype == torch.float16
    half = ae.copy().to(torch.bfloat16)
    assert half.data_dtype == torch.float32 and half(torch.rand(2, 1, 8, 8)).dtype == torch.float32


def test_token_ids_never_narrower_than_float32():
    from lfeval.modalities import get_modality

    text, image = get_modality("text"), get_modality("image")
    assert text.input_dtype(torch.bfloat16) == torch.float32  # ids above 256 survive
    assert text.input_dtype(torch.float64) == torch.float64
    assert image.input_dtype(torch.bfloat16) == torch.bfloat16


class _Recorder(torch.nn.Module):
    """A linear encoder that records the cuDNN/matmul TF32 setting in force when it runs."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 3)
        self.seen = []

    def forward(self, x):
        from lfeval.precision import _flags

        self.seen.append(tuple(getattr(obj, attr) for obj, attr in _flags()))
        return self.lin(x.flatten(1))


def test_precision_scope_sets_and_restores_the_tf32_switches():
    from lfeval.precision import _flags

    before = [getattr(obj, attr) for obj, attr in _flags()]
    net = _Recorder().eval()
    x = torch.rand(4, 1, 4, 4)
    lfeval.explain(net, x, method="Saliency")
    assert set(net.seen[-1]) <= {"ieee", False}  # TF32 off during lfeval's call (torch's conv default is on)
    with use("tf32"):
        assert current() == "tf32"
        lfeval.explain(net, x, method="Saliency")
        lfeval.metrics.RepresentationShift(fractions=(0.5, 1.0))(net, x.numpy(), a_batch=x.numpy())
    assert set(net.seen[-1]) <= {"tf32", True}
    assert current() == "highest"
    assert [getattr(obj, attr) for obj, attr in _flags()] == before  # the caller's switches come back
    with pytest.raises(lfeval.errors.UnknownName, match="precision"):
        with use("fast"):
            pass


def test_precise_restores_on_error():
    from lfeval.precision import _flags

    before = [getattr(obj, attr) for obj, attr in _flags()]

    @precise
    def boom():
        raise ValueError("x")

    with use("tf32"), pytest.raises(ValueError):
        boom()
    with applied():
        pass
    assert [getattr(obj, attr) for obj, attr in _flags()] == before


# ---------------------------------------------------------------------------------------------- CUDA
@CUDA
def test_cuda_equals_cpu_on_every_path(ae, digits):
    """DESIGN: CUDA equals the CPU within 1e-4 of the largest value, TF32 off."""
    _assert_all_ok(diagnostics.compare_placements(ae, digits, device="cuda"), "CUDA")


@CUDA
def test_cuda_inputs_given_on_the_gpu(ae, digits):
    """Inputs already on the GPU (influence functions mixed devices here)."""
    gpu = ae.copy().to("cuda")
    x_tr, x_te = digits.x_train[:64].cuda(), digits.x_test[:8].cuda()
    for method in ("influence", "tracin", "simplex", "dknn"):
        cuda = lfeval.examples.importance(gpu, x_tr, x_te, method=method, display_progressbar=False)
        cpu = lfeval.examples.importance(ae, x_tr.cpu(), x_te.cpu(), method=method, display_progressbar=False)
        scale = float(cpu.abs().max())
        assert float((cuda.cpu() - cpu).abs().max()) <= 1e-4 * scale, method
