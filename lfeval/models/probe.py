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


def probe_accuracy(encoder: torch.nn.Module, ds: Dataset, seed: int = 0) -> float:
    """Test accuracy of a logistic-regression probe fitted on standardised train latents."""
    scaler = StandardScaler().fit(latents(encoder, ds.x_train).numpy())
    clf = LogisticRegression(max_iter=2000, random_state=seed)
    clf.fit(scaler.transform(latents(encoder, ds.x_train).numpy()), ds.y_train.numpy())
    return float(clf.score(scaler.transform(latents(encoder, ds.x_test).numpy()), ds.y_test.numpy()))


@torch.no_grad()
def reconstruction_mse(encoder: torch.nn.Module, ds: Dataset) -> tuple:
    """(test MSE of the autoencoder, test MSE of predicting the mean training input)."""
    model = encoder.pretext_model
    rec = torch.cat([model(ds.x_test[i:i + 1024]) for i in range(0, len(ds.x_test), 1024)])
    mse = float((rec - ds.x_test).pow(2).mean())
    base = float((ds.x_train.mean(0, keepdim=True) - ds.x_test).pow(2).mean())
    return mse, base
