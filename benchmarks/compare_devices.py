"""Compare the loss and gradient of the training step on 1 device and on N devices.

Run from the repository root:

    .venv/bin/python benchmarks/compare_devices.py              # 4 forced host devices
    .venv/bin/python benchmarks/compare_devices.py --devices 2 --keys 10

The script re-runs itself with ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` unless
that many devices are already visible (on a multi-GPU machine it uses the real devices). The input is
the benchmark's synthetic batch: 30 videos, about 90 segments and 40 phrases each, 512-d (see
``bench_train.SyntheticBatch``). For several PRNG keys and both batching modes, the script
evaluates the loss and its gradient with respect to the parameters on a mesh of the first
device and on a mesh of N devices, in float32 and float64. It prints markdown with the largest
relative difference over the keys per mode and dtype. For reference it also prints the
difference between float32 and float64 on one device; that one includes k-means++ draws that
float32 rounding flips, so it is a different draw rather than a rounding error.

Relative difference of a gradient: max |g_1 - g_N| / max |g_1| over each parameter array,
the largest over arrays and keys. Of a loss: |l_1 - l_N| / |l_1|.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks import report  # noqa: E402
from benchmarks.bench_train import (  # noqa: E402
    DIM, NUM_BACKGROUND, NUM_PROTOTYPES, SyntheticBatch,
)

FORCED_FLAG = "--xla_force_host_platform_device_count"


def values_and_gradients(data, batching, dtype, num_devices, pad_to, num_keys):
    """Return [(loss, gradient leaves)] for keys 0..num_keys-1 on the first `num_devices`."""
    import jax

    from dwsa_jax import model, parallel, training

    loss_config = model.LossConfig(num_background_prototypes=NUM_BACKGROUND)
    graphdef, params = training.split_model(model.FeatureMaps(DIM, param_dtype=dtype))
    mesh = parallel.data_mesh(jax.devices()[:num_devices])
    if batching == "pooled":
        batch = parallel.pad_points(data.pooled_batch(dtype), pad_to)
        loss_of_batch = model.alignment_loss
    else:
        batch = data.pair_batch(dtype, -(-len(data.segment_counts) // pad_to) * pad_to)
        loss_of_batch = parallel.per_video_loss

    def loss_fn(params, batch, key):
        return loss_of_batch(params, batch, key, graphdef=graphdef,
                             num_prototypes=NUM_PROTOTYPES, config=loss_config)[0]

    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    batch, params = parallel.shard_batch(batch, mesh), parallel.replicate(params, mesh)
    results = []
    for seed in range(num_keys):
        key = parallel.replicate(jax.random.PRNGKey(seed), mesh)
        with jax.set_mesh(mesh):
            loss, grads = value_and_grad(params, batch, key)
        leaves = [np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(grads)]
        results.append((float(loss), leaves))
    return results


def worst_differences(reference, other):
    """Return (loss, gradient) largest relative differences between two result lists."""
    loss_worst = gradient_worst = 0.0
    for (loss_a, grads_a), (loss_b, grads_b) in zip(reference, other):
        loss_worst = max(loss_worst, abs(loss_a - loss_b) / abs(loss_a))
        for a, b in zip(grads_a, grads_b):
            gradient_worst = max(gradient_worst, float(np.abs(a - b).max() / np.abs(a).max()))
    return loss_worst, gradient_worst


def measure(num_devices, num_keys):
    """Return one dict per (mode, comparison) with the largest relative differences."""
    import jax

    jax.config.update("jax_enable_x64", True)
    data = SyntheticBatch(0)
    rows = []
    for batching in ("pooled", "per-video"):
        runs = {
            (dtype, devices): values_and_gradients(
                data, batching, dtype, devices, num_devices, num_keys
            )
            for dtype in (np.float32, np.float64) for devices in (1, num_devices)
        }
        comparisons = [
            (f"float32, 1 vs {num_devices} devices", (np.float32, 1), (np.float32, num_devices)),
            (f"float64, 1 vs {num_devices} devices", (np.float64, 1), (np.float64, num_devices)),
            ("float32 vs float64, 1 device", (np.float64, 1), (np.float32, 1)),
        ]
        for name, reference, other in comparisons:
            loss, gradient = worst_differences(runs[reference], runs[other])
            rows.append({"mode": batching, "comparison": name, "loss": loss, "gradient": gradient})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=4, help="N, devices to compare with 1")
    parser.add_argument("--keys", type=int, default=20, help="PRNG keys per comparison")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.json:
        print(json.dumps(measure(args.devices, args.keys)))
        return 0

    import jax  # only to count devices; the measurement runs in a child process

    environment = dict(os.environ)
    if jax.device_count() < args.devices:
        environment["XLA_FLAGS"] = (
            environment.get("XLA_FLAGS", "") + f" {FORCED_FLAG}={args.devices}"
        ).strip()
    command = [sys.executable, __file__, "--json", "--devices", str(args.devices),
               "--keys", str(args.keys)]
    output = subprocess.run(command, env=environment, check=True, capture_output=True,
                            text=True).stdout
    rows = json.loads(output.strip().splitlines()[-1])
    print(report.markdown_table(
        ["mode", "comparison", "loss, max relative difference",
         "gradient, max relative difference"],
        [[row["mode"], row["comparison"], f"{row['loss']:.1e}", f"{row['gradient']:.1e}"]
         for row in rows],
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
