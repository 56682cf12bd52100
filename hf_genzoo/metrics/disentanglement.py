"""Mutual information gap (MIG; Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs").

    MIG = (1/K) Σ_k (1 / H(v_k)) (I(z_{j(k)}; v_k) − max_{j ≠ j(k)} I(z_j; v_k)),  j(k) = argmax_j I(z_j; v_k)

As in disentanglement_lib (Locatello et al. 2019), each latent dimension (the posterior mean) is discretised
into `num_bins` equal-width bins and the mutual information is computed from contingency tables.
"""

from __future__ import annotations

import numpy as np


def discrete_entropy(values: np.ndarray) -> float:
    """H(v) in nats of an integer-valued vector."""
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def discrete_mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """I(a; b) in nats of two integer-valued vectors of the same length, from their contingency table."""
    _, a_idx = np.unique(a, return_inverse=True)
    _, b_idx = np.unique(b, return_inverse=True)
    joint = np.zeros((a_idx.max() + 1, b_idx.max() + 1))
    np.add.at(joint, (a_idx, b_idx), 1)
    joint /= joint.sum()
    pa = joint.sum(1, keepdims=True)
    pb = joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return float((joint[nonzero] * np.log(joint[nonzero] / (pa @ pb)[nonzero])).sum())


def discretize(latents: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """(N, d) continuous → (N, d) bin indices, equal-width bins per dimension."""
    out = np.zeros(latents.shape, dtype=np.int64)
    for j in range(latents.shape[1]):
        edges = np.histogram(latents[:, j], bins=num_bins)[1]
        out[:, j] = np.digitize(latents[:, j], edges[:-1])
    return out


def mutual_information_gap(latents, factors, num_bins: int = 20) -> dict:
    """MIG of latent codes (N, d) against ground-truth factors (N, K) (integers).

    Returns `{"mig": float, "per_factor": [K floats], "mutual_information": (d, K) list}`; factors with one
    value only (H = 0) are skipped.
    """
    latents = np.asarray(latents, dtype=np.float64).reshape(len(latents), -1)  # (N, d)
    factors = np.asarray(factors).reshape(len(factors), -1)  # (N, K)
    if len(latents) != len(factors):
        raise ValueError(f"latents and factors must have the same length, got {len(latents)} and {len(factors)}")
    if latents.shape[1] < 2:
        raise ValueError(f"MIG needs at least 2 latent dimensions, got {latents.shape[1]}")
    binned = discretize(latents, num_bins)
    mi = np.array(
        [[discrete_mutual_information(binned[:, j], factors[:, k]) for k in range(factors.shape[1])] for j in range(binned.shape[1])]
    )  # (d, K)
    per_factor = []
    for k in range(factors.shape[1]):
        entropy = discrete_entropy(factors[:, k])
        if entropy <= 0:
            continue
        top2 = np.sort(mi[:, k])[::-1][:2]
        per_factor.append(float((top2[0] - top2[1]) / entropy))
    return {"mig": float(np.mean(per_factor)) if per_factor else 0.0, "per_factor": per_factor, "mutual_information": mi.tolist()}
