"""A pair's calibrated confidence: the probability that it is a true match, from the features a
scored garment stores (logistic regression over standardised features, fitted by `jobs.calibrate`).

Features of a pair (one value per scored garment; NaN where the pair has no candidate):
  s_vlm, s_siglip   the best candidate's cosines
  margin            its score minus the runner-up's (0 with a single candidate)
  siglip_gap        its S_SigLIP minus the highest S_SigLIP among the other candidates (0 with a
                    single candidate): how much nearer it is than every other crop
  crop_margin       its score minus the best score of its crop with any other garment (0 when no other
                    garment holds the crop among its candidates; `core.crop_rivals`)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FEATURES = ("s_vlm", "s_siglip", "margin", "siglip_gap", "crop_margin")
COLUMNS = (
    "s_vlm",
    "s_siglip",
    "margin",
    "candidate_s_siglip",
    "crop_margin",
)  # the pair columns the features come from


def _floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(column, float("nan")).to_numpy(zero_copy_only=False).astype(np.float64)


def _nth(lists: pa.Array | pa.ChunkedArray, n: int) -> np.ndarray:
    """(rows,) float64: each list's value at position n, NaN where it is shorter."""
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    out = np.full(len(lists), np.nan)
    has = lengths > n
    if has.any():
        starts = lists.offsets.to_numpy()[:-1].astype(np.int64)
        values = lists.values.to_numpy(zero_copy_only=False).astype(np.float64)
        out[has] = values[starts[has] + n]
    return out


def pair_features(pairs: pa.Table | pa.RecordBatch) -> np.ndarray:
    """(rows, len(FEATURES)) float64 features of each pair (`COLUMNS` of the PAIRS schema); a row
    without a candidate is all NaN. Candidates are stored in search order (S_SigLIP descending)."""
    s_vlm, s_siglip, margin = (_floats(pairs[name]) for name in COLUMNS[:3])
    first, second = _nth(pairs["candidate_s_siglip"], 0), _nth(pairs["candidate_s_siglip"], 1)
    nearest_other = np.where(s_siglip >= first, second, first)  # the best is the nearest unless beaten
    gap = np.where(np.isnan(nearest_other), 0.0, s_siglip - nearest_other)
    margin = np.where(np.isnan(margin), 0.0, margin)
    crop_margin = np.nan_to_num(_floats(pairs["crop_margin"]), nan=0.0)
    out = np.stack([s_vlm, s_siglip, margin, gap, crop_margin], axis=1)
    out[np.isnan(s_siglip)] = np.nan
    return out


@dataclass(frozen=True)
class Confidence:
    """P(true) = 1 / (1 + exp(-(bias + sum_i weights[i] * (x_i - mean[i]) / scale[i]))) over
    `features` (names from FEATURES)."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    @classmethod
    def from_dict(cls, values: Mapping) -> Confidence:
        """From its `as_dict` (a config's `tiers.calibration`)."""
        vector = ("features", "mean", "scale", "weights")
        return cls(**{k: tuple(values[k]) for k in vector}, bias=float(values["bias"]))

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(rows,) float64 from (rows, len(FEATURES)) `pair_features` (NaN rows give NaN)."""
        columns = [FEATURES.index(name) for name in self.features]
        z = (features[:, columns] - np.asarray(self.mean)) / np.asarray(self.scale)
        return self.bias + z @ np.asarray(self.weights, np.float64)

    def of_features(self, features: np.ndarray) -> np.ndarray:
        """(rows,) float64 confidence in [0, 1] from (rows, len(FEATURES)) `pair_features`."""
        return 1.0 / (1.0 + np.exp(-self.logits(features)))

    def __call__(self, pairs: pa.Table | pa.RecordBatch) -> np.ndarray:
        """(rows,) float64 confidence in [0, 1] of each pair; NaN for a pair without a candidate."""
        return self.of_features(pair_features(pairs))


def standardised(features: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, mean, scale) of the `names` columns of `features` (rows without NaN): scale 1 where a
    column is constant."""
    x = features[:, [FEATURES.index(name) for name in names]]
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return (x - mean) / scale, mean, scale
