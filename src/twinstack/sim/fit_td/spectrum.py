"""Spectra of probe and port signals: resonance peaks (a Hann-windowed, zero-padded FFT, refined
by a parabola through the peak's neighbours in log magnitude) and the DFT at chosen
frequencies."""

from __future__ import annotations

import numpy as np

PADDING = 16  # FFT length over the signal's: bins 16 times finer than 1 / duration


def peak_frequency(samples: np.ndarray, dt: float, low: float, high: float) -> float:
    """The strongest resonance between `low` and `high` Hz."""
    samples = np.asarray(samples, dtype=np.float64)
    size = 1 << int(np.ceil(np.log2(samples.size * PADDING)))
    magnitude = np.log(np.abs(np.fft.rfft(samples * np.hanning(samples.size), size)) + 1e-300)
    step = 1.0 / (size * dt)
    first, last = int(np.ceil(low / step)), int(np.floor(high / step))
    i = first + int(np.argmax(magnitude[first:last + 1]))
    if i in (first, last):
        raise ValueError(f"no peak inside {low:g}..{high:g} Hz (the largest is at its edge)")
    left, middle, right = magnitude[i - 1:i + 2]
    return float((i + 0.5 * (left - right) / (left - 2 * middle + right)) * step)


def dft(samples: np.ndarray, times: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    """sum samples * exp(-j 2 pi f t) dt at each frequency (the samples' own times: E and H
    are half a step apart)."""
    samples = np.asarray(samples, dtype=np.float64)
    dt = float(times[1] - times[0]) if times.size > 1 else 1.0
    phase = np.exp(-2j * np.pi * np.outer(np.asarray(frequencies, np.float64), times))
    return phase @ samples * dt
