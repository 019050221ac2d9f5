"""The few collective operations the loops need, for one process or a torch.distributed group.

`LocalDist` is the 1-worker, no-Ray case; `TorchDist` runs inside a Ray Train worker group (gloo on
CPU, nccl on GPU). The loops in train_loop.py are written once against this interface.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch


class LocalDist:
    rank = 0
    world_size = 1

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_reduce_max(self, value: float) -> float:
        return value

    def all_gather_objects(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast_object(self, obj: Any) -> Any:
        return obj

    def barrier(self) -> None:
        pass


class TorchDist(LocalDist):
    """Collectives over the default torch.distributed process group (set up by Ray Train)."""

    def __init__(self, device: torch.device | str = "cpu"):
        import torch.distributed as dist

        super().__init__(device)
        self._dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        self._dist.all_reduce(tensor, op=self._dist.ReduceOp.SUM)
        return tensor

    def all_reduce_max(self, value: float) -> float:
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        self._dist.all_reduce(tensor, op=self._dist.ReduceOp.MAX)
        return float(tensor.item())

    def all_gather_objects(self, obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * self.world_size
        self._dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        self._dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        self._dist.barrier()


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter], dist: LocalDist) -> None:
    """Sum gradients over workers in one flat bucket (data parallelism, as DDP's all-reduce does).

    The loss of each worker is already divided by the global batch size, so the sum is the mean
    gradient of the global batch. One bucket per optimiser step lets micro-batches accumulate freely.
    """
    if dist.world_size == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce_sum_(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
