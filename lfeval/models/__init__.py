"""Encoders, decoders and pretext training (paper §4.2)."""

from .architectures import (
    ConvDecoder,
    ConvEncoder,
    Encoder,
    LSTMDecoder,
    LSTMEncoder,
    MLPDecoder,
    MLPEncoder,
    build_decoder,
    build_encoder,
)
from .pretext import PRETEXTS, PretextModel, PretextTask, make_task
from .probe import latents, probe_accuracy, reconstruction_mse
from .training import train_encoder, train_encoders
from .vae import TCVAE, VAE_PRETEXTS, BetaVAE, VAEEncoder

__all__ = [
    "ConvDecoder", "ConvEncoder", "Encoder", "LSTMDecoder", "LSTMEncoder", "MLPDecoder", "MLPEncoder",
    "build_decoder", "build_encoder", "PRETEXTS", "PretextModel", "PretextTask", "make_task",
    "latents", "probe_accuracy", "reconstruction_mse", "train_encoder", "train_encoders",
    "BetaVAE", "TCVAE", "VAEEncoder", "VAE_PRETEXTS",
]
