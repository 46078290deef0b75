"""Top-k mining on several processes with ``torch.distributed`` (``torchrun``): the exact merge.

Each process (rank) streams its share of the data set -- every ``world``-th batch, see
:func:`introspect_deconv.top.shard_indices` -- into its own running top-k, keeping global image
indices. At the end one ``all_gather`` of fixed-shape tensors (values, image indices, positions:
``(maps, k)`` each) gives every rank all of them, and :func:`merge_top_k` sorts the union by value,
descending, then by image index: the exact order of a one-process run (ties to the earlier image,
empty entries -- image ``-1``, value ``-inf`` -- last). Since a rank's batches are batches of the
one-process run, every activation is bit for bit the one a single process computes on the same kind
of device. Then rank 0 alone re-reads the winning images and projects them; the others are done.

The process group itself, and how failures reach every rank, belong to the core
(``introspect.plugin``: ``process_group``, ``group_of``, ``check_ranks``); a rank that fails while
mining (an unreadable image in its share, ...) tells the others through ``check_ranks`` before the
merge, so every rank stops with the same one-line error instead of waiting. A failure of rank 0
while projecting comes after the other ranks have finished (they exit with 0; rank 0 and
``torchrun`` report the error).

Launching (the ``introspect top`` command does this when ``torchrun`` set ``WORLD_SIZE`` > 1)::

    torchrun --nproc-per-node 4 -m introspect.cli top model.pt val/ --layer conv5 --out top5
"""
from __future__ import annotations

import torch

from introspect.plugin import all_gather_tensors


def merge_top_k(values: torch.Tensor, images: torch.Tensor, positions: torch.Tensor, k: int):
    """Merge the running top-k of several processes into the top-k of their union.

    The union is sorted by value, descending, then by image index, ascending: the order a single
    process keeps (ties go to the earlier image; empty entries, image ``-1`` and value ``-inf``,
    come after every real entry). Each image must belong to one process only.

    Args:
        values (Tensor): ``(R, M, k)`` float, the strongest activations of each of ``R`` processes.
        images (Tensor): ``(R, M, k)`` int64 global image indices (``-1`` empty).
        positions (Tensor): ``(R, M, k, 2)`` int64 map positions ``(y, x)``.
        k (int): entries kept per map.

    Returns:
        tuple[Tensor, Tensor, Tensor]: values ``(M, k)``, images ``(M, k)``, positions ``(M, k, 2)``.

    Example:
        >>> v, i, p = merge_top_k(torch.stack([a.values, b.values]), torch.stack([a.images, b.images]),
        ...                       torch.stack([a.positions, b.positions]), k=9)
    """
    r, m, kk = values.shape
    values = values.permute(1, 0, 2).reshape(m, r * kk)
    images = images.permute(1, 0, 2).reshape(m, r * kk)
    positions = positions.permute(1, 0, 2, 3).reshape(m, r * kk, 2)
    by_image = torch.sort(images, dim=1, stable=True).indices             # second key first ...
    by_value = torch.sort(values.gather(1, by_image), dim=1, descending=True, stable=True).indices
    order = by_image.gather(1, by_value)[:, :k]                           # ... then the first, stably
    return values.gather(1, order), images.gather(1, order), positions.gather(1, order[..., None].expand(-1, -1, 2))


def gather_top_k(running, seen: int):
    """All-gather every rank's running top-k and merge them (a collective: every rank calls it).

    Args:
        running (RunningTopK): this rank's entries (global image indices).
        seen (int): images this rank streamed.

    Returns:
        tuple[RunningTopK, int]: ``running`` with the merged entries, the same on every rank, and the
        number of images streamed by all ranks.
    """
    values, images, positions, counts = all_gather_tensors(
        [running.values.float(), running.images, running.positions, torch.tensor([seen])], "merging the top-k")
    running.values, running.images, running.positions = merge_top_k(values, images, positions, running.k)
    return running, int(counts.sum())


__all__ = ["merge_top_k", "gather_top_k"]
