"""MetaWorld's scripted expert policies behind one interface.

``expert.act(state) -> action``: ``state`` is MetaWorld's 39-d observation (the env exposes it
as ``info["state"]`` / ``env.state``); the action is clipped to the action box [-1, 1]^4 the env
applies anyway, so recorded actions are the ones executed. Experts read only the current state,
so they can take over from any state (which makes them usable as the simulated person).
"""

from __future__ import annotations

import warnings

import numpy as np

from apo.envs.tasks import get_task


class ScriptedExpert:
    def __init__(self, task: str):
        from metaworld.policies import ENV_POLICY_MAP

        spec = get_task(task)
        if spec.metaworld_name not in ENV_POLICY_MAP:
            raise KeyError(f"MetaWorld has no scripted policy for {spec.metaworld_name!r}")
        self.task = task
        self._policy = ENV_POLICY_MAP[spec.metaworld_name]()

    def act(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (39,):
            raise ValueError(f"expert expects MetaWorld's 39-d state, got shape {state.shape}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Constant(s) may be too high": we clip
            action = self._policy.get_action(state)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
