"""The base-policy recipe: tokenizer from dataset stats (fitted on the data for FAST), a fresh TinyVLA,
behaviour cloning."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from apo.data import DatasetError, DatasetStats, Episode, load_episodes
from apo.data.dataset import StepData, action_chunks
from apo.envs.metaworld_env import recorded_rendering
from apo.models import VLAConfig, VLAPolicy
from apo.objectives import OBJECTIVES
from apo.tokenizers import TOKENIZERS, ActionTokenizer, TokenizerFileError, load_tokenizer, tokenizer_from_dict
from apo.tokenizers.fast import FASTConfig
from apo.training import distributed
from apo.training.trainer import TrainConfig, train


@dataclass(frozen=True)
class BaseRecipe:
    horizon: int = 4
    """Actions per predicted chunk (action chunking)."""
    n_bins: int = 256
    """Bins per action dimension (tokenizer=bin)."""
    tokenizer: str = "fast"
    """Registered action tokenizer: fast (DCT + BPE fitted on the training data; the default: 42.5% vs 31% for
    bins with the same demos and steps, docs/base_policy.md) or bin (uniform bins per dimension)."""
    fast: FASTConfig = field(default_factory=FASTConfig)
    """FAST tokenizer settings (tokenizer=fast)."""
    tokenizer_file: Path | None = None
    """A tokenizer saved by `apo fit-tokenizer`, used instead of building one (its kind must be --recipe.tokenizer
    and its horizon --recipe.horizon)."""
    model: VLAConfig = field(default_factory=VLAConfig)
    """Network shape (vocab and token count are set from the tokenizer)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=12_500))
    """Optimization (12.5k steps of 64: ~26 min on 2 cores; 15k steps give a stronger base, docs/base_policy.md)."""

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        TOKENIZERS.get(self.tokenizer)  # unknown names fail here, listing the valid ones


def dataset_chunks(episodes: list[Episode], horizon: int) -> np.ndarray:
    """Every step's action chunk (M, H, D), as the training data builds them."""
    if not episodes:
        raise ValueError("no episodes to take action chunks from")
    return np.concatenate([action_chunks(e.actions, horizon) for e in episodes])


def make_tokenizer(data_dir: str | os.PathLike, recipe: BaseRecipe, episodes: list[Episode] | None = None) -> ActionTokenizer:
    """The recipe's tokenizer for a dataset: loaded from ``recipe.tokenizer_file`` or built by the registered
    class (fitted on the dataset's action chunks if it needs fitting; episodes are loaded only then)."""
    if recipe.tokenizer_file is not None:
        tok = load_tokenizer(recipe.tokenizer_file)
        if tok.kind != recipe.tokenizer:
            raise TokenizerFileError(f"{recipe.tokenizer_file} holds a {tok.kind!r} tokenizer but --recipe.tokenizer is "
                             f"{recipe.tokenizer!r}; pass --recipe.tokenizer {tok.kind}")
        if tok.horizon != recipe.horizon:
            raise TokenizerFileError(f"{recipe.tokenizer_file} was fitted for horizon {tok.horizon} but --recipe.horizon is "
                             f"{recipe.horizon}; pass --recipe.horizon {tok.horizon} or refit with `apo fit-tokenizer`")
        return tok
    stats = DatasetStats.load(data_dir)

    def chunks() -> np.ndarray:
        return dataset_chunks(episodes if episodes is not None else load_episodes(data_dir), recipe.horizon)

    return TOKENIZERS.get(recipe.tokenizer).from_recipe(recipe, stats, chunks)


@dataclass(frozen=True)
class TokenCounts:
    """Tokens per action chunk of a fitted tokenizer on its data, next to the bin tokenizer's fixed count."""

    chunks: int
    mean: float
    max: int
    padded: int
    bin: int
    max_error: float


def fit_tokenizer(data_dir: str | os.PathLike, recipe: BaseRecipe) -> tuple[ActionTokenizer, TokenCounts]:
    """Build (fit) the recipe's tokenizer on a dataset, reading only the actions of its episodes one by one,
    and count its tokens per chunk (real tokens, i.e. up to and including <eos>) on the same data."""
    from apo.data import iter_episodes

    stats = DatasetStats.load(data_dir)
    chunks = np.concatenate([action_chunks(e.actions, recipe.horizon) for e in iter_episodes(data_dir)])
    tok = TOKENIZERS.get(recipe.tokenizer).from_recipe(recipe, stats, lambda: chunks)
    tokens = tok.encode(chunks)
    real = np.asarray(tok.token_mask(tokens)).sum(-1)
    err = np.abs(tok.decode(tokens) - chunks)
    counts = TokenCounts(chunks=len(chunks), mean=float(real.mean()), max=int(real.max()), padded=tok.num_tokens,
                         bin=recipe.horizon * chunks.shape[-1], max_error=float(np.nanmax(err)))
    return tok, counts


def build_policy(data_dir: str | os.PathLike, recipe: BaseRecipe, image_size: int,
                 episodes: list[Episode] | None = None) -> VLAPolicy:
    stats = DatasetStats.load(data_dir)
    if distributed.is_distributed():  # one process fits, every process uses its tokenizer
        d = distributed.broadcast_object(make_tokenizer(data_dir, recipe, episodes).to_dict() if distributed.is_main() else None)
        tok = tokenizer_from_dict(d)
    else:
        tok = make_tokenizer(data_dir, recipe, episodes)
    if tok.action_dim != len(stats.action_q01):
        raise ValueError(f"the tokenizer is for {tok.action_dim}-d actions but {data_dir} has {len(stats.action_q01)}-d actions")
    cfg = dataclasses.replace(
        recipe.model, image_size=image_size, proprio_dim=len(stats.proprio_mean),
        vocab_size=tok.vocab_size, num_action_tokens=tok.num_tokens,
    )
    try:
        return VLAPolicy(cfg, tok, stats)
    except ValueError as e:  # the recipe does not fit this data (e.g. an image grid finer than its images allow)
        raise DatasetError(f"the recipe does not fit the data in {data_dir}: {e}") from e


def train_base_policy(data_dir: str | os.PathLike, out_dir: str | os.PathLike, recipe: BaseRecipe = BaseRecipe()) -> VLAPolicy:
    """Behaviour cloning on every episode in ``data_dir``; the policy is saved to ``out_dir/policy``.
    Runs on several processes when launched with torchrun (``apo.training.distributed``)."""
    distributed.init_from_env()
    episodes = load_episodes(data_dir)
    image_size = episodes[0].images.shape[1]
    # the initial weights come from the training seed: torch seeds its global generator at random at start-up,
    # so without this every build of one recipe started from other weights (docs/base_policy.md: 53.5-76%)
    torch.manual_seed(recipe.train.seed)
    policy = build_policy(data_dir, recipe, image_size, episodes)
    policy.rendering = recorded_rendering([ep.extras for ep in episodes], str(data_dir))
    data = StepData.from_episodes(episodes, policy.tokenizer)
    train(policy, data, OBJECTIVES.get("bc")(), recipe.train, out_dir, desc="behaviour cloning")
    if distributed.is_main():
        policy.save(Path(out_dir) / "policy")
    distributed.barrier()
    return policy
