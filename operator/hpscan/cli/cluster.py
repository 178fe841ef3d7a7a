"""`hpscan operator`, `hpscan status`, `hpscan results`: the Kubernetes side of the CLI."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hpscan.api.contract import ResultRecord
from hpscan.api.spec import GROUP, PLURAL, VERSION, HPScan
from hpscan.api.status import ConditionType, HPScanStatus, ScanPhase
from hpscan.cli.output import Commands, out, pareto_table, with_error
from hpscan.core.planning import plan
from hpscan.core.results import aggregate, read_records
from hpscan.errors import HPScanError

commands = Commands()


class ClusterError(HPScanError):
    """The cluster cannot be reached, or the HPScan is not there."""

    exit_code = 1
    reason = "ClusterUnavailable"


@commands("operator")
def operator(
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="Watch these namespaces (repeat); all when none.")
    ] = None,
    standalone: Annotated[bool, typer.Option(help="Run without peering (one operator replica).")] = True,
    peering: Annotated[str | None, typer.Option(help="kopf peering object name, for several replicas.")] = None,
    health_port: Annotated[
        int,
        typer.Option(
            "--health-port",
            help="Serve /livez (the control loop is alive) and /readyz (ready to serve: started, API server "
            "answers) on this port (0: off).",
        ),
    ] = 8080,
    scanning: Annotated[
        bool,
        typer.Option(
            help="Watch CRDs and namespaces for changes (needs cluster-wide list/watch on both). --no-scanning "
            "reads the CRDs once at start and takes --namespace values as exact names: the Helm chart's "
            "least-privilege RBAC."
        ),
    ] = True,
    metrics_port: Annotated[
        int, typer.Option("--metrics-port", help="Serve Prometheus metrics on this port (0: off).")
    ] = 9090,
) -> None:
    """Run the HPScan operator (kopf): plans scans, runs shards as Jobs, keeps each scan's status live."""
    import kopf

    from hpscan.controller import health, kopf_fixes, metrics
    from hpscan.controller.handlers import OperatorState  # importing it registers the handlers

    kopf_fixes.apply()

    if metrics_port:
        metrics.serve(metrics_port)
    state = OperatorState(vitals=health.Vitals(check_api=health.kubernetes_api_check()))
    if health_port:
        health.serve(state.vitals, health_port)

    if not scanning:
        # Without it, kopf retries the forbidden CRD and namespace listings for about a minute before it starts.
        @kopf.on.startup(id="no-scanning")
        def _no_scanning(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.scanning.disabled = True

    kopf.configure(verbose=False)
    kopf.run(
        clusterwide=not namespace,
        namespaces=namespace or [],
        standalone=standalone and peering is None,
        peering_name=peering,
        memo=kopf.Memo(hpscan=state),
    )


def _api(context: str | None) -> Any:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_kube_config(context=context)
    except (ConfigException, FileNotFoundError):
        try:
            config.load_incluster_config()
        except ConfigException as error:
            raise ClusterError(f"no Kubernetes configuration found (KUBECONFIG or in-cluster): {error}") from None
    return client.ApiClient()


def _scan_body(name: str, namespace: str, context: str | None) -> tuple[dict[str, Any], Any]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    api = _api(context)
    try:
        body = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as error:
        if error.status == 404:
            raise ClusterError(f"HPScan {namespace}/{name} not found") from None
        raise ClusterError(f"the API server refused: {error.status} {error.reason}") from None
    except HTTPError as error:
        raise ClusterError(f"the API server cannot be reached: {error}") from None
    return dict(body), api  # type: ignore[call-overload]


def run_folder(name: str) -> Path | None:
    """NAME as a local run folder; None when it names an HPScan. A path that is no folder is an error (Kubernetes
    names hold no "/"), said as such rather than as a missing cluster configuration."""
    folder = Path(name)
    if folder.is_dir():
        return folder
    if "/" in name or name.startswith("."):
        raise ClusterError(f"{name}: no such run folder (the --out of hpscan run)")
    return None


def mirror_scan(name: str, namespace: str, context: str | None, folder: Path) -> Path:
    """An HPScan on the cluster as a run folder (scan.yaml, results.jsonl, status.json), read with the user's own
    rights (what `hpscan status` and `hpscan results` read); written anew on every call."""
    import yaml

    from hpscan.core.results import iter_record_lines

    body, _ = _scan_body(name, namespace, context)
    scan = HPScan.model_validate({key: body[key] for key in ("apiVersion", "kind", "metadata", "spec")})
    records, status = _records(name, namespace, context)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = scan.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"status"})
    _replace(folder / "scan.yaml", yaml.safe_dump(manifest, sort_keys=False))
    _replace(folder / "results.jsonl", "".join(iter_record_lines(records)))
    if status is not None:
        _replace(folder / "status.json", status.model_dump_json(by_alias=True, exclude_none=True))
    return folder


def _replace(path: Path, text: str) -> None:
    """Write whole or not at all (a live reader of the folder, the dashboard's, never sees half a file)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _records(name: str, namespace: str, context: str | None) -> tuple[list[ResultRecord], HPScanStatus | None]:
    """Records of a local run folder (NAME is a folder) or of an HPScan on the cluster."""
    folder = run_folder(name)
    if folder is not None:
        records, _ = read_records(folder / "results.jsonl")
        status_file = folder / "status.json"
        status = HPScanStatus.model_validate_json(status_file.read_text()) if status_file.exists() else None
        return records, status
    from hpscan.backends.base import ScanRef
    from hpscan.backends.kubernetes import KubernetesBackend

    body, api = _scan_body(name, namespace, context)
    records = KubernetesBackend(api).fetch_records(ScanRef(name=name, namespace=namespace))
    scan = HPScan.model_validate({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    planned = plan(scan.metadata.name, scan.spec)
    agg = aggregate(planned, records)  # keep each combination once, as the status counts it
    records = [r for r in records if planned.owns(r.id, r.parameters)]
    unique = {r.id: r for r in sorted(records, key=lambda r: r.status == "succeeded")}
    assert agg.recorded == len(unique)
    raw = body.get("status") or {}
    return sorted(unique.values(), key=lambda r: r.id), HPScanStatus.model_validate(raw) if raw else None


@commands("results")
def results(
    name: Annotated[str, typer.Argument(help="HPScan name on the cluster, or a local run folder.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the HPScan.")] = "default",
    output: Annotated[str, typer.Option("--output", "-o", help="jsonl or csv.")] = "jsonl",
    context: Annotated[str | None, typer.Option(help="kubeconfig context.")] = None,
) -> None:
    """Export every result record of a scan (the full records live outside the HPScan object)."""
    records, _ = _records(name, namespace, context)
    if output == "jsonl":
        for record in records:
            sys.stdout.write(json.dumps(record.to_wire()) + "\n")
    elif output == "csv":
        names = sorted({k for r in records for k in r.parameters})
        metrics = sorted({k for r in records for k in r.metrics})
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["id", "shard", "status", *names, *metrics, "durationSeconds", "device", "epochs", "error"])
        for r in records:
            writer.writerow(
                [r.id, r.shard, r.status, *(r.parameters.get(n, "") for n in names), *(r.metrics.get(m, "") for m in metrics),
                 r.duration_seconds or "", r.device or "", r.epochs if r.epochs is not None else "", r.error or ""]
            )  # fmt: skip
        sys.stdout.write(buffer.getvalue())
    else:
        raise typer.BadParameter(f"unknown output {output!r}: jsonl or csv")


FOR_TOOLS = frozenset({ConditionType.READY, ConditionType.RECONCILING, ConditionType.STALLED})
"""Conditions written for kstatus (Flux, Helm 4): they repeat Running, Complete and Failed, so a person is not shown
them twice (`--json` has them)."""


@commands("status")
def status(
    name: Annotated[str, typer.Argument(help="HPScan name on the cluster, or a local run folder.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the HPScan.")] = "default",
    context: Annotated[str | None, typer.Option(help="kubeconfig context.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Print a scan's status: phase, counts, best combinations, sites (probed, usable, excluded or unreachable),
    shards, conditions."""
    from rich.table import Table

    if run_folder(name) is not None:
        _, current = _records(name, namespace, context)
    else:
        body, _ = _scan_body(name, namespace, context)
        current = HPScanStatus.model_validate(body["status"]) if body.get("status") else None
    if current is None:
        raise ClusterError(f"{name} has no status yet (is the operator running?)")
    if as_json:
        sys.stdout.write(current.model_dump_json(by_alias=True, exclude_none=True, indent=2) + "\n")
        raise typer.Exit(1 if current.phase == ScanPhase.FAILED else 0)
    counts = current.combinations
    pruned = f"{counts.pruned} pruned, " if counts.pruned else ""
    out.print(
        f"[bold]{name}[/]: {current.phase}, {current.progress} recorded ({counts.succeeded} succeeded, {pruned}"
        f"{counts.failed} failed, {counts.running} running, {counts.pending} pending)",
        highlight=False,
    )
    if current.message:
        out.print(current.message, highlight=False)
    if counts.suggested and counts.suggested != counts.total:
        out.print(f"trials handed out: {counts.suggested} of a budget of {counts.total}", highlight=False)
    if current.training.epochs:
        trained, saved = current.training.epochs, current.training.epochs_saved
        out.print(
            f"epochs trained: {trained}"
            + (f"; pruning saved {saved} ({saved / (trained + saved):.0%} of {trained + saved})" if saved else "")
            + (f"; resuming from checkpoints saved {resumed}" if (resumed := current.training.epochs_resumed) else ""),
            highlight=False,
        )
    if current.top:
        tied = set(current.tied)
        title = "best combinations" + (f" ({len(tied)} tied within errors, ranked =N)" if tied else "")
        table = Table("rank", "id", "value", "parameters", "shard", title=title, title_justify="left")
        for rank, entry in enumerate(current.top, start=1):
            params = ", ".join(f"{k}={v}" for k, v in entry.parameters.items())
            rank_text = f"={rank}" if entry.id in tied else str(rank)  # tied within errors: no winner among them
            table.add_row(rank_text, entry.id, with_error(entry.value, entry.error), params, str(entry.shard))
        out.print(table)
    if current.pareto_size is not None:
        out.print(pareto_table(current))
    if current.sites:
        sites = Table(
            "site", "backend", "state", "reason", "running", "succeeded", "failed", "done", "message",
            title="sites", title_justify="left",
        )  # fmt: skip
        for site in current.sites:
            sites.add_row(site.name, site.backend, str(site.state), site.reason, str(site.running), str(site.succeeded),
                          str(site.failed), str(site.done), site.message)  # fmt: skip
        out.print(sites)
    shards = Table(
        "shard", "site", "phase", "done", "attempts", "moves", "job", "message", title="shards", title_justify="left"
    )
    for s in current.shards:
        shards.add_row(str(s.index), s.site or "-", str(s.phase), f"{s.done}/{s.total}", str(s.attempts),
                       str(s.moves), s.job or "-", s.message or "")  # fmt: skip
    out.print(shards)
    sc = current.shard_counts
    if sc.total:
        out.print(
            f"shards: {sc.total} ({sc.running} running, {sc.pending} pending, {sc.succeeded} succeeded, {sc.failed} failed, "
            f"{sc.suspended} suspended)"
            + (f"; {current.shards_omitted} uneventful ones not listed" if current.shards_omitted else ""),
            highlight=False,
        )
    for condition in current.conditions:
        if condition.status == "True" and condition.type not in FOR_TOOLS:
            out.print(f"condition {condition.type}: {condition.reason} {condition.message}", highlight=False)
    if current.phase == ScanPhase.FAILED:  # scripts and CI can tell a failed scan from the exit code
        raise typer.Exit(1)
