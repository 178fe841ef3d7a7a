"""`hpscan models` and `hpscan fetch-model`: the trained models a scan kept (spec.artifacts), listed or copied out.

Two places hold them (what is in a model folder is the payload's: dl1 writes model.keras, scale_dict.json and
model.json):
- a run folder of `hpscan run`: RUN/models/<combination id>/;
- a scan on the cluster (Kubernetes or HTCondor shards): the object store of its spec.artifacts.store (or the
  operator's default store, which the operator records in status.models.store: reading the scan is all it takes), under
  <prefix>/<namespace>/<scan>/<combination id>/, read with the key pair of the store's Secret (through the kube
  API) or, when both are set, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
Ranks are the scan's: from its records (the run folder's results.jsonl, the shard ConfigMaps), else from the
records stored with the models (record.json).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from hpscan.api.spec import HPScan
from hpscan.api.store import ACCESS_KEY_ENV, SECRET_KEY_ENV, ArtifactStore, ModelStoreLocation
from hpscan.cli.cluster import ClusterError, _records, _scan_body, run_folder
from hpscan.cli.output import Commands, out
from hpscan.core.artifacts import RankedRecord, rank_records
from hpscan.errors import ModelsError
from hpscan.job.store import ModelStore, open_store
from hpscan.report.rundir import load_run

commands = Commands()

SCAN_OR_DIR = "A run folder (the --out of hpscan run), or the name of an HPScan on the cluster."


@dataclass(frozen=True)
class Kept:
    """One kept model: its rank (None: unranked), id, and where it is (a folder, or a key prefix in the store)."""

    ranked: RankedRecord | None
    id: str
    where: str


@dataclass
class KeptModels:
    """The kept models of one scan, best first, and how to copy one out."""

    name: str
    origin: str
    metric: str
    keep: str
    succeeded: int
    rows: list[Kept]
    store: ModelStore | None = None

    def copy(self, row: Kept, out_dir: Path) -> None:
        if self.store is None:
            shutil.copytree(row.where, out_dir)
        else:
            self.store.download_model(row.id, out_dir)


def _sorted(ranked: list[RankedRecord], kept: dict[str, str]) -> list[Kept]:
    by_id = {r.id: r for r in ranked}
    rows = [Kept(by_id.get(i), i, where) for i, where in kept.items()]
    return sorted(rows, key=lambda row: (row.ranked.rank if row.ranked is not None else len(by_id), row.id))


def _from_folder(folder: Path) -> KeptModels:
    run = load_run(folder)
    kept = {model_id: str(path) for model_id, path in run.models.items()}
    return KeptModels(
        run.name, str(run.run_dir), run.scan.spec.objective.metric, run.scan.spec.artifacts.keep, len(run.ranked),
        _sorted(run.ranked, kept),
    )  # fmt: skip


def _secret_reader(api: Any) -> Any:
    from kubernetes import client

    def read_secret(namespace: str, name: str, key: str) -> str:
        secret = client.CoreV1Api(api).read_namespaced_secret(name, namespace)
        return base64.b64decode((secret.data or {})[key]).decode()

    return read_secret


def recorded_store(body: dict[str, Any]) -> ArtifactStore | None:
    """The store the operator recorded in the scan's status (its default store, for a spec that names none)."""
    recorded = ((body.get("status") or {}).get("models") or {}).get("store")
    try:
        return ArtifactStore.model_validate(recorded) if recorded else None
    except ValidationError:
        return None


def _from_cluster(name: str, namespace: str, context: str | None) -> KeptModels:
    body, api = _scan_body(name, namespace, context)
    scan = HPScan.model_validate({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    store = scan.spec.artifacts.store or recorded_store(body)
    if store is None:
        raise ModelsError(
            f"HPScan {namespace}/{name}: no store is known for its models: it names no spec.artifacts.store and its "
            "status names none the operator used (status.models.store: the operator has no default store, the "
            "scan keeps no models, or the operator has not handled it yet)"
        )
    if os.environ.get(ACCESS_KEY_ENV) and os.environ.get(SECRET_KEY_ENV):
        location = ModelStoreLocation.of(store.s3, namespace, name)  # the user's own keys
        models = ModelStore(location, os.environ[ACCESS_KEY_ENV], os.environ[SECRET_KEY_ENV])
    else:
        models = open_store(store.s3, namespace, name, _secret_reader(api))
    stored = models.models()
    records, _ = _records(name, namespace, context)
    if not records:  # e.g. HTCondor shards, whose records are not in ConfigMaps: the ones stored with the models
        records = [record for record in stored.values() if record is not None]
    ranked = rank_records(records, scan.spec.objective)
    kept = {model_id: models.location.model_key(model_id) for model_id in stored}
    return KeptModels(
        name, models.location.url, scan.spec.objective.metric, scan.spec.artifacts.keep, len(ranked),
        _sorted(ranked, kept), models,
    )  # fmt: skip


def _kept_models(scan_or_dir: str, namespace: str, context: str | None) -> KeptModels:
    try:
        folder = run_folder(scan_or_dir)
    except ClusterError as error:
        raise ModelsError(str(error)) from None
    return _from_folder(folder) if folder is not None else _from_cluster(scan_or_dir, namespace, context)


NAMESPACE = typer.Option("--namespace", "-n", help="Namespace of the HPScan (a scan on the cluster).")
CONTEXT = typer.Option(help="kubeconfig context (a scan on the cluster).")


@commands("models")
def models(
    scan_or_dir: Annotated[str, typer.Argument(metavar="SCAN|DIR", help=SCAN_OR_DIR)],
    namespace: Annotated[str, NAMESPACE] = "default",
    context: Annotated[str | None, CONTEXT] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the trained models a scan kept (spec.artifacts), best first, with their rank and objective value."""
    kept = _kept_models(scan_or_dir, namespace, context)
    if as_json:
        listing = [
            {
                "rank": row.ranked.rank + 1 if row.ranked else None,
                "id": row.id,
                kept.metric: row.ranked.value if row.ranked else None,
                "parameters": row.ranked.record.parameters if row.ranked else None,
                "path": row.where,
            }
            for row in kept.rows
        ]
        out.print_json(json.dumps(listing))
        return
    if not kept.rows:
        out.print(
            f"{kept.origin}: no kept models (spec.artifacts.keep: {kept.keep}; {kept.succeeded} combinations succeeded)",
            highlight=False,
        )
        return
    table = Table(title=f"{kept.name}: {len(kept.rows)} kept models of {kept.succeeded} succeeded combinations")
    where = "folder" if kept.store is None else "key"
    for column in ("rank", "id", kept.metric, "parameters", where):
        table.add_column(column, justify="right" if column in ("rank", kept.metric) else "left")
    for row in kept.rows:
        params = ", ".join(f"{k}={v}" for k, v in row.ranked.record.parameters.items()) if row.ranked else ""
        table.add_row(
            str(row.ranked.rank + 1) if row.ranked else "-",
            row.id,
            f"{row.ranked.value:.5g}" if row.ranked else "-",
            params,
            row.where,
        )
    out.print(table)
    if kept.store is not None:
        out.print(f"in {kept.origin}", highlight=False)


@commands("fetch-model")
def fetch_model(
    scan_or_dir: Annotated[str, typer.Argument(metavar="SCAN|DIR", help=SCAN_OR_DIR)],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to copy the model into (new or empty).")],
    rank: Annotated[
        int | None, typer.Option("--rank", min=1, help="The model of the combination ranked N (1 = best).")
    ] = None,
    model_id: Annotated[str | None, typer.Option("--id", help="The model of this combination id.")] = None,
    namespace: Annotated[str, NAMESPACE] = "default",
    context: Annotated[str | None, CONTEXT] = None,
) -> None:
    """Copy one kept model out of a scan: the best (default), the one ranked N, or one combination's (--id)."""
    if rank is not None and model_id is not None:
        raise ModelsError("give --rank or --id, not both")
    kept = _kept_models(scan_or_dir, namespace, context)
    if not kept.rows:
        raise ModelsError(f"{kept.origin}: the scan kept no models (spec.artifacts.keep: {kept.keep})")
    if model_id is not None:
        chosen = [row for row in kept.rows if row.id == model_id]
        what = f"combination {model_id}"
    else:
        wanted = rank or 1
        chosen = [row for row in kept.rows if row.ranked is not None and row.ranked.rank + 1 == wanted]
        what = f"rank {wanted}"
    if not chosen:
        listed = ", ".join(f"{r.ranked.rank + 1} ({r.id})" if r.ranked else r.id for r in kept.rows[:12])
        raise ModelsError(f"{kept.origin}: no kept model of {what}; kept (rank, id): {listed}")
    row = chosen[0]
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ModelsError(f"{out_dir}: exists and is not an empty folder; choose a new --out")
    if out_dir.exists():
        out_dir.rmdir()
    kept.copy(row, out_dir)
    value = f", {kept.metric} {row.ranked.value:.5g}" if row.ranked else ""
    place = f"rank {row.ranked.rank + 1}" if row.ranked else "unranked"
    out.print(f"fetched {row.id} ({place}{value}) into {out_dir}", highlight=False)
