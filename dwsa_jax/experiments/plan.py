"""The runs of an experiment: which method, with which swept parameter, on which task.

Every run is identified by (task, method, seed, parameter, value) and becomes one row of
results.csv. The parameter is one of

  "K"          number of prototypes and clusters; value "gt" is the task's number of key-steps,
  "p"          SOPL iterations during training (trained methods),
  "b"          background ratio of localization,
  "delta_e"    DWSA empty-slot cost (sopl+dwsa),
  "narration"  narration mode, "verb-dobj", "verb-phrase" or "concrete" (sopl+dwsa; only with
               subtitles).

All other settings keep their defaults (K = key-steps, p = 5, b = 0.4, delta_e = 1), so the
run ("K", "gt") of a method is also its default run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

METHODS = ("kmeans", "sopl", "sopl+softdtw", "sopl+dwsa")
TRAINED = {"sopl+softdtw": "softdtw", "sopl+dwsa": "dwsa"}
GROUND_TRUTH_K = "gt"

DEFAULT_SOPL_ITERATIONS = 5
DEFAULT_BACKGROUND_RATIO = 0.4
DEFAULT_DELTA_E = 1.0


@dataclasses.dataclass(frozen=True)
class Sweeps:
    """Values of each swept parameter.

    Attributes:
      num_prototypes: K values run for every method, besides the task's number of key-steps.
      sopl_iterations: p values run for sopl+dwsa.
      background_ratios: b values run for every method.
      delta_e: empty-slot costs run for sopl+dwsa, in 1 - cos units.
      narration_modes: narration modes run for sopl+dwsa when subtitles are given.
      snapshot_epochs: completed epochs at which SOPL's convergence is recorded (Figure 1);
        values above the number of epochs are dropped.
    """

    num_prototypes: tuple[int, ...] = (7, 10, 12, 15)
    sopl_iterations: tuple[int, ...] = (1, 3, 5, 7)
    background_ratios: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    delta_e: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0)
    narration_modes: tuple[str, ...] = ("verb-dobj", "verb-phrase", "concrete")
    snapshot_epochs: tuple[int, ...] = (0, 1, 5, 10, 20, 30, 50)


QUICK_SWEEPS = Sweeps(
    num_prototypes=(7,),
    sopl_iterations=(1, 5),
    background_ratios=(0.0, 0.4, 0.8),
    delta_e=(0.5, 1.0),
    snapshot_epochs=(0, 1, 5, 10),
)


def format_value(value: float | int | str) -> str:
    """Format a swept value as it appears in results.csv: 7, 0.4, 1, 0.25, gt."""
    if isinstance(value, str):
        return value
    return f"{value:g}"


class Run(NamedTuple):
    """One run: a method with one swept parameter set to one value, the rest at defaults.

    Attributes:
      task: task id.
      method: one of METHODS.
      seed: seed of training and of localization's k-means++.
      parameter: "K", "p", "b", "delta_e" or "narration".
      value: the parameter's value as written in results.csv.
      num_clusters: K, resolved to an integer.
      sopl_iterations: p.
      background_ratio: b.
      delta_e: DWSA empty-slot cost.
      narration: narration mode, or None for the task's own phrases.
    """

    task: str
    method: str
    seed: int
    parameter: str
    value: str
    num_clusters: int
    sopl_iterations: int = DEFAULT_SOPL_ITERATIONS
    background_ratio: float = DEFAULT_BACKGROUND_RATIO
    delta_e: float = DEFAULT_DELTA_E
    narration: str | None = None

    @property
    def key(self) -> tuple[str, ...]:
        """The run's identity in results.csv."""
        return (self.task, self.method, str(self.seed), self.parameter, self.value)

    @property
    def trained(self) -> bool:
        return self.method in TRAINED

    @property
    def model_key(self) -> tuple | None:
        """Settings that determine the trained model, or None for an untrained method.

        Runs with the same model key share one trained model; b only affects localization.
        """
        if not self.trained:
            return None
        return (self.task, self.method, self.seed, self.num_clusters, self.sopl_iterations,
                self.delta_e if self.method == "sopl+dwsa" else DEFAULT_DELTA_E, self.narration)


def plan_runs(
    task: str,
    num_steps: int | None,
    seeds: Sequence[int],
    sweeps: Sweeps,
    *,
    with_narration: bool = False,
) -> list[Run]:
    """List every run of one task, grouped by seed, runs sharing a model next to each other.

    Args:
      task: task id.
      num_steps: the task's number of key-steps; None leaves out the "gt" runs and uses the
        first K of the sweep as the default.
      seeds: run seeds.
      sweeps: the swept values.
      with_narration: add the narration-mode runs (needs subtitles).

    Returns:
      Runs in execution order.
    """
    default_k = num_steps if num_steps else sweeps.num_prototypes[0]
    runs = []
    for seed in seeds:
        for method in METHODS:
            if num_steps:
                runs.append(Run(task, method, seed, "K", GROUND_TRUTH_K, num_steps))
            runs += [Run(task, method, seed, "K", format_value(k), k)
                     for k in sweeps.num_prototypes]
            runs += [Run(task, method, seed, "b", format_value(b), default_k, background_ratio=b)
                     for b in sweeps.background_ratios]
            if method == "sopl+dwsa":
                runs += [Run(task, method, seed, "p", format_value(p), default_k,
                             sopl_iterations=p) for p in sweeps.sopl_iterations]
                runs += [Run(task, method, seed, "delta_e", format_value(d), default_k,
                             delta_e=d) for d in sweeps.delta_e]
                if with_narration:
                    runs += [Run(task, method, seed, "narration", mode, default_k, narration=mode)
                             for mode in sweeps.narration_modes]
    return runs
