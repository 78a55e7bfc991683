"""StepData and action chunking: chunks never cross episode boundaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apo.data.dataset import AUTONOMOUS, EXPERT, StepData, action_chunks
from apo.tokenizers import BinActionTokenizer


def test_action_chunks_hand_worked():
    actions = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]], np.float32)
    chunks = action_chunks(actions, 4)
    expected = np.array([
        [[0, 10], [1, 11], [2, 12], [2, 12]],
        [[1, 11], [2, 12], [2, 12], [2, 12]],
        [[2, 12], [2, 12], [2, 12], [2, 12]],
    ], np.float32)
    assert chunks.shape == (3, 4, 2)
    np.testing.assert_array_equal(chunks, expected)


def test_action_chunks_horizon_one_is_identity():
    actions = np.random.default_rng(0).normal(size=(6, 4))
    np.testing.assert_array_equal(action_chunks(actions, 1)[:, 0], actions)


def test_action_chunks_single_step_episode():
    np.testing.assert_array_equal(action_chunks(np.array([[5.0]]), 3), [[[5.0], [5.0], [5.0]]])


@pytest.fixture
def two_episodes(make_episode):
    # distinct, recognisable actions: episode 0 in [-0.9, -0.5], episode 1 in [0.5, 0.9]
    a0 = np.linspace(-0.9, -0.5, 5 * 4, dtype=np.float32).reshape(5, 4)
    a1 = np.linspace(0.5, 0.9, 4 * 4, dtype=np.float32).reshape(4, 4)
    ep0 = make_episode(T=5, seed=0, actions=a0, instruction="zeta task")
    ep1 = make_episode(T=4, seed=1, actions=a1, instruction="alpha task", source="interaction",
                       labels=np.array([1, 0, 2, 1], np.int8),
                       policy_actions=-a1)
    return ep0, ep1


@pytest.fixture
def tok3():
    return BinActionTokenizer([-1.0] * 4, [1.0] * 4, n_bins=32, horizon=3)


def test_step_data_chunks_stay_in_their_episode(two_episodes, tok3):
    ep0, ep1 = two_episodes
    data = StepData.from_episodes([ep0, ep1], tok3)
    assert len(data) == 9
    chunks = data.chunks.numpy()
    assert chunks.shape == (9, 3, 4) and chunks.dtype == np.float32
    # ep0 occupies rows 0..4: its last step's chunk repeats ep0's last action, never ep1's first
    np.testing.assert_array_equal(chunks[4], np.repeat(ep0.actions[-1:], 3, 0))
    np.testing.assert_array_equal(chunks[3], ep0.actions[[3, 4, 4]])
    assert (chunks[:5] < 0).all() and (chunks[5:] > 0).all()
    np.testing.assert_array_equal(chunks[5], ep1.actions[[0, 1, 2]])
    np.testing.assert_array_equal(chunks[8], np.repeat(ep1.actions[-1:], 3, 0))


def test_step_data_tokens_and_fields(two_episodes, tok3):
    ep0, ep1 = two_episodes
    data = StepData.from_episodes([ep0, ep1], tok3)
    assert data.tokens.shape == (9, tok3.num_tokens) and data.tokens.dtype == torch.long
    np.testing.assert_array_equal(data.tokens.numpy(), tok3.encode(data.chunks.numpy()))
    # instructions sorted; ids map every step to its episode's instruction
    assert data.instructions == ["alpha task", "zeta task"]
    assert data.instruction_ids.tolist() == [1] * 5 + [0] * 4
    assert data.episode_ids.tolist() == [0] * 5 + [1] * 4
    assert data.labels.tolist() == [2] * 5 + [1, 0, 2, 1]
    assert data.is_expert.tolist() == [True] * 5 + [False] * 4
    np.testing.assert_array_equal(data.images.numpy(), np.concatenate([ep0.images, ep1.images]))
    np.testing.assert_array_equal(data.proprio.numpy(), np.concatenate([ep0.proprio, ep1.proprio]))
    # policy chunks: the policy's proposals where recorded, the executed actions otherwise
    pc = data.policy_chunks.numpy()
    np.testing.assert_array_equal(pc[:5], action_chunks(ep0.actions, 3))
    np.testing.assert_array_equal(pc[5:], action_chunks(-ep1.actions, 3))


def test_step_data_without_policy_actions(make_episode, tok3):
    data = StepData.from_episodes([make_episode(T=3)], tok3)
    assert data.policy_chunks is None
    batch = data.batch(torch.tensor([0, 2]), torch.zeros(1, 384))
    assert "policy_chunks" not in batch


def test_batch_gathers_rows(two_episodes, tok3):
    data = StepData.from_episodes(list(two_episodes), tok3)
    lang_table = torch.stack([torch.full((384,), 1.0), torch.full((384,), 2.0)])
    idx = torch.tensor([0, 6, 6, 4])
    b = data.batch(idx, lang_table)
    assert set(b) >= {"image", "proprio", "lang", "chunks", "tokens", "labels", "index", "policy_chunks"}
    assert b["image"].shape == (4, 16, 16, 3) and b["image"].dtype == torch.uint8
    assert b["lang"][:, 0].tolist() == [2.0, 1.0, 1.0, 2.0]  # instruction ids 1, 0, 0, 1
    torch.testing.assert_close(b["tokens"], data.tokens[idx])
    torch.testing.assert_close(b["chunks"], data.chunks[idx])
    assert b["index"].tolist() == idx.tolist()
    assert b["labels"].tolist() == [2, 0, 0, 2]
    torch.testing.assert_close(b["policy_chunks"], data.policy_chunks[idx])


def test_select_keeps_rows_and_their_whole_episode_chunks(two_episodes, tok3):
    data = StepData.from_episodes(list(two_episodes), tok3)
    keep = torch.tensor([0, 0, 0, 1, 0, 1, 0, 0, 1], dtype=torch.bool)
    sub = data.select(keep)
    assert len(sub) == 3 and sub.instructions == data.instructions
    for name in ("images", "proprio", "instruction_ids", "chunks", "tokens", "labels", "episode_ids",
                 "is_expert", "policy_chunks", "policy_tokens"):
        torch.testing.assert_close(getattr(sub, name), getattr(data, name)[[3, 5, 8]], rtol=0, atol=0)
    # step 3 of ep0 keeps the chunk cut from its episode (its dropped successor's action included)
    np.testing.assert_array_equal(sub.chunks[0].numpy(), two_episodes[0].actions[[3, 4, 4]])
    assert sub.categories.tolist() == [EXPERT, AUTONOMOUS, AUTONOMOUS]


@pytest.mark.parametrize("keep", [torch.ones(8, dtype=torch.bool), torch.ones(9, dtype=torch.long)])
def test_select_rejects_a_bad_mask(two_episodes, tok3, keep):
    data = StepData.from_episodes(list(two_episodes), tok3)
    with pytest.raises(ValueError, match="bool mask of shape"):
        data.select(keep)


def test_step_data_rejects_mixed_image_sizes(make_episode, tok3):
    with pytest.raises(ValueError, match="image sizes"):
        StepData.from_episodes([make_episode(size=16), make_episode(size=32)], tok3)


def test_step_data_rejects_no_episodes(tok3):
    with pytest.raises(ValueError, match="no episodes"):
        StepData.from_episodes([], tok3)


def test_step_data_from_real_episodes(tiny_episodes, tiny_policy, instruction):
    data = StepData.from_episodes(tiny_episodes, tiny_policy.tokenizer)
    assert len(data) == 40
    assert data.instructions == [instruction]
    assert data.tokens.shape == (40, tiny_policy.tokenizer.num_tokens)
    assert int(data.tokens.max()) < tiny_policy.tokenizer.vocab_size and int(data.tokens.min()) >= 0
