"""The arithmetic of the paper's Sec. 4.3: sign patterns, Hamming distances, Delta and its statistics.

For image ``i`` and a layer ``l``, ``eps_i = x_i - x~_i`` is the change of the layer's (flattened)
feature vector when a part of the image is masked. The paper's measure is

    Delta_l = sum over i != j of H(sign(eps_i), sign(eps_j))

with ``H`` the Hamming distance: the number of coordinates where the two sign patterns differ (signs
take the three values -1, 0, +1, so "changed" vs "unchanged" also counts). Table 1 reports it divided
by the feature-vector length ``D``. Everything here is plain tensor arithmetic, independent of models.
"""
from __future__ import annotations

import torch


def sign_pattern(eps: torch.Tensor, tol: float = 0.0, scale: torch.Tensor | float | None = None) -> torch.Tensor:
    """``sign(eps)`` as ``int8``, with changes no larger than ``tol * scale`` counted as 0.

    Args:
        eps (Tensor): ``... x D`` feature changes (any float dtype).
        tol (float): relative threshold (default 0: only exact zeros are 0). A change ``e`` has sign
            0 when ``|e| <= tol * scale``; this absorbs float rounding (e.g. 1e-7 relative) between
            forward passes, which would otherwise flip signs of coordinates that did not change.
        scale (Tensor | float | None): the size the threshold is relative to, broadcast against
            ``eps[..., :1]`` (e.g. ``max |x_i|`` of the clean features, shape ``... x 1``); None: 1.

    Returns:
        Tensor: ``int8`` of the shape of ``eps`` with values in {-1, 0, 1}.

    Example:
        >>> sign_pattern(torch.tensor([[0.5, -2e-9, 0.0, -3.0]]), tol=1e-6, scale=1.0)
        tensor([[ 1,  0,  0, -1]], dtype=torch.int8)
    """
    signs = torch.sign(eps)
    if tol > 0:
        limit = tol * (scale if scale is not None else 1.0)
        signs = torch.where(eps.abs() <= limit, torch.zeros_like(signs), signs)
    return signs.to(torch.int8)


def hamming_matrix(signs: torch.Tensor) -> torch.Tensor:
    """Pairwise Hamming distances between sign patterns.

    Args:
        signs (Tensor): ``N x D`` (or ``T x N x D`` for ``T`` independent sets) sign patterns.

    Returns:
        Tensor: ``N x N`` (or ``T x N x N``) ``int64``: entry ``[i, j]`` is the number of coordinates
        where ``signs[i]`` and ``signs[j]`` differ. Symmetric, zero on the diagonal.

    Example:
        >>> hamming_matrix(torch.tensor([[1, 0, -1], [1, 1, -1], [-1, 0, 1]]))
        tensor([[0, 1, 2],
                [1, 0, 3],
                [2, 3, 0]])
    """
    batched = signs.dim() == 3
    s = signs if batched else signs.unsqueeze(0)
    n = s.shape[1]
    out = torch.zeros(s.shape[0], n, n, dtype=torch.int64, device=s.device)
    for i in range(n):
        out[:, i, :] = (s[:, i : i + 1, :] != s).sum(-1)
    return out if batched else out[0]


def normalized_hamming(eps: torch.Tensor, tol: float = 0.0, scale=None) -> torch.Tensor:
    """``H(sign(eps_i), sign(eps_j)) / D`` for every pair: the per-pair matrix of Table 1's number.

    Args:
        eps (Tensor): ``N x D`` (or ``T x N x D``) feature changes, one row per image.
        tol, scale: see :func:`sign_pattern`.

    Returns:
        Tensor: ``N x N`` (or ``T x N x N``) ``float64`` in ``[0, 1]``.

    Example:
        >>> normalized_hamming(torch.tensor([[1.0, -1.0], [2.0, 3.0]]))
        tensor([[0.0000, 0.5000],
                [0.5000, 0.0000]], dtype=torch.float64)
    """
    return hamming_matrix(sign_pattern(eps, tol, scale)).double() / eps.shape[-1]


def pair_values(matrix: torch.Tensor) -> torch.Tensor:
    """The entries ``[i, j]`` with ``i < j`` (each unordered pair once) of ``N x N`` or ``T x N x N``.

    Returns:
        Tensor: 1-D, ``N(N-1)/2`` (or ``T * N(N-1)/2``, trial-major) values.
    """
    n = matrix.shape[-1]
    rows, cols = torch.triu_indices(n, n, offset=1, device=matrix.device)
    return matrix[..., rows, cols].reshape(-1)


def pair_stats(matrix: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation of a per-pair matrix over its pairs ``i != j``.

    The mean over the ``N(N-1)/2`` unordered pairs equals the mean over the ``N(N-1)`` ordered pairs
    (each unordered pair appears twice), and so does the population standard deviation (``ddof=0``),
    which is what is returned. For ``T x N x N`` the pairs of all ``T`` sets are pooled.

    Args:
        matrix (Tensor): ``N x N`` or ``T x N x N``, symmetric.

    Returns:
        tuple[float, float]: ``(mean, std)``; NaN when there are no pairs.

    Example:
        >>> pair_stats(torch.tensor([[0.0, 0.2, 0.4], [0.2, 0.0, 0.6], [0.4, 0.6, 0.0]]))
        (0.4, 0.16329931618554522)
    """
    values = pair_values(matrix).double()
    if values.numel() == 0:
        return float("nan"), float("nan")
    return values.mean().item(), values.std(unbiased=False).item()


def delta(eps: torch.Tensor, tol: float = 0.0, scale=None) -> int:
    """The paper's ``Delta_l = sum_{i != j} H(sign(eps_i), sign(eps_j))`` (ordered pairs, not normalized).

    Args:
        eps (Tensor): ``N x D`` feature changes, one row per image.
        tol, scale: see :func:`sign_pattern`.

    Returns:
        int: ``Delta_l``; ``Delta_l / (N (N-1) D)`` is the mean of Table 1.

    Example:
        >>> delta(torch.tensor([[1.0, -1.0], [2.0, 3.0]]))
        2
    """
    return int(hamming_matrix(sign_pattern(eps, tol, scale)).sum().item())


__all__ = ["sign_pattern", "hamming_matrix", "normalized_hamming", "pair_values", "pair_stats", "delta"]
