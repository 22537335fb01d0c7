"""A kernel two-sample test: maximum mean discrepancy (MMD) with a permutation test.

Gaussian kernel ``exp(-|x - y|^2 / h)`` with the median heuristic (``h`` the median squared
distance between distinct points of the pooled sample); the statistic is the unbiased
estimate of MMD^2 (Gretton et al., JMLR 2012); its p-value is the share of random
relabellings of the pooled sample whose statistic is at least as large (the observed one
counted among them). Plain torch, float64, seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MmdResult:
    """The unbiased MMD^2 of two samples, its permutation p-value, and the kernel width."""

    statistic: float
    p_value: float
    bandwidth: float
    permutations: int


def mmd_test(x: torch.Tensor, y: torch.Tensor, permutations: int, seed: int) -> MmdResult:
    """Test whether samples ``x`` (m, d) and ``y`` (n, d), m, n >= 2, come from one
    distribution, relabelling the pooled sample ``permutations`` times."""
    pooled = torch.cat([x, y]).double()
    distances = torch.cdist(pooled, pooled).square()
    total = len(pooled)
    off_diagonal = distances[~torch.eye(total, dtype=torch.bool)]
    bandwidth = float(off_diagonal.median()) or 1.0  # all points equal: any width will do
    kernel = torch.exp(-distances / bandwidth)
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.stack(
        [torch.randperm(total, generator=generator) for _ in range(permutations)]
    )
    observed = torch.arange(total).unsqueeze(0)
    labels = torch.cat([observed, shuffled]) < len(x)  # True: in the first sample
    statistics = _unbiased_mmd2(kernel, labels.double(), len(x), len(y))
    p_value = float((statistics[1:] >= statistics[0]).sum() + 1) / (permutations + 1)
    return MmdResult(float(statistics[0]), p_value, bandwidth, permutations)


def _unbiased_mmd2(kernel: torch.Tensor, first: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """The unbiased MMD^2 of each labelling (rows of ``first``: 1 in the first sample, 0 in
    the second), from the pooled kernel matrix (its diagonal all ones)."""
    weighted = first @ kernel
    within_first = (weighted * first).sum(1)  # sum of k(a, b) over a, b in the first sample
    across = weighted.sum(1) - within_first
    within_second = kernel.sum() - 2 * across - within_first
    return (
        (within_first - m) / (m * (m - 1))
        + (within_second - n) / (n * (n - 1))
        - 2 * across / (m * n)
    )
