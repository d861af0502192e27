"""Encoder/decoder architectures: a CNN for images, an MLP for tabular data, an LSTM for time series.

Every encoder maps a batch (N, *input_shape) to latents (N, latent_dim); every decoder maps
latents back to (N, *input_shape) in [0, 1] (sigmoid output, as the data are scaled into [0, 1]).
The image CNN follows the paper's MNIST encoder (strided 3x3 convolutions, then two linear
layers; Crabbé & van der Schaar 2022, App. B) and adapts its depth to 8x8, 28x28 and 32x32 inputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InvalidArgument
from ..modalities import get_modality


class EncoderNet(nn.Module):
    """Base class of lfeval's encoder networks: each knows its input shape and latent size.

    :func:`lfeval.models.train_encoder` wraps the trained network in an :class:`lfeval.Encoder`, which
    carries the modality, baseline, pretext model and checkpoints.
    """

    def __init__(self, input_shape: tuple, latent_dim: int):
        super().__init__()
        if int(latent_dim) < 1:
            raise InvalidArgument(f"`latent_dim` must be >= 1, got {latent_dim}.")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.latent_dim = int(latent_dim)

    def mirrored(self) -> "EncoderNet":
        """The network a decoder mirrors (a VAE's decoder mirrors its base network)."""
        return self


def _down_sizes(size: int) -> list:
    """Spatial sizes along the strided stages: downsample until the map is <= 8 (at least once)."""
    n_down = max(1, math.ceil(math.log2(size / 8))) if size > 8 else 1
    sizes = [size]
    for _ in range(n_down):
        sizes.append((sizes[-1] + 1) // 2)  # conv k=3, s=2, p=1
    return sizes


class ConvEncoder(EncoderNet):
    """CNN encoder for images (N, C, H, W) with H = W in {8, 28, 32, ...}."""

    def __init__(self, input_shape: tuple, latent_dim: int, width: int = 16, hidden: int = 128):
        super().__init__(input_shape, latent_dim)
        c, h, w = self.input_shape
        if h != w:
            raise InvalidArgument(f"ConvEncoder needs square images, got input_shape={input_shape}.")
        self.sizes = _down_sizes(h)
        chans = [width * 2**i for i in range(len(self.sizes))]
        layers = [nn.Conv2d(c, chans[0], 3, padding=1), nn.ReLU()]
        for i in range(1, len(self.sizes)):
            layers += [nn.Conv2d(chans[i - 1], chans[i], 3, stride=2, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.channels = chans
        flat = chans[-1] * self.sizes[-1] ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class NearestUpsample(nn.Module):
    """Nearest-neighbour upsampling of (N, C, H, W) to (size, size): ``nn.Upsample(size, mode="nearest")``, computed
    as a broadcast when ``size`` is a multiple of H, W. The same output; its gradient is a sum over each 2x2 (kxk)
    block, where CUDA's nearest-upsampling backward (atomic adds) took 27% of a batched MNIST autoencoder step on
    an H200 (benchmarks/bench_ensemble.py)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.size % h or self.size % w:
            return nn.functional.interpolate(x, size=(self.size, self.size), mode="nearest")
        fh, fw = self.size // h, self.size // w
        return x[:, :, :, None, :, None].expand(n, c, h, fh, w, fw).reshape(n, c, self.size, self.size)


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: latents -> images in [0, 1]."""

    def __init__(self, encoder: ConvEncoder, hidden: int = 128):
        super().__init__()
        self.output_shape = encoder.input_shape
        sizes, chans = encoder.sizes, encoder.channels
        self.start = (chans[-1], sizes[-1], sizes[-1])
        self.fc = nn.Sequential(
            nn.Linear(encoder.latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, chans[-1] * sizes[-1] ** 2), nn.ReLU()
        )
        layers = []
        for i in range(len(sizes) - 1, 0, -1):
            layers += [NearestUpsample(sizes[i - 1]),
                       nn.Conv2d(chans[i], chans[i - 1], 3, padding=1), nn.ReLU()]
        layers += [nn.Conv2d(chans[0], self.output_shape[0], 3, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, *self.start))


class MLPEncoder(EncoderNet):
    """MLP encoder for tabular data (N, 1, D)."""

    def __init__(self, input_shape: tuple, latent_dim: int, hidden: tuple = (64, 32)):
        super().__init__(input_shape, latent_dim)
        dims = [math.prod(self.input_shape), *hidden]
        layers = [nn.Flatten()]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], latent_dim))
        self.net = nn.Sequential(*layers)
        self.hidden = tuple(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLPDecoder(nn.Module):
    """Mirror of :class:`MLPEncoder`: latents -> (N, 1, D) in [0, 1]."""

    def __init__(self, encoder: MLPEncoder):
        super().__init__()
        self.output_shape = encoder.input_shape
        dims = [encoder.latent_dim, *reversed(encoder.hidden)]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers += [nn.Linear(dims[-1], math.prod(self.output_shape)), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.output_shape)


class LSTMEncoder(EncoderNet):
    """Recurrent encoder for time series (N, C, T), after the paper's ECG autoencoder (lfxai's
    RecurrentAutoencoder, Crabbé & van der Schaar 2022, App. B), made bidirectional: the final states of a
    forward and a backward LSTM over time, projected to the latent space.

    With the paper's one-directional last state, the latent collapsed on real UCR data (its std fell to
    1e-4 and the reconstruction stayed 3.7x worse than the mean series on GunPoint): the last state of a
    150-step LSTM carries almost no gradient back to the early steps. Reading the series from both ends
    fixes that (benchmarks/README.md, time series).
    """

    def __init__(self, input_shape: tuple, latent_dim: int, hidden: int = 64):
        super().__init__(input_shape, latent_dim)
        self.lstm = nn.LSTM(self.input_shape[0], hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, latent_dim)
        self.hidden = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x.transpose(1, 2))  # (N, C, T) -> T steps of C features
        return self.proj(torch.cat([h[-2], h[-1]], dim=1))


class LSTMDecoder(nn.Module):
    """Latents -> (N, C, T) in [0, 1]: an LSTM whose initial state is computed from the latent and whose input
    at each step is the latent and the step's position (sin/cos of t/T); a linear read-out per step. The
    paper's decoder repeats the latent as the only input, and then settles on the mean series."""

    def __init__(self, encoder: LSTMEncoder):
        super().__init__()
        self.output_shape = encoder.input_shape
        c, t = self.output_shape
        pos = torch.arange(t, dtype=torch.float32) / t * 2 * math.pi
        self.register_buffer("position", torch.stack([torch.sin(pos), torch.cos(pos), torch.sin(2 * pos),
                                                      torch.cos(2 * pos)], dim=1))
        self.init = nn.Linear(encoder.latent_dim, 2 * encoder.hidden)
        self.lstm = nn.LSTM(encoder.latent_dim + 4, encoder.hidden, batch_first=True)
        self.out = nn.Sequential(nn.Linear(encoder.hidden, c), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h0, c0 = torch.tanh(self.init(z)).unsqueeze(0).chunk(2, dim=2)
        steps = torch.cat([z.unsqueeze(1).expand(-1, self.position.shape[0], -1),
                           self.position.unsqueeze(0).expand(len(z), -1, -1)], dim=2)
        y, _ = self.lstm(steps, (h0.contiguous(), c0.contiguous()))
        return self.out(y).transpose(1, 2)


#: encoder family (a modality's ``architecture``) -> (encoder network, mirroring decoder)
ARCHITECTURES = {"conv": (ConvEncoder, ConvDecoder), "mlp": (MLPEncoder, MLPDecoder),
                 "lstm": (LSTMEncoder, LSTMDecoder)}


def build_encoder(modality, input_shape: tuple, latent_dim: int) -> EncoderNet:
    """The encoder network of a modality's architecture family (conv for images, MLP for tabular
    rows, LSTM for time series)."""
    family = get_modality(modality).architecture
    if family not in ARCHITECTURES:
        raise InvalidArgument(f"No encoder architecture {family!r}; known: {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[family][0](input_shape, latent_dim)


def build_decoder(encoder: EncoderNet) -> nn.Module:
    """The decoder that mirrors ``encoder``."""
    net = encoder.mirrored()
    decoder = next(dec for enc, dec in ARCHITECTURES.values() if type(net) is enc)
    return decoder(encoder)
