"""Encoder networks, decoders and pretext training (paper §4.2).

:func:`train_encoder` returns an :class:`lfeval.Encoder` (also exported here as ``Encoder``), the
contract that carries the modality, baseline, pretext model and checkpoints of the trained network.
"""

from ..encoder import Encoder
from .architectures import (
    ARCHITECTURES,
    ConvDecoder,
    ConvEncoder,
    EncoderNet,
    LSTMDecoder,
    LSTMEncoder,
    MLPDecoder,
    MLPEncoder,
    build_decoder,
    build_encoder,
)
from .ensemble import train_ensemble
from .pretext import PRETEXTS, PretextModel, PretextTask, make_task
from .probe import latents, probe_accuracy, reconstruction_mse
from .training import LR_SCHEDULES, scheduled_lr, train_encoder, train_encoders
from .vae import TCVAE, VAE_PRETEXTS, BetaVAE, VAEEncoder

__all__ = [
    "ARCHITECTURES", "ConvDecoder", "ConvEncoder", "Encoder", "EncoderNet", "LSTMDecoder", "LSTMEncoder",
    "MLPDecoder", "MLPEncoder", "build_decoder", "build_encoder", "PRETEXTS", "PretextModel", "PretextTask",
    "make_task", "latents", "probe_accuracy", "reconstruction_mse", "train_encoder", "train_encoders", "train_ensemble",
    "BetaVAE", "TCVAE", "VAEEncoder", "VAE_PRETEXTS", "LR_SCHEDULES", "scheduled_lr",
]
