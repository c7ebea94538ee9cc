"""Training-step throughput of the JAX model against a PyTorch CPU step like the released code's.

Run from the repository root (the baseline needs the ``bench`` extra: torch, numba,
scikit-learn):

    .venv/bin/python benchmarks/bench_train.py                  # prints markdown
    .venv/bin/python benchmarks/bench_train.py --quick          # fewer repeats
    .venv/bin/python benchmarks/bench_train.py --devices 1,2,4  # JAX rows on 1, 2, 4 devices
    .venv/bin/python benchmarks/bench_train.py --write docs/benchmarks.md

Every row trains on the batch size of Shen, Wang and Elhamifar (CVPR 2021): 30 videos of
about 90 segments and 40 narration phrases each, 512-d features, K = 7 visual and
K + K_bg = 17 linguistic prototypes. The data are synthetic, shaped like real inputs: unit
vectors near one of K step directions, in time order.

- JAX, pooled: the library's data-parallel train step (``parallel.make_sharded_train_step``,
  as ``training.train`` runs it) with its defaults, float32; once more with the released
  code's row softmax on the cost matrix.
- JAX, per-video: the same step with one SOPL + DWSA problem per video, vmapped over the 30
  pairs.
- PyTorch baseline: ``benchmarks/baselines/torch_released_step.py``, float64 on the CPU, with
  scikit-learn's k-means++ and the per-pair numba DWSA at every step.

Compilation and the first step are excluded, and each time is the median of repeated steps.
The PyTorch and the single-device JAX steps alternate, so that all see the same load.
``--devices`` re-runs the JAX rows in a subprocess per device count, with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (a CPU split into N host devices).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks import report  # noqa: E402

SECTION = "bench_train"
NUM_VIDEOS = 30
DIM = 512
NUM_PROTOTYPES = 7
NUM_BACKGROUND = 10
# The pooled step reaches this ratio of the PyTorch baseline's steps per second, or more.
TARGET_RATIO = 15.0
# On a GPU the pooled step takes at most this long.
GPU_TARGET_SECONDS = 0.010
# (row name, batching mode, row softmax) of the JAX rows.
JAX_ROWS = (
    ("JAX pooled, float32", "pooled", False),
    ("JAX pooled, float32, row softmax", "pooled", True),
    ("JAX per-video, float32", "per-video", False),
)


class SyntheticBatch:
    """One synthetic pooled batch, as numpy arrays (float64), with per-video counts.

    Attributes:
      segments: (N, D) unit-norm segment features of all videos, concatenated.
      segment_times: (N,) normalised time (t + 0.5) / T of each segment in its video.
      phrases: (P, D) unit-norm phrase features of all videos, concatenated.
      phrase_times: (P,) normalised phrase times in [0, 1].
      segment_counts: (num_videos,) segments per video.
      phrase_counts: (num_videos,) phrases per video.
    """

    def __init__(self, seed, num_videos=NUM_VIDEOS, dim=DIM, num_steps=NUM_PROTOTYPES):
        rng = np.random.default_rng(seed)
        steps = rng.normal(size=(num_steps, dim))
        segments, segment_times, phrases, phrase_times = [], [], [], []
        self.segment_counts = rng.integers(70, 111, size=num_videos)
        self.phrase_counts = rng.integers(30, 51, size=num_videos)
        for num_segments, num_phrases in zip(self.segment_counts, self.phrase_counts):
            times = (np.arange(num_segments) + 0.5) / num_segments
            segments.append(self._near_steps(rng, steps, times))
            segment_times.append(times)
            times = np.sort(rng.uniform(size=num_phrases))
            phrases.append(self._near_steps(rng, steps, times))
            phrase_times.append(times)
        self.segments = np.concatenate(segments)
        self.segment_times = np.concatenate(segment_times)
        self.phrases = np.concatenate(phrases)
        self.phrase_times = np.concatenate(phrase_times)

    def pooled_batch(self, dtype):
        """Return all videos as one PooledBatch of NumPy arrays in `dtype`, no padding."""
        from dwsa_jax import model

        return model.PooledBatch(
            visual=self.segments.astype(dtype), visual_times=self.segment_times.astype(dtype),
            visual_mask=np.ones(len(self.segments), bool), text=self.phrases.astype(dtype),
            text_times=self.phrase_times.astype(dtype),
            text_mask=np.ones(len(self.phrases), bool),
        )

    def pair_batch(self, dtype, num_pairs):
        """Return one pair per video as a PairBatch with `num_pairs` slots, in `dtype`.

        Segments and phrases are padded to the longest video, rounded up to a multiple of
        ``parallel.LENGTH_MULTIPLE`` as in training. Slots beyond the videos repeat the first
        video and are masked out of the loss.
        """
        from dwsa_jax import model, parallel

        multiple = parallel.LENGTH_MULTIPLE
        max_segments = -(-int(self.segment_counts.max()) // multiple) * multiple
        max_phrases = -(-int(self.phrase_counts.max()) // multiple) * multiple
        segment_starts = np.concatenate([[0], np.cumsum(self.segment_counts)])
        phrase_starts = np.concatenate([[0], np.cumsum(self.phrase_counts)])
        num_videos = len(self.segment_counts)
        dim = self.segments.shape[1]
        visual, visual_times, visual_mask, text, text_times, text_mask = model.zero_batches(
            num_pairs, max_segments, max_phrases, dim, dtype
        )
        for slot in range(num_pairs):
            video = slot if slot < num_videos else 0
            segments = slice(segment_starts[video], segment_starts[video + 1])
            phrases = slice(phrase_starts[video], phrase_starts[video + 1])
            t, p = int(self.segment_counts[video]), int(self.phrase_counts[video])
            visual[slot, :t] = self.segments[segments]
            visual_times[slot, :t] = self.segment_times[segments]
            visual_mask[slot, :t] = True
            text[slot, :p] = self.phrases[phrases]
            text_times[slot, :p] = self.phrase_times[phrases]
            text_mask[slot, :p] = True
        pairs = model.PooledBatch(visual, visual_times, visual_mask, text, text_times, text_mask)
        return parallel.PairBatch(pairs, np.arange(num_pairs) < num_videos)

    @staticmethod
    def _near_steps(rng, steps, times):
        """Return unit vectors near the step direction of each time, steps in time order."""
        step_of_time = np.minimum((times * len(steps)).astype(int), len(steps) - 1)
        points = steps[step_of_time] + 1.5 * rng.normal(size=(len(times), steps.shape[1]))
        return points / np.linalg.norm(points, axis=1, keepdims=True)


def prepare_jax_pooled(data, *, row_softmax):
    """Compile the pooled JAX train step (float32); return (one-step call, compile seconds)."""
    return prepare_jax_step(data, batching="pooled", row_softmax=row_softmax)


def prepare_jax_step(data, *, batching, row_softmax=False):
    """Compile the library's data-parallel train step on every visible device (float32).

    The step is ``parallel.make_sharded_train_step`` over ``parallel.data_mesh()``, as
    ``training.train`` runs it: on one device it is the plain jitted step.

    Args:
      data: a SyntheticBatch.
      batching: "pooled" (one SOPL problem per modality over all videos) or "per-video" (one
        pair per video, vmapped).
      row_softmax: apply the released code's softmax over each row of the cost matrix.

    Returns:
      (one-step call, seconds of the first call, compilation included).
    """
    import jax

    from dwsa_jax import model, parallel, training

    loss_config = model.LossConfig(
        num_background_prototypes=NUM_BACKGROUND, row_softmax=row_softmax
    )
    config = training.TrainConfig(loss=loss_config, num_prototypes=NUM_PROTOTYPES)
    mesh = parallel.data_mesh()
    graphdef, params = training.split_model(model.FeatureMaps(DIM))
    optimizer = training.make_optimizer(config)
    opt_state = optimizer.init(params)
    train_step = parallel.make_sharded_train_step(
        graphdef, optimizer, num_prototypes=NUM_PROTOTYPES, loss_config=loss_config,
        batching=batching, mesh=mesh,
    )
    if batching == "pooled":
        batch = parallel.pad_points(data.pooled_batch(np.float32), mesh.size)
    else:
        num_pairs = -(-len(data.segment_counts) // mesh.size) * mesh.size
        batch = data.pair_batch(np.float32, num_pairs)
    batch = parallel.shard_batch(batch, mesh)
    params, opt_state = parallel.replicate((params, opt_state), mesh)
    state = {"params": params, "opt_state": opt_state, "step": 0}
    base_key = parallel.replicate(jax.random.PRNGKey(0), mesh)

    def step():
        # A new key per step, as in training, so k-means++ draws new initial prototypes.
        key = jax.random.fold_in(base_key, state["step"])
        params, opt_state, loss = train_step(state["params"], state["opt_state"], batch, key)
        jax.block_until_ready(loss)
        state.update(params=params, opt_state=opt_state, step=state["step"] + 1)

    begin = time.perf_counter()
    step()
    compile_seconds = time.perf_counter() - begin
    return step, compile_seconds


def component_table(data, budget):
    """Time the parts of the pooled JAX step in turn; return a markdown table.

    The parts are the whole step, the two linear maps with L2 normalisation (forward and
    gradient), and the two SOPL problems (forward and gradient with respect to the features).
    What the whole step spends beyond the two parts is the cost matrix, the DWSA, the optimiser
    update and the glue between them.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from dwsa_jax import model, prototypes, training

    step, _ = prepare_jax_pooled(data, row_softmax=False)
    graphdef, params = training.split_model(model.FeatureMaps(DIM))
    segments = jnp.asarray(data.segments, jnp.float32)
    phrases = jnp.asarray(data.phrases, jnp.float32)
    segment_times = jnp.asarray(data.segment_times, jnp.float32)
    phrase_times = jnp.asarray(data.phrase_times, jnp.float32)

    def embedding_sum(params):
        maps = nnx.merge(graphdef, params)
        return jnp.sum(maps.embed_visual(segments)) + jnp.sum(maps.embed_text(phrases))

    def prototype_sum(visual, text):
        keys = jax.random.split(jax.random.PRNGKey(0))
        visual_sopl = prototypes.sopl(keys[0], visual, segment_times, NUM_PROTOTYPES)
        text_sopl = prototypes.sopl(
            keys[1], text, phrase_times, NUM_PROTOTYPES + NUM_BACKGROUND
        )
        return jnp.sum(visual_sopl.prototypes) + jnp.sum(text_sopl.prototypes)

    embedding_grad = jax.jit(jax.grad(embedding_sum))
    prototype_grad = jax.jit(jax.grad(prototype_sum, argnums=(0, 1)))
    parts = {
        "whole pooled step": step,
        "linear maps + L2 normalisation, forward and gradient":
            lambda: jax.block_until_ready(embedding_grad(params)),
        "SOPL, both modalities, forward and gradient":
            # The synthetic features are unit vectors already, as SOPL expects.
            lambda: jax.block_until_ready(prototype_grad(segments, phrases)),
    }
    for call in parts.values():
        call()  # compiles
    medians = report.interleaved_median_seconds(list(parts.values()), budget_seconds=budget)
    rows = [[name, f"{seconds * 1e3:.1f}", f"{seconds / medians[0]:.0%}"]
            for name, seconds in zip(parts, medians)]
    return report.markdown_table(["part", "ms", "share of the step"], rows)


def prepare_torch(data):
    """Build the PyTorch baseline (float64) and run its first step; return (call, seconds)."""
    import torch

    from benchmarks.baselines import torch_released_step

    trainer = torch_released_step.ReleasedTrainer(
        DIM, NUM_PROTOTYPES, num_background=NUM_BACKGROUND
    )
    tensors = [
        torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))
        for array in (data.segments, data.segment_times, data.phrases, data.phrase_times)
    ]

    def step():
        trainer.step(*tensors)

    begin = time.perf_counter()
    step()  # numba compiles the DWSA on the first step
    first_seconds = time.perf_counter() - begin
    return step, first_seconds


def jax_rows(data, budget, torch_step=None):
    """Measure every JAX row in this process; return (rows, seconds per PyTorch step).

    With ``torch_step``, the PyTorch baseline's steps alternate with the JAX steps round by
    round, so that all see the same background load; otherwise the second value is None.
    """
    # Every row runs data-parallel over all visible devices: points sharded when pooled,
    # pairs sharded when per-video.
    import jax

    names, steps, setup_seconds = [], [], []
    for name, batching, row_softmax in JAX_ROWS:
        step, compile_seconds = prepare_jax_step(
            data, batching=batching, row_softmax=row_softmax
        )
        names.append(name)
        steps.append(step)
        setup_seconds.append(compile_seconds)
    if torch_step is not None:
        steps.insert(0, torch_step)
    medians = report.interleaved_median_seconds(steps, budget_seconds=budget)
    torch_seconds = medians.pop(0) if torch_step is not None else None
    rows = [
        {"name": name, "devices": jax.device_count(), "platform": jax.default_backend(),
         "seconds": seconds, "setup_seconds": setup, "videos": NUM_VIDEOS}
        for name, seconds, setup in zip(names, medians, setup_seconds)
    ]
    return rows, torch_seconds


def jax_rows_on_devices(num_devices, args):
    """Run the JAX rows in a subprocess with ``num_devices`` forced host devices."""
    environment = dict(os.environ)
    environment["XLA_FLAGS"] = (
        environment.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={num_devices}"
    ).strip()
    command = [sys.executable, __file__, "--jax-only-json", "--seed", str(args.seed)]
    if args.quick:
        command.append("--quick")
    output = subprocess.run(
        command, env=environment, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def results_table(rows, torch_seconds):
    """Format the rows as markdown, with the ratio of each row to the PyTorch baseline."""
    headers = ["implementation", "devices", "steps/s", "video pairs/s", "x PyTorch",
               "compile or first step s"]
    cells = []
    for row in rows:
        ratio = torch_seconds / row["seconds"] if torch_seconds else float("nan")
        cells.append([
            row["name"], row["devices"], f"{1.0 / row['seconds']:.3g}",
            f"{row['videos'] / row['seconds']:.3g}", f"{ratio:.1f}x",
            f"{row['setup_seconds']:.1f}",
        ])
    return report.markdown_table(headers, cells)


def scaling_table(rows):
    """Format each JAX row's steps per second on every device count, relative to 1 device."""
    counts = sorted({row["devices"] for row in rows})
    seconds = {(row["name"], row["devices"]): row["seconds"] for row in rows}
    names = [name for name, _, _ in JAX_ROWS]
    cells = []
    for name in names:
        cell = [name]
        for count in counts:
            if (name, count) not in seconds:
                cell.append("")
                continue
            value = 1.0 / seconds[(name, count)]
            one = seconds.get((name, counts[0]))
            cell.append(f"{value:.3g} ({one / seconds[(name, count)]:.2f}x)")
        cells.append(cell)
    return report.markdown_table(
        ["implementation"] + [f"steps/s on {count} device(s)" for count in counts], cells
    )


def gpu_verdict(rows):
    """Return the GPU target line: the pooled step's time on a GPU, or that none was used."""
    gpu_rows = [row for row in rows
                if row["platform"] == "gpu" and row["name"] == "JAX pooled, float32"]
    if not gpu_rows:
        return ("GPU target (pooled step under"
                f" {GPU_TARGET_SECONDS * 1e3:.0f} ms): not measured, this run had no GPU.")
    row = min(gpu_rows, key=lambda row: row["devices"])
    verdict = "met" if row["seconds"] <= GPU_TARGET_SECONDS else "NOT met"
    return (f"GPU target (pooled step under {GPU_TARGET_SECONDS * 1e3:.0f} ms):"
            f" {row['seconds'] * 1e3:.1f} ms on {row['devices']} GPU(s), {verdict}.")


def build_section(args, data, rows, torch_seconds, load_before, load_after):
    """Return the markdown section: machine, command, the table and the target verdict."""
    command = "python benchmarks/bench_train.py" + (" --quick" if args.quick else "")
    if args.devices != "1":
        command += f" --devices {args.devices}"
    pooled_rows = [row for row in rows if row["name"] == "JAX pooled, float32"]
    pooled = min(pooled_rows, key=lambda row: row["devices"])
    ratio = torch_seconds / pooled["seconds"]
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    lines = [
        "## Training step throughput",
        "",
        f"Command: `{command}`. Measured on:",
        "",
        *report.machine_lines(["jax", "jaxlib", "flax", "optax", "torch", "numba",
                               "scikit-learn"]),
        f"- 1-minute load average: {load_before} before, {load_after} after the run",
        "",
        f"One pooled batch of {NUM_VIDEOS} videos: {len(data.segments)} segments"
        f" ({data.segment_counts.min()}-{data.segment_counts.max()} per video) and"
        f" {len(data.phrases)} phrases ({data.phrase_counts.min()}-{data.phrase_counts.max()}"
        f" per video), D = {DIM}, K = {NUM_PROTOTYPES}, K_bg = {NUM_BACKGROUND}, gamma = beta"
        " = 1e-3, 5 SOPL iterations, Adam with L2 weight decay. Video pairs per second ="
        f" {NUM_VIDEOS} x steps per second. Median of repeated steps, compilation and first"
        " step excluded; the PyTorch and single-device JAX steps were called in turn.",
        "",
        f"PyTorch baseline (float64, CPU): {1.0 / torch_seconds:.3g} steps/s"
        f" ({torch_seconds:.2f} s per step).",
        "",
        results_table(rows, torch_seconds),
        "",
        f"Target: pooled JAX step (float32) at least {TARGET_RATIO:.0f}x the PyTorch"
        f" baseline (float64): {ratio:.1f}x, {verdict}.",
        "",
        gpu_verdict(rows),
        "",
        "Per-video rows train one pair per video: the same 30 videos, each with its own SOPL"
        f" problems (K = {NUM_PROTOTYPES} and K + K_bg = {NUM_PROTOTYPES + NUM_BACKGROUND}"
        " prototypes) and DWSA, vmapped over the pairs padded to the longest video.",
    ]
    if len({row["devices"] for row in rows}) > 1:
        lines += [
            "",
            "### Scaling over devices",
            "",
            "Every JAX row runs data-parallel over all visible devices (pooled: points"
            " sharded; per-video: pairs sharded). Steps per second, and in brackets the"
            " speed-up over the fewest devices:",
            "",
            scaling_table(rows),
        ]
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short run: 1 s time budget per measurement instead of 10 s")
    parser.add_argument("--devices", default="1",
                        help="comma-separated numbers of forced host devices for the JAX rows "
                             "(default 1; e.g. 1,2,4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic batch")
    parser.add_argument("--write", metavar="PATH",
                        help="replace this script's section of a markdown file, e.g. "
                             "docs/benchmarks.md")
    parser.add_argument("--profile", action="store_true",
                        help="only profile the pooled JAX step: time its parts and print its XLA ops")
    parser.add_argument("--jax-only-json", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    budget = 1.0 if args.quick else 10.0
    data = SyntheticBatch(args.seed)

    if args.profile:
        print("Parts of the pooled JAX train step, float32, timed in turn:\n")
        print(component_table(data, budget))
        step, _ = prepare_jax_pooled(data, row_softmax=False)
        print("\nXLA CPU events of one pooled JAX train step, float32:\n")
        print(report.xla_event_table(step))
        return 0

    if args.jax_only_json:
        # Child process of --devices: the parent reads the last line of stdout.
        print(json.dumps(jax_rows(data, budget)[0]))
        return 0

    load_before = report.load_average()
    torch_step, _ = prepare_torch(data)
    device_counts = [int(count) for count in args.devices.split(",")]
    forced = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    rows = []
    torch_seconds = None
    for num_devices in device_counts:
        if num_devices == 1 and not forced:
            # In this process: the JAX steps alternate with the PyTorch baseline's.
            new_rows, torch_seconds = jax_rows(data, budget, torch_step)
        else:
            new_rows = jax_rows_on_devices(num_devices, args)
        rows += new_rows
        print(f"# JAX rows on {num_devices} device(s) done", file=sys.stderr)
    if torch_seconds is None:
        torch_seconds = report.median_seconds(torch_step, budget_seconds=budget)
    print(f"# PyTorch baseline: {torch_seconds:.2f} s per step", file=sys.stderr)

    section = build_section(args, data, rows, torch_seconds, load_before,
                            report.load_average())
    report.publish(section, SECTION, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
