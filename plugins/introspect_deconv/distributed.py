"""Top-k mining on several processes with ``torch.distributed`` (``torchrun``).

Each process (rank) streams its share of the data set -- every ``world``-th batch, see
:func:`introspect_deconv.top.shard_indices` -- into its own running top-k, keeping global image
indices. At the end one ``all_gather`` of fixed-shape tensors (values, image indices, positions:
``(maps, k)`` each) gives every rank all of them, and :func:`merge_top_k` sorts the union by value,
descending, then by image index: the exact order of a one-process run (ties to the earlier image,
empty entries -- image ``-1``, value ``-inf`` -- last). Since a rank's batches are batches of the
one-process run, every activation is bit for bit the one a single process computes on the same kind
of device. Then rank 0 alone re-reads the winning images and projects them; the others are done.

Failures: a rank that fails while mining (an unreadable image in its share, ...) tells the others
through one more collective before the merge (:func:`check_ranks`), so every rank stops with the same
one-line error instead of waiting; the command does the same for setup errors (an unwritable
``--out`` on rank 0). A rank that dies (killed, out of memory) is seen by ``torchrun``, which stops
the others on its node; ranks on other nodes give up after the process group's timeout
(:func:`process_group`, default 30 minutes) with a one-line error. A failure of rank 0 while
projecting comes after the other ranks have finished (they exit with 0; rank 0 and ``torchrun``
report the error).

Launching (the ``introspect top`` command does this when ``torchrun`` set ``WORLD_SIZE`` > 1)::

    torchrun --nproc-per-node 4 -m introspect.cli top model.pt val/ --layer conv5 --out top5
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from introspect.plugin import IntrospectError
from introspect_deconv.defaults import DEFAULT_TIMEOUT  # noqa: E402


@dataclass(frozen=True)
class Group:
    """Where this process stands in the process group: ``rank`` of ``world``; ``device`` its device."""

    rank: int
    world: int
    device: torch.device | None = None


def launched_world() -> int:
    """The number of processes ``torchrun`` started (``WORLD_SIZE``; 1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise IntrospectError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; "
                              "launch with torchrun or unset it") from None


def group_of(distributed: bool | None) -> Group | None:
    """The process group :func:`~introspect_deconv.top.top_k` should use, or None for one process.

    Args:
        distributed (bool | None): None: the default group if one is initialized and has more than
            one process; True: the default group, which must be initialized; False: none.

    Returns:
        Group | None: this process's rank and the world size.

    Example:
        >>> group_of(None)          # a plain python process
    """
    if distributed is not None and not isinstance(distributed, bool):
        raise IntrospectError(f"distributed must be None, True or False, got {distributed!r}")
    active = dist.is_available() and dist.is_initialized()
    if distributed is False or (distributed is None and (not active or dist.get_world_size() < 2)):
        return None
    if not active:
        raise IntrospectError("distributed=True but no torch.distributed process group is initialized; "
                              "call torch.distributed.init_process_group first (e.g. under torchrun) "
                              "or pass distributed=None")
    return Group(dist.get_rank(), dist.get_world_size())


def _collective_device() -> torch.device:
    """Where the default group's tensors must live: the current GPU for NCCL alone, else the CPU."""
    backend = str(dist.get_backend()).lower()
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@contextlib.contextmanager
def _collective(what: str):
    """Turn a failed collective (a rank died, the timeout passed) into one readable line."""
    try:
        yield
    except RuntimeError as exc:  # torch.distributed.DistError and the backends' errors
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise IntrospectError(
            f"rank {dist.get_rank()} lost the other processes while {what}: {lines[0]}; "
            "see the other ranks' errors (a longer --timeout helps if some ranks are slower)"
        ) from None


def check_ranks(error: BaseException | None) -> None:
    """Tell every rank whether any rank failed; raise on all of them if one did.

    Every rank must call it (it is a collective). The failing rank re-raises its own exception;
    the others raise :class:`IntrospectError` naming the failing rank and its message. Without an
    initialized process group it only re-raises ``error``.

    Args:
        error (BaseException | None): this rank's failure, or None.
    """
    if not (dist.is_available() and dist.is_initialized()):
        if error is not None:
            raise error
        return
    message = None if error is None else (str(error) if isinstance(error, IntrospectError)
                                          else f"{type(error).__name__}: {error}")
    messages: list = [None] * dist.get_world_size()
    with _collective("waiting for every rank to finish mining"):
        dist.all_gather_object(messages, message)
    if error is not None:
        raise error
    for rank, text in enumerate(messages):
        if text is not None:
            lines = text.strip().splitlines() or [""]
            raise IntrospectError(f"rank {rank} of {len(messages)} failed, so every rank stops: {lines[-1]}")


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
    world = dist.get_world_size()
    device = _collective_device()
    parts = []
    for tensor in (running.values.float(), running.images, running.positions, torch.tensor([seen])):
        tensor = tensor.contiguous().to(device)
        gathered = [torch.empty_like(tensor) for _ in range(world)]
        with _collective("merging the top-k"):
            dist.all_gather(gathered, tensor)
        parts.append(torch.stack(gathered).cpu())
    values, images, positions, counts = parts
    running.values, running.images, running.positions = merge_top_k(values, images, positions, running.k)
    return running, int(counts.sum())


def _rank_device(device: str | torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when ``device`` is CUDA (or auto with a GPU)."""
    from introspect.plugin import resolve_device

    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return resolved
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if local >= torch.cuda.device_count():
        raise IntrospectError(f"torchrun started local rank {local} but this node has {torch.cuda.device_count()} "
                              "GPU(s); use --nproc-per-node with at most one process per GPU, or --device cpu")
    return torch.device("cuda", local)


@contextlib.contextmanager
def process_group(device: str | torch.device = "auto", timeout: float = DEFAULT_TIMEOUT):
    """The process group ``torchrun`` asked for, initialized for the duration of the block.

    When ``WORLD_SIZE`` is 1 (not launched by ``torchrun``) nothing is initialized and the block
    gets None. Otherwise ``init_process_group`` runs with NCCL when ``device`` is CUDA (each rank on
    ``cuda:LOCAL_RANK``, made the current device) and Gloo on the CPU, reading ``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` from the environment; the group is destroyed
    on exit, also after an error.

    Args:
        device (str | torch.device): ``auto``, ``cpu`` or ``cuda`` (any index: each rank takes its own).
        timeout (float): seconds a collective waits for the other ranks before failing.

    Yields:
        Group | None: rank, world size and this rank's device.

    Example:
        >>> with process_group("cpu") as group:
        ...     top = top_k(model, data, "conv5")       # sharded and merged when group is not None
    """
    world = launched_world()
    if world < 2:
        yield None
        return
    if not dist.is_available():
        raise IntrospectError("this PyTorch build has no torch.distributed; run one process")
    if timeout <= 0:
        raise IntrospectError(f"timeout must be positive, got {timeout}; e.g. 1800 seconds")
    rank_device = _rank_device(device)
    backend = "nccl" if rank_device.type == "cuda" else "gloo"
    if rank_device.type == "cuda":
        torch.cuda.set_device(rank_device)
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as exc:  # the rendezvous timed out, or the environment is incomplete
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise IntrospectError(f"cannot join the {world} torchrun processes ({backend}): {lines[0]}; "
                              "launch with torchrun (it sets RANK, MASTER_ADDR and MASTER_PORT)") from None
    try:
        yield Group(dist.get_rank(), dist.get_world_size(), rank_device)
    finally:
        dist.destroy_process_group()


__all__ = ["Group", "group_of", "merge_top_k", "gather_top_k", "check_ranks", "process_group", "launched_world"]
