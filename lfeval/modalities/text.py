"""Text: token ids and their attention mask packed into one float tensor laid out (2, L).

**The tensor form.** lfeval's explainers, metrics, validation, stored explanations and Quantus all pass
one numeric array per batch. A tokenised sentence is two aligned integer rows, the token ids and the
attention mask, so a batch of sentences is the float32 tensor (N, 2, L): channel 0 holds the token ids
(exact in float32 up to 2^24, far above any vocabulary) and channel 1 the mask (1 = a real token, 0 =
padding or a deleted token). Token embeddings (N, L, E) were the alternative; they were rejected because
they tie the data to one model's embedding table, are E = 384 times larger to store and to hand to Quantus,
and cannot be shown as text. The ids are discrete, so attributions are computed one step inside the model,
on the input embeddings (:class:`EmbeddingSpace`), and summed over the embedding axis per token (captum's
``LayerIntegratedGradients`` on the word embeddings, for every explainer).

**Masking unit**: the token, in both channels at once (``unit_shape`` (1, L)).

**Baseline rule** (a documented choice, :class:`TokenBaseline`): ``"delete"`` (default) removes a token:
its id becomes [PAD] and its attention 0, so the encoder no longer sees it (attention masking keeps the
other tokens' positions); ``"mask"`` replaces it by [MASK] and keeps it attended, as BERT's masked language
modelling does. Either way [CLS], [SEP] and padding are structure, not content: the baseline keeps them, so
they are never removed and their attribution is zero. Deletion is the default because it is what
"removing a word" means to a reader and what the label-free feature-consistency test (paper §4.1) measures;
a sentence with every word removed is "[CLS] [SEP]".

**Explaining through embeddings.** In the embedding space the reference of a token is the embedding of its
baseline token ([PAD] or [MASK]) while the attention mask stays the input's: the usual BERT reference
"[CLS] [PAD] ... [PAD] [SEP]" of captum's tutorials. The baseline's embedding is computed from the
baseline's own ids; captum issue #873 got all-zero attributions because its baseline went through the same
``additional_forward_args`` as the input, so input and baseline embeddings coincided. The attention mask
travels with the reference latent f(x) (one row per sample, expanded by captum together with the inputs),
so every interpolated or noisy copy of a sentence keeps its own mask, and padded positions receive exactly
zero gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidArgument, InvalidInput
from .base import Modality

BASELINE_RULES = ("delete", "mask")
#: most sentence encoders (BERT family) have 512 positions
MAX_LENGTH = 512


@dataclass(frozen=True)
class Vocabulary:
    """A tokenizer's vocabulary: ``tokens[i]`` is the string of id ``i``; the special ids the baseline keeps."""

    tokens: tuple
    pad_id: int
    mask_id: int
    special_ids: tuple = field(default=())
    name: str = ""

    def __len__(self) -> int:
        return len(self.tokens)

    def decode(self, ids) -> list:
        """Token strings of a sequence of ids (padding included)."""
        return [self.tokens[int(i)] for i in ids]


def unpack(x: torch.Tensor, vocab_size: int | None = None, name: str = "inputs") -> tuple:
    """``(ids (N, L) int64, mask (N, L) bool)`` of a packed text batch (N, 2, L), checked: integer ids in
    [0, vocab_size) and a 0/1 mask. Perturbations that add noise to the ids are refused here, loudly."""
    if x.ndim != 3 or x.shape[1] != 2:
        raise InvalidInput(f"`{name}` must be packed text (N, 2, L): token ids and attention mask, got shape "
                           f"{tuple(x.shape)}.")
    ids_f, mask_f = x[:, 0], x[:, 1]
    ids = torch.round(ids_f)
    if bool(((ids_f - ids).abs() > 1e-3).any()) or bool(((mask_f != 0) & (mask_f != 1)).any()):
        raise InvalidInput(f"`{name}` holds non-integer token ids or a mask other than 0/1: text inputs are token "
                           "ids, which noise cannot perturb. Perturb whole tokens (the modality's baseline or "
                           "lfeval.modalities.Text.perturb_input) instead.")
    if bool((ids < 0).any()) or (vocab_size is not None and bool((ids >= vocab_size).any())):
        raise InvalidInput(f"`{name}` holds token ids outside [0, {vocab_size}): tokenise with the encoder's own "
                           "tokenizer (lfeval.text.tokenize).")
    return ids.long(), mask_f > 0.5


class TokenBaseline:
    """The text baseline of a batch (N, 2, L): every content token deleted (``"delete"``: [PAD], attention 0)
    or masked (``"mask"``: [MASK], attention kept); special tokens and padding stay as they are."""

    def __init__(self, rule: str = "delete", pad_id: int = 0, mask_id: int = 103, special_ids=()):
        if rule not in BASELINE_RULES:
            raise InvalidArgument(f"`baseline` of text must be one of {BASELINE_RULES}, got {rule!r}.")
        self.rule, self.pad_id, self.mask_id = rule, int(pad_id), int(mask_id)
        self.special_ids = tuple(int(i) for i in special_ids)

    def removable(self, x: torch.Tensor) -> torch.Tensor:
        """Bool (N, L): real tokens that are not special (what the baseline removes)."""
        ids, att = x[:, 0], x[:, 1] > 0.5
        special = torch.isin(ids.round().long(), torch.as_tensor(self.special_ids, dtype=torch.long,
                                                                  device=x.device))
        return att & ~special

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        keep = ~self.removable(x)
        ids, att = x[:, 0], x[:, 1]
        if self.rule == "delete":
            b_ids = torch.where(keep, ids, torch.full_like(ids, self.pad_id))
            b_att = torch.where(keep, att, torch.zeros_like(att))
        else:
            b_ids, b_att = torch.where(keep, ids, torch.full_like(ids, self.mask_id)), att
        return torch.stack([b_ids, b_att], 1)

    def __repr__(self) -> str:
        return f"TokenBaseline({self.rule!r})"


class TokenModule(nn.Module):
    """The contract of a text encoder: two halves around the input embeddings.

    Subclasses set ``vocabulary`` (:class:`Vocabulary`) and implement :meth:`embed` (token ids -> input
    embeddings) and :meth:`forward_embeddings` (input embeddings and attention mask -> representation);
    ``forward`` on a packed batch (N, 2, L) is their composition. lfeval attributes in between
    (:class:`EmbeddingSpace`).
    """

    vocabulary: Vocabulary

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings (N, L, E) of token ids (N, L)."""
        raise NotImplementedError

    def forward_embeddings(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The representation (N, d) of input embeddings (N, L, E) under an attention mask (N, L)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = unpack(x, len(self.vocabulary))
        return self.forward_embeddings(self.embed(ids), mask)


class NormalisedTokens(TokenModule):
    """A text encoder followed by L2 normalisation, still split at the input embeddings (COCOA's encoder of
    cosine similarities, :mod:`lfeval.explain.cocoa`)."""

    def __init__(self, module: TokenModule):
        super().__init__()
        self.module, self.vocabulary = module, module.vocabulary

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.module.embed(ids)

    def forward_embeddings(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.module.forward_embeddings(embeddings, mask), dim=-1)


class TokenAuxiliaryFunction(nn.Module):
    """g(e', r) = <f(e', m), z> on input embeddings e' (N, L, E), where the reference row r = [z, m] carries the
    sample's reference latent z (d) and attention mask m (L): captum and lfeval's own samplers expand r with the
    inputs, so every copy of a sentence keeps its own mask."""

    def __init__(self, module: TokenModule, latent_dim: int):
        super().__init__()
        self.module, self.latent_dim = module, int(latent_dim)

    def forward(self, e: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        z, mask = ref[:, :self.latent_dim], ref[:, self.latent_dim:] > 0.5
        return (self.module.forward_embeddings(e, mask) * z).sum(-1)


class EmbeddingSpace:
    """Where explainers attribute a text encoder: its input embeddings (paper Eq. 3 with f read from the
    embeddings). A chunk (N, 2, L) becomes embeddings (N, L, E), their baseline embeddings and reference rows;
    the explainer's attributions (N, L, E) come back as token attributions (N, 2, L): the sum over the
    embedding axis in channel 0 (captum's convention), zero in the mask channel, and exactly zero on every
    token the baseline keeps (padding, [CLS], [SEP]: not removable, so not ranked)."""

    def __init__(self, encoder):
        if not isinstance(encoder.module, TokenModule):
            raise InvalidArgument(
                f"A text encoder's module must be an lfeval.modalities.text.TokenModule (embed + forward_embeddings), "
                f"got {type(encoder.module).__name__}; see lfeval.text.MiniLM for an example.")
        self.encoder, self.module = encoder, encoder.module

    def occlusion_window(self, shape: tuple) -> tuple:
        """captum Occlusion's window in the embedding space (L, E): one token."""
        return (1, tuple(shape)[-1])

    def feature_mask(self, e: torch.Tensor) -> torch.Tensor:
        """FeatureAblation / ShapleyValueSampling groups (1, L, E): the embedding entries of a token together."""
        n_tok = e.shape[1]
        return torch.arange(n_tok, device=e.device).view(1, n_tok, 1).repeat(1, 1, e.shape[2])

    @staticmethod
    def tokens(values: torch.Tensor, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        """Token attributions (N, 2, L) from per-position values (N, L): the values in channel 0, zero in the
        mask channel and exactly zero on every token the baseline keeps (padding, [CLS], [SEP])."""
        removable = (baseline != x).any(1)
        tokens = torch.where(removable, values, torch.zeros((), dtype=values.dtype, device=values.device))
        return torch.stack([tokens, torch.zeros_like(tokens)], 1)

    def attribute(self, explainer, x: torch.Tensor, z_ref: torch.Tensor, baseline: torch.Tensor, seed: int,
                  options: dict) -> torch.Tensor:
        ids, mask = unpack(x, len(self.module.vocabulary))
        base_ids, _ = unpack(baseline, len(self.module.vocabulary), name="baseline")
        with torch.no_grad():
            e, e_base = self.module.embed(ids), self.module.embed(base_ids)
        ref = torch.cat([z_ref, mask.to(z_ref.dtype)], 1)
        explainer.aux = TokenAuxiliaryFunction(self.module, z_ref.shape[1])
        a = explainer.attribute_batch(e, ref, e_base if explainer.uses_baseline else None, seed, **options)
        return self.tokens(a.sum(-1), x, baseline)


class Text(Modality):
    """Tokenised text laid out (2, L) (token ids, attention mask), see the module docstring.

    Parameters
    ----------
    vocabulary : Vocabulary, optional
        The tokenizer's; needed to draw tokens and to build the baseline. Default: BERT's uncased ids
        ([PAD] 0, [MASK] 103, [CLS] 101, [SEP] 102, [UNK] 100), drawn as ids.
    baseline : {"delete", "mask"}
        The baseline rule (:class:`TokenBaseline`).
    """

    name = "text"
    layout = "(2, L)"
    sample_ndim = 2
    quantus_name = "TEXT"
    architecture = "transformer"
    plot_kind = "tokens"
    continuous = False
    #: MetaQuantus input tests: a token's chance of being hit (:meth:`perturb_input`) and the centred-cosine
    #: keep thresholds (resilience keeps >= 0.9: deleting function words leaves a median of 0.98)
    meta_noise = {"resilience": 0.3, "adversary": 0.5}
    meta_thresholds = {"resilience": 0.9, "adversary": 0.8}

    def __init__(self, vocabulary: Vocabulary | None = None, baseline: str = "delete"):
        if baseline not in BASELINE_RULES:
            raise InvalidArgument(f"`baseline` of text must be one of {BASELINE_RULES}, got {baseline!r}.")
        self.vocabulary, self.baseline_rule = vocabulary, baseline
        self._function_ids = None

    def __repr__(self) -> str:
        name = self.vocabulary.name if self.vocabulary is not None else "BERT ids"
        return f"Text({name!r}, baseline={self.baseline_rule!r})"

    @property
    def value_range(self) -> tuple:
        return (0.0, float(len(self.vocabulary) - 1) if self.vocabulary is not None else math.inf)

    def _ids(self) -> tuple:
        v = self.vocabulary
        if v is None:
            return 0, 103, (100, 101, 102)
        return v.pad_id, v.mask_id, v.special_ids

    # ------------------------------------------------------------------ layout and units
    def check_sample_shape(self, shape, name="inputs"):
        shape = tuple(shape)
        if len(shape) != 2 or shape[0] != 2 or not 1 <= shape[1] <= MAX_LENGTH:
            raise InvalidInput(f"`{name}` samples have shape {shape}, but text is laid out (2, L) per sample: token "
                               f"ids and attention mask of L <= {MAX_LENGTH} positions (lfeval.text.tokenize).")

    def unit_shape(self, shape):
        return (1, tuple(shape)[-1])

    def occlusion_window(self, shape):
        return (1, tuple(shape)[-1])

    def attribution_space(self, encoder) -> EmbeddingSpace:
        return EmbeddingSpace(encoder)

    # ------------------------------------------------------------------ baseline, perturbation
    def default_baseline(self, x_train=None, shape=None):
        pad, mask, special = self._ids()
        return TokenBaseline(self.baseline_rule, pad, mask, special)

    def function_word_ids(self) -> torch.Tensor:
        """Ids of the vocabulary's function words: scikit-learn's English stop words and single punctuation marks."""
        if self.vocabulary is None:
            raise InvalidArgument("The meaning-preserving text perturbation needs the tokenizer's vocabulary: use the "
                                  "encoder's or the data set's Text modality (lfeval.text.minilm_encoder()).")
        if self._function_ids is None:
            import string

            from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

            words = set(ENGLISH_STOP_WORDS) | set(string.punctuation)
            self._function_ids = torch.tensor([i for i, t in enumerate(self.vocabulary.tokens) if t in words])
        return self._function_ids

    def perturb_input(self, x: torch.Tensor, noise: float, generator: torch.Generator,
                      adversarial: bool = False) -> torch.Tensor:
        """Token-level perturbation for the MetaQuantus input tests; each candidate token is hit with probability
        ``noise``. Resilience (meaning-preserving): a hit function word (an English stop word or a punctuation
        mark) is deleted (attention 0); content words are never touched. ([MASK] is not meaning-preserving for
        all-MiniLM-L6-v2: one [MASK] in a review leaves a median cosine of 0.82 with the original (10th percentile
        0.68), while deleting stop words and punctuation at noise 0.3 keeps a median of 0.98; benchmarks/README.md,
        Text.) Adversary: a hit content token becomes a random word piece of the vocabulary."""
        pad, mask_id, special = self._ids()
        removable = TokenBaseline("mask", pad, mask_id, special).removable(x)
        draw = torch.rand(removable.shape, generator=generator).to(x.device) < noise
        out = x.clone()
        if adversarial:
            n_vocab = len(self.vocabulary) if self.vocabulary is not None else 30522
            low = max(special) + 1 if special else 0  # BERT: ids above the special tokens are word pieces
            repl = torch.randint(low, n_vocab, removable.shape, generator=generator).to(x.device, x.dtype)
            out[:, 0] = torch.where(draw & removable, repl, x[:, 0])
        else:
            hit = draw & removable & torch.isin(x[:, 0].round().long(), self.function_word_ids().to(x.device))
            out[:, 0] = torch.where(hit, torch.full_like(x[:, 0], float(pad)), x[:, 0])
            out[:, 1] = torch.where(hit, torch.zeros_like(x[:, 1]), x[:, 1])
        return out

    # ------------------------------------------------------------------ drawing
    def tokens(self, x) -> list:
        """The strings of a sample's real tokens (ids as text without a vocabulary)."""
        x = np.asarray(x)
        ids = np.round(x[0]).astype(int)[x[1] > 0.5]
        return self.vocabulary.decode(ids) if self.vocabulary is not None else [str(i) for i in ids]

    def draw_input(self, ax, x):
        self._draw_tokens(ax, x, None)

    def draw_attribution(self, ax, a, x=None):
        if x is None:  # no tokens to show: the per-position attribution as a strip
            ax.imshow(np.abs(np.asarray(a, dtype=float))[:1], cmap="hot", aspect="auto")
            return
        self._draw_tokens(ax, x, np.asarray(a, dtype=float)[0])

    def _draw_tokens(self, ax, x, a):
        """Tokens left to right, wrapped, each on a background of its attribution (red > 0, blue < 0)."""
        x = np.asarray(x)
        real = x[1] > 0.5
        words = self.tokens(x)
        values = a[real] if a is not None else np.zeros(len(words))
        scale = max(float(np.abs(values).max()), 1e-12)
        ax.set_axis_off()
        width_in = max(ax.get_window_extent().width / ax.figure.dpi, 0.5)
        fontsize = 6
        per_char = 0.6 * fontsize / 72 / width_in  # monospace advance as a fraction of the axis width
        col, row = 0.0, 0
        for word, v in zip(words, values):
            piece = word.startswith("##")  # a WordPiece continuation joins the previous token
            text = word[2:] if piece else word
            gap = 0.0 if piece or col == 0 else per_char
            if col + gap + len(text) * per_char > 1.0 and col > 0:
                col, row, gap = 0.0, row + 1, 0.0
            col += gap
            alpha = min(1.0, abs(v) / scale)
            colour = (0.85, 0.1, 0.1, alpha) if v > 0 else (0.1, 0.3, 0.85, alpha)
            ax.text(col, 1.0 - 0.14 * row, text, transform=ax.transAxes, fontsize=fontsize, family="monospace",
                    va="top", ha="left", bbox=dict(boxstyle="square,pad=0.05", fc=colour, ec="none"))
            col += len(text) * per_char


__all__ = ["Text", "Vocabulary", "TokenBaseline", "TokenModule", "NormalisedTokens", "TokenAuxiliaryFunction",
           "EmbeddingSpace", "unpack", "BASELINE_RULES"]
