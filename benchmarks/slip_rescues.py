"""Does the block slip out of a shallow grasp, and can a person who sees the slip rescue the episode?

Replays the policy's steps of every episode of an interaction folder (resetting to the episode's seed, as
``failed_rescues.py`` does) while a simulated person with the object-slipping trigger watches
(``--person.slip-distance``). The recorded policy actions are replayed up to the episode's first recorded
takeover; if the watching person steps in before that, the person then drives to the task's step cap,
once with ``regrasp_steps`` (open the gripper and raise the hand first) and once with 0 (the scripted
expert at once). Per episode it also reports how far the object slid down in the hand between leaving
the table and the first recorded takeover (or the end), while it was farther than ``slip_goal_distance``
from its goal, so held and slipping grasps can be told apart.

    python benchmarks/slip_rescues.py runs/pin/deploy50_finish_base --tasks shelf-place-v3 --name deploy50_base

Writes ``benchmarks/results/slip_rescues_<name>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from apo.data import load_episodes
from apo.data.episode import LABEL_HUMAN
from apo.data.storage import DatasetError
from apo.deployment.simulated import OFF_TABLE, SimulatedPerson, SimulatedPersonConfig
from apo.deployment.sources import StepContext
from apo.envs import EnvConfig, make_env
from apo.registry import UnknownNameError


def first_takeover(episode) -> int:
    human = np.asarray(episode.labels) == LABEL_HUMAN
    return int(np.argmax(human)) if human.any() else len(human)


def watch_and_rescue(episode, person_cfg: SimulatedPersonConfig, env_cfg: EnvConfig) -> dict:
    """Replays the episode's policy steps while ``person_cfg`` watches. Returns the step and reason of the
    watching person's first trigger (None: none before the recorded first takeover), the step at which the
    person, once in control, succeeded (None: not by the step cap), and the object's slide in the hand."""
    stop = first_takeover(episode)
    env, person = make_env(episode.task, env_cfg), SimulatedPerson(episode.task, person_cfg)
    try:
        _, info = env.reset(seed=int(episode.seed))
        person.reset(int(episode.seed))
        reward, success, t = 0.0, False, 0
        z0, offset0, slide = float(info["state"][6]), None, 0.0
        in_control, succeeded_at = False, None
        while True:
            state = info["state"]
            if not in_control and t < len(episode):
                recorded = np.asarray(episode.proprio[t])
                if not np.allclose(state[: recorded.shape[0]], recorded, atol=1e-4):
                    raise ValueError(f"{episode.task} seed {episode.seed}: the replay does not reproduce the recorded "
                                     f"proprioception at step {t}; replay with the env settings it was recorded with")
            if not in_control:
                if offset0 is None and state[6] > z0 + OFF_TABLE:
                    offset0 = float(state[6] - state[2])
                far = np.linalg.norm(state[4:7] - state[36:39]) > person_cfg.slip_goal_distance
                if offset0 is not None and far:
                    slide = max(slide, offset0 - float(state[6] - state[2]))
                if t >= len(episode):  # the recorded episode ended without a takeover
                    break
            proposal = episode.actions[min(t, stop - 1)]  # the policy's, as recorded (unused once in control)
            decision = person.decide(StepContext(t=t, obs={}, state=state, policy_action=proposal, reward=reward,
                                                 success=success))
            in_control = in_control or decision.action is not None
            if not in_control and t >= stop:  # the watcher saw every state the recorded person saw before stepping in
                break
            action = decision.action if in_control else episode.actions[t]
            if in_control and decision.action is None:  # handed back: count the person's attempt as over
                break
            _, reward, terminated, truncated, info = env.step(action)
            success, t = bool(info["success"]), t + 1
            if in_control and success:
                succeeded_at = t
                break
            if terminated or truncated:
                break
    finally:
        env.close()
    trigger = person.triggers[0] if person.triggers else (None, None)
    return {"trigger_step": trigger[0], "trigger": trigger[1], "person_succeeds_at": succeeded_at,
            "slide_cm": round(100 * slide, 2), "left_table": offset0 is not None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("interactions", type=Path, help="interaction episode folder (apo collect, a loop round)")
    ap.add_argument("--tasks", nargs="*", default=["shelf-place-v3"], help="tasks to replay")
    ap.add_argument("--slip-distance", type=float, default=0.015, help="the person's slip_distance (metres)")
    ap.add_argument("--regrasp-steps", type=int, default=12, help="the person's regrasp_steps")
    ap.add_argument("--name", required=True, help="suffix of the saved JSON")
    args = ap.parse_args()
    try:
        episodes = [e for e in load_episodes(args.interactions) if e.task in args.tasks]
    except DatasetError as err:
        sys.exit(f"error: {err}")
    if not episodes:
        sys.exit(f"no episode of {args.tasks} in {args.interactions}")
    # only the slip trigger: which episodes it sees, not when the default person would have stepped in
    watcher = SimulatedPersonConfig(slip_distance=args.slip_distance, regrasp_steps=args.regrasp_steps,
                                    no_progress_steps=0, object_bounds=None, hold_steps=10_000, max_reaction_delay=0)
    env_cfg = EnvConfig()  # what is drawn does not change the states
    rows = []
    for ep in episodes:
        try:
            row = {"task": ep.task, "seed": int(ep.seed), "success": bool(ep.success),
                   "recorded_takeover": first_takeover(ep) if first_takeover(ep) < len(ep) else None}
            row.update(watch_and_rescue(ep, watcher, env_cfg))
            if row["trigger"] is not None:
                row["expert_at_once_succeeds_at"] = watch_and_rescue(
                    ep, dataclasses.replace(watcher, regrasp_steps=0), env_cfg)["person_succeeds_at"]
        except (UnknownNameError, KeyError, ValueError) as err:  # KeyError: no scripted expert for the task
            sys.exit(f"error: {err}")
        rows.append(row)
    summary = {}
    print("| task | episodes | taken over | of those, slips seen before the takeover | slips seen in episodes not "
          f"taken over | rescued with regrasp {args.regrasp_steps} / expert at once | slide (cm) where a slip was "
          "seen: min, median | elsewhere: median, max |\n|---|---|---|---|---|---|---|---|")
    for task in args.tasks:
        mine = [r for r in rows if r["task"] == task]
        if not mine:
            continue
        taken = [r for r in mine if r["recorded_takeover"] is not None]
        alone = [r for r in mine if r["recorded_takeover"] is None]
        slips = [r for r in mine if r["trigger"] is not None]
        others = [r for r in mine if r["trigger"] is None]
        s = {"episodes": len(mine), "taken_over": len(taken),
             "slips_before_takeover": sum(r["trigger"] is not None for r in taken),
             "slips_not_taken_over": sum(r["trigger"] is not None for r in alone),
             "rescued_with_regrasp": sum(r["person_succeeds_at"] is not None for r in slips),
             "rescued_expert_at_once": sum(r["expert_at_once_succeeds_at"] is not None for r in slips),
             "slide_cm_slips_min": min((r["slide_cm"] for r in slips), default=None),
             "slide_cm_slips_median": float(np.median([r["slide_cm"] for r in slips])) if slips else None,
             "slide_cm_others_median": float(np.median([r["slide_cm"] for r in others])) if others else None,
             "slide_cm_others_max": max((r["slide_cm"] for r in others), default=None)}
        summary[task] = s
        print(f"| {task} | {s['episodes']} | {s['taken_over']} | {s['slips_before_takeover']} | "
              f"{s['slips_not_taken_over']} | {s['rescued_with_regrasp']} / {s['rescued_expert_at_once']} of "
              f"{len(slips)} | {s['slide_cm_slips_min']}, {s['slide_cm_slips_median']} | "
              f"{s['slide_cm_others_median']}, {s['slide_cm_others_max']} |")
    path = Path(__file__).parent / "results" / f"slip_rescues_{args.name}.json"
    path.write_text(json.dumps({"folder": str(args.interactions), "slip_distance": args.slip_distance,
                                "regrasp_steps": args.regrasp_steps, "summary": summary, "episodes": rows}, indent=2))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
