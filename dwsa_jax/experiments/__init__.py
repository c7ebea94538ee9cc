"""Experiments of Shen, Wang and Elhamifar (CVPR 2021) and its supplement, rerunnable.

- `suite`: simulated task suites and dataset statistics (OCE, repeat frequency).
- `plan`: the runs (methods, K, p, b, delta_e and narration sweeps) and their identities.
- `fit`: training on batches padded to shared shapes, with epoch snapshots and a model cache.
- `store`: resumable CSV files.
- `runner`: runs everything into one folder.
- `alignment_report`: phrases and segments of the prototypes DWSA aligns.
- `report`: markdown tables and PNG figures from the folder's files.
- `cli`: the `dwsa-jax experiment` command.
"""

from dwsa_jax.experiments.plan import METHODS, QUICK_SWEEPS, Run, Sweeps, plan_runs
from dwsa_jax.experiments.report import write_report
from dwsa_jax.experiments.runner import run_experiment
from dwsa_jax.experiments.suite import SUITES, Suite, TaskStatistics, TrainingSettings, task_statistics

__all__ = [
    "METHODS",
    "QUICK_SWEEPS",
    "SUITES",
    "Run",
    "Suite",
    "Sweeps",
    "TaskStatistics",
    "TrainingSettings",
    "plan_runs",
    "run_experiment",
    "task_statistics",
    "write_report",
]
