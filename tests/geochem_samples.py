"""Groundwater samples for the geochemistry tests and benchmark: a CSV of wells whose calcium
rises to the east, so a kriged saturation index has a known trend."""

from __future__ import annotations

import numpy as np


def samples_csv(count: int, seed: int = 3) -> str:
    """Groundwater samples over a 1 km square whose calcium rises to the east."""
    rng = np.random.default_rng(seed)
    lines = ["name,x,y,temp,pH,Ca,Mg,Na,K,Cl,Alkalinity,S(6)"]
    for n in range(count):
        x, y = rng.uniform(0, 1000, 2)
        lines.append(f"w{n},{x:.1f},{y:.1f},12,{rng.uniform(7.0, 7.6):.3f},"
                     f"{30 + 0.1 * x + rng.normal(0, 3):.2f},12,25,2,35,"
                     f"{220 + rng.normal(0, 10):.1f},40")
    return "\n".join(lines) + "\n"
