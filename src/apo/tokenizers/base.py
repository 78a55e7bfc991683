"""Action tokenizer interface and registry.

A tokenizer maps a chunk of continuous actions ``(..., H, D)`` to a fixed number of integer
tokens ``(..., N)`` in ``[0, vocab_size)`` and back. It is saved beside the model as JSON
(``to_dict`` / ``TOKENIZERS.get(d["kind"]).from_dict(d)``; ``save_tokenizer`` / ``load_tokenizer``
for a standalone file).

Variable-length tokenizers (FAST) pad every sequence to ``num_tokens`` with ``pad_id``;
``token_mask(tokens)`` says which positions are real tokens (losses, rewards and accuracies only
count those) and ``next_token_mask(prefix)`` constrains decoding to well-formed sequences. The
defaults here are those of a fixed-length tokenizer: every position is real, nothing is constrained.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from apo.registry import Registry


class ActionTokenizer(ABC):
    kind: str
    action_dim: int
    horizon: int
    pad_id: int | None = None
    """Token that fills a sequence after its end (None: every sequence has exactly num_tokens real tokens)."""

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def num_tokens(self) -> int:
        """Tokens per action chunk (the padded length for variable-length tokenizers)."""

    @abstractmethod
    def encode(self, actions: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """(..., N) tokens -> float32 (..., H, D) actions; a sequence that cannot be decoded gives a NaN chunk."""

    @abstractmethod
    def gripper_token_mask(self, tokens=None):
        """bool mask of the tokens that encode the gripper (excluded from APO's undesirable reward).

        Without ``tokens``: ``(num_tokens,)`` numpy, for tokenizers where the positions are fixed.
        With ``tokens`` (numpy or torch, ``(..., num_tokens)``): a mask of the same shape and type."""

    def token_mask(self, tokens):
        """bool mask (same shape and type as ``tokens``, numpy or torch): True at real tokens."""
        if isinstance(tokens, torch.Tensor):
            return torch.ones_like(tokens, dtype=torch.bool)
        return np.ones(np.shape(tokens), dtype=bool)

    def next_token_mask(self, prefix):
        """Allowed next tokens (torch bool ``(B, vocab_size)``) after the decoded ``prefix`` (torch long ``(B, i)``),
        or None when every token is allowed."""
        return None

    @abstractmethod
    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_dict(cls, d: dict[str, Any]) -> "ActionTokenizer": ...

    @classmethod
    def from_recipe(cls, recipe, stats, chunks: Callable[[], np.ndarray]) -> "ActionTokenizer":
        """The tokenizer `apo train` builds from a ``BaseRecipe``, the dataset's ``DatasetStats`` and (if it
        needs fitting) the dataset's action chunks ``chunks()`` of shape ``(M, recipe.horizon, D)``."""
        raise NotImplementedError(f"tokenizer {cls.__name__} does not implement from_recipe; it cannot be used by apo train")


TOKENIZERS: Registry[type[ActionTokenizer]] = Registry("action tokenizer")


def tokenizer_from_dict(d: dict[str, Any]) -> ActionTokenizer:
    if "kind" not in d:
        raise ValueError("tokenizer JSON has no 'kind' field; it was not written by apo")
    return TOKENIZERS.get(d["kind"]).from_dict(d)


def save_tokenizer(tokenizer: ActionTokenizer, path: str | os.PathLike) -> Path:
    """Write ``tokenizer.to_dict()`` as JSON (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(tokenizer.to_dict(), indent=1))
    os.replace(tmp, path)
    return path


class TokenizerFileError(ValueError):
    """A saved tokenizer file is missing or unreadable; the message says how to make a new one."""


def load_tokenizer(path: str | os.PathLike) -> ActionTokenizer:
    path = Path(path)
    if not path.exists():
        raise TokenizerFileError(f"tokenizer file {path} does not exist; create it with `apo fit-tokenizer`")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TokenizerFileError(f"tokenizer file {path} is not valid JSON ({e}); refit it with `apo fit-tokenizer`") from e
    return tokenizer_from_dict(d)


def action_ranges(q01, q99, gripper_dim: int | None, min_range: float) -> tuple[np.ndarray, ...]:
    """Validated ``(q01, q99, lo, hi)``: the normalization range of every action dimension.

    ``[q01, q99]`` (dataset statistics), except the gripper (``gripper_dim``) which keeps its native
    range ``[-1, 1]``; a constant dimension is widened to ``min_range``."""
    q01 = np.asarray(q01, dtype=np.float64)
    q99 = np.asarray(q99, dtype=np.float64)
    if q01.shape != q99.shape or q01.ndim != 1:
        raise ValueError(f"q01 and q99 must be 1-d of equal length, got {q01.shape} and {q99.shape}")
    if np.any(q99 < q01):
        raise ValueError(f"q99 must be >= q01 in every dimension, got q01={q01} q99={q99}; recompute the stats")
    if gripper_dim is not None and not 0 <= gripper_dim < q01.size:
        raise ValueError(f"gripper_dim {gripper_dim} out of range for {q01.size}-d actions")
    lo, hi = q01.copy(), q99.copy()
    if gripper_dim is not None:
        lo[gripper_dim], hi[gripper_dim] = -1.0, 1.0
    mid = (lo + hi) / 2
    half = np.maximum((hi - lo) / 2, min_range / 2)
    return q01, q99, mid - half, mid + half


def check_actions(actions: np.ndarray, horizon: int, action_dim: int) -> np.ndarray:
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim < 2 or actions.shape[-2:] != (horizon, action_dim):
        raise ValueError(
            f"actions must have shape (..., {horizon}, {action_dim}) (horizon, action_dim), got {actions.shape}"
        )
    if not np.all(np.isfinite(actions)):
        raise ValueError("actions contain NaN/inf")
    return actions
