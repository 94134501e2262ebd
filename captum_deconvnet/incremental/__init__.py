"""Exact incremental inference for occlusion, its approximate variants, and the
arithmetic it saves."""

from .approximate import Approximation, check_grid, drill_down
from .count import MultiplyAdds, count_multiply_adds
from .forward import IncrementalForward, channel_sums

__all__ = [
    "Approximation",
    "IncrementalForward",
    "MultiplyAdds",
    "channel_sums",
    "check_grid",
    "count_multiply_adds",
    "drill_down",
]
