"""`hpscan dashboard NAME|DIR`: a scan watched live in the browser (hpscan.dashboard), served on 127.0.0.1, from a
run folder or from an HPScan on the cluster (read through the user's kubeconfig, as `hpscan results` reads it)."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from hpscan.cli import cluster
from hpscan.cli.output import Commands, out

commands = Commands()

CLUSTER_POLL_SECONDS = 1.0
"""A scan on the cluster is asked for its resourceVersion this often (one GET); its records are read on a change."""


class ClusterScan:
    """An HPScan on the cluster, with the user's own rights (get on the HPScan and its record pages: what
    `hpscan status` and `hpscan results` need), mirrored into a private run folder whenever the HPScan changes, so
    the page is a run folder's. Nothing is written to the cluster; no port is opened in it."""

    def __init__(self, name: str, namespace: str, context: str | None, folder: Path) -> None:
        from hpscan.api.spec import HPScan
        from hpscan.dashboard.source import RunFolder

        self.name, self.namespace, self.context = name, namespace, context
        body, _ = cluster._scan_body(name, namespace, context)
        scan = HPScan.model_validate({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")})
        manifest = scan.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"status"})
        (folder / "scan.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
        self.folder = RunFolder(folder)

    def signature(self) -> Any:
        body, _ = cluster._scan_body(self.name, self.namespace, self.context)
        return body.get("metadata", {}).get("resourceVersion")

    def view(self) -> dict[str, Any]:
        from hpscan.core.results import iter_record_lines

        records, status = cluster._records(self.name, self.namespace, self.context)
        _replace(self.folder.run_dir / "results.jsonl", "".join(iter_record_lines(records)))
        if status is not None:
            _replace(self.folder.run_dir / "status.json", status.model_dump_json(by_alias=True, exclude_none=True))
        return self.folder.view()

    def curve(self, trial_id: str) -> dict[str, Any]:
        return self.folder.curve(trial_id)  # workers' epochs stay in their pods' inboxes: none here yet


def _replace(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


@commands("dashboard")
def dashboard(
    name: Annotated[str, typer.Argument(help="HPScan name on the cluster, or a run folder (the --out of hpscan run).")],
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: a free one).")] = 0,
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the HPScan.")] = "default",
    context: Annotated[str | None, typer.Option(help="kubeconfig context.")] = None,
) -> None:
    """Serve a live page of the scan on 127.0.0.1: progress and ETA, parallel coordinates (brush an axis to
    filter), the sites with their probes, the shards, and a trial's per-epoch curve. Read-only; Ctrl-C ends it."""
    from hpscan.dashboard.server import POLL_SECONDS, Source, start, stop
    from hpscan.dashboard.source import RunFolder

    folder = cluster.run_folder(name)
    with tempfile.TemporaryDirectory(prefix="hpscan-dashboard-") as mirror:
        source: Source
        if folder is not None:
            source, poll, what = RunFolder(folder), POLL_SECONDS, str(folder)
        else:
            source, poll = ClusterScan(name, namespace, context, Path(mirror)), CLUSTER_POLL_SECONDS
            what = f"HPScan {namespace}/{name}"
        server = start(source, port=port, poll_seconds=poll)
        out.print(f"dashboard of {what} on {server.url} (Ctrl-C to stop)", highlight=False)
        try:
            threading.Event().wait()
        finally:
            stop(server)
