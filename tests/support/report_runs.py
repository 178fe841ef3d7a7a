"""Fake run folders for the report tests: a real manifest and synthetic records from its plan (no payload)."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import yaml

from hpscan.api.contract import ResultRecord
from hpscan.core.manifest import load_scan
from hpscan.core.planning import plan
from hpscan.core.results import iter_record_lines, read_records

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def synthetic_loss(parameters: dict, rng: random.Random) -> float:
    """A smooth made-up validation loss: wide layers and a middling learning rate are best."""
    loss = 0.62
    for name, value in parameters.items():
        if name.startswith("layer"):
            loss += 0.04 / math.sqrt(float(value))
        elif name == "learning_rate":
            loss += 0.03 * abs(math.log10(float(value)) + 2.5)
        elif name == "batch_size":
            loss += 0.00001 * float(value) ** 0.5
        elif name == "activation":
            loss += 0.01 if value == "relu" else 0.0
    return loss + rng.gauss(0, 0.01)


def write_fake_run(
    out: Path,
    manifest: str = "quickstart.yaml",
    failed_every: int = 0,
    limit: int | None = None,
    seed: int = 7,
    settings: dict | None = None,
    command: list[str] | None = None,
    pruned_every: int = 0,
) -> Path:
    """A run folder as `hpscan run` leaves it: scan.yaml and results.jsonl (no status.json).

    ``settings`` replaces spec.payload.settings (e.g. tiny data for a quick retraining), ``command``
    spec.payload.command (another payload than dl1).
    """
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLES / manifest, out / "scan.yaml")
    if settings is not None or command is not None:
        document = yaml.safe_load((out / "scan.yaml").read_text())
        if settings is not None:
            document["spec"]["payload"]["settings"] = settings
        if command is not None:
            document["spec"]["payload"]["command"] = command
        (out / "scan.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    scan = load_scan(out / "scan.yaml")
    planned = plan(scan.metadata.name, scan.spec)
    rng = random.Random(seed)
    records = []
    for combination in list(planned.combinations())[:limit]:
        position = int(combination.id[1:].split("-")[0])
        failed = failed_every and position % failed_every == failed_every - 1
        pruned = not failed and pruned_every and position % pruned_every == 0
        loss = synthetic_loss(combination.parameters, rng) + (0.05 if pruned else 0.0)
        records.append(
            ResultRecord(
                id=combination.id,
                shard=planned.shard_of(position),
                parameters=combination.parameters,
                metrics={} if failed else {"val_loss": loss},
                status="failed" if failed else "pruned" if pruned else "succeeded",
                error="loss diverged (NaN)" if failed else None,
                device="CPU",
                epochs=1 if pruned else 3,
                max_epochs=3,
            )
        )
    (out / "results.jsonl").write_text("".join(iter_record_lines(records)), encoding="utf-8")
    return out


def write_status(out: Path, phase: str = "Succeeded") -> None:
    (out / "status.json").write_text(json.dumps({"phase": phase}), encoding="utf-8")


OBJECTIVES = [{"metric": "light_rejection_77", "goal": "maximize"}, {"metric": "c_rejection_77", "goal": "maximize"}]


def physics_run(out: Path, error_fraction: float = 0.01) -> Path:
    """The quickstart's fake run made a two-objective scan: each record's light and c rejection trade off along
    its made-up loss (a network good at one is worse at the other), with errors of ``error_fraction``."""
    run_dir = write_fake_run(out)
    document = yaml.safe_load((run_dir / "scan.yaml").read_text())
    document["spec"].pop("objective")
    document["spec"]["objectives"] = OBJECTIVES
    (run_dir / "scan.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    records, _ = read_records(run_dir / "results.jsonl")
    physics: list[ResultRecord] = []
    for record in records:
        loss = record.metrics["val_loss"]
        position = int(record.id[1:].split("-")[0])
        light = 300.0 - 200.0 * loss + 10.0 * (position % 5)
        charm = 8.0 - 1.0 * (position % 5) - loss
        metrics = {"val_loss": loss, "light_rejection_77": light, "c_rejection_77": charm,
                   "light_rejection_77_err": light * error_fraction, "c_rejection_77_err": charm * error_fraction}  # fmt: skip
        physics.append(record.model_copy(update={"metrics": metrics}))
    (run_dir / "results.jsonl").write_text("".join(iter_record_lines(physics)), encoding="utf-8")
    return run_dir
