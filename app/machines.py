"""The Train page's "Machines" field -> `tailor train`'s --ranks/--hosts (engine/train/launch.py
runs mlx.launch with them). Empty: this Mac alone."""
from __future__ import annotations

MACHINES_TOOLTIP = ("train on several Macs at once (data-parallel, MLX's mlx.launch): host "
                    "names separated by commas (this Mac included, each reachable by ssh "
                    "without a password), or the path of an MLX host file; a number N runs N "
                    "processes on this Mac. Empty: this Mac alone")


def machines_argv(text: str) -> list[str]:
    """The flags for what the field holds."""
    text = text.strip()
    if not text:
        return []
    if text.isdigit():
        return ["--ranks", text] if int(text) > 1 else []
    return ["--hosts", text]
