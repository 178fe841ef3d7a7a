"""The scan's parameters as Optuna sees them, and the sampler and pruner a scan names (hpscan.core.search keeps the
ledger around them). Optuna is imported only when a scan needs it."""

from __future__ import annotations

import json
import math
import random
import warnings
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hpscan.api.contract import Objective, ParameterValue
from hpscan.api.parameters import Parameter
from hpscan.api.spec import EarlyStopping, Sampling
from hpscan.api.trials import Rungs
from hpscan.core.planning import SIGNIFICANT_DIGITS, axis_values
from hpscan.core.rungs import worker_rungs
from hpscan.errors import PlanningError


def load_optuna() -> Any:
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is a dependency of every extra that runs scans
        raise PlanningError("adaptive search and early stopping need Optuna: pip install 'hpscan[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass(frozen=True)
class Axis:
    """One parameter as Optuna sees it: an ordered list of points (the index is searched, so TPE and CMA-ES know
    the order), unordered categories, or a continuous range."""

    name: str
    kind: str  # "ordinal" | "categorical" | "float"
    points: tuple[ParameterValue, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False


def _axis(parameter: Parameter) -> Axis:
    if parameter.range is not None and not parameter.range.is_discrete:
        r = parameter.range
        return Axis(parameter.name, "float", low=r.min, high=r.max, log=r.scale == "log")
    points = tuple(axis_values(parameter))
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in points)
    if numeric and len(points) > 1:
        return Axis(parameter.name, "ordinal", tuple(sorted(points)))
    return Axis(parameter.name, "categorical", points)


def point_key(parameters: Mapping[str, ParameterValue]) -> str:
    """One point of the space as a string: the same parameters, the same key."""
    return json.dumps(parameters, sort_keys=True, separators=(",", ":"))


class SearchSpace:
    """The scan's axes as Optuna distributions, and the way between Optuna's values and the payload's."""

    def __init__(self, parameters: Iterable[Parameter]) -> None:
        self.axes = [_axis(p) for p in parameters]

    def distributions(self) -> dict[str, Any]:
        optuna = load_optuna()
        out: dict[str, Any] = {}
        for axis in self.axes:
            if axis.kind == "float":
                out[axis.name] = optuna.distributions.FloatDistribution(axis.low, axis.high, log=axis.log)
            elif axis.kind == "ordinal":
                out[axis.name] = optuna.distributions.IntDistribution(0, len(axis.points) - 1)
            else:
                out[axis.name] = optuna.distributions.CategoricalDistribution(list(axis.points))
        return out

    def external(self, internal: Mapping[str, Any]) -> dict[str, ParameterValue]:
        """Optuna's values -> the combination's parameters."""
        out: dict[str, ParameterValue] = {}
        for axis in self.axes:
            value = internal[axis.name]
            if axis.kind == "ordinal":
                out[axis.name] = axis.points[int(value)]
            elif axis.kind == "float":
                out[axis.name] = min(max(float(f"{float(value):.{SIGNIFICANT_DIGITS}g}"), axis.low), axis.high)
            else:
                out[axis.name] = value
        return out

    def random_point(self, rng: random.Random, held: Container[str], tries: int) -> dict[str, ParameterValue] | None:
        """A point whose point_key is not in ``held``, drawn with ``rng`` (None: none in ``tries`` draws, the space
        is explored)."""
        for _ in range(tries):
            internal: dict[str, Any] = {}
            for axis in self.axes:
                if axis.kind == "float":
                    internal[axis.name] = (
                        math.exp(rng.uniform(math.log(axis.low), math.log(axis.high)))
                        if axis.log
                        else rng.uniform(axis.low, axis.high)
                    )
                elif axis.kind == "ordinal":
                    internal[axis.name] = rng.randrange(len(axis.points))
                else:
                    internal[axis.name] = rng.choice(axis.points)
            parameters = self.external(internal)
            if point_key(parameters) not in held:
                return parameters
        return None

    def internal(self, parameters: Mapping[str, ParameterValue]) -> dict[str, Any]:
        """The combination's parameters -> Optuna's values (for trials Optuna did not suggest itself)."""
        out: dict[str, Any] = {}
        for axis in self.axes:
            value = parameters[axis.name]
            out[axis.name] = axis.points.index(value) if axis.kind == "ordinal" else value
        return out


def make_sampler(sampling: Sampling) -> Any:
    """The Optuna sampler of sampling.strategy (random and grid scans are planned up front and need none). TPE,
    NSGA-II, QMC and random sample for several objectives as well (TPE then splits good from bad trials by their
    Pareto ranks); the spec refuses CMA-ES with several."""
    optuna = load_optuna()
    if sampling.strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=sampling.seed)
    if sampling.strategy == "tpe":
        # Multivariate (the axes' joint density, not one per axis), with the constant liar: trials in flight count
        # as bad guesses, so parallel workers do not all get one point. Optuna 5's defaults, named here so that a
        # change of Optuna's defaults does not change hpscan's search.
        return optuna.samplers.TPESampler(seed=sampling.seed, multivariate=True, constant_liar=True)
    if sampling.strategy == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=sampling.seed, warn_independent_sampling=False)
    if sampling.strategy == "qmc":
        with warnings.catch_warnings():  # Optuna marks the QMC sampler experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=sampling.seed, scramble=True, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=sampling.seed)


def make_pruner(early: EarlyStopping) -> Any:
    """The Optuna pruner of earlyStopping.strategy."""
    optuna = load_optuna()
    if early.strategy == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=early.min_epochs, reduction_factor=early.reduction_factor, min_early_stopping_rate=0
        )
    if early.strategy == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=early.min_epochs)
    return optuna.pruners.NopPruner()


ASHA_RUNG_KEY = "completed_rung_{}"
"""The system attribute in which Optuna's SuccessiveHalvingPruner keeps a trial's value at each rung it reached
(optuna/pruners/_successive_halving.py; tests/unit/core/test_rungs.py fails if Optuna renames it)."""


def asha_rungs(study: Any, early: EarlyStopping, objective: Objective, still_to_come: int) -> Rungs:
    """The rung thresholds workers get (hpscan.core.rungs.worker_rungs) from the study's values at each rung."""
    values = asha_rung_values(study)
    return worker_rungs(
        values, still_to_come, objective.metric, objective.goal, early.min_epochs, early.reduction_factor
    )


def asha_rung_values(study: Any) -> dict[int, list[float]]:
    """The values each ASHA rung holds in the study, every trial's (the pruner compares against all of them)."""
    out: dict[int, list[float]] = {}
    for trial in study.get_trials(deepcopy=False):
        rung = 0
        while (key := ASHA_RUNG_KEY.format(rung)) in trial.system_attrs:
            out.setdefault(rung, []).append(float(trial.system_attrs[key]))
            rung += 1
    return out
