"""Train one epoch of both batching modes in one process of a multi-process JAX run.

Run by tests/test_parallel.py as two processes on this machine, with JAX_COORDINATOR_ADDRESS
on 127.0.0.1, JAX_NUM_PROCESSES=2 and JAX_PROCESS_ID=0 or 1. Each process joins the run
through `parallel.initialize_distributed`, trains on the mesh over the devices of both
processes, and prints its loss histories as JSON on the last line.
"""

import json
import sys

from dwsa_jax import parallel

# Before any other JAX work, as `dwsa-jax train` does.
parallel.initialize_distributed()

import jax  # noqa: E402

from dwsa_jax import simulate, training  # noqa: E402
from dwsa_jax.model import LossConfig  # noqa: E402

SIMULATION = simulate.SimulationConfig(
    num_videos=8, num_steps=3, feature_dim=16, min_segments=10, max_segments=16,
    chatter_per_minute=6.0,
)


def train_config(batching):
    """Return the one-epoch configuration that the test also trains on one device."""
    return training.TrainConfig(
        loss=LossConfig(num_background_prototypes=2), batch_size=4, num_epochs=1, eval_epoch=1,
        learning_rate=1e-2, batching=batching,
    )


def main():
    task = simulate.simulate_task(SIMULATION, seed=3)
    histories = {
        batching: training.train(task, train_config(batching)).loss_history.tolist()
        for batching in parallel.BATCHING_MODES
    }
    print(json.dumps({"process_index": jax.process_index(), "device_count": jax.device_count(),
                      "histories": histories}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
