"""Inversion of cut activations: a curious server decodes a client's tokens from what the client sends.

The attacker knows the public pretrained model but not the clients' adapters. It runs public text through the
pretrained layers below the cut, releases those activations as a client would (the same protection, if any, and
the same cut codec: the mechanism is public, only its noise is secret), and fits a ridge regression from a
position's activation (H values) to the input embedding of the token at that position. Applied to the victim's
real activations, each prediction is matched to the nearest row of the embedding table (all non-special
tokens), so tokens never seen in the public text can be recovered too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fleettune.compression import decode_cut, encode_cut
from fleettune.data import Batch
from fleettune.messages import CutWire
from fleettune.models.layout import StackLayout
from fleettune.models.shells import get_layers
from fleettune.privacy.activations import protect_activations

RIDGE = 1e-3  # L2 penalty relative to the mean variance of an activation coordinate
CHUNK = 1024  # rows matched against the embedding table at once (bounds the distance matrix's memory)


class _ReachedCut(Exception):
    """Stops a forward pass at the cut: the layers above it are not needed."""


@dataclass(frozen=True)
class CutModel:
    """A task model (with or without LoRA) read up to a cut: what a client stage ending there would send."""

    model: nn.Module
    layout: StackLayout

    def activations(self, cut: int, batch: Batch) -> torch.Tensor:
        """The (B, T, H) output of layer `cut` - 1, as float32."""
        layer = get_layers(self.model, self.layout.layers)[cut - 1]
        captured: list[torch.Tensor] = []

        def keep(module: nn.Module, args: object, output: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _ReachedCut

        handle = layer.register_forward_hook(keep)
        try:
            with torch.no_grad():
                self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        except _ReachedCut:
            pass
        finally:
            handle.remove()
        return captured[0].detach().float()


@dataclass(frozen=True)
class Release:
    """How cut activations leave a client: optional clipping and noise, then the run's cut codec."""

    wire: CutWire
    clip: float | None = None  # protection's per-sample L2 bound; None: unprotected
    noise_multiplier: float = 0.0

    @property
    def protected(self) -> bool:
        return self.clip is not None

    def __call__(self, hidden: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.clip is not None:
            hidden = protect_activations(hidden, attention_mask, self.clip, self.noise_multiplier, generator)
        return decode_cut(*encode_cut(hidden, attention_mask, self.wire.activations, self.wire.unpad))


def real_tokens(batch: Batch, special_ids: Sequence[int]) -> torch.Tensor:
    """(B, T) boolean mask of the positions holding a real (non-pad, non-special) token."""
    special = torch.isin(batch.input_ids, torch.tensor(list(special_ids), dtype=batch.input_ids.dtype))
    return (batch.attention_mask != 0) & ~special


@dataclass(frozen=True)
class TokenDecoder:
    """Activation -> predicted embedding (an affine map) -> id of the nearest candidate embedding."""

    weight: torch.Tensor  # (H, E)
    x_mean: torch.Tensor  # (H,)
    y_mean: torch.Tensor  # (E,)
    candidates: torch.Tensor  # (V, E) embedding rows that may be predicted
    candidate_ids: torch.Tensor  # (V,) their token ids

    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        """Token ids for (n, H) activations."""
        squares = (self.candidates**2).sum(dim=1)
        out = []
        for start in range(0, hidden.shape[0], CHUNK):
            guess = (hidden[start : start + CHUNK].double() - self.x_mean) @ self.weight + self.y_mean
            # argmin |g - e|^2 = argmin |e|^2 - 2 g.e (|g|^2 is the same for every candidate)
            distances = squares - 2 * guess.float() @ self.candidates.T
            out.append(self.candidate_ids[distances.argmin(dim=1)])
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def fit_decoder(
    pairs: Iterable[tuple[torch.Tensor, torch.Tensor]],
    embeddings: torch.Tensor,
    candidate_ids: torch.Tensor,
    ridge: float = RIDGE,
) -> TokenDecoder:
    """Ridge regression from (n, H) activations to the embeddings of their (n,) token ids, from running sums
    (so the public activations never need to be held at once)."""
    table = embeddings.detach().double()
    count = 0
    sums: list[torch.Tensor] | None = None  # of x, y, x x^T and x y^T
    for hidden, ids in pairs:
        x, y = hidden.double(), table[ids]
        count += x.shape[0]
        parts = [x.sum(0), y.sum(0), x.T @ x, x.T @ y]
        sums = parts if sums is None else [a + b for a, b in zip(sums, parts, strict=True)]
    if sums is None or count == 0:
        raise ValueError("the attacker needs at least one public token to fit its decoder")
    sum_x, sum_y, sum_xx, sum_xy = sums
    x_mean, y_mean = sum_x / count, sum_y / count
    cov_xx = sum_xx - count * torch.outer(x_mean, x_mean)
    cov_xy = sum_xy - count * torch.outer(x_mean, y_mean)
    width = cov_xx.shape[0]
    penalty = max(ridge * float(cov_xx.trace()) / width, 1e-12)
    weight = torch.linalg.solve(cov_xx + penalty * torch.eye(width, dtype=cov_xx.dtype), cov_xy)
    return TokenDecoder(weight, x_mean, y_mean, embeddings.detach().float()[candidate_ids], candidate_ids)


@dataclass(frozen=True)
class InversionResult:
    token_recovery: float  # real victim tokens recovered exactly
    tokens: int  # real victim tokens attacked
    chance: float  # recovery of always guessing the public text's most frequent token
    public_tokens: int  # tokens the attacker's decoder was fitted on
    cut_layer: int
    protected: bool
    clip: float | None
    noise_multiplier: float

    def to_dict(self) -> dict[str, object]:
        return {
            "token_recovery": self.token_recovery,
            "tokens": self.tokens,
            "chance": self.chance,
            "public_tokens": self.public_tokens,
            "cut_layer": self.cut_layer,
            "protected": self.protected,
            "clip": self.clip,
            "noise_multiplier": self.noise_multiplier,
        }


def invert(
    victim: CutModel,
    public: CutModel,
    embeddings: torch.Tensor,
    cut: int,
    victim_batches: Iterable[Batch],
    public_batches: Iterable[Batch],
    release: Release,
    special_ids: Sequence[int],
    seed: int = 0,
) -> InversionResult:
    """Fit the attacker on `public_batches` through the public model's layers below `cut`, then decode the
    victim model's released activations of `victim_batches`; `embeddings` is the public model's token table."""
    attacker_noise, victim_noise = (torch.Generator().manual_seed(seed + i) for i in (1, 2))
    counts: dict[int, int] = {}

    def public_pairs() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for batch in public_batches:
            hidden = release(public.activations(cut, batch), batch.attention_mask, attacker_noise)
            keep = real_tokens(batch, special_ids)
            for token in batch.input_ids[keep].tolist():
                counts[token] = counts.get(token, 0) + 1
            yield hidden[keep], batch.input_ids[keep]

    vocabulary = torch.arange(embeddings.shape[0])
    candidates = vocabulary[~torch.isin(vocabulary, torch.tensor(list(special_ids), dtype=vocabulary.dtype))]
    decoder = fit_decoder(public_pairs(), embeddings, candidates)
    hits = total = frequent_hits = 0
    frequent = max(counts, key=lambda t: counts[t])
    for batch in victim_batches:
        hidden = release(victim.activations(cut, batch), batch.attention_mask, victim_noise)
        keep = real_tokens(batch, special_ids)
        truth = batch.input_ids[keep]
        hits += int((decoder.predict(hidden[keep]) == truth).sum())
        frequent_hits += int((truth == frequent).sum())
        total += int(truth.numel())
    return InversionResult(
        token_recovery=hits / total if total else 0.0,
        tokens=total,
        chance=frequent_hits / total if total else 0.0,
        public_tokens=sum(counts.values()),
        cut_layer=cut,
        protected=release.protected,
        clip=release.clip,
        noise_multiplier=release.noise_multiplier,
    )
