"""The base-policy recipe: tokenizer from dataset stats, a fresh TinyVLA, behaviour cloning."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from apo.data import DatasetStats, load_episodes
from apo.data.dataset import StepData
from apo.models import VLAConfig, VLAPolicy
from apo.objectives import OBJECTIVES
from apo.tokenizers import TOKENIZERS
from apo.training.trainer import TrainConfig, train


@dataclass(frozen=True)
class BaseRecipe:
    horizon: int = 4
    """Actions per predicted chunk (action chunking)."""
    n_bins: int = 256
    """Bins per action dimension."""
    tokenizer: str = "bin"
    """Registered action tokenizer."""
    model: VLAConfig = field(default_factory=VLAConfig)
    """Network shape (vocab and token count are set from the tokenizer)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimization."""

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")


def build_policy(data_dir: str | os.PathLike, recipe: BaseRecipe, image_size: int) -> VLAPolicy:
    stats = DatasetStats.load(data_dir)
    tok = TOKENIZERS.get(recipe.tokenizer)(stats.action_q01, stats.action_q99, n_bins=recipe.n_bins, horizon=recipe.horizon)
    cfg = dataclasses.replace(
        recipe.model, image_size=image_size, proprio_dim=len(stats.proprio_mean),
        vocab_size=tok.vocab_size, num_action_tokens=tok.num_tokens,
    )
    return VLAPolicy(cfg, tok, stats)


def train_base_policy(data_dir: str | os.PathLike, out_dir: str | os.PathLike, recipe: BaseRecipe = BaseRecipe()) -> VLAPolicy:
    """Behaviour cloning on every episode in ``data_dir``; the policy is saved to ``out_dir/policy``."""
    episodes = load_episodes(data_dir)
    image_size = episodes[0].images.shape[1]
    policy = build_policy(data_dir, recipe, image_size)
    data = StepData.from_episodes(episodes, policy.tokenizer)
    train(policy, data, OBJECTIVES.get("bc")(), recipe.train, out_dir, desc="behaviour cloning")
    policy.save(Path(out_dir) / "policy")
    return policy
