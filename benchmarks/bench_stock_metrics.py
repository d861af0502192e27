"""The stock Quantus metrics at ResNet scale, with the model's cost taken away: what is left is host work that no
GPU removes.

LabelFree(PixelFlipping) (12 steps of 12,544 features) and LabelFree(FaithfulnessCorrelation) (10 runs of 3,136
features), the settings of ``bench_scale.py``, on N real MNIST digits resized to 3x224x224, scoring Random
attributions of a near-free encoder (average pooling to 8x8 and a linear map to 512-d: its forward pass is
~1 ms for 27 images). Side by side, interleaved, best of ``--repeat``:

- **Quantus as shipped**: Quantus 0.6.0's own loop (``LabelFree(..., batched=False)``), its own attribution
  check (a Python set of every value) and no-change check;
- **lfeval**: the checks of :mod:`lfeval.metrics.fast_paths` and its batched path, whose perturbed copies are
  built and scored as torch on the encoder's device.

Both draw the same random subsets from the same ``np.random`` stream; the script prints the largest score
difference. Run: ``python benchmarks/bench_stock_metrics.py [--n 128] [--repeat 2] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import quantus  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from timing import interleaved_best  # noqa: E402

import lfeval  # noqa: E402
from lfeval.metrics import LabelFree, fast_paths  # noqa: E402


def near_free_encoder(num_classes: int = 512) -> torch.nn.Module:
    """3x224x224 -> 512 at almost no cost: the host floor of a run (also ``bench_scale.py --floor``)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(8), torch.nn.Flatten(), torch.nn.Linear(192, num_classes))


def metrics() -> dict:
    return {"PixelFlipping": lambda: quantus.PixelFlipping(features_in_step=12544, disable_warnings=True),
            "FaithfulnessCorrelation": lambda: quantus.FaithfulnessCorrelation(
                nr_runs=10, subset_size=3136, return_aggregate=False, disable_warnings=True)}


def score(name: str, encoder, x, a, stock: bool):
    np.random.seed(0)
    metric = LabelFree(metrics()[name](), batched=not stock)
    if not stock:
        return metric(encoder, x, a_batch=a)
    checks = fast_paths.assert_attributions, fast_paths._no_check
    fast_paths.assert_attributions = quantus.helpers.asserts.assert_attributions  # Quantus' own checks
    fast_paths._no_check = quantus.helpers.warn.warn_perturbation_caused_no_change
    try:
        return metric(encoder, x, a_batch=a)
    finally:
        fast_paths.assert_attributions, fast_paths._no_check = checks


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    ds = lfeval.data.load("mnist", limit_train=8, limit_test=args.n)
    x = F.interpolate(ds.x_test, size=(224, 224), mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1)
    x = x.numpy()
    a = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    encoder = lfeval.Encoder(near_free_encoder().to(args.device).eval(), modality="image")
    print(f"N = {args.n} images of 3x224x224 on {args.device}, best of {args.repeat} (seconds)")
    print(f"{'metric':<26}{'Quantus as shipped':>20}{'lfeval':>10}{'ratio':>8}{'max |diff|':>12}")
    for name in metrics():
        best, outs = interleaved_best({"stock": lambda: score(name, encoder, x, a, True),
                                       "lfeval": lambda: score(name, encoder, x, a, False)}, args.repeat)
        diff = np.max(np.abs(np.asarray(outs["stock"]) - np.asarray(outs["lfeval"])))
        print(f"{name:<26}{best['stock']:>20.2f}{best['lfeval']:>10.2f}{best['stock'] / best['lfeval']:>8.1f}"
              f"{diff:>12.1e}", flush=True)
