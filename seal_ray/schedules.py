"""Penalty schedules: one object for the reference ramp, fixed gamma and faster ramps.

SEAL.md, "penalty form": theta trains on w * f + (1 - w) * g, i.e. gamma = (1 - w) / w, with the
upper-level weight w. The reference ramp starts at w = 1 and drops by `decay` at the start of each
epoch after the first (gamma = 0, 0.031, 0.064 with decay 0.03). A fixed gamma is w = 1 / (1 + gamma).
"""

from __future__ import annotations

from dataclasses import dataclass

from seal_ray.errors import UserError

SCHEDULE_KINDS = ("ramp", "fixed")


@dataclass(frozen=True)
class PenaltySchedule:
    kind: str = "ramp"
    decay: float = 0.03
    gamma: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise UserError(f"unknown penalty schedule '{self.kind}'; allowed: {', '.join(SCHEDULE_KINDS)}")

    def upper_weight(self, epoch: int) -> float:
        """w for a 0-based epoch."""
        if self.kind == "fixed":
            return 1.0 / (1.0 + self.gamma)
        weight = 1.0 - self.decay * epoch
        if weight <= 0:
            raise UserError(f"the ramp's upper weight reaches {weight:.3f} <= 0 at epoch {epoch}: lower penalty.decay")
        return weight

    def gamma_at(self, epoch: int) -> float:
        weight = self.upper_weight(epoch)
        return (1.0 - weight) / weight

    def label(self) -> str:
        return f"fixed gamma={self.gamma:g}" if self.kind == "fixed" else f"ramp (decay {self.decay:g})"

    @classmethod
    def from_config(cls, penalty) -> "PenaltySchedule":
        return cls(kind=penalty.kind, decay=penalty.decay, gamma=penalty.gamma)
