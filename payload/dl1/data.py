"""Training data: synthetic or dumper-style HDF5 jets -> defaults, scaling, flavour weights, train/val/test.

``load_dataset(settings.data)`` is the one entry point; it returns scaled float32 inputs, class indices
(0 u, 1 c, 2 b), per-jet weights that give every flavour the b-jet (pT, |eta|) shape and the same total
weight, and the jets themselves (for pT, eta and labels in the report).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dl1.errors import DataError, SettingsError
from dl1.synthetic import synthetic_jets, synthetic_test_jets
from dl1.variables import COUNT_DEFAULTS, DL1R_VARIABLES, FLAVOUR_LABELS, LABEL, is_flag

KINEMATICS = ("pt", "eta")
"""Fields used for the flavour reweighting (MeV, signed eta)."""

PT_BINS_GEV = np.concatenate([np.geomspace(20.0, 400.0, 16), [600.0, 1000.0, 3000.0, np.inf]])
ABS_ETA_BINS = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, np.inf])


class SyntheticSettings(BaseModel):
    """Jets generated in the pod: the same for the same ``jets`` and ``seed`` on every machine."""

    model_config = ConfigDict(extra="forbid")
    jets: int = Field(ge=60, description="Number of jets to generate (all splits together).")
    seed: int = Field(1, ge=0, description="Seed of the generator.")
    test_jets: int | None = Field(
        None,
        ge=60,
        description="Generate the test split apart, this many jets from its own random streams (the 1/6 of `jets` "
        "it replaces joins the training split). Generating and scoring jets is cheap where training is not: a "
        "large test sample gives rejections with small statistical uncertainties. Default: the 1/6 of `jets`.",
    )


class DataSettings(BaseModel):
    """``settings.data``: either ``synthetic`` or ``train`` (with optional ``validation`` and ``test``)."""

    model_config = ConfigDict(extra="forbid")
    synthetic: SyntheticSettings | None = None
    train: Path | None = None
    validation: Path | None = None
    test: Path | None = None
    variables: list[str] = Field(default_factory=lambda: list(DL1R_VARIABLES), min_length=1)
    weighting: Literal["reweight", "resample", "none"] = Field(
        "reweight", description="How flavours get the b-jet (pT, |eta|) shape: per-jet weights, resampling, or not."
    )
    scale_dict: Path | None = Field(
        None, description="Stored scale dictionary (JSON); computed from train when absent."
    )
    max_jets: int | None = Field(None, ge=60, description="Read at most this many jets per file.")

    @model_validator(mode="after")
    def _one_source(self) -> DataSettings:
        if (self.synthetic is None) == (self.train is None):
            raise ValueError("give exactly one of 'synthetic' or 'train'")
        if self.synthetic is not None and (self.validation or self.test):
            raise ValueError("'validation' and 'test' need 'train', not 'synthetic'")
        return self


def parse_data_settings(raw: Any) -> DataSettings:
    """Validate ``settings.data``; raises ``SettingsError`` naming the bad field."""
    if raw is None:
        raise SettingsError("settings.data is missing: give {synthetic: {jets: N, seed: S}} or {train: PATH}")
    try:
        return DataSettings.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SettingsError(f"settings.data{'.' + where if where else ''}: {err['msg']}") from None


@dataclass
class Split:
    """One split of the data, ready for training."""

    x: np.ndarray
    """Scaled inputs, float32, shape (jets, variables)."""
    y: np.ndarray
    """Class index per jet: 0 light, 1 c, 2 b (the network's output order)."""
    weights: np.ndarray
    """Per-jet weight, float32, mean 1 (all ones without reweighting)."""
    jets: np.ndarray
    """The structured jets (label, pt, eta and the raw inputs)."""

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    """Train, validation and test splits with the variables and scale dictionary they were built with."""

    train: Split
    validation: Split
    test: Split
    variables: list[str]
    scale_dict: dict[str, dict[str, float]] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: jets per split and flavour fractions of the training split."""
        frac = np.bincount(self.train.y, minlength=3) / max(len(self.train), 1)
        return (
            f"{len(self.train):,} train / {len(self.validation):,} validation / {len(self.test):,} test jets, "
            f"{len(self.variables)} inputs, train fractions u {frac[0]:.2f} c {frac[1]:.2f} b {frac[2]:.2f}"
        )


def read_jets(path: Path | str, variables: list[str], max_jets: int | None = None) -> np.ndarray:
    """Read the needed fields of a dumper-style file's ``jets`` dataset (via atlas-ftag-tools' H5Reader).

    Raises ``DataError`` naming the file when it is missing, not HDF5, has no ``jets`` dataset, lacks a
    field, or is empty.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    import h5py  # here, not at the top: the settings checker (dl1.validation) imports this module without h5py

    needed = [*dict.fromkeys([*variables, LABEL, *KINEMATICS])]
    try:
        with h5py.File(path, "r") as f:
            if "jets" not in f or not isinstance(f["jets"], h5py.Dataset):
                raise DataError(f"{path}: no 'jets' dataset")
            names = f["jets"].dtype.names or ()
            missing = [n for n in needed if n not in names]
            if missing:
                raise DataError(
                    f"{path}: field {missing[0]!r} missing from 'jets'"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                )
            n_jets = len(f["jets"])
            has_event = "eventNumber" in names
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc})") from None
    if n_jets == 0:
        raise DataError(f"{path}: 'jets' is empty")
    from ftag.hdf5 import H5Reader  # imported late: it pulls in scipy

    fields = needed + (["eventNumber"] if has_event else [])
    num = min(n_jets, max_jets) if max_jets else n_jets
    reader = H5Reader(path, batch_size=min(num, 100_000), shuffle=False)
    jets = reader.load({"jets": fields}, num_global_objects=num)["jets"]
    if not has_event:  # split by position when the file has no event numbers
        from numpy.lib import recfunctions

        jets = recfunctions.append_fields(jets, "eventNumber", np.arange(len(jets), dtype=np.int64), usemask=False)
    return jets


def _check_flavours(jets: np.ndarray, source: str) -> np.ndarray:
    """Keep b, c and light jets; raise when fewer than the three flavours remain."""
    keep = np.isin(jets[LABEL], FLAVOUR_LABELS)
    jets = jets[keep]
    present = sorted({int(v) for v in np.unique(jets[LABEL])})
    if len(present) < 3:
        names = {0: "light", 4: "c", 5: "b"}
        have = ", ".join(names[p] for p in present) or "none"
        raise DataError(f"{source}: needs b, c and light jets ({LABEL} 5/4/0), found only: {have}")
    return jets


def compute_scale_dict(jets: np.ndarray, variables: list[str]) -> dict[str, dict[str, float]]:
    """Shift, scale and default per variable from training jets (umami's defaults; flags are not scaled)."""
    scale: dict[str, dict[str, float]] = {}
    for name in variables:
        values = jets[name].astype(np.float64)
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if finite.size else 0.0
        default = COUNT_DEFAULTS.get(name, mean)
        if is_flag(name):
            scale[name] = {"shift": 0.0, "scale": 1.0, "default": 0.0}
            continue
        filled = np.where(np.isfinite(values), values, default)
        std = float(filled.std())
        scale[name] = {"shift": float(filled.mean()), "scale": std if std > 0 else 1.0, "default": float(default)}
    return scale


def apply_scaling(jets: np.ndarray, variables: list[str], scale_dict: dict[str, dict[str, float]]) -> np.ndarray:
    """Inputs as float32 (jets, variables): missing values replaced by defaults, then (x - shift) / scale."""
    x = np.empty((len(jets), len(variables)), dtype=np.float32)
    for i, name in enumerate(variables):
        if name not in scale_dict:
            raise DataError(f"scale dictionary has no entry for {name!r}")
        entry = scale_dict[name]
        try:
            default, shift, scale = float(entry["default"]), float(entry["shift"]), float(entry["scale"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"scale dictionary entry {name!r} needs numbers 'shift', 'scale' and 'default'") from None
        values = jets[name].astype(np.float64)
        values = np.where(np.isfinite(values), values, default)
        x[:, i] = (values - shift) / (scale if scale else 1.0)
    return x


def _kinematic_bins(jets: np.ndarray) -> np.ndarray:
    pt_bin = np.clip(np.digitize(jets["pt"] / 1e3, PT_BINS_GEV) - 1, 0, len(PT_BINS_GEV) - 2)
    eta_bin = np.clip(np.digitize(np.abs(jets["eta"]), ABS_ETA_BINS) - 1, 0, len(ABS_ETA_BINS) - 2)
    return pt_bin * (len(ABS_ETA_BINS) - 1) + eta_bin


def flavour_weights(
    jets: np.ndarray, y: np.ndarray, reference: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Weights giving every flavour the b-jet (pT, |eta|) shape and an equal share of the total, mean 1.

    ``reference`` (jets, y) supplies the histograms (the training split) so all splits share one map.
    """
    ref_jets, ref_y = reference if reference is not None else (jets, y)
    n_bins = (len(PT_BINS_GEV) - 1) * (len(ABS_ETA_BINS) - 1)
    ref_bins = _kinematic_bins(ref_jets)
    hist = np.stack([np.bincount(ref_bins[ref_y == k], minlength=n_bins).astype(np.float64) for k in range(3)])
    hist /= np.maximum(hist.sum(axis=1, keepdims=True), 1.0)
    ratio = np.where(hist > 0, hist[2][None, :] / np.where(hist > 0, hist, 1.0), 0.0)
    ratio = np.minimum(ratio, 50.0)  # a sparse bin must not dominate the loss
    bins = _kinematic_bins(jets)
    weights = ratio[y, bins]
    for k in range(3):
        sel = y == k
        total = weights[sel].sum()
        if total > 0:
            weights[sel] *= sel.size / 3.0 / total
    return (weights / max(weights.mean(), 1e-12)).astype(np.float32)


def _make_split(
    jets: np.ndarray,
    variables: list[str],
    scale_dict: dict[str, dict[str, float]],
    weighting: str,
    reference: tuple[np.ndarray, np.ndarray] | None,
    rng: np.random.Generator,
) -> Split:
    y = np.searchsorted(np.array(FLAVOUR_LABELS), jets[LABEL]).astype(np.int32)
    if weighting == "none":
        weights = np.ones(len(jets), dtype=np.float32)
    else:
        weights = flavour_weights(jets, y, reference)
        if weighting == "resample":
            idx = rng.choice(len(jets), size=len(jets), p=weights / weights.sum())
            jets, y = jets[idx], y[idx]
            weights = np.ones(len(jets), dtype=np.float32)
    return Split(x=apply_scaling(jets, variables, scale_dict), y=y, weights=weights, jets=jets)


def split_by_event(jets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2/3 train, 1/6 validation, 1/6 test by ``eventNumber`` modulo 6 (stable whatever the file order)."""
    mod = np.asarray(jets["eventNumber"]) % 6
    return jets[mod < 4], jets[mod == 4], jets[mod == 5]


def load_dataset(
    data: DataSettings | dict[str, Any], scale_dict_out: Path | None = None, with_test: bool = True
) -> Dataset:
    """Load, split, clean, scale and weight the data that ``settings.data`` describes.

    Raises ``SettingsError`` for bad settings and ``DataError`` naming the file for bad inputs. When
    ``scale_dict_out`` is given, the scale dictionary used is written there as JSON. Without ``with_test`` (training
    needs no test jets) a separately generated test sample (``synthetic.test_jets``) is not generated: ``test`` is
    then the validation split.
    """
    settings = data if isinstance(data, DataSettings) else parse_data_settings(data)
    variables = list(settings.variables)
    unknown_synthetic = [v for v in variables if settings.synthetic and v not in DL1R_VARIABLES]
    if unknown_synthetic:
        raise SettingsError(f"settings.data.variables: synthetic jets have no {unknown_synthetic[0]!r}")

    if settings.synthetic is not None:
        jets = synthetic_jets(settings.synthetic.jets, settings.synthetic.seed)
        source = f"synthetic jets (jets={settings.synthetic.jets}, seed={settings.synthetic.seed})"
        train, val, test = split_by_event(jets)
        sources = (source, source, source)
        if settings.synthetic.test_jets is not None:
            train = np.concatenate([train, test])
            test = synthetic_test_jets(settings.synthetic.test_jets, settings.synthetic.seed) if with_test else val
            sources = (source, source, f"synthetic test jets (jets={len(test)}, seed={settings.synthetic.seed})")
    else:
        assert settings.train is not None
        train_all = read_jets(settings.train, variables, settings.max_jets)
        train, val, test = split_by_event(train_all)
        if settings.validation is not None:
            val = read_jets(settings.validation, variables, settings.max_jets)
            train = np.concatenate([train, train_all[np.asarray(train_all["eventNumber"]) % 6 == 4]])
        if settings.test is not None:
            test = read_jets(settings.test, variables, settings.max_jets)
            train = np.concatenate([train, train_all[np.asarray(train_all["eventNumber"]) % 6 == 5]])
        sources = (
            str(settings.train),
            str(settings.validation or settings.train),
            str(settings.test or settings.train),
        )
    train = _check_flavours(train, f"{sources[0]} (training split)")
    val = _check_flavours(val, f"{sources[1]} (validation split)")
    test = _check_flavours(test, f"{sources[2]} (test split)")

    if settings.scale_dict is not None:
        try:
            scale_dict = json.loads(Path(settings.scale_dict).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{settings.scale_dict}: cannot read the scale dictionary ({exc})") from None
    else:
        scale_dict = compute_scale_dict(train, variables)
    if scale_dict_out is not None:
        scale_dict_out.write_text(json.dumps(scale_dict, indent=1, sort_keys=True))

    rng = np.random.default_rng(settings.synthetic.seed if settings.synthetic else 0)
    train_y = np.searchsorted(np.array(FLAVOUR_LABELS), train[LABEL])
    reference = (train, train_y)
    return Dataset(
        train=_make_split(train, variables, scale_dict, settings.weighting, reference, rng),
        validation=_make_split(val, variables, scale_dict, settings.weighting, reference, rng),
        test=_make_split(test, variables, scale_dict, settings.weighting, reference, rng),
        variables=variables,
        scale_dict=scale_dict,
    )


def finite_or_none(value: float) -> float | None:
    """``value`` when finite, else None (JSON has no NaN)."""
    return value if math.isfinite(value) else None
