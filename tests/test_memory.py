"""Pass sizes (lfeval.memory): the CPU budget, the CUDA budget from free memory, and the out-of-memory retry."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import quantus
import torch
from torch import nn

import lfeval
from lfeval import memory
from lfeval.errors import InvalidArgument, InvalidInput, OutOfMemory
from lfeval.memory import pass_budget, rows_per_pass, run_in_chunks
from lfeval.metrics import LabelFree
from lfeval.metrics.functional import chunk_rows, encode_chunks

GIB = 2 ** 30
IMAGE = 3 * 224 * 224


@pytest.fixture
def gpu(monkeypatch):
    """A CUDA device with 139 GiB free (an H200) and, by default, an empty allocator cache."""
    monkeypatch.delenv("LFEVAL_PASS_BUDGET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    state = dict(free=139 * GIB, reserved=0, allocated=0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (state["free"], 141 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: state["reserved"])
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    return state


def test_cpu_budget_is_unchanged(monkeypatch):
    monkeypatch.delenv("LFEVAL_PASS_BUDGET", raising=False)
    assert pass_budget() == pass_budget("cpu") == pass_budget(torch.zeros(1)) == pass_budget(nn.Linear(2, 2)) == 2 ** 22
    assert (rows_per_pass(64, 256), rows_per_pass(IMAGE, 256)) == (256, 27)
    assert rows_per_pass(IMAGE, 256, device="cpu") == 27 and rows_per_pass(IMAGE, 256, per_row=50) == 1
    assert chunk_rows((1, 8, 8), "cpu", budget=2 ** 15) == 512
    assert doctest.testmod(memory).failed == 0


def test_cuda_budget_comes_from_free_memory(gpu):
    # 0.5 * 139 GiB / (4 bytes * 256) = 72,876,032 values
    assert pass_budget("cuda") == pass_budget(torch.device("cuda", 0)) == 72_876_032
    assert rows_per_pass(IMAGE, 10_000, device="cuda") == 484  # ResNet-18 inputs per pass, was 27
    assert rows_per_pass(IMAGE, 10_000, per_row=50, device="cuda") == 9  # GradientShap inputs per pass, was 1
    assert rows_per_pass(64, 256, device="cuda") == 256  # the request still caps small inputs
    assert chunk_rows((3, 224, 224), "cuda") == 484
    gpu.update(reserved=3 * GIB, allocated=1 * GIB)  # the allocator's unused cache counts as available
    assert pass_budget("cuda") == int(0.5 * 141 * GIB / 1024)
    gpu.update(free=GIB // 2, reserved=0, allocated=0)  # a nearly full GPU: small passes
    assert rows_per_pass(IMAGE, 10_000, device="cuda") == 1


def test_feature_budget_is_a_quarter_of_the_gpu(gpu):
    """TracIn's test-side features: 1 GiB on the CPU, a quarter of the available CUDA memory. At 1 GiB all 10,000
    MNIST test digits took 2 blocks, each recomputing the 60,000 training digits' features per checkpoint."""
    assert memory.feature_budget() == memory.feature_budget("cpu") == GIB
    assert memory.feature_budget("cuda") == int(0.25 * 139 * GIB)
    gpu.update(free=GIB // 2)
    assert memory.feature_budget("cuda") == GIB // 8


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a GPU has CUDA memory to measure")
def test_cuda_budgets_without_a_gpu_are_a_clear_error(monkeypatch):
    """Asked for CUDA where there is none, the budgets say so (lfeval.validation.check_device), instead of torch's
    raw "Found no NVIDIA driver" from the memory query."""
    monkeypatch.delenv("LFEVAL_PASS_BUDGET", raising=False)
    for budget in (memory.feature_budget, pass_budget):
        with pytest.raises(InvalidArgument, match="no usable CUDA GPU"):
            budget("cuda")


def test_env_budget_wins_everywhere(gpu, monkeypatch):
    monkeypatch.setenv("LFEVAL_PASS_BUDGET", str(64 * 10))
    assert pass_budget() == pass_budget("cuda") == 640
    assert rows_per_pass(64, 256, device="cuda") == 10 and chunk_rows((1, 8, 8), "cuda") == 10


@pytest.mark.parametrize("value", ["abc", "1e6", "2.5"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_bad_env_budget_is_a_clear_error(gpu, monkeypatch, value, device):
    monkeypatch.setenv("LFEVAL_PASS_BUDGET", value)
    with pytest.raises(InvalidArgument, match="LFEVAL_PASS_BUDGET must be an integer"):
        rows_per_pass(64, 256, device=device)


def _oom(limit: int, calls: list, wrap: bool = False):
    """f(rows) = 2 x[rows] summed, raising CUDA's out-of-memory error above ``limit`` rows."""

    def compute(x):
        calls.append(len(x))
        if len(x) > limit:
            error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            if not wrap:
                raise error
            raise InvalidInput("The encoder failed") from error  # as lfeval.Encoder.forward re-raises it
        return (2 * x).sum(1)

    return compute


@pytest.mark.parametrize("wrap", [False, True])
def test_oom_halves_the_rows_and_keeps_the_result(wrap):
    x = torch.randn(37, 5, dtype=torch.float64)
    calls = []
    compute = _oom(4, calls, wrap)
    out = run_in_chunks(lambda rows: compute(x[rows]), len(x), 16)
    assert torch.equal(out, (2 * x).sum(1))
    assert calls[:3] == [16, 8, 4] and max(calls[3:]) == 4  # the rest of the loop keeps the smaller chunks


def test_non_oom_errors_are_not_retried():
    calls = []

    def compute(rows):
        calls.append(rows)
        raise InvalidInput("bad input")

    with pytest.raises(InvalidInput, match="bad input"):
        run_in_chunks(compute, 10, 4)
    assert len(calls) == 1


def test_oom_at_one_row_names_the_fix():
    x = torch.randn(6, 5)
    calls = []
    compute = _oom(0, calls)
    with pytest.raises(OutOfMemory, match="LFEVAL_PASS_BUDGET") as info:
        run_in_chunks(lambda rows: compute(x[rows]), len(x), 6)
    assert "`batch_size`" in str(info.value) and isinstance(info.value, RuntimeError)
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)
    assert calls == [6, 3, 1]


class _Tight(nn.Module):
    """A linear encoder whose passes over ``limit`` rows run out of (CUDA) memory."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.ooms = limit, 0
        self.lin = nn.Linear(16, 3)
        torch.manual_seed(0)
        nn.init.normal_(self.lin.weight)
        self.eval()

    def forward(self, x):
        if len(x) > self.limit:
            self.ooms += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return torch.tanh(self.lin(x.reshape(len(x), -1)))


#: smaller passes give the same numbers up to float32 rounding, not bit for bit: BLAS may block a 5-row and a
#: 30-row product differently (measured: 2.6e-7 apart on one CPU, equal on another)
ROUNDING = dict(rtol=1e-5, atol=1e-6)


def test_encode_chunks_retries_through_the_encoder():
    x = torch.rand(30, 1, 4, 4)
    tight = lfeval.as_encoder(_Tight(5), x)
    free = lfeval.as_encoder(_Tight(10 ** 9), x)
    free.module.lin.load_state_dict(tight.module.lin.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(encode_chunks(tight, x, 64), encode_chunks(free, x, 64), **ROUNDING)
    assert tight.module.ooms > 0


def test_gradient_shap_retries_in_smaller_groups():
    x = np.random.default_rng(0).random((6, 1, 4, 4), dtype=np.float32)
    tight, free = _Tight(2 * 8 + 1), _Tight(10 ** 9)  # 8 samples per input: passes of at most 2 inputs fit
    free.lin.load_state_dict(tight.lin.state_dict())
    kw = dict(inputs=x, targets=None, method="GradientShap", n_samples=8)
    np.testing.assert_allclose(lfeval.explain(model=tight, **kw), lfeval.explain(model=free, **kw), **ROUNDING)
    assert tight.ooms > 0


def test_stock_metric_copies_retry_in_smaller_passes():
    # LabelFree(PixelFlipping)'s perturbed copies are scored on the encoder's device pass by pass
    x = np.random.default_rng(0).random((12, 1, 4, 4), dtype=np.float32)
    a = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    tight, free = _Tight(7), _Tight(10 ** 9)
    free.lin.load_state_dict(tight.lin.state_dict())
    scores = [LabelFree(quantus.PixelFlipping(features_in_step=4, disable_warnings=True))(net, x, a_batch=a)
              for net in (tight, free)]
    np.testing.assert_allclose(scores[0], scores[1], **ROUNDING)
    assert tight.ooms > 0
