"""Train one epoch on 1 device and on every visible device; print the differences as JSON.

Run by tests/test_parallel.py in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=4, since the device count is fixed when JAX
starts. For each batching mode it compares, between a mesh of the first device and a mesh of
all devices: the loss and gradients of the first batch at the initial parameters, and the loss
history and parameters after one epoch of `training.train` (the all-device run also writes and
reads back checkpoints). Float32, the training default.
"""

import json
import sys
import tempfile

import jax
import numpy as np

from dwsa_jax import parallel, simulate, training
from dwsa_jax.model import FeatureMaps, LossConfig, alignment_loss

K = 3
K_BG = 2
DIM = 16


def relative_difference(reference, other):
    """Return max |a - b| / max |a| over the leaves of two pytrees, as a float."""
    worst = 0.0
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(other)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        worst = max(worst, float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30)))
    return worst


def max_abs_difference(reference, other):
    """Return max |a - b| over the leaves of two pytrees, as a float."""
    return max(
        float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
        for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(other))
    )


def first_batch_value_and_grad(task, config, devices):
    """Return (loss, grads) of the first batch at the initial parameters on `devices`."""
    mesh = parallel.data_mesh(devices)
    batches, _ = training._epoch_batches(task, config, K, K + K_BG, mesh)
    graphdef, params = training.split_model(FeatureMaps(DIM))
    loss_of_batch = alignment_loss if config.batching == "pooled" else parallel.per_video_loss

    def loss_fn(params, batch, key):
        return loss_of_batch(
            params, batch, key, graphdef=graphdef, num_prototypes=K, config=config.loss
        )[0]

    params, key = parallel.replicate((params, jax.random.PRNGKey(1)), mesh)
    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params, batches[0], key)
    return float(loss), jax.device_get(grads)


def main():
    task = simulate.simulate_task(
        simulate.SimulationConfig(
            num_videos=8, num_steps=K, feature_dim=DIM, min_segments=10, max_segments=16,
            chatter_per_minute=6.0,
        ),
        seed=3,
    )
    results = {"device_count": jax.device_count()}
    for batching in parallel.BATCHING_MODES:
        config = training.TrainConfig(
            loss=LossConfig(num_background_prototypes=K_BG), batch_size=4, num_epochs=1,
            eval_epoch=1, learning_rate=1e-2, batching=batching,
        )
        one_loss, one_grads = first_batch_value_and_grad(task, config, jax.devices()[:1])
        all_loss, all_grads = first_batch_value_and_grad(task, config, jax.devices())
        one = training.train(task, config, devices=jax.devices()[:1])
        with tempfile.TemporaryDirectory() as folder:
            every = training.train(task, config, checkpoint_dir=folder, devices=jax.devices())
            loaded = training.load_model(f"{folder}/model_last")
        one_params = training.split_model(one.model)[1]
        results[batching] = {
            "loss_one": one_loss,
            "loss_all": all_loss,
            "grads_relative_difference": relative_difference(one_grads, all_grads),
            "grads_max_abs": max(float(np.abs(g).max()) for g in jax.tree.leaves(one_grads)),
            "history_one": one.loss_history.tolist(),
            "history_all": every.loss_history.tolist(),
            "params_relative_difference": relative_difference(
                one_params, training.split_model(every.model)[1]
            ),
            "params_moved": max_abs_difference(
                one_params, training.split_model(FeatureMaps(DIM))[1]
            ),
            "checkpoint_relative_difference": relative_difference(
                training.split_model(every.model)[1], loaded.params
            ),
        }
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
