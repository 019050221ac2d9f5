"""Epoch checkpoints of a training stage: written atomically by rank 0, read back with weights_only=True."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from seal_ray.distributed import LocalDist
from seal_ray.storage import Storage

_NAME = re.compile(r"epoch_(\d+)\.pt$")


class Checkpointer:
    """Keeps the newest checkpoint of a loop in `directory` (the stage's work folder on shared storage)."""

    def __init__(self, directory: str | Path | None, dist: LocalDist | None = None, keep: int = 1,
                 mirror_uri: str | None = None):
        self.directory = Path(directory) if directory is not None else None
        self.dist = dist or LocalDist()
        self.keep = keep
        # On cloud storage the local folder dies with its node: each checkpoint is uploaded too.
        self.mirror = Storage(mirror_uri) if mirror_uri else None

    def _existing(self) -> list[tuple[int, Path]]:
        if self.directory is None or not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.search(p.name))]
        return sorted(found)

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        if self.directory is None:
            return
        if self.dist.is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
            target = self.directory / f"epoch_{epoch:04d}.pt"
            partial = target.with_suffix(".partial")
            torch.save(state, partial)
            os.replace(partial, target)  # a crash mid-write never leaves a truncated checkpoint behind
            if self.mirror is not None:
                self.mirror.upload_file(target, target.name)
            for _, old in self._existing()[: -self.keep]:
                old.unlink(missing_ok=True)
                if self.mirror is not None:
                    self.mirror.delete(old.name)
        self.dist.barrier()

    def latest(self) -> tuple[int, dict[str, Any]] | None:
        existing = self._existing()
        if not existing:
            return None
        epoch, path = existing[-1]
        return epoch, torch.load(path, map_location=self.dist.device, weights_only=True)
