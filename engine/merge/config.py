"""Merge settings: one dataclass whose help text feeds `tailor merge --help` and the app's
Merge dialog tooltips."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..configs import opt, validate_ranges
from ..events import TailorError

METHODS = ["concat", "linear", "ties", "dare"]
DARE_COMBINE = ["sum", "ties"]


@dataclass
class MergeConfig:
    method: str = opt(
        "concat", "how the adapters' weight changes are combined: concat (their exact weighted "
        "sum, kept as one adapter of the ranks added up), linear (the weighted sum squeezed to "
        "--rank by truncated SVD; the share of each layer's change kept is reported), ties "
        "(keep each change's largest entries, elect a sign per entry, average the entries that "
        "agree; Yadav et al. 2023) or dare (drop entries at random, rescale the rest, then sum "
        "or TIES; Yu et al. 2023)", choices=METHODS)
    weights: list = opt([], "one weight per adapter, in order, e.g. 0.7,0.3 (default: 1 each, "
                        "both adapters at full strength)", flag="--weights")
    rank: int = opt(0, "rank of the merged adapter for linear, ties and dare (0: the largest "
                    "parent's rank); ties and dare changes are full rank, so the adapter keeps "
                    "their best rank-R part (use --fuse for the exact result)", minimum=0,
                    maximum=65536)
    density: float = opt(0.5, "ties: the fraction of each change's entries kept (the largest "
                         "by magnitude); dare: the chance an entry is kept (each kept entry is "
                         "scaled by 1/density)", minimum=0.0, maximum=1.0)
    dare_combine: str = opt("sum", "dare: add the rescaled changes (sum: DARE linear) or elect "
                            "signs first (ties: DARE TIES, not averaged, as in mergekit)",
                            choices=DARE_COMBINE)
    seed: int = opt(0, "dare: random seed of the dropped entries (same seed, same merge)",
                    minimum=0, maximum=2**31 - 1)

    def validate(self) -> None:
        problems = validate_ranges(self)
        if self.method in ("ties", "dare") and self.density <= 0:
            problems.append("density must be above 0 (it is the fraction of entries kept)")
        if any(not isinstance(w, (int, float)) or not math.isfinite(w) for w in self.weights):
            problems.append(f"weights must be finite numbers, got {self.weights}")
        elif self.weights and not any(self.weights):
            problems.append("every weight is 0: the merge would be no change at all")
        if problems:
            raise TailorError("invalid merge settings: " + "; ".join(problems),
                              hint="see `tailor merge --help` for each setting's range")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_weights(text: str | None) -> list[float]:
    """``"0.7,0.3"`` -> [0.7, 0.3]; TailorError naming the bad item."""
    if text is None or not str(text).strip():
        return []
    out = []
    for item in str(text).split(","):
        try:
            out.append(float(item))
        except ValueError:
            raise TailorError(f"--weights: {item.strip()!r} is not a number",
                              hint="give one number per adapter, e.g. --weights 0.7,0.3") from None
    return out
