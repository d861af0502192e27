"""Shared fixtures: the real digits data and real encoders trained once per session (cached on disk)."""

from __future__ import annotations

from pathlib import Path

import pytest

import lfeval

CACHE = Path(__file__).resolve().parent.parent / ".lfeval-cache" / "tests"
#: user plugins that register themselves on import: loaded by the tests that use them, not by collection
collect_ignore_glob = ["extensions/*"]


@pytest.fixture(scope="session", autouse=True)
def _threads():
    """The session's intra-op threads, chosen as ``lfeval run`` does for digits-sized encoders (one thread
    unless the work were larger; ``LFEVAL_THREADS`` overrides); the previous setting returns afterwards."""
    net = lfeval.models.build_encoder("image", (1, 8, 8), 8)
    with lfeval.threads.limit("auto", work=lfeval.threads.work_of(net, (1, 8, 8), batch=128)):
        yield


@pytest.fixture(scope="session")
def encoder_cache() -> Path:
    """The weight cache of the session's encoders (reuse it to skip training)."""
    return CACHE


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits, (N, 1, 8, 8), seed-0 stratified split (1257 train / 540 test)."""
    return lfeval.data.load("digits", seed=0)


@pytest.fixture(scope="session")
def encoders(digits):
    """One trained encoder per pretext task on digits, latent_dim=8, seed 0, 3 TracIn checkpoints."""
    return {
        p: lfeval.models.train_encoder(
            digits, pretext=p, latent_dim=8, seed=0, checkpoints=3, cache_dir=CACHE, display_progressbar=False
        )
        for p in lfeval.models.PRETEXTS
    }


@pytest.fixture(scope="session")
def ae(encoders):
    """The reconstruction autoencoder's encoder (eval mode)."""
    return encoders["reconstruction"]
