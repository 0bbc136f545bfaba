"""DDP for train.py: one process per GPU under torchrun, switched on by the
``RANK`` / ``WORLD_SIZE`` environment variables; only rank 0 logs and saves.

``world_from_env`` says which process this is, ``setup_device`` picks its
device (and joins the process group), ``decided_on_master`` makes a choice
once (rank 0: the --amp default's measurement) for every rank, ``wrap`` puts the model under
DistributedDataParallel, ``agree`` and ``gather`` are the two collective
calls the loop makes (every rank stops at the same step; rank 0 saves every
rank's RNG and state).  ``peers`` turns a peer that died mid-collective
(torchrun's other workers, killed or crashed) into one sentence.
"""
from __future__ import annotations

import contextlib
import os
import typing

import torch
import torch.distributed as dist

from .amp import autocast_for
from .errors import QrnnLmError
from .rundir import LAST


class World(typing.NamedTuple):
    """This process among the run's: rank 0 (``is_master``) logs and saves."""

    rank: int
    size: int
    local_rank: int
    distributed: bool
    is_master: bool


def world_from_env() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    ddp = "RANK" in os.environ and size > 1
    rank = int(os.environ.get("RANK", "0")) if ddp else 0
    return World(rank, size, int(os.environ.get("LOCAL_RANK", "0")) if ddp else 0, ddp, rank == 0)


def setup_device(name: str, amp: str, world: World) -> torch.device:
    """--device (auto: CUDA when there is a GPU) and --amp checked (bf16 runs
    on both, fp16 on CUDA only); under DDP the process group is joined (NCCL
    on GPUs, gloo on CPUs)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise QrnnLmError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto.")
    use_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", world.local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    autocast_for(device.type, amp)   # refuses --amp fp16 on the CPU in one sentence
    if world.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return device


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """The model as it trains: under DistributedDataParallel when distributed."""
    if not world.distributed:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[world.local_rank] if device.type == "cuda" else None,
        find_unused_parameters=model.config.softmax == "adaptive")  # a tail cluster may get no gradient


def agree(world: World, device: torch.device, *flags: int) -> tuple:
    """Each flag (a bool or a small number, e.g. a signal's) as the largest
    of every rank's: true if it is true on any rank (NCCL reduces CUDA
    tensors only)."""
    t = torch.tensor([float(f) for f in flags])
    if world.distributed:
        t = t.to(device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        t = t.cpu()
    return tuple(int(v) for v in t)


def _peer_failure(e: BaseException) -> bool:
    """A collective that failed because another process went away."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(w in text for w in (
        "connection closed by peer", "connection reset", "broken pipe", "gloo", "nccl", "timed out"))


@contextlib.contextmanager
def peers(world: World, run_dir: str):
    """Run collective calls; a peer process that died (torchrun) becomes one
    sentence saying how to continue the run in ``run_dir``."""
    try:
        yield
    except (RuntimeError, OSError) as e:
        if not (world.distributed and _peer_failure(e)):
            raise
        saved = os.path.isfile(os.path.join(run_dir, LAST))
        raise QrnnLmError(f"another process of this {world.size}-process run ended (rank {world.rank} lost its "
                          "peers), so training stopped; " + (f"continue from its last checkpoint with --save "
                          f"{run_dir} --resume." if saved else "no checkpoint had been saved yet; start it again."))\
            from None


def decided_on_master(world: World, decide):
    """``decide()`` called on rank 0 only, its answer (any picklable value)
    sent to every rank, so that all of them train with the same choice."""
    if not world.distributed:
        return decide()
    answer = [decide() if world.is_master else None]
    dist.broadcast_object_list(answer, src=0)
    return answer[0]


def gather(world: World, obj) -> list:
    """Every rank's ``obj``, in rank order."""
    if not world.distributed:
        return [obj]
    everything = [None] * world.size
    dist.all_gather_object(everything, obj)
    return everything


def shut_down() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
