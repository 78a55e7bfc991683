"""A tiny Vision-Language-Action transformer in plain torch.

Sequence (prefix-LM): ``[image patches (G*G), language, proprio | BOS, t_1, ..., t_{N-1}]``;
the prefix attends bidirectionally, action positions causally; position ``P + i`` predicts
action token ``t_{i+1}``. Decoding is autoregressive with a key/value cache: the prefix is
encoded once, then one token per step.

Linear layers inside the transformer are named ``q_proj, k_proj, v_proj, o_proj, fc1, fc2`` so
that peft LoRA can target them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

from apo.models.language import LANG_DIM


@dataclass(frozen=True)
class VLAConfig:
    """Network shape. ``image_size``, ``proprio_dim``, ``vocab_size`` and ``num_action_tokens`` are
    derived from the data and the tokenizer when a policy is built (hidden from the CLI)."""

    image_size: Annotated[int, tyro.conf.Suppress] = 64
    """Input image side in pixels."""
    d_model: int = 128
    """Transformer width."""
    n_layers: int = 4
    """Transformer blocks."""
    n_heads: int = 4
    """Attention heads."""
    mlp_ratio: int = 4
    """MLP hidden width / d_model."""
    dropout: float = 0.0
    """Dropout in attention output and MLP (costly on the CPU; random-shift augmentation regularizes instead)."""
    image_grid: int = 4
    """The conv feature map is pooled to image_grid x image_grid patch tokens (at most image side / 16:
    4 for 64 px images, 6 for 96 px)."""
    proprio_dim: Annotated[int, tyro.conf.Suppress] = 4
    """Proprioceptive state size."""
    vocab_size: Annotated[int, tyro.conf.Suppress] = 256
    """Action token vocabulary (from the tokenizer); BOS is added as id vocab_size."""
    num_action_tokens: Annotated[int, tyro.conf.Suppress] = 4
    """Action tokens per prediction (from the tokenizer: horizon x action_dim for bins, the padded length for FAST)."""

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.image_size < 16 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and >= 16, got {self.image_size}")
        if self.image_grid < 1:  # its upper bound depends on the data's image size: checked in TinyVLA
            raise ValueError(f"image_grid must be >= 1, got {self.image_grid}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def prefix_len(self) -> int:
        return self.image_grid**2 + 2


class ImageEncoder(nn.Module):
    def __init__(self, d: int, grid: int):
        super().__init__()
        chans = [3, 32, 64, 128, d]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(8, cout), nn.GELU()]
        self.net = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 or float (B, H, W, 3) in [0, 255] -> (B, grid*grid, d)."""
        x = images.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        x = self.pool(self.net(x))
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.o_proj = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        return x.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)

    def forward(self, x, mask=None, cache: dict | None = None):
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        B, H, L, Dh = out.shape
        return self.drop(self.o_proj(out.transpose(1, 2).reshape(B, L, H * Dh)))


class Block(nn.Module):
    def __init__(self, cfg: VLAConfig):
        super().__init__()
        d = cfg.d_model
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, cfg.n_heads, cfg.dropout)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.mlp_ratio * d)
        self.fc2 = nn.Linear(cfg.mlp_ratio * d, d)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mask=None, cache=None):
        x = x + self.attn(self.ln1(x), mask, cache)
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.ln2(x)))))


class TinyVLA(nn.Module):
    def __init__(self, cfg: VLAConfig):
        super().__init__()
        if cfg.image_grid > cfg.image_size // 16:  # the conv stack downsamples 16x: a finer grid only repeats features
            raise ValueError(f"image_grid {cfg.image_grid} is finer than the {cfg.image_size // 16}x{cfg.image_size // 16} "
                             f"feature map of {cfg.image_size} px images: use --recipe.model.image-grid "
                             f"{cfg.image_size // 16} or less, or record larger images (--env.image-size)")
        self.cfg = cfg
        d = cfg.d_model
        self.image_encoder = ImageEncoder(d, cfg.image_grid)
        self.lang_proj = nn.Linear(LANG_DIM, d)
        self.proprio_proj = nn.Linear(cfg.proprio_dim, d)
        self.token_emb = nn.Embedding(cfg.vocab_size + 1, d)  # + BOS
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.prefix_len + cfg.num_action_tokens, d))
        nn.init.normal_(self.pos_emb, std=0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.vocab_size)
        self.register_buffer("proprio_mean", torch.zeros(cfg.proprio_dim))
        self.register_buffer("proprio_std", torch.ones(cfg.proprio_dim))
        P, N = cfg.prefix_len, cfg.num_action_tokens
        mask = torch.ones(P + N, P + N, dtype=torch.bool).tril()
        mask[:P, :P] = True  # bidirectional prefix
        self.register_buffer("attn_mask", mask, persistent=False)

    @property
    def bos_id(self) -> int:
        return self.cfg.vocab_size

    def check_inputs(self, images: torch.Tensor, lang: torch.Tensor, proprio: torch.Tensor) -> None:
        c = self.cfg
        B = images.shape[0]
        if images.shape[1:] != (c.image_size, c.image_size, 3):
            raise ValueError(f"images must be (B, {c.image_size}, {c.image_size}, 3), got {tuple(images.shape)}")
        if lang.shape != (B, LANG_DIM):
            raise ValueError(f"language embeddings must be (B, {LANG_DIM}), got {tuple(lang.shape)}")
        if proprio.shape != (B, c.proprio_dim):
            raise ValueError(f"proprio must be (B, {c.proprio_dim}), got {tuple(proprio.shape)}")

    def embed_prefix(self, images, lang, proprio) -> torch.Tensor:
        self.check_inputs(images, lang, proprio)
        p = (proprio.float() - self.proprio_mean) / self.proprio_std
        x = torch.cat(
            [self.image_encoder(images), self.lang_proj(lang.float())[:, None], self.proprio_proj(p)[:, None]], dim=1
        )
        return x + self.pos_emb[:, : self.cfg.prefix_len]

    def _embed_actions(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        P = self.cfg.prefix_len
        return self.token_emb(tokens) + self.pos_emb[:, P + start : P + start + tokens.shape[1]]

    def forward(self, images, lang, proprio, tokens) -> torch.Tensor:
        """Teacher-forced logits (B, N, vocab) for action tokens (B, N)."""
        return self.forward_from_prefix(self.embed_prefix(images, lang, proprio), tokens)

    def forward_from_prefix(self, prefix: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Like ``forward`` for an already embedded prefix (B, P, d): scoring several token
        sequences for the same observations encodes the images once."""
        N = self.cfg.num_action_tokens
        if tokens.shape[1:] != (N,) or tokens.shape[0] != prefix.shape[0]:
            raise ValueError(f"action tokens must be (B, {N}) with B = {prefix.shape[0]}, got {tuple(tokens.shape)}")
        B = tokens.shape[0]
        bos = torch.full((B, 1), self.bos_id, dtype=torch.long, device=tokens.device)
        inp = torch.cat([bos, tokens[:, :-1]], dim=1)
        x = torch.cat([prefix, self._embed_actions(inp, 0)], dim=1)
        for blk in self.blocks:
            x = blk(x, self.attn_mask)
        P = self.cfg.prefix_len
        return self.head(self.ln_f(x[:, P:]))

    def log_prob(self, images, lang, proprio, tokens) -> torch.Tensor:
        """Per-token log pi(t_i | o, t_<i), shape (B, N)."""
        logits = self.forward(images, lang, proprio, tokens)
        return torch.log_softmax(logits.float(), -1).gather(-1, tokens[..., None]).squeeze(-1)

    @torch.no_grad()
    def generate(self, images, lang, proprio, use_cache: bool = True, temperature: float = 0.0,
                 generator: torch.Generator | None = None,
                 allowed: Callable[[torch.Tensor], torch.Tensor | None] | None = None,
                 pad_id: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode N action tokens; returns (tokens (B, N), per-token entropy (B, N)).
        ``temperature == 0`` is greedy. ``allowed(prefix (B, i)) -> bool (B, vocab) or None`` restricts
        each next token (the tokenizer's ``next_token_mask``); entropies are those of the restricted
        distribution. Once only ``pad_id`` is allowed for every sequence, the rest is filled with it
        (entropy 0) without running the model."""
        N, P = self.cfg.num_action_tokens, self.cfg.prefix_len
        B = images.shape[0]
        prefix = self.embed_prefix(images, lang, proprio)
        out = torch.empty(B, N, dtype=torch.long, device=prefix.device)
        ent = torch.empty(B, N, device=prefix.device)
        bos = torch.full((B, 1), self.bos_id, dtype=torch.long, device=prefix.device)
        caches = [dict() for _ in self.blocks] if use_cache else None
        seq = torch.cat([prefix, self._embed_actions(bos, 0)], 1)
        x = seq
        for i in range(N):
            ok = allowed(out[:, :i]) if allowed is not None else None
            if ok is not None and pad_id is not None and bool((ok.sum(-1) == 1).all() and ok[:, pad_id].all()):
                out[:, i:] = pad_id
                ent[:, i:] = 0.0
                break
            L = P + 1 + i
            if use_cache:
                mask = self.attn_mask[L - x.shape[1] : L, :L]
                for blk, c in zip(self.blocks, caches):
                    x = blk(x, mask, c)
            else:
                x = seq
                for blk in self.blocks:
                    x = blk(x, self.attn_mask[:L, :L])
            logits = self.head(self.ln_f(x[:, -1])).float()
            if ok is not None:
                logits = logits.masked_fill(~ok, float("-inf"))
            logp = torch.log_softmax(logits, -1)
            ent[:, i] = -torch.where(logp.isfinite(), logp.exp() * logp, torch.zeros_like(logp)).sum(-1)
            if temperature > 0:
                tok = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)[:, 0]
            else:
                tok = logits.argmax(-1)
            out[:, i] = tok
            if i + 1 < N:
                nxt = self._embed_actions(tok[:, None], i + 1)
                seq = torch.cat([seq, nxt], 1)
                x = nxt
        return out, ent
