"""Running the evaluation under ``torchrun``: this process's rank and device, the process group, and
the two collectives the harness needs (an exact integer sum and a gather of Python objects).

With ``WORLD_SIZE`` unset or 1 every helper is a no-op, so the same code runs in one process.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from ..engine.errors import ItaclipError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistInfo:
    """Rank, world size and local rank from torchrun's environment (defaults: one process)."""

    def env_int(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        try:
            return int(value) if value.strip() else default
        except ValueError:
            raise ItaclipError(f"environment variable {name}={value!r} is not an integer") from None

    world = env_int("WORLD_SIZE", 1)
    rank = env_int("RANK", 0)
    local = env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ItaclipError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def resolve_rank_device(device: Optional[str], info: DistInfo) -> str:
    """The device of this process: ``cuda:LOCAL_RANK`` when CUDA is chosen (or is the default)."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" or (info.distributed and device.startswith("cuda")):
        if info.distributed:
            return f"cuda:{info.local_rank}"
    return device


def init_distributed(device: str) -> DistInfo:
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA) when ``WORLD_SIZE`` > 1."""
    info = dist_env()
    if not info.distributed:
        return info
    import torch
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    # Before the group exists: torch.distributed.nn.functional binds ``group.WORLD`` as the default
    # argument of ten functions when it is first imported. Imported later (open_clip imports it
    # with the model), those defaults would keep the group alive after destroy_process_group(): its
    # gloo threads would then outlive main() and, releasing a finished collective's tensors while
    # Python shuts down, abort the process (SIGABRT, "terminate called without an active
    # exception"). Imported now, the defaults are None and leaving the group joins its threads.
    import torch.distributed.nn  # noqa: F401
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise ItaclipError(f"WORLD_SIZE={info.world_size} but {name} is not set: start with torchrun")
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=info.rank,
            world_size=info.world_size,
            timeout=_dt.timedelta(hours=24),
        )
    return dataclasses.replace(info, backend=backend)


def shutdown_distributed(synchronize: bool = False) -> None:
    """Leave the process group; ``synchronize`` first waits for every rank (a run that ended well),
    so no rank closes its connections while another still reads from them. With nothing else
    holding the group (see :func:`init_distributed`), this joins its communication threads: none is
    left to touch Python objects while the interpreter shuts down."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def distributed_session(device: Optional[str]) -> Iterator[tuple[DistInfo, str]]:
    """``(info, device)`` of this process inside torchrun's process group (left on exit)."""
    device = resolve_rank_device(device, dist_env())
    info = init_distributed(device)
    try:
        yield info, device
    except BaseException:
        shutdown_distributed()  # no barrier: the other ranks may never reach it
        raise
    shutdown_distributed(synchronize=True)


def all_reduce_int64(array: np.ndarray, info: DistInfo, device: str) -> np.ndarray:
    """The element-wise sum over ranks of an integer array (exact)."""
    if not info.distributed:
        return array
    import torch
    import torch.distributed as dist

    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def all_gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order (also a barrier)."""
    if not info.distributed:
        return [obj]
    import torch.distributed as dist

    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def require_same_on_all_ranks(values: dict, info: DistInfo, hint: str = "") -> None:
    """Raise :class:`ItaclipError` on every rank when some rank's ``values`` differ from rank 0's.

    Every rank must call it (it gathers); all of them then raise together, so none is left waiting.
    """
    every = all_gather_objects(values, info)
    first = every[0]
    for rank, other in enumerate(every[1:], 1):
        keys = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if keys:
            key = keys[0]
            raise ItaclipError(
                f"torchrun ranks disagree on {', '.join(keys)} (rank 0: {first.get(key)!r}, rank {rank}: "
                f"{other.get(key)!r}){': ' + hint if hint else ''}"
            )
