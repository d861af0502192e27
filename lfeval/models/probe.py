"""Linear probes and reconstruction error: how good a representation is, independent of explanations."""

from __future__ import annotations

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ..data.base import Dataset
from ..validation import model_device


@torch.no_grad()
def latents(encoder: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """f(x) for a whole tensor, in batches, on the encoder's device."""
    device = model_device(encoder)
    return torch.cat([encoder(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def probe_accuracy(encoder: torch.nn.Module, ds: Dataset, seed: int = 0, with_note: bool = False):
    """Test accuracy of a logistic-regression probe fitted on standardised latents.

    Fitted on the training split and scored on the test split when the training labels hold two or more
    classes. Otherwise (ECG5000 trains on normal beats only) a stratified half of the test split trains the
    probe and the other half scores it; when even that is impossible the accuracy is NaN. With
    ``with_note`` returns ``(accuracy, note)``, the note saying which split was used.
    """
    from sklearn.model_selection import train_test_split

    x_tr, y_tr, x_te, y_te = latents(encoder, ds.x_train).numpy(), ds.y_train.numpy(), None, None
    note = "train -> test"
    if len(set(y_tr.tolist())) < 2:
        z, y = latents(encoder, ds.x_test).numpy(), ds.y_test.numpy()
        counts = {c: int((y == c).sum()) for c in set(y.tolist())}
        if len(counts) < 2 or min(counts.values()) < 2:
            out = (float("nan"), "skipped: the labels allow no stratified split with two classes")
            return out if with_note else out[0]
        x_tr, x_te, y_tr, y_te = train_test_split(z, y, test_size=0.5, stratify=y, random_state=seed)
        note = "one training class: stratified halves of the test split"
    else:
        x_te, y_te = latents(encoder, ds.x_test).numpy(), ds.y_test.numpy()
    scaler = StandardScaler().fit(x_tr)
    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(scaler.transform(x_tr), y_tr)
    accuracy = float(clf.score(scaler.transform(x_te), y_te))
    return (accuracy, note) if with_note else accuracy


@torch.no_grad()
def latent_spread(encoder: torch.nn.Module, x: torch.Tensor) -> float:
    """Mean std of f(x) over the inputs ``x``, relative to the mean |f(x)| (0 = every input encoded alike)."""
    z = latents(encoder, x)
    return float(z.std(0).mean() / z.abs().mean().clamp_min(1e-12)) if len(z) > 1 else float("nan")


#: a representation is collapsed when its spread over inputs is below this share of its magnitude
COLLAPSE_RATIO = 1e-3
#: a reconstruction no better than this share of the mean-input error has learned nothing about x
MEAN_INPUT_RATIO = 0.95


@torch.no_grad()
def diagnose(model, x: torch.Tensor) -> dict:
    """Signs that a trained pretext model collapsed, on inputs ``x``: ``spread`` = mean std of f(x) over inputs
    divided by mean |f(x)|; ``reconstruction_ratio`` = MSE of the model's reconstruction over the MSE of the
    mean input (None when the head does not reconstruct x); ``problem`` = a sentence, or "" if none."""
    spread = latent_spread(model.encoder, x)
    device = model_device(model)
    out = torch.cat([model(x[i:i + 1024].to(device)).cpu() for i in range(0, len(x), 1024)])
    ratio = None
    if out.shape == x.shape:
        base = float((x.mean(0, keepdim=True) - x).pow(2).mean())
        ratio = float((out - x).pow(2).mean()) / base if base > 0 else None
    problems = []
    if spread == spread and spread < COLLAPSE_RATIO:
        problems.append(f"its latents barely vary over inputs (spread {spread:.1e} of their magnitude)")
    if ratio is not None and ratio >= MEAN_INPUT_RATIO:
        problems.append(f"its reconstruction is no better than the mean input (MSE ratio {ratio:.2f})")
    return {"spread": spread, "reconstruction_ratio": ratio, "problem": "; ".join(problems)}


@torch.no_grad()
def reconstruction_mse(encoder: torch.nn.Module, ds: Dataset) -> tuple:
    """(test MSE of the autoencoder, test MSE of predicting the mean training input)."""
    model = encoder.pretext_model
    rec = torch.cat([model(ds.x_test[i:i + 1024]) for i in range(0, len(ds.x_test), 1024)])
    mse = float((rec - ds.x_test).pow(2).mean())
    base = float((ds.x_train.mean(0, keepdim=True) - ds.x_test).pow(2).mean())
    return mse, base
