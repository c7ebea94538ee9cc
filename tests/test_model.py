"""Tests of the feature maps and the SOPL + DWSA loss (dwsa_jax.model)."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dwsa_jax import prototypes, simulate, training
from dwsa_jax.model import FeatureMaps, LossConfig, PooledBatch, alignment_loss

NUM_PROTOTYPES = 3


@pytest.fixture(scope="module")
def task():
    config = simulate.SimulationConfig(
        num_videos=4, num_steps=NUM_PROTOTYPES, feature_dim=12, min_segments=12,
        max_segments=18,
    )
    return simulate.simulate_task(config, seed=3)


@pytest.fixture(scope="module")
def batch(task):
    padded = training.make_pooled_batches(task, 4, NUM_PROTOTYPES, NUM_PROTOTYPES + 2)
    return padded.batch(0)


def _split(dim, param_dtype=jnp.float32):
    return training.split_model(FeatureMaps(dim, param_dtype=param_dtype))


def test_identity_init_normalizes_inputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7)).astype(np.float32)
    model = FeatureMaps(7)
    expected = x / np.linalg.norm(x, axis=1, keepdims=True)

    np.testing.assert_array_equal(np.asarray(model.visual.kernel[...]), np.eye(7))
    np.testing.assert_array_equal(np.asarray(model.text.bias[...]), np.zeros(7))
    np.testing.assert_allclose(np.asarray(model.embed_visual(x)), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(model.embed_text(x)), expected, rtol=1e-6)
    assert model.embed_visual(x).dtype == jnp.float32


def test_embedding_keeps_float64():
    x = np.random.default_rng(1).normal(size=(3, 4))
    model = FeatureMaps(4, param_dtype=jnp.float64)
    out = model.embed_visual(jnp.asarray(x, jnp.float64))
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(out), x / np.linalg.norm(x, axis=1, keepdims=True))


def test_zero_row_maps_to_zero_with_finite_gradient():
    model = FeatureMaps(4)
    graphdef, params = training.split_model(model)

    def total(params, x):
        return jnp.sum(nnx.merge(graphdef, params).embed_visual(x))

    x = jnp.asarray([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], jnp.float32)
    out = nnx.merge(graphdef, params).embed_visual(x)
    grads = jax.grad(total)(params, x)

    np.testing.assert_array_equal(np.asarray(out[1]), np.zeros(4))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def _softmin(values, gamma):
    values = np.asarray(values, np.float64)
    low = values.min()
    return low - gamma * np.log(np.sum(np.exp(-(values - low) / gamma)))


def _brute_force_dwsa(cost, gamma):
    """Soft-min over all admissible column sequences, 0-based: even = empty slot."""
    q, num_cols = cost.shape
    totals = []
    for columns in itertools.product(range(num_cols), repeat=q):
        admissible = all(
            (b >= a) if b % 2 == 0 else (b > a) for a, b in zip(columns, columns[1:])
        )
        if admissible:
            totals.append(sum(cost[i, j] for i, j in enumerate(columns)))
    return _softmin(totals, gamma)


def _cosine_costs(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - a @ b.T


def test_loss_matches_brute_force_at_identity(batch):
    config = LossConfig(num_background_prototypes=2, delta_e=0.7, gamma=1e-2)
    graphdef, params = _split(batch.visual.shape[-1])
    key = jax.random.PRNGKey(5)
    loss, _ = alignment_loss(
        params, batch, key, graphdef=graphdef, num_prototypes=NUM_PROTOTYPES, config=config
    )

    # At the identity initialisation f(x) = x / |x|, so the loss is DWSA between SOPL
    # prototypes of the normalised inputs, with the key split as (visual, text).
    visual_key, text_key = jax.random.split(key)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    visual = prototypes.sopl(
        visual_key, unit(np.asarray(batch.visual)), batch.visual_times, NUM_PROTOTYPES,
        mask=batch.visual_mask,
    ).prototypes
    text = prototypes.sopl(
        text_key, unit(np.asarray(batch.text)), batch.text_times, NUM_PROTOTYPES + 2,
        mask=batch.text_mask,
    ).prototypes
    pair_costs = _cosine_costs(np.asarray(visual, np.float64), np.asarray(text, np.float64))
    cost = np.full((NUM_PROTOTYPES, 2 * (NUM_PROTOTYPES + 2) + 1), 0.7)
    cost[:, 1::2] = pair_costs

    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(float(loss), _brute_force_dwsa(cost, 1e-2), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("alignment, row_softmax", [
    ("dwsa", False), ("dwsa", True), ("softdtw", False),
])
def test_loss_and_gradient_finite(batch, alignment, row_softmax):
    config = LossConfig(num_background_prototypes=2, alignment=alignment, row_softmax=row_softmax)
    graphdef, params = _split(batch.visual.shape[-1])

    def loss_fn(params):
        return alignment_loss(
            params, batch, jax.random.PRNGKey(0), graphdef=graphdef,
            num_prototypes=NUM_PROTOTYPES, config=config,
        )[0]

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    assert np.isfinite(float(loss))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert any(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(grads))


def test_nan_padding_does_not_reach_gradient(batch):
    config = LossConfig(num_background_prototypes=2)
    graphdef, params = _split(batch.visual.shape[-1])
    extra = 3
    padded = PooledBatch(
        visual=jnp.concatenate([batch.visual, jnp.full((extra, batch.visual.shape[1]), jnp.nan, jnp.float32)]),
        visual_times=jnp.concatenate([batch.visual_times, jnp.zeros(extra, jnp.float32)]),
        visual_mask=jnp.concatenate([batch.visual_mask, jnp.zeros(extra, bool)]),
        text=batch.text, text_times=batch.text_times, text_mask=batch.text_mask,
    )

    def loss_fn(params, b):
        return alignment_loss(
            params, b, jax.random.PRNGKey(0), graphdef=graphdef,
            num_prototypes=NUM_PROTOTYPES, config=config,
        )[0]

    loss, grads = jax.value_and_grad(loss_fn)(params, padded)
    assert np.isfinite(float(loss))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_loss_vmaps_over_batches(task):
    padded = training.make_pooled_batches(task, 2, NUM_PROTOTYPES, NUM_PROTOTYPES + 2)
    config = LossConfig(num_background_prototypes=2)
    graphdef, params = _split(padded.batches.visual.shape[-1])
    keys = jax.random.split(jax.random.PRNGKey(0), padded.num_batches)

    def loss_fn(b, key):
        return alignment_loss(
            params, b, key, graphdef=graphdef, num_prototypes=NUM_PROTOTYPES, config=config
        )[0]

    batched = jax.vmap(loss_fn)(padded.batches, keys)
    looped = [loss_fn(padded.batch(i), keys[i]) for i in range(padded.num_batches)]
    np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=1e-5)


def test_loss_reports_sopl_errors(batch):
    config = LossConfig(num_background_prototypes=2, sopl_iterations=4)
    graphdef, params = _split(batch.visual.shape[-1])
    _, output = alignment_loss(
        params, batch, jax.random.PRNGKey(0), graphdef=graphdef,
        num_prototypes=NUM_PROTOTYPES, config=config,
    )
    assert output.visual_sopl_error.shape == (4,)
    assert output.text_sopl_error.shape == (4,)


@pytest.mark.parametrize("field, value", [
    ("alignment", "dtw"),
    ("num_background_prototypes", -1),
    ("sopl_iterations", 0),
    ("time_weight", -0.5),
])
def test_loss_config_rejects_invalid(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(LossConfig(), **{field: value})
