"""A PyTorch CPU training step written to behave like the authors' released code, for timing.

The authors' release (PyTorch + numba) trains the SOPL + DWSA model as follows, and this module
does the same in float64 on the CPU:

- two ``Linear(D, D)`` maps initialised to the identity (bias zero), each followed by L2
  normalisation;
- SOPL on the time-augmented points [x, sqrt(w) * tau] of the pooled batch: scikit-learn's
  greedy k-means++ with a fixed ``RandomState(1)`` picks the initial prototypes on the CPU at
  every step (no gradient through the choice), then p = 5 soft k-means iterations with
  beta = 1e-3 run in torch autograd, and the prototypes are sorted by time;
- the (q, 2 * q_text + 1) DWSA cost matrix of 1 - cosine costs and delta_e = 1 empty slots,
  with a softmax over each row, empty-slot columns included;
- DWSA with gamma = 1e-3 computed per pair by the O(q * N^2) float64 numba code of
  ``numba_dwsa.py``, through a ``torch.autograd.Function`` that moves the cost matrix to numpy
  and the gradient back;
- ``torch.optim.Adam(lr=5e-4, weight_decay=0.02)``.

Unlike the release, the DWSA gradient here is exact (no 1e-4 added to a normaliser): the
timing is that of the released algorithm, and the numba DWSA is checked against the golden
cases in ``tests/test_baselines.py``. The loss is not the JAX library's to the digit, because
the library draws its k-means++ initialisation with its own PRNG. This module exists only as
the baseline of ``benchmarks/bench_train.py`` and needs the ``bench`` extra (torch, numba,
scikit-learn).
"""

import math

import numpy as np
import sklearn.cluster
import torch

from benchmarks.baselines import numba_dwsa

DTYPE = torch.float64


class NumbaDWSA(torch.autograd.Function):
    """DWSA loss of one cost matrix, forward and backward in numba on the CPU."""

    @staticmethod
    def forward(ctx, cost, gamma):
        value, grad = numba_dwsa.dwsa_value_and_grad(cost.detach().cpu().numpy(), gamma)
        ctx.save_for_backward(torch.from_numpy(grad).to(cost.dtype))
        return cost.new_tensor(value)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None


class ReleasedModel(torch.nn.Module):
    """The visual and linguistic maps f(x) = normalize(W x + b), W = I and b = 0 at start."""

    def __init__(self, dim):
        super().__init__()
        self.visual = torch.nn.Linear(dim, dim, dtype=DTYPE)
        self.text = torch.nn.Linear(dim, dim, dtype=DTYPE)
        with torch.no_grad():
            for layer in (self.visual, self.text):
                layer.weight.copy_(torch.eye(dim, dtype=DTYPE))
                layer.bias.zero_()

    def forward(self, segments, phrases):
        visual = torch.nn.functional.normalize(self.visual(segments), dim=-1)
        text = torch.nn.functional.normalize(self.text(phrases), dim=-1)
        return visual, text


def sopl(features, times, num_prototypes, *, num_iterations=5, beta=1e-3, time_weight=1.0):
    """Return (K, D) prototypes sorted by time: k-means++ on the CPU, then soft k-means.

    Args:
      features: (n, D) float64 tensor of L2-normalised points, with gradient.
      times: (n,) float64 tensor of normalised times in [0, 1].
      num_prototypes: K.
      num_iterations: p, soft k-means iterations.
      beta: softmax temperature of the soft assignments, in squared-distance units.
      time_weight: w; the time coordinate is sqrt(w) * tau.

    Returns:
      (K, D) prototypes without the time coordinate, in increasing time order.
    """
    augmented = torch.cat([features, math.sqrt(time_weight) * times[:, None]], dim=1)
    _, indices = sklearn.cluster.kmeans_plusplus(
        augmented.detach().numpy(), num_prototypes, random_state=np.random.RandomState(1)
    )
    centers = augmented[torch.from_numpy(indices)].detach()
    for _ in range(num_iterations):
        # The expanded form |x|^2 + |c|^2 - 2 x.c, as the JAX library computes it. torch's
        # cdist has a much slower backward pass and would make the baseline needlessly slow.
        squared_distances = (
            (augmented * augmented).sum(dim=1)[:, None]
            + (centers * centers).sum(dim=1)[None, :]
            - 2.0 * augmented @ centers.T
        ).clamp(min=0.0)
        assignments = torch.softmax(-squared_distances / beta, dim=1)
        centers = assignments.T @ augmented / assignments.sum(dim=0)[:, None]
    order = torch.argsort(centers[:, -1])
    return centers[order, :-1]


def dwsa_cost(visual, text, *, delta_e=1.0):
    """Return the (q, 2 * q_text + 1) cost matrix with a softmax over each row.

    Odd columns (0-based) hold 1 - cos(v_i, l_n) for text prototype n = j // 2, even columns
    the empty-slot cost delta_e.
    """
    normalize = torch.nn.functional.normalize
    cosine = normalize(visual, dim=-1) @ normalize(text, dim=-1).T
    cost = torch.full((visual.shape[0], 2 * text.shape[0] + 1), delta_e, dtype=visual.dtype)
    # Slice assignment is recorded by autograd, so the gradient reaches the cosine costs.
    cost[:, 1::2] = 1.0 - cosine
    return torch.softmax(cost, dim=1)


class ReleasedTrainer:
    """Model, optimiser and pooled training step of the released code, in float64 on the CPU.

    Args:
      dim: feature dimension D.
      num_prototypes: K visual prototypes; the narration side gets K + num_background.
      num_background: K_bg extra linguistic prototypes.
      gamma: DWSA soft-min temperature.
      beta: SOPL smoothing (the release sets both from one flag).
    """

    def __init__(self, dim, num_prototypes, *, num_background=10, gamma=1e-3, beta=1e-3):
        self.model = ReleasedModel(dim)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=5e-4, weight_decay=0.02)
        self.num_prototypes = num_prototypes
        self.num_background = num_background
        self.gamma = gamma
        self.beta = beta

    def step(self, segments, segment_times, phrases, phrase_times):
        """Run one optimisation step on one pooled batch and return the loss as a float.

        Args:
          segments: (N, D) video segment features of all videos of the batch.
          segment_times: (N,) each segment's normalised time in its own video.
          phrases: (P, D) narration phrase features of all videos of the batch.
          phrase_times: (P,) each phrase's normalised time.
        """
        self.optimizer.zero_grad()
        visual, text = self.model(segments, phrases)
        visual_prototypes = sopl(visual, segment_times, self.num_prototypes, beta=self.beta)
        text_prototypes = sopl(
            text, phrase_times, self.num_prototypes + self.num_background, beta=self.beta
        )
        cost = dwsa_cost(visual_prototypes, text_prototypes)
        loss = NumbaDWSA.apply(cost, self.gamma)
        loss.backward()
        self.optimizer.step()
        return loss.item()
