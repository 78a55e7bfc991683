"""How a policy fails on the pick-and-place tasks, from the simulator state of its rollouts.

Rolls a policy out on the fixed evaluation seeds (the same episodes as ``apo eval``) and sorts every
failed episode by what happened to the main object (MetaWorld state 4:7):
* ``no grasp``: never lifted 2 cm above where it started;
* ``dropped``: lifted, but back within 1 cm of the table at the end;
* ``misplaced``: lifted and still held at the end, but never within the success distance of the goal.
For the episodes that lifted the object, it also fits the object's height at its closest approach to
the goal against the goal's height (slope 1: the policy lifts to wherever the goal is; 0: it ignores
the goal's height). pick-place's goal floats 5-30 cm above the table.

    python benchmarks/failure_modes.py --policy runs/fast15k/train/policy --name fast15k  # ~4 min
    python benchmarks/failure_modes.py --policy runs/pin/train/policy --goal-pin --name pin

Writes ``benchmarks/results/failure_modes_<name>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from apo.envs import EnvConfig, get_task, make_env
from apo.evaluation.rollout import EVAL_SEED_BASE
from apo.models import VLAPolicy
from apo.registry import UnknownNameError

LIFTED, ON_TABLE = 0.02, 0.01  # metres above the object's start height
GOAL_HEIGHT_BINS = (0.0, 0.12, 0.2, 0.31)  # metres: pick-place's goal height range (0.05-0.30) in three


def sight_line_span(env_cfg: EnvConfig, task: str) -> float:
    """Longest stretch of one camera ray (metres) inside the task's goal box: goals along it project to
    the same pixel, so without another cue their depth cannot be told apart."""
    cam = env_cfg.camera
    az, el = np.radians(cam.azimuth), np.radians(cam.elevation)
    ray = np.abs([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    env = make_env(task, env_cfg)
    try:
        box = env.raw_env.goal_space
        extent = np.asarray(box.high) - np.asarray(box.low)
    finally:
        env.close()
    return float(min(e / r for e, r in zip(extent, ray) if r > 1e-9))


def rollout(policy, task: str, episodes: int, env_cfg: EnvConfig) -> list[dict]:
    """One row per episode: success, the object's lift, and its closest approach to the goal."""
    rows = []
    env = make_env(task, env_cfg)
    try:
        for i in tqdm(range(episodes), desc=task, unit="ep", leave=False):
            obs, info = env.reset(seed=EVAL_SEED_BASE + i)
            start = info["state"][4:7].copy()
            objects, success, done = [], False, False
            while not done:
                action = policy.act_batch(obs["image"][None], obs["proprio"][None], [obs["instruction"]])[0][0]
                obs, _, terminated, truncated, info = env.step(action)
                objects.append(info["state"][4:7].copy())
                success, done = success or info["success"], terminated or truncated
            objects, goal = np.array(objects), info["state"][36:39].copy()
            closest = objects[np.linalg.norm(objects - goal, axis=1).argmin()]
            rows.append({"seed": EVAL_SEED_BASE + i, "success": bool(success),
                         "max_lift": float(objects[:, 2].max() - start[2]), "end_lift": float(objects[-1, 2] - start[2]),
                         "goal": goal.tolist(), "closest": closest.tolist()})
    finally:
        env.close()
    return rows


def failure_mode(row: dict) -> str:
    if row["success"]:
        return "success"
    if row["max_lift"] < LIFTED:
        return "no grasp"
    return "dropped" if row["end_lift"] < ON_TABLE else "misplaced"


def summarize(rows: list[dict]) -> dict:
    modes = [failure_mode(r) for r in rows]
    out = {m: modes.count(m) for m in ("success", "no grasp", "dropped", "misplaced")}
    lifted = [r for r in rows if r["max_lift"] >= LIFTED]
    goal_z = np.array([r["goal"][2] for r in lifted])
    if len(lifted) >= 3 and goal_z.std() > 0.01:  # the goal's height varies on this task
        closest_z = np.array([r["closest"][2] for r in lifted])
        out["height_slope"] = float(np.polyfit(goal_z, closest_z, 1)[0])
        out["height_corr"] = float(np.corrcoef(goal_z, closest_z)[0, 1])
        by_height = {}
        for lo, hi in zip(GOAL_HEIGHT_BINS[:-1], GOAL_HEIGHT_BINS[1:]):
            ok = [r["success"] for r in rows if lo <= r["goal"][2] < hi]
            by_height[f"{lo:.2f}-{hi:.2f} m"] = f"{sum(ok)}/{len(ok)}"
        out["success_by_goal_height"] = by_height
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="saved policy folder (e.g. runs/fast15k/train/policy)")
    parser.add_argument("--tasks", nargs="+", default=["pick-place-v3", "shelf-place-v3"])
    parser.add_argument("--episodes", type=int, default=50, help="episodes per task, on the eval seeds")
    parser.add_argument("--goal-pin", action="store_true", help="render the goal pin (a policy trained with it)")
    parser.add_argument("--name", default="base", help="suffix of the results file")
    args = parser.parse_args()
    if args.episodes < 1:
        raise SystemExit(f"--episodes must be >= 1, got {args.episodes}")
    try:
        for task in args.tasks:
            get_task(task)
    except UnknownNameError as err:
        raise SystemExit(str(err)) from None
    if not (Path(args.policy) / "config.json").exists():
        raise SystemExit(f"{args.policy} is not a saved policy folder (no config.json); pass e.g. runs/<run>/train/policy")
    torch.set_num_threads(1)
    policy = VLAPolicy.load(args.policy)
    env_cfg = EnvConfig(image_size=policy.config.image_size, goal_pin=args.goal_pin)
    results = {"policy": args.policy, "goal_pin": args.goal_pin, "episodes": args.episodes, "tasks": {}}
    print("| task | success | no grasp | dropped | misplaced | lift height vs goal height (slope, r) |")
    print("|---|---|---|---|---|---|")
    for task in args.tasks:
        rows = rollout(policy, task, args.episodes, env_cfg)
        s = summarize(rows)
        s["goal_sight_line_span_m"] = sight_line_span(env_cfg, task)
        results["tasks"][task] = {"summary": s, "episodes": rows}
        fit = f"{s['height_slope']:.2f}, {s['height_corr']:.2f}" if "height_slope" in s else "-"
        print(f"| {task} | {s['success']} | {s['no grasp']} | {s['dropped']} | {s['misplaced']} | {fit} |")
    for task, res in results["tasks"].items():
        if "success_by_goal_height" in res["summary"]:
            print(f"\n{task}, successes by goal height: {res['summary']['success_by_goal_height']}")
    for task, res in results["tasks"].items():
        print(f"{task}: the goal's range spans up to {res['summary']['goal_sight_line_span_m'] * 100:.0f} cm "
              "along one line of sight of the camera")
    out = Path(__file__).parent / "results" / f"failure_modes_{args.name}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
