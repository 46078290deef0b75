"""Several processes (``torchrun``): the process group, where this process stands in it, and the
collectives a method needs to share its work, each failing with one readable line.

A command launched by ``torchrun`` (``WORLD_SIZE`` > 1) opens :func:`process_group` around its work;
a method asks :func:`group_of` whether it runs on several processes. Every rank calls the
collectives (:func:`check_ranks`, :func:`all_gather_tensors`, :func:`share_object`) in the same
order. Setup errors go through :func:`check_ranks`, so a rank that fails makes every rank stop with
the same one-line error instead of waiting for it. A rank that dies (killed, out of memory) is seen
by ``torchrun``, which stops the others on its node; ranks on other nodes give up after the process
group's timeout (:data:`DEFAULT_TIMEOUT`) with a one-line error.

torch is imported on first use, not with this module: command options use :data:`DEFAULT_TIMEOUT`
and ``--help`` imports no torch.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from introspect.errors import IntrospectError

if TYPE_CHECKING:
    import torch

#: Seconds the processes of a distributed run wait for each other (``--timeout``).
DEFAULT_TIMEOUT = 1800.0


def _dist():
    import torch.distributed as dist

    return dist


@dataclass(frozen=True)
class Group:
    """Where this process stands in the process group: ``rank`` of ``world``; ``device`` its device.

    ``lead`` is True on rank 0, the process that writes the output."""

    rank: int
    world: int
    device: torch.device | None = None

    @property
    def lead(self) -> bool:
        return self.rank == 0


def launched_world() -> int:
    """The number of processes ``torchrun`` started (``WORLD_SIZE``; 1 when not launched by it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise IntrospectError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; "
                              "launch with torchrun or unset it") from None


def group_of(distributed: bool | None) -> Group | None:
    """The process group a method should share its work with, or None for one process.

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
    dist = _dist()
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
    import torch

    dist = _dist()
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
            f"rank {_dist().get_rank()} lost the other processes while {what}: {lines[0]}; "
            "see the other ranks' errors (a longer --timeout helps if some ranks are slower)"
        ) from None


def _active() -> bool:
    dist = _dist()
    return dist.is_available() and dist.is_initialized()


def check_ranks(error: BaseException | None, what: str = "waiting for the other ranks") -> None:
    """Tell every rank whether any rank failed; raise on all of them if one did.

    Every rank must call it (it is a collective). The failing rank re-raises its own exception;
    the others raise :class:`IntrospectError` naming the failing rank and its message. Without an
    initialized process group it only re-raises ``error``.

    Args:
        error (BaseException | None): this rank's failure, or None.
        what (str): what the ranks were doing, for the error when the others cannot be reached.
    """
    if not _active():
        if error is not None:
            raise error
        return
    dist = _dist()
    message = None if error is None else (str(error) if isinstance(error, IntrospectError)
                                          else f"{type(error).__name__}: {error}")
    messages: list = [None] * dist.get_world_size()
    with _collective(what):
        dist.all_gather_object(messages, message)
    if error is not None:
        raise error
    for rank, text in enumerate(messages):
        if text is not None:
            lines = text.strip().splitlines() or [""]
            raise IntrospectError(f"rank {rank} of {len(messages)} failed, so every rank stops: {lines[-1]}")


def all_gather_tensors(tensors: list[torch.Tensor], what: str) -> list[torch.Tensor]:
    """Every rank's ``tensors``, stacked: tensor ``i`` of the result is ``(world, *tensors[i].shape)``
    on the CPU, row ``r`` from rank ``r`` (a collective; every rank passes tensors of the same shapes).

    Args:
        tensors (list[Tensor]): this rank's tensors.
        what (str): what they are, for the error when the other ranks cannot be reached.
    """
    import torch

    dist = _dist()
    world = dist.get_world_size()
    device = _collective_device()
    out = []
    for tensor in tensors:
        tensor = tensor.contiguous().to(device)
        gathered = [torch.empty_like(tensor) for _ in range(world)]
        with _collective(what):
            dist.all_gather(gathered, tensor)
        out.append(torch.stack(gathered).cpu())
    return out


def share_object(value: Any, what: str) -> Any:
    """Rank 0's ``value`` on every rank (a collective; picklable values); ``value`` itself without a
    process group. Rank 0 decides, e.g. which work is left after reusing an earlier result."""
    if not _active():
        return value
    dist = _dist()
    box = [value]
    with _collective(what):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def _rank_device(device: str | torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when ``device`` is CUDA (or auto with a GPU)."""
    import torch

    from introspect.models.load import resolve_device

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
    dist = _dist()
    if not dist.is_available():
        raise IntrospectError("this PyTorch build has no torch.distributed; run one process")
    if timeout <= 0:
        raise IntrospectError(f"timeout must be positive, got {timeout}; e.g. 1800 seconds")
    rank_device = _rank_device(device)
    backend = "nccl" if rank_device.type == "cuda" else "gloo"
    if rank_device.type == "cuda":
        import torch

        torch.cuda.set_device(rank_device)
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as exc:  # the rendezvous timed out, or the environment is incomplete
        _forget_failed_init(dist)
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise IntrospectError(f"cannot join the {world} torchrun processes ({backend}): {lines[0]}; "
                              "launch with torchrun (it sets RANK, MASTER_ADDR and MASTER_PORT)") from None
    try:
        yield Group(dist.get_rank(), dist.get_world_size(), rank_device)
    except Exception:  # not on Ctrl-C: every rank gets it and leaves at once
        _leave_together(dist, backend)
        raise
    finally:
        dist.destroy_process_group()


def _leave_together(dist, backend: str) -> None:
    """After an error that every rank heard of (:func:`check_ranks`), wait a few seconds for the
    other ranks to reach the same point before the group is torn down: a rank that tears its
    connections down while a peer is still reading the last collective makes the peer's backend
    thread abort the process (``terminate called without an active exception``). A rank that died
    is not waited for longer than that."""
    if backend != "gloo":
        return
    try:
        dist.monitored_barrier(timeout=timedelta(seconds=LEAVE_TIMEOUT), wait_all_ranks=True)
    except RuntimeError:
        pass  # a rank is gone: nothing to wait for


#: Seconds the ranks wait for each other to leave the group together after an error.
LEAVE_TIMEOUT = 5


def _forget_failed_init(dist) -> None:
    """torch counts a default group even when its rendezvous fails, and the next
    ``init_process_group`` of this process then waits for store keys that no other rank writes (its
    prefix is one higher): set the count back while no group exists, so a later launch in the same
    process joins its peers."""
    world = getattr(getattr(dist, "distributed_c10d", None), "_world", None)
    if world is not None and hasattr(world, "group_count") and not dist.is_initialized():
        world.group_count = 0


__all__ = ["DEFAULT_TIMEOUT", "Group", "all_gather_tensors", "check_ranks", "group_of", "launched_world",
           "process_group", "share_object"]
