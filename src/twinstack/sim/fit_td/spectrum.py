"""Frequencies from probe signals: the peak of a Hann-windowed DFT on a fine frequency grid,
refined by a parabola through the peak's neighbours (log magnitude)."""

from __future__ import annotations

import numpy as np


def dft(samples: np.ndarray, dt: float, frequencies: np.ndarray,
        window: bool = True) -> np.ndarray:
    """The (Hann-windowed) discrete-time Fourier transform at any frequencies (Hz)."""
    samples = np.asarray(samples, dtype=np.float64)
    if window:
        samples = samples * np.hanning(samples.size)
    phase = np.exp(-2j * np.pi * dt * np.outer(frequencies, np.arange(samples.size)))
    return np.asarray(phase @ samples)


def peak_frequency(samples: np.ndarray, dt: float, low: float, high: float,
                   points: int = 2001) -> float:
    """The strongest resonance between `low` and `high` Hz."""
    frequencies = np.linspace(low, high, points)
    magnitude = np.log(np.abs(dft(samples, dt, frequencies)) + 1e-300)
    i = int(np.argmax(magnitude))
    if i in (0, points - 1):
        raise ValueError(f"no peak inside {low:g}..{high:g} Hz (the largest is at its edge)")
    left, middle, right = magnitude[i - 1:i + 2]
    offset = 0.5 * (left - right) / (left - 2 * middle + right)
    return float(frequencies[i] + offset * (frequencies[1] - frequencies[0]))
