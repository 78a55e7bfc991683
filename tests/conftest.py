"""Shared fixtures: a tiny real dataset (2 truncated expert episodes), tiny policies, a shared env.

Everything expensive is session-scoped: the dataset is recorded once with the real env, the
scripted expert and the real EpisodeWriter; the sentence encoder is loaded once.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

TASK = "pick-place-v3"
IMAGE_SIZE = 64
TINY_MODEL = dict(d_model=32, n_layers=1, n_heads=2)
DATASET_SEEDS = (1, 2)
DATASET_MAX_STEPS = 20


# fixtures whose (once per session) setup renders MuJoCo or loads the sentence encoder
_SLOW_FIXTURES = {"tiny_dataset", "instruction_embeddings", "pick_place_env"}


def pytest_configure(config):
    # the machine is shared with a training job: do not oversubscribe the 2 cores
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests that depend (directly or through other fixtures) on a fixture that renders MuJoCo or
    loads the sentence encoder are marked slow too, so ``-m "not slow"`` never starts either."""
    for item in items:
        if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def task() -> str:
    return TASK


@pytest.fixture(scope="session")
def instruction() -> str:
    from apo.envs import get_task

    return get_task(TASK).instruction


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A dataset folder with 2 expert episodes of TASK (truncated at 20 steps, 64 px) + stats.json."""
    from apo.data import DatasetStats, EpisodeWriter, load_episodes
    from apo.data.demos import rollout_expert
    from apo.envs import EnvConfig, ScriptedExpert, make_env

    root = tmp_path_factory.mktemp("tiny_dataset")
    writer = EpisodeWriter(root)
    env = make_env(TASK, EnvConfig(image_size=IMAGE_SIZE, max_steps=DATASET_MAX_STEPS))
    expert = ScriptedExpert(TASK)
    try:
        for seed in DATASET_SEEDS:
            writer.write(rollout_expert(env, expert, seed))
    finally:
        env.close()
    DatasetStats.compute(load_episodes(root)).save(root)
    return root


@pytest.fixture(scope="session")
def tiny_episodes(tiny_dataset):
    from apo.data import load_episodes

    return load_episodes(tiny_dataset)


@pytest.fixture(scope="session")
def tiny_stats(tiny_dataset):
    from apo.data import DatasetStats

    return DatasetStats.load(tiny_dataset)


@pytest.fixture(scope="session")
def instruction_embeddings(instruction):
    """Real MiniLM embeddings (loads the sentence encoder once per session, a few seconds)."""
    from apo.models import encode_instructions

    texts = [instruction, "open the drawer", instruction]
    return texts, encode_instructions(texts)


@pytest.fixture(scope="session")
def make_policy(tiny_stats, instruction, instruction_embeddings):
    """Factory of tiny VLAPolicies (d_model 32, 1 layer, 2 heads), deterministic for a seed."""
    from apo.models import VLAPolicy
    from apo.tokenizers import BinActionTokenizer

    def make(seed: int = 0, horizon: int = 2, n_bins: int = 64, **model_kwargs) -> VLAPolicy:
        torch.manual_seed(seed)
        tok = BinActionTokenizer(tiny_stats.action_q01, tiny_stats.action_q99, n_bins=n_bins, horizon=horizon)
        policy = VLAPolicy.build(tok, tiny_stats, image_size=IMAGE_SIZE, **{**TINY_MODEL, **model_kwargs})
        policy.embed_instructions([instruction])  # encoder already loaded (session fixture): cheap
        return policy

    return make


@pytest.fixture
def tiny_policy(make_policy):
    return make_policy()


@pytest.fixture
def tiny_step_data(tiny_episodes, tiny_policy):
    from apo.data.dataset import StepData

    return StepData.from_episodes(tiny_episodes, tiny_policy.tokenizer)


@pytest.fixture
def tiny_batch(tiny_step_data, tiny_policy):
    """A batch of 8 real steps (both episodes) for the tiny policy."""
    lang = tiny_policy.embed_instructions(tiny_step_data.instructions)
    idx = torch.tensor([0, 3, 7, 19, 20, 25, 30, 39])
    return tiny_step_data.batch(idx, lang)


@pytest.fixture
def make_episode():
    """Factory of small synthetic (valid) episodes; keyword overrides replace any field."""
    from apo.data import LABEL_HUMAN, Episode

    def make(T: int = 5, seed: int = 0, size: int = 16, **overrides) -> Episode:
        rng = np.random.default_rng(seed)
        fields = dict(
            task="synthetic-task",
            instruction="do the thing",
            images=rng.integers(0, 256, (T, size, size, 3), dtype=np.uint8),
            proprio=rng.normal(size=(T, 4)).astype(np.float32),
            actions=rng.uniform(-1, 1, (T, 4)).astype(np.float32),
            rewards=rng.normal(size=T).astype(np.float32),
            dones=np.arange(T) == T - 1,
            labels=np.full(T, LABEL_HUMAN, np.int8),
            success=True,
            seed=seed,
        )
        fields.update(overrides)
        return Episode(**fields)

    return make


@pytest.fixture(scope="session")
def pick_place_env():
    """One shared pick-place env (default step cap), closed at the end of the session."""
    from apo.envs import EnvConfig, make_env

    env = make_env(TASK, EnvConfig(image_size=IMAGE_SIZE))
    yield env
    env.close()
