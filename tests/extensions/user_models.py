"""Encoders a user brings to ``lfeval run`` (named by tests/test_user_encoders.py as factories)."""

import torch
from torch import nn


def small_cnn(latent: int = 8, seed: int = 0) -> nn.Module:
    """A small CNN for 1x8x8 images, seeded (a user's architecture, not one of lfeval's)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, latent))


def flat_mlp(latent: int = 6, seed: int = 1) -> nn.Module:
    """An MLP on flattened 1x8x8 images (exported and scripted by the tests)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, latent))


def l2_loss(forward, x, y, extra=None):
    """A user's per-example loss for TracIn / influence: the squared norm of the representation."""
    return forward(x).pow(2).sum(-1)
