"""FAST action tokenizer (Pertsch et al. 2025, as used by pi0-FAST): DCT along time, quantization, BPE.

Contract
--------
* Input: float actions ``(..., H, D)`` as for the bin tokenizer. Output of ``encode``: int64 tokens
  ``(..., num_tokens)``, a variable number of real tokens followed by padding.
* Normalization: as the bin tokenizer (``[q01, q99] -> [-1, 1]`` per dimension, clipped; the gripper
  dimension keeps its native ``[-1, 1]``).
* Transform: ``c = dct(x, axis=time, norm="ortho")`` per dimension (``scipy.fft``), then
  ``q = round(scale * c)``. With ``|x| <= 1`` every coefficient satisfies ``|c| <= sqrt(2H)``, so ``q``
  lies in ``[-qmax, qmax]`` with ``qmax = ceil(scale * sqrt(2H))``; each integer is one symbol of the
  BPE alphabet (all ``2 qmax + 1`` of them are in the vocabulary, so any chunk can be encoded).
* Order: frequency-major (all dimensions' lowest-frequency coefficient first), as in FAST. The gripper
  dimension (``gripper_dim``) is taken out and encoded as its own final segment:
  ``[arm tokens] <grip> [gripper tokens] <eos> <pad> ...``. BPE never merges across the two segments,
  so the gripper tokens are exactly the tokens after ``<grip>`` (see ``gripper_token_mask``). With
  ``gripper_dim=None`` there is one segment and no ``<grip>`` token.
* BPE: HF ``tokenizers`` BPE trained on the dataset's coefficient strings (``fit``), vocabulary =
  ``<pad>, <eos>[, <grip>]`` + the alphabet + merges.
* Length: ``num_tokens = H * D + 1 (+ 1 with a gripper segment)``, the worst case (no merge applies), so
  encoding never truncates; ``token_mask`` marks the real tokens (up to and including ``<eos>``).
* Decoding reads up to the first ``<eos>``. A sequence is malformed if it has no ``<eos>``, padding
  before it, not exactly one ``<grip>`` (with a gripper segment) or a segment that does not expand to
  exactly ``H`` coefficients per dimension; ``decode`` returns a NaN chunk for it (``errors="raise"``
  raises instead, naming the problem). APO then gives the sample adaptive weight 1.
* ``next_token_mask`` lets a decoder produce only well-formed sequences (the policy always uses it).
* Error bound: the inverse DCT is orthonormal, so for in-range values
  ``|decode(encode(a)) - a| <= 0.5 sqrt(H) / scale`` in normalized units at every step, and the RMS
  over the chunk is ``<= 0.5 / scale``; ``max_error()`` gives the former in raw units per dimension.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.fft import dct, idct

from apo.tokenizers.base import TOKENIZERS, ActionTokenizer, action_ranges, check_actions

# HF tokenizers parallelizes with a thread pool that must not be inherited by forked processes
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PAD, EOS, GRIP = "<pad>", "<eos>", "<grip>"
_SYMBOL_BASE = 0x4E00  # the coefficient alphabet: consecutive CJK ideographs (single, printable code points)
_MAX_SYMBOLS = 20000


@dataclass(frozen=True)
class FASTConfig:
    """Settings of the FAST tokenizer that are fitted on a dataset."""

    scale: float = 10.0
    """DCT coefficients are multiplied by this and rounded (larger: smaller error, more tokens)."""
    vocab_size: int = 512
    """Target BPE vocabulary (special tokens + coefficient alphabet + merges); the fitted one can be smaller."""
    min_frequency: int = 2
    """A pair of tokens is merged only if it occurs at least this often in the fitting data."""
    gripper_dim: int | None = 3
    """Action dimension encoded as a separate final segment (its tokens can be left out of APO's
    undesirable reward); None: one segment for all dimensions."""

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"scale must be a positive number, got {self.scale}")
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {self.min_frequency}")
        if self.vocab_size < 4:
            raise ValueError(f"vocab_size must be >= 4, got {self.vocab_size}")
        if self.gripper_dim is not None and self.gripper_dim < 0:
            raise ValueError(f"gripper_dim must be >= 0 or None, got {self.gripper_dim}")


def coefficient_bound(horizon: int, scale: float) -> int:
    """qmax: every quantized coefficient of a chunk in [-1, 1] lies in [-qmax, qmax]."""
    return int(math.ceil(scale * math.sqrt(2 * horizon)))


@TOKENIZERS.register("fast")
class FASTActionTokenizer(ActionTokenizer):
    kind = "fast"

    def __init__(
        self,
        q01: list[float] | np.ndarray,
        q99: list[float] | np.ndarray,
        horizon: int,
        bpe: str,
        scale: float = 10.0,
        gripper_dim: int | None = 3,
        min_range: float = 1e-4,
    ):
        """``bpe`` is the fitted HF tokenizer as a JSON string (``fit`` makes one)."""
        from tokenizers import Tokenizer

        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a positive number, got {scale}")
        self.q01, self.q99, self.lo, self.hi = action_ranges(q01, q99, gripper_dim, min_range)
        self.action_dim = int(self.q01.size)
        if gripper_dim is not None and self.action_dim < 2:
            raise ValueError("a separate gripper segment needs at least 2 action dimensions; pass gripper_dim=None")
        self.horizon = int(horizon)
        self.scale = float(scale)
        self.gripper_dim = gripper_dim
        self.min_range = float(min_range)
        self.qmax = coefficient_bound(self.horizon, self.scale)
        self.arm_dims = [d for d in range(self.action_dim) if d != gripper_dim]
        try:
            self._bpe = Tokenizer.from_str(bpe)
        except Exception as e:  # the Rust side raises its own exception type
            raise ValueError(f"the BPE model of the FAST tokenizer is corrupt ({e}); refit it with `apo fit-tokenizer`") from e
        self._bpe_json = bpe
        specials = [PAD, EOS] + ([GRIP] if gripper_dim is not None else [])
        ids = {s: self._bpe.token_to_id(s) for s in specials}
        if any(i is None for i in ids.values()):
            raise ValueError(f"the BPE vocabulary lacks special tokens {specials}; refit it with `apo fit-tokenizer`")
        self.pad_id, self.eos_id = ids[PAD], ids[EOS]
        self.grip_id = ids.get(GRIP)
        # id -> the coefficient symbols it stands for (specials: none)
        V = self._bpe.get_vocab_size()
        self._symbols: list[np.ndarray] = []
        for i in range(V):
            s = self._bpe.id_to_token(i)
            if s in specials:
                self._symbols.append(np.zeros(0, np.int64))
                continue
            codes = np.array([ord(c) - _SYMBOL_BASE for c in s or ""], np.int64)
            if not len(codes) or codes.min() < 0 or codes.max() > 2 * self.qmax:
                raise ValueError(
                    f"BPE token {i} ({s!r}) is not a string of coefficient symbols for scale {scale} and horizon "
                    f"{horizon}; the tokenizer was fitted with other settings: refit it with `apo fit-tokenizer`"
                )
            self._symbols.append(codes)
        for q in range(2 * self.qmax + 1):
            if self._bpe.token_to_id(chr(_SYMBOL_BASE + q)) is None:
                raise ValueError(f"the BPE vocabulary lacks coefficient symbol {q - self.qmax}; refit it with `apo fit-tokenizer`")
        self._lengths = torch.tensor([len(s) for s in self._symbols], dtype=torch.long)
        self._alphabet = np.array([chr(_SYMBOL_BASE + q) for q in range(2 * self.qmax + 1)], dtype="<U1")

    # ----- sizes -----
    @property
    def vocab_size(self) -> int:
        return self._bpe.get_vocab_size()

    @property
    def num_tokens(self) -> int:
        return self.horizon * self.action_dim + 1 + (self.gripper_dim is not None)

    @property
    def segment_lengths(self) -> list[int]:
        """Coefficients per segment: [H * (D - 1), H] with a gripper segment, else [H * D]."""
        if self.gripper_dim is None:
            return [self.horizon * self.action_dim]
        return [self.horizon * (self.action_dim - 1), self.horizon]

    def max_error(self) -> np.ndarray:
        """Per-dimension bound of |decode(encode(a)) - a| (raw units) for in-range values."""
        return 0.5 * math.sqrt(self.horizon) / self.scale * (self.hi - self.lo) / 2

    # ----- fitting -----
    @classmethod
    def fit(cls, chunks: np.ndarray, q01, q99, cfg: FASTConfig = FASTConfig(), min_range: float = 1e-4,
            ) -> "FASTActionTokenizer":
        """Train the BPE on the coefficient strings of ``chunks`` (M, H, D) (a dataset's action chunks)."""
        from tokenizers import Tokenizer, models, trainers

        chunks = np.asarray(chunks, dtype=np.float64)
        if chunks.ndim != 3 or chunks.shape[0] == 0:
            raise ValueError(f"fit needs action chunks of shape (M, H, D) with M >= 1, got {chunks.shape}")
        H = chunks.shape[1]
        qmax = coefficient_bound(H, cfg.scale)
        n_symbols = 2 * qmax + 1
        if n_symbols > _MAX_SYMBOLS:
            raise ValueError(f"scale {cfg.scale} with horizon {H} needs {n_symbols} coefficient symbols "
                             f"(max {_MAX_SYMBOLS}); use a smaller --fast.scale")
        specials = [PAD, EOS] + ([GRIP] if cfg.gripper_dim is not None else [])
        if cfg.vocab_size < n_symbols + len(specials):
            raise ValueError(
                f"vocab_size {cfg.vocab_size} is smaller than the {n_symbols} coefficient symbols + {len(specials)} "
                f"special tokens that scale {cfg.scale} and horizon {H} need; use --fast.vocab-size "
                f">= {n_symbols + len(specials)} (or a smaller --fast.scale)"
            )
        alphabet = [chr(_SYMBOL_BASE + q) for q in range(n_symbols)]

        def train_bpe(texts: list[str]) -> str:
            bpe = Tokenizer(models.BPE())
            trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                          special_tokens=specials, initial_alphabet=alphabet, show_progress=False)
            bpe.train_from_iterator(texts, trainer)
            return bpe.to_str()

        # a tokenizer without merges turns the chunks into symbol strings; the BPE is trained on those
        plain = cls(q01, q99, H, train_bpe([]), scale=cfg.scale, gripper_dim=cfg.gripper_dim, min_range=min_range)
        segments = plain._segments(plain._quantize(check_actions(chunks, H, plain.action_dim)))
        texts = [s for seg in segments for s in seg]  # arm and gripper strings separately: no merge across them
        return cls(q01, q99, H, train_bpe(texts), scale=cfg.scale, gripper_dim=cfg.gripper_dim, min_range=min_range)

    @classmethod
    def from_recipe(cls, recipe, stats, chunks) -> "FASTActionTokenizer":
        """Fitted on the dataset's action chunks with ``recipe.fast``."""
        return cls.fit(chunks(), stats.action_q01, stats.action_q99, recipe.fast)

    # ----- encoding -----
    def normalize(self, actions: np.ndarray) -> np.ndarray:
        x = 2 * (np.asarray(actions, np.float64) - self.lo) / (self.hi - self.lo) - 1
        return np.clip(x, -1.0, 1.0)

    def unnormalize(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) + 1) / 2 * (self.hi - self.lo) + self.lo

    def _quantize(self, actions: np.ndarray) -> np.ndarray:
        """(M, H, D) checked actions -> int (M, H, D) quantized DCT coefficients in [-qmax, qmax]."""
        coeffs = dct(self.normalize(actions), type=2, axis=-2, norm="ortho")
        return np.clip(np.rint(coeffs * self.scale), -self.qmax, self.qmax).astype(np.int64)

    def _segments(self, q: np.ndarray) -> list[list[str]]:
        """(M, H, D) coefficients -> per segment, M strings of symbols (frequency-major)."""
        M = q.shape[0]
        parts = [q[:, :, self.arm_dims].reshape(M, -1)]
        if self.gripper_dim is not None:
            parts.append(q[:, :, self.gripper_dim])
        out = []
        for p in parts:
            chars = np.ascontiguousarray(self._alphabet[p + self.qmax])  # (M, L) single characters
            out.append(chars.view(f"<U{p.shape[1]}")[:, 0].tolist())
        return out

    def encode(self, actions: np.ndarray) -> np.ndarray:
        actions = check_actions(actions, self.horizon, self.action_dim)
        lead = actions.shape[:-2]
        flat = actions.reshape(-1, self.horizon, self.action_dim)
        out = np.full((flat.shape[0], self.num_tokens), self.pad_id, np.int64)
        if flat.shape[0] == 0:
            return out.reshape(*lead, self.num_tokens)
        segs = [self._bpe.encode_batch(s, add_special_tokens=False) for s in self._segments(self._quantize(flat))]
        for i in range(flat.shape[0]):
            ids = segs[0][i].ids
            if self.gripper_dim is not None:
                ids = ids + [self.grip_id] + segs[1][i].ids
            ids.append(self.eos_id)
            out[i, : len(ids)] = ids
        return out.reshape(*lead, self.num_tokens)

    # ----- decoding -----
    def _check_tokens(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens)
        if tokens.shape[-1:] != (self.num_tokens,):
            raise ValueError(f"tokens must have shape (..., {self.num_tokens}), got {tokens.shape}")
        if not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"tokens must be integers, got {tokens.dtype}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"tokens must be in [0, {self.vocab_size}), got range [{tokens.min()}, {tokens.max()}]")
        return tokens

    def parse(self, row: np.ndarray) -> tuple[np.ndarray | None, str]:
        """One token sequence -> (int (H, D) quantized coefficients, "") or (None, what is malformed)."""
        ends = np.flatnonzero(row == self.eos_id)
        if not len(ends):
            return None, "no end-of-sequence token"
        content = row[: ends[0]]
        if (content == self.pad_id).any():
            return None, "padding before the end-of-sequence token"
        if self.gripper_dim is not None:
            seps = np.flatnonzero(content == self.grip_id)
            if len(seps) != 1:
                return None, f"{len(seps)} gripper separators (expected 1)"
            segments = [content[: seps[0]], content[seps[0] + 1 :]]
        else:
            segments = [content]
        q = np.zeros((self.horizon, self.action_dim), np.int64)
        for k, (seg, need) in enumerate(zip(segments, self.segment_lengths)):
            symbols = np.concatenate([self._symbols[t] for t in seg]) if len(seg) else np.zeros(0, np.int64)
            if len(symbols) != need:
                name = "gripper" if k == 1 else ("arm" if self.gripper_dim is not None else "the")
                return None, f"{name} segment expands to {len(symbols)} coefficients (expected {need})"
            if k == 0:
                q[:, self.arm_dims] = symbols.reshape(self.horizon, len(self.arm_dims)) - self.qmax
            else:
                q[:, self.gripper_dim] = symbols - self.qmax
        return q, ""

    def decode(self, tokens: np.ndarray, errors: str = "nan") -> np.ndarray:
        """(..., num_tokens) -> float32 (..., H, D). A malformed sequence gives a NaN chunk
        (``errors="nan"``) or raises ValueError naming the problem (``errors="raise"``)."""
        if errors not in ("nan", "raise"):
            raise ValueError(f"errors must be 'nan' or 'raise', got {errors!r}")
        tokens = self._check_tokens(tokens)
        lead = tokens.shape[:-1]
        flat = tokens.reshape(-1, self.num_tokens)
        q = np.zeros((flat.shape[0], self.horizon, self.action_dim))
        bad = np.zeros(flat.shape[0], bool)
        for i, row in enumerate(flat):
            qi, why = self.parse(row)
            if qi is None:
                if errors == "raise":
                    raise ValueError(f"token sequence {i} cannot be decoded: {why} (tokens {row.tolist()})")
                bad[i] = True
            else:
                q[i] = qi
        x = np.clip(idct(q / self.scale, type=2, axis=-2, norm="ortho"), -1.0, 1.0)
        actions = self.unnormalize(x)
        actions[bad] = np.nan
        return actions.astype(np.float32).reshape(*lead, self.horizon, self.action_dim)

    def decodable(self, tokens: np.ndarray) -> np.ndarray:
        """bool (...,): which sequences are well formed."""
        tokens = self._check_tokens(tokens)
        flat = tokens.reshape(-1, self.num_tokens)
        return np.array([self.parse(r)[0] is not None for r in flat], bool).reshape(tokens.shape[:-1])

    # ----- masks -----
    def token_mask(self, tokens):
        """True up to and including the first <eos> (everything if there is none)."""
        is_eos = tokens == self.eos_id
        return (_cumsum(is_eos) - _as_int(is_eos)) == 0

    def gripper_token_mask(self, tokens=None):
        """True at the gripper segment: after <grip>, up to and including <eos>. Depends on the sequence."""
        if tokens is None:
            raise ValueError("FAST tokens mix time steps and their positions vary: pass the tokens to gripper_token_mask")
        if self.gripper_dim is None:
            return tokens != tokens if isinstance(tokens, torch.Tensor) else np.zeros(np.shape(tokens), bool)
        is_sep = tokens == self.grip_id
        after = (_cumsum(is_sep) - _as_int(is_sep)) > 0
        return after & self.token_mask(tokens)

    def real_token_counts(self, tokens) -> np.ndarray:
        """Tokens per sequence up to and including <eos> (what the model actually predicts)."""
        return np.asarray(self.token_mask(np.asarray(tokens))).sum(-1)

    def next_token_mask(self, prefix: torch.Tensor) -> torch.Tensor:
        """Only continuations that end in a well-formed sequence: content tokens that do not overshoot
        the segment's coefficient count, then <grip> / <eos> exactly when a segment is complete, then <pad>."""
        B, V = prefix.shape[0], self.vocab_size
        lengths = self._lengths.to(prefix.device)
        count = lengths[prefix].sum(1) if prefix.shape[1] else torch.zeros(B, dtype=torch.long, device=prefix.device)
        done = (prefix == self.eos_id).any(1)
        need = self.segment_lengths
        if self.gripper_dim is not None:
            in_gripper = (prefix == self.grip_id).any(1)
            target = torch.where(in_gripper, need[0] + need[1], need[0])
            closer = torch.where(in_gripper, self.eos_id, self.grip_id)
        else:
            target = torch.full((B,), need[0], device=prefix.device)
            closer = torch.full((B,), self.eos_id, device=prefix.device)
        remaining = target - count
        allowed = (lengths[None] > 0) & (lengths[None] <= remaining[:, None])
        rows = torch.arange(B, device=prefix.device)
        close = (remaining <= 0) & ~done
        allowed[close] = False
        allowed[rows[close], closer[close]] = True
        allowed[done] = False
        allowed[rows[done], self.pad_id] = True
        return allowed

    # ----- persistence -----
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "q01": self.q01.tolist(), "q99": self.q99.tolist(), "horizon": self.horizon,
            "scale": self.scale, "gripper_dim": self.gripper_dim, "min_range": self.min_range, "bpe": self._bpe_json,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FASTActionTokenizer":
        return cls(q01=d["q01"], q99=d["q99"], horizon=d["horizon"], bpe=d["bpe"], scale=d["scale"],
                   gripper_dim=d["gripper_dim"], min_range=d.get("min_range", 1e-4))


def _cumsum(mask):
    if isinstance(mask, torch.Tensor):
        return mask.long().cumsum(-1)
    return np.cumsum(mask, axis=-1)


def _as_int(mask):
    return mask.long() if isinstance(mask, torch.Tensor) else mask.astype(np.int64)
