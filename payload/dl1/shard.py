"""One shard of a scan in the dl1 payload: what ``dl1 train-shard`` runs.

A :class:`ShardRun` validates everything before the first slow step (a typo must not cost an hour), resumes from
the records already in OUT/results.jsonl, trains the rest, and appends one record per combination the moment it
finishes. A worker that pulls (``pull: true``) then trains each trial hpscan hands it until the end line.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from dl1.checkpoint import TrialCheckpoints
from dl1.errors import DL1Error, GPUUnavailableError, SettingsError
from dl1.model import ModelConfig, parse_combination
from dl1.train import parse_settings
from hpscan.api.contract import CHECKPOINTS_DIR, MODELS_DIR, RESULTS_FILE, Combination, ResultRecord, ShardFile
from hpscan.api.trials import JsonLines, TrialInbox, append_lines

if TYPE_CHECKING:
    from dl1.artifacts import KerasCache
    from dl1.data import Dataset
    from dl1.train import Outcome, ResidentData

PROGRESS_EVERY_S = 30.0
"""A heartbeat line for long epochs at most this often (each finished combination prints its own line)."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_shard_file(path: Path) -> ShardFile:
    """The shard file at ``path``; DL1Error when unreadable, SettingsError naming the first bad field."""
    try:
        return ShardFile.model_validate_json(path.read_text())
    except OSError as exc:
        raise DL1Error(f"{path}: cannot read ({exc.strerror})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SettingsError(f"{path}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


def recorded_ids(path: Path) -> set[str]:
    """Ids already in results.jsonl; a truncated last line (killed process) is ignored and cut off, so the next
    record starts on a clean line."""
    lines = JsonLines(path)
    done = {str(record["id"]) for record in lines.read_new() if "id" in record}
    if path.exists() and path.stat().st_size != lines.offset:
        with path.open("r+") as handle:
            handle.truncate(lines.offset)
    return done


class TrialWait:
    """A pulling worker with nothing to train and no end yet: it says so every ``every`` seconds with how long it
    has waited, so a scan that hands it nothing shows in the job's output instead of as a silently idle GPU. It
    does not give up: only hpscan knows whether trials will still come (an operator restarting, trials other
    workers give back), and a worker that left would not be started again for them."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self.since: float | None = None
        self.noted = 0.0

    def reset(self) -> None:
        self.since = None

    def tick(self, now: float, recorded: int) -> str | None:
        """The line to say now, if any (``now``: time.monotonic())."""
        if self.since is None:
            self.since = self.noted = now
            return None
        if now - self.noted < self.every:
            return None
        self.noted = now
        waited = now - self.since
        return (
            f"waiting for trials from hpscan: none to train for {waited:.0f} s ({recorded} recorded here, no end yet)"
        )


def _iso(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


class ShardRun:
    """Trains one shard file's combinations (and a pulling worker's trials) into ``out``."""

    def __init__(self, shard: ShardFile, out: Path) -> None:
        self.shard = shard
        self.out = out
        self.results = out / RESULTS_FILE
        self.settings = parse_settings(shard.settings)
        self.defaults = self.settings.model_defaults()
        self.configs: dict[str, ModelConfig] = {}
        self.parameters: dict[str, dict] = {}
        for combination in shard.combinations:  # an unknown parameter fails here, before any data is read
            self._admit(combination)
        self.done: set[str] = set()
        self.recorded_before = 0
        self.finished = 0
        self.inbox = TrialInbox(out) if shard.pull else None
        self.last_progress = time.monotonic()
        self.device = "CPU"
        self.dataset: Dataset | None = None
        self.keras_cache: KerasCache | None = None
        self.checkpoints: TrialCheckpoints | None = None
        if shard.checkpoints:
            self.checkpoints = TrialCheckpoints(out / CHECKPOINTS_DIR, self.settings)

    def _admit(self, combination: Combination) -> None:
        if combination.id not in self.configs:
            self.configs[combination.id] = parse_combination(dict(combination.parameters), self.defaults)
            self.parameters[combination.id] = dict(combination.parameters)

    def check_gpu(self) -> None:
        """Exit early (GPUUnavailableError) when the shard requires a GPU this machine cannot use."""
        gpu = self.shard.gpu
        if not (gpu.required and gpu.count > 0):
            return
        from dl1.gpucheck import Probes, Requirement, check

        report = check(Probes.system(), Requirement(gpu.count, gpu.min_compute_capability, gpu.min_memory_mb))
        if not report.ok:
            raise GPUUnavailableError(f"GPU required but unusable: {report.reason}")
        _say(f"gpu-check: {report.reason}")

    def run(self) -> None:
        """Resume, train what is not recorded yet, and (a worker) the trials hpscan hands out until the end."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.done = recorded_ids(self.results)
        if self.checkpoints is not None:
            self.checkpoints.clear_recorded(self.done)
        todo = [c for c in self.shard.combinations if c.id not in self.done]
        self.recorded_before = len(self.done & set(self.configs))
        mode = " (a worker: more trials come from hpscan while it runs)" if self.shard.pull else ""
        _say(
            f"shard {self.shard.shard + 1}/{self.shard.shards} of {self.shard.scan}: "
            f"{len(self.shard.combinations)} combinations, {self.recorded_before} already recorded{mode}"
        )
        if not todo and not self.shard.pull:
            return
        resident = self._load_data()
        if self.inbox is None:
            self._train(resident, todo)
        else:
            self._serve(resident, todo, self.inbox)

    def _load_data(self) -> ResidentData:
        from dl1.data import load_dataset
        from dl1.train import ResidentData, device_name

        self.dataset = load_dataset(self.settings.data, scale_dict_out=self.out / "scale_dict.json", with_test=False)
        _say(f"data: {self.dataset.describe()}")
        resident = ResidentData(self.dataset.train, self.dataset.validation)
        # where the training tensors really live, not what was asked for
        self.device = device_name() if "GPU" in resident.x.device.upper() else "CPU"
        _say(
            f"training on {self.device}: {self.settings.precision} arithmetic, "
            f"up to {self.settings.fuse} combinations per graph"
        )
        if self.shard.artifacts.save_models:
            from dl1.artifacts import KerasCache

            self.keras_cache = KerasCache()
        return resident

    def _train(self, resident: ResidentData, batch: list[Combination]) -> None:
        from dl1.train import train_many

        train_many(
            resident,
            [(c.id, self.configs[c.id]) for c in batch],
            self.settings,
            self.record,
            on_epoch=self.on_epoch,
            keep_models=True,  # the record's physics is computed from the trained model (physics_metrics)
            should_stop=self.should_stop,
            checkpoints=self.checkpoints,
        )

    def _serve(self, resident: ResidentData, todo: list[Combination], inbox: TrialInbox) -> None:
        """A worker: train what it holds, then each trial as it arrives, until hpscan writes the end line."""
        wait = TrialWait()
        while True:
            inbox.poll()
            handed = [*todo, *inbox.assignment.trials.values()]  # trials that arrived while others trained, too
            pending = [c for c in handed if c.id not in self.done and not inbox.withdrawn(c.id)]
            for trial in pending:
                self._admit(trial)
            if pending:
                wait.reset()
                self._train(resident, pending)
            elif inbox.ended:
                _say(f"no more trials: {len(self.done)} recorded by this worker")
                return
            else:
                if note := wait.tick(time.monotonic(), len(self.done)):
                    _say(note)
                time.sleep(0.2)

    def record(self, outcome: Outcome) -> None:
        """Save the model (when asked) and append the combination's record, durably, then say one line."""
        self.finished += 1
        if outcome.status == "succeeded" and outcome.model is not None:
            outcome.metrics = outcome.metrics | self.physics_metrics(outcome)
        if self.shard.artifacts.save_models and outcome.status == "succeeded" and outcome.model is not None:
            self._save_model(outcome)  # the model before its record: a recorded combination has its model folder
        record = ResultRecord(
            id=outcome.key,
            shard=self.shard.shard,
            parameters=self.parameters[outcome.key],
            metrics=_finite(outcome.metrics),
            status=outcome.status,
            error=outcome.error,
            started_at=_iso(outcome.started),
            finished_at=_iso(outcome.finished),
            duration_seconds=max(outcome.finished - outcome.started, 0.0),
            device=self.device,
            epochs=outcome.epochs,
            max_epochs=self.settings.epochs,
            resumed_from=outcome.resumed_from or None,
        )
        append_lines(self.results, [record.to_wire()])
        self.done.add(outcome.key)
        metric = self.shard.objective.metric
        value = outcome.metrics.get(metric)
        shown = f"{metric}={value:.4f}" if value is not None else (outcome.error or "failed")
        of = f"/{len(self.shard.combinations)}" if not self.shard.pull else ""
        _say(
            f"[{self.finished + self.recorded_before}{of}] {outcome.key} {outcome.status} {shown} "
            f"({outcome.epochs} epochs, {record.duration_seconds:.1f} s)"
        )

    def physics_metrics(self, outcome: Outcome) -> dict[str, float]:
        """Rejections with errors and the network's cost on the validation split (dl1.record_metrics); none, said
        in a line, when they cannot be computed (a validation split without c jets): the record is kept anyway."""
        from dl1.record_metrics import record_metrics

        assert self.dataset is not None and outcome.model is not None
        validation = self.dataset.validation
        try:
            return record_metrics(outcome.model, validation.x, validation.y, self.settings.f_c, self.settings.f_b)
        except ValueError as exc:
            _say(f"{outcome.key}: no tagging metrics in its record: {exc}")
            return {}

    def _save_model(self, outcome: Outcome) -> None:
        from dl1.artifacts import save_model

        assert self.dataset is not None and outcome.model is not None
        save_model(
            self.out / MODELS_DIR / outcome.key,
            outcome.model,
            combination_id=outcome.key,
            parameters=self.parameters[outcome.key],
            variables=self.dataset.variables,
            scale_dict=self.dataset.scale_dict,
            metrics=_finite(outcome.metrics),
            epochs=outcome.epochs,
            extra={
                "scan": self.shard.scan,
                "shard": self.shard.shard,
                "device": self.device,
                "settings": self.shard.settings,
            },
            cache=self.keras_cache,
        )

    def on_epoch(self, key: str, epoch: int, metrics: dict[str, float]) -> None:
        """Report the epoch to hpscan (a worker: its early stopping reads these) and, now and then, to the log."""
        if self.inbox is not None:
            self.inbox.report(key, epoch, metrics)
        if time.monotonic() - self.last_progress >= PROGRESS_EVERY_S:
            self.last_progress = time.monotonic()
            _say(f"  training {key}: epoch {epoch}/{self.settings.epochs}, val_loss {metrics['val_loss']:.4f}")

    def should_stop(self, key: str) -> bool:
        """Whether to stop ``key`` now (a worker only): hpscan asked, or the epoch just reported is an ASHA rung's
        and the trial is below the rung's threshold (TrialInbox.stopping; a small read of two files per epoch)."""
        if self.inbox is None:
            return False
        return self.inbox.stopping(key)
