"""One way to show a byte count to a person: ``format_bytes(4_560_000) == "4.56 MB"``.

Decimal units (1 KB = 1000 B), as macOS Finder and disk makers count; three significant
figures, so a 2 KB file never reads "0.00 GB".
"""
from __future__ import annotations

_UNITS = ("KB", "MB", "GB", "TB", "PB")


def format_bytes(n: float) -> str:
    """``n`` bytes as "512 B", "12.3 KB", "4.56 MB", "1.23 GB", ... (negative: "-1.5 KB")."""
    sign = "-" if n < 0 else ""
    value = abs(float(n))
    if value < 1000:
        return f"{sign}{int(value)} B"
    unit = ""
    for unit in _UNITS:
        value /= 1000
        if value < 999.5 or unit == _UNITS[-1]:
            break
    digits = 2 if value < 9.995 else 1 if value < 99.95 else 0
    return f"{sign}{value:.{digits}f} {unit}"
