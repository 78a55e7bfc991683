"""Why did the person's help not save an episode? Replays the failed rescues of an interaction folder.

Interaction episodes keep images, proprioception and actions, not the simulator state. MuJoCo is
deterministic, so resetting the env to the episode's seed and replaying its recorded actions gives the
state back. For every episode that had a takeover and still failed, this prints the hand, the main
object (MetaWorld state 4:7) and the goal (36:39) at the first takeover and at the end, and how far the
object moved while the person was in control. It also replays each episode up to its first takeover and
lets the scripted expert (the simulated person) keep control until the episode's step cap: whether the
person would have rescued it by holding on instead of handing back after ``hold_steps``. And it
measures how far toward the back of the table (+y) the hand reaches at the object's final height and x
(``hand_reach_y``): an object that ends behind that line is out of any person's reach.

    python benchmarks/failed_rescues.py runs/loop_hold60/round_0/interactions --tasks pick-place-v3 --name x

Writes ``benchmarks/results/failed_rescues_<name>.json``. Stops if a replay does not reproduce the
recorded proprioception (e.g. episodes recorded with other dynamics settings).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from apo.data import load_episodes
from apo.data.episode import LABEL_HUMAN
from apo.data.storage import DatasetError
from apo.envs import EnvConfig, make_env
from apo.envs.experts import ScriptedExpert
from apo.registry import UnknownNameError


def replay_states(episode, env_cfg: EnvConfig) -> np.ndarray:
    """Simulator states of an episode, [T + 1, state_dim]: after reset to its seed and after each action."""
    env = make_env(episode.task, env_cfg)
    try:
        _, info = env.reset(seed=int(episode.seed))
        states = [info["state"]]
        for action in episode.actions:
            _, _, _, _, info = env.step(action)
            states.append(info["state"])
    finally:
        env.close()
    states = np.asarray(states)
    recorded = np.asarray(episode.proprio)
    if not np.allclose(states[: len(recorded), : recorded.shape[1]], recorded, atol=1e-4):
        raise ValueError(f"{episode.task} seed {episode.seed}: the replay does not reproduce the recorded "
                         "proprioception; replay with the env settings the episodes were recorded with")
    return states


def expert_keeps_control(episode, env_cfg: EnvConfig) -> int | None:
    """Replays an episode up to its first takeover, then lets the scripted expert act until success or the
    task's step cap. Returns the step it succeeded at (None: it did not)."""
    first = int(np.argmax(np.asarray(episode.labels) == LABEL_HUMAN))
    env = make_env(episode.task, env_cfg)
    expert = ScriptedExpert(episode.task)
    try:
        _, info = env.reset(seed=int(episode.seed))
        for action in episode.actions[:first]:
            _, _, _, _, info = env.step(action)
        t = first
        while True:
            _, _, terminated, truncated, info = env.step(expert.act(info["state"]))
            t += 1
            if info["success"]:
                return t
            if terminated or truncated:
                return None
    finally:
        env.close()


def hand_reach_y(task: str, seed: int, x: float, z: float, env_cfg: EnvConfig, steps: int = 150) -> float:
    """How far back (+y) the hand gets at (x, z): full-speed steps toward (x, y far behind the table, z),
    gripper open, from the reset of ``seed``; the arm's joint limits stop it."""
    env = make_env(task, env_cfg)
    try:
        _, info = env.reset(seed=seed)
        target = np.array([x, 2.0, z])
        for _ in range(steps):
            move = np.clip((target - info["state"][0:3]) * 50.0, -1.0, 1.0)
            _, _, _, _, info = env.step(np.append(move, -1.0).astype(np.float32))
        return float(info["state"][1])
    finally:
        env.close()


def rescue_summary(episode, states: np.ndarray) -> dict:
    """Hand, object and goal at the first takeover and at the end, and the object's travel under the person."""
    human = np.asarray(episode.labels) == LABEL_HUMAN
    first = int(np.argmax(human))

    def at(t: int) -> dict:
        s = states[t]
        return {"step": t, "hand": s[0:3].round(3).tolist(), "object": s[4:7].round(3).tolist(),
                "object_to_goal": round(float(np.linalg.norm(s[4:7] - s[36:39])), 3)}

    steps = np.flatnonzero(human)
    moved = float(np.linalg.norm(np.diff(states[steps][:, 4:7], axis=0), axis=1).sum()) if len(steps) > 1 else 0.0
    return {"seed": int(episode.seed), "goal": states[0, 36:39].round(3).tolist(), "person_steps": int(human.sum()),
            "at_takeover": at(first), "at_end": at(len(states) - 1), "object_moved_by_person": round(moved, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("interactions", type=Path, help="interaction episode folder (apo collect, a loop round)")
    ap.add_argument("--tasks", nargs="*", default=None, help="only these tasks (default: all)")
    ap.add_argument("--name", required=True, help="suffix of the saved JSON")
    args = ap.parse_args()
    try:
        episodes = load_episodes(args.interactions)
    except DatasetError as err:
        sys.exit(f"error: {err}")
    failed = [e for e in episodes if (np.asarray(e.labels) == LABEL_HUMAN).any() and not e.success
              and (args.tasks is None or e.task in args.tasks)]
    if not failed:
        sys.exit("no failed episode with a takeover in that folder (and those tasks)")
    env_cfg = EnvConfig()  # what is drawn (goal pin, camera) does not change the states; task variants are in the name
    out: dict[str, list[dict]] = {}
    print("| task | seed | person's steps | object to goal at takeover -> at end (m) | object moved by the person (m) "
          "| holding on from the first takeover | object behind the hand's reach at the end (cm) |"
          "\n|---|---|---|---|---|---|---|")
    for ep in failed:
        try:
            row = rescue_summary(ep, replay_states(ep, env_cfg))
            row["holding_on_succeeds_at"] = expert_keeps_control(ep, env_cfg)
            x, y, z = row["at_end"]["object"]
            row["hand_reach_y_at_end_object"] = round(hand_reach_y(ep.task, ep.seed, x, z, env_cfg), 3)
            row["object_behind_reach_cm"] = round(100 * (y - row["hand_reach_y_at_end_object"]), 1)
        except (UnknownNameError, KeyError, ValueError) as err:  # KeyError: no scripted expert for the task
            sys.exit(f"error: {err}")
        out.setdefault(ep.task, []).append(row)
        held = row["holding_on_succeeds_at"]
        print(f"| {ep.task} | {row['seed']} | {row['person_steps']} | {row['at_takeover']['object_to_goal']:.3f} -> "
              f"{row['at_end']['object_to_goal']:.3f} | {row['object_moved_by_person']:.3f} | "
              f"{'rescued at step ' + str(held) if held is not None else 'fails too'} | "
              f"{row['object_behind_reach_cm']:+.1f} |")
    for task, rows in out.items():
        rescued = sum(r["holding_on_succeeds_at"] is not None for r in rows)
        behind = sum(r["object_behind_reach_cm"] > 0 for r in rows)
        print(f"{task}: holding on would have rescued {rescued} of {len(rows)} failed rescues; "
              f"{behind} ended with the object behind the hand's reach")
    path = Path(__file__).parent / "results" / f"failed_rescues_{args.name}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
