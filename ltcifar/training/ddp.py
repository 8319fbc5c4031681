"""``processes: N``: one run over N ranks (DistributedDataParallel, NCCL or gloo) via ``torchrun``.

Every rank draws the epoch's global order from the same generator and trains on its strided shard,
so a step's batches over all ranks are exactly a one-process run's batch (any sampler's class
balance holds). A rank's own draws (augmentation, Balanced-MixUp's partner batch) come from a
per-rank generator or a global draw sharded alike. ``batch_size`` is the global batch. Gradients
are averaged; a re-weighted loss divides by the global batch's weight sum (``methods.losses``), so
the averaged gradient is one process's. Only rank 0 validates, logs, checkpoints and writes the
model; every rank resumes from its checkpoint, each with its own generator.

BatchNorm: on CUDA (NCCL) every BatchNorm is converted to SyncBatchNorm, so N ranks of global
batch B normalise over the B images, as one process does. On the CPU (gloo) it stays per rank,
each normalising over its B / N images: PyTorch's SyncBatchNorm runs on GPUs only (on CPU
tensors its training forward raises ``ValueError: SyncBatchNorm expected input tensor to be on
GPU``, and DistributedDataParallel refuses a CPU module holding one). SyncBatchNorm has
BatchNorm2d's state_dict keys, so checkpoints and model files load into the plain model.
"""

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ltcifar.config.records import RunConfig
from ltcifar.device import process_group_backend, syncs_batchnorm
from ltcifar.errors import PipelineError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def current() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def under_torchrun(env: dict[str, str] | None = None) -> bool:
    return "LOCAL_RANK" in (os.environ if env is None else env)


def relaunch(processes: int, args: list[str]) -> int:
    """Run ``python -m <args>`` as ``processes`` ranks on this machine (torchrun); its status."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={processes}", "-m", *args]
    return subprocess.run(cmd, check=False).returncode


def join(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun set up; on CUDA each rank takes GPU ``LOCAL_RANK``."""
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group(process_group_backend(device.type))
    return current(), device


def check(cfg: RunConfig, world: World) -> int:
    """The per-rank batch size, after checking that this run is meant for this many ranks."""
    if cfg.processes != world.size:
        raise PipelineError(
            f"run {cfg.name!r} asks for processes: {cfg.processes} but runs in "
            f"{world.size}; start it with the train stage, which launches torchrun"
        )
    if cfg.batch_size % world.size:
        raise PipelineError(
            f"run {cfg.name!r}: batch_size {cfg.batch_size} (the global batch) must be a "
            f"multiple of processes: {world.size}"
        )
    return cfg.batch_size // world.size


def shard(indices: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's strided share of a global draw: rank r takes positions r, r + N, ..."""
    return indices[world.rank :: world.size] if world.size > 1 else indices


def rank_generator(gen: torch.Generator, seed: int, world: World) -> torch.Generator:
    """The generator of this rank's own draws: ``gen`` itself in one process (so its results
    are those of a run without DDP), else one seeded by (seed, rank), apart from ``gen``."""
    if world.size == 1:
        return gen
    return torch.Generator(gen.device).manual_seed(1_000_003 * (seed + 1) + world.rank)


def sync_batchnorm(model: nn.Module, device: torch.device, world: World) -> nn.Module:
    """``model`` with every BatchNorm replaced, in place, by a SyncBatchNorm sharing its
    parameters and buffers where ``syncs_batchnorm``; else untouched."""
    if not syncs_batchnorm(device.type, world.size):
        return model
    if isinstance(model, nn.modules.batchnorm._BatchNorm):  # only a root BatchNorm is replaced
        raise ValueError("sync_batchnorm converts the BatchNorms inside a model, not one itself")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap(model: nn.Module, device: torch.device, world: World) -> nn.Module:
    """The model whose backward all-reduces gradients (averaged over ranks), in a group; on CUDA
    its BatchNorms synchronised first (``sync_batchnorm``, in place)."""
    if world.size == 1:
        return model
    model = sync_batchnorm(model, device, world)
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def reduce_epoch(
    loss_sum: torch.Tensor, good_steps: torch.Tensor, conf: torch.Tensor, world: World
) -> None:
    """In place, once per epoch: mean loss, fewest finite steps of any rank, pooled confusion."""
    if world.size == 1:
        return
    dist.all_reduce(loss_sum)
    loss_sum /= world.size
    dist.all_reduce(good_steps, op=dist.ReduceOp.MIN)
    dist.all_reduce(conf)


def gather_state(gen: torch.Generator, world: World) -> list[torch.Tensor]:
    """Every rank's generator state, for rank 0's checkpoint: a resumed rank keeps its stream."""
    states: list = [None] * world.size
    dist.all_gather_object(states, gen.get_state())
    return states
