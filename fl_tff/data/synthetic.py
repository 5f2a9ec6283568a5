"""Synthetic(alpha, beta) federated data, following the generator of the FedProx paper
(Li et al. 2020, "Federated Optimization in Heterogeneous Networks", section 5.1).

Device k has n_k examples with n_k from a log-normal power law. Its model is
W_k, b_k ~ N(u_k, 1) with u_k ~ N(0, alpha). Its inputs are x ~ N(v_k, Sigma), with
v_k ~ N(B_k, 1), B_k ~ N(0, beta), and Sigma diagonal, Sigma_jj = j^-1.2. Labels are
argmax(softmax(W_k x + b_k)). alpha controls how much the local models differ; beta controls
how much the local input distributions differ. Synthetic-IID shares one W, b ~ N(0, 1) and
v = 0 across devices.
"""

from __future__ import annotations

import numpy as np

from fl_tff.data.arrays import ArrayDataset

DIMENSION, NUM_CLASSES = 60, 10


def synthetic(alpha: float, beta: float, num_devices: int = 30, seed: int = 0,
              iid: bool = False) -> ArrayDataset:
    """Generates Synthetic(alpha, beta) (or Synthetic-IID) with its natural device partition.

    Sizes follow the paper's code: LogNormal(4, 2) + 50 examples per device; as in that code,
    alpha and beta are used as standard deviations.
    """
    if alpha < 0 or beta < 0:
        raise ValueError(f'synthetic alpha and beta must be >= 0, got {alpha}, {beta}')
    if num_devices < 1:
        raise ValueError(f'num_devices must be >= 1, got {num_devices}')
    rng = np.random.default_rng(seed)
    sizes = (rng.lognormal(4, 2, num_devices).astype(int) + 50)
    sigma = np.array([(j + 1) ** -1.2 for j in range(DIMENSION)])
    if iid:
        w_global = rng.normal(0, 1, (DIMENSION, NUM_CLASSES))
        b_global = rng.normal(0, 1, NUM_CLASSES)
    else:
        u = rng.normal(0, alpha, num_devices)  # As the paper's code: alpha, beta are std devs.
        big_b = rng.normal(0, beta, num_devices)
    xs, ys, parts, start = [], [], [], 0
    for k in range(num_devices):
        if iid:
            w, b, v = w_global, b_global, np.zeros(DIMENSION)
        else:
            w = rng.normal(u[k], 1, (DIMENSION, NUM_CLASSES))
            b = rng.normal(u[k], 1, NUM_CLASSES)
            v = rng.normal(big_b[k], 1, DIMENSION)
        x = v + rng.normal(size=(sizes[k], DIMENSION)) * np.sqrt(sigma)
        xs.append(x.astype(np.float32))
        ys.append(np.argmax(x @ w + b, axis=1).astype(np.int32))
        parts.append(np.arange(start, start + sizes[k]))
        start += sizes[k]
    name = 'synthetic_iid' if iid else f'synthetic({alpha:g},{beta:g})'
    return ArrayDataset(name, np.concatenate(xs), np.concatenate(ys), NUM_CLASSES,
                        natural_partition=parts)
