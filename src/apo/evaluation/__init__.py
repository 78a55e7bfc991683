"""Evaluation: seeded lockstep rollouts, success tables, JSON and rollout videos."""

from apo.evaluation.rollout import EVAL_SEED_BASE, EvalConfig, TaskResult, evaluate, success_table

__all__ = ["EVAL_SEED_BASE", "EvalConfig", "TaskResult", "evaluate", "success_table"]
