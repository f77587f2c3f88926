"""Excitation waveforms, functions of time in seconds."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Waveform = Callable[[np.ndarray | float], np.ndarray | float]


@dataclass(frozen=True)
class GaussianPulse:
    """exp(-((t - delay)/width)^2): a baseband pulse whose spectrum reaches about 1/(width*pi)
    Hz at -8.7 dB; the delay (default 4 widths) makes it start from ~1e-7."""

    width: float
    delay: float | None = None

    @classmethod
    def up_to(cls, frequency: float) -> GaussianPulse:
        """A pulse with useful content (above -20 dB) up to `frequency`."""
        return cls(math.sqrt(math.log(10.0)) / (math.pi * frequency))

    def __call__(self, t: np.ndarray | float) -> np.ndarray | float:
        delay = 4.0 * self.width if self.delay is None else self.delay
        return np.exp(-(((np.asarray(t) - delay) / self.width) ** 2))


@dataclass(frozen=True)
class ModulatedGaussian:
    """A Gaussian envelope on a cosine at `center` Hz, covering center ± bandwidth/2 (-20 dB)."""

    center: float
    bandwidth: float

    def __call__(self, t: np.ndarray | float) -> np.ndarray | float:
        envelope = GaussianPulse.up_to(self.bandwidth / 2)
        return envelope(t) * np.cos(2 * math.pi * self.center * (np.asarray(t)
                                                                 - 4 * envelope.width))
