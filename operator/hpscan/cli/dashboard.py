"""`hpscan dashboard NAME|DIR`: a scan watched live in the browser (hpscan.dashboard), served on 127.0.0.1, from a
run folder or from an HPScan on the cluster (read through the user's kubeconfig, as `hpscan results` reads it)."""

from __future__ import annotations

import contextlib
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from hpscan.api.spec import GROUP, PLURAL, VERSION
from hpscan.api.trials import PROGRESS_FILE, Progress, append_lines
from hpscan.cli import cluster
from hpscan.cli.output import Commands, out
from hpscan.errors import HPScanError
from hpscan.job.pages import PROGRESS_LINES

commands = Commands()

CLUSTER_POLL_SECONDS = 1.0
"""A scan on the cluster is asked for its resourceVersion this often (one GET); its records are read on a change."""


EPOCHS_ON_THE_CLUSTER = (
    f"workers that pull trials report them; a worker's inbox keeps its newest {PROGRESS_LINES} epochs, and this page "
    "every epoch it saw while it ran"
)
"""Why a trial of a scan on the cluster may have no curve (or the start of one missing)."""


def _epoch_reports(name: str, namespace: str, context: str | None) -> list[Progress]:
    """The per-epoch reports in the scan's worker inboxes (ConfigMaps `<scan>-shard-NNN-in`, key progress.jsonl:
    the newest PROGRESS_LINES of each worker), read with the user's rights (list on ConfigMaps, as `hpscan results`
    reads the record pages)."""
    from hpscan.backends.base import ScanRef
    from hpscan.backends.kubernetes import KubernetesBackend

    return KubernetesBackend(cluster._api(context)).fetch_progress(ScanRef(name=name, namespace=namespace))


class ClusterScan:
    """An HPScan on the cluster, with the user's own rights (get on the HPScan, list on its ConfigMaps: what
    `hpscan status` and `hpscan results` need), mirrored into a private run folder whenever the HPScan changes, so
    the page is a run folder's. The workers' per-epoch reports are kept there as they are seen (an inbox holds only
    the newest), for the curve on click. Nothing is written to the cluster; no port is opened in it."""

    def __init__(self, name: str, namespace: str, context: str | None, folder: Path) -> None:
        from hpscan.dashboard.source import RunFolder

        self.name, self.namespace, self.context = name, namespace, context
        self.folder = RunFolder(cluster.mirror_scan(name, namespace, context, folder))
        self.epochs_file = folder / "work" / "shard-cluster" / PROGRESS_FILE
        self.epochs_seen: set[tuple[str, int]] = set()
        self._epochs_lock = threading.Lock()  # the poll and a click may both bring epochs

    def signature(self) -> Any:
        body, _ = cluster._scan_body(self.name, self.namespace, self.context)
        return body.get("metadata", {}).get("resourceVersion")

    def view(self) -> dict[str, Any]:
        cluster.mirror_scan(self.name, self.namespace, self.context, self.folder.run_dir)
        self._keep_epochs(_epoch_reports(self.name, self.namespace, self.context))
        return self.folder.view()

    def _keep_epochs(self, reports: list[Progress]) -> None:
        """Append the reports not seen before (an inbox's reports come again whole each time it changes)."""
        with self._epochs_lock:
            new = [r for r in reports if (r.id, r.epoch) not in self.epochs_seen]
            self.epochs_seen.update((r.id, r.epoch) for r in new)
            append_lines(self.epochs_file, [r.to_wire() for r in new])

    def curve(self, trial_id: str) -> dict[str, Any]:
        # the newest epochs as of the click (a worker's report alone does not move the HPScan's resourceVersion);
        # when they cannot be read, the epochs kept so far
        with contextlib.suppress(HPScanError):
            self._keep_epochs(_epoch_reports(self.name, self.namespace, self.context))
        return self.folder.curve(trial_id) | {"note": EPOCHS_ON_THE_CLUSTER}


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


def _list_scans(namespaces: list[str], context: str | None) -> list[dict[str, Any]]:
    """The HPScans of ``namespaces`` (none: every namespace), with the server's own rights (list on HPScans)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    objects = client.CustomObjectsApi(cluster._api(context))
    try:
        if not namespaces:
            return list(objects.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"])  # type: ignore[index]
        listed = [objects.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL) for ns in namespaces]
        return [scan for scans in listed for scan in scans["items"]]  # type: ignore[index]
    except ApiException as error:
        raise cluster.ClusterError(f"the API server refused to list HPScans: {error.status} {error.reason}") from None
    except HTTPError as error:
        raise cluster.ClusterError(f"the API server cannot be reached: {error}") from None


@commands("dashboard-server")
def dashboard_server(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Show the HPScans of these namespaces (repeat); all when none."),
    ] = None,
    address: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0 in a pod behind a Service).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: a free one).")] = 8081,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A host name the page answers to besides localhost and IP addresses (repeat), e.g. the API "
            "server's when the page is reached through its service proxy."
        ),
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context (in a pod: its ServiceAccount).")] = None,
) -> None:
    """Serve the read-only dashboard of every HPScan it may read (the operator chart's `dashboard.enabled`): an
    index of the scans, each opening the page `hpscan dashboard NAME` shows. Nothing on it can change a scan."""
    from hpscan.dashboard.catalog import ScanCatalog
    from hpscan.dashboard.server import start_catalog, stop

    with tempfile.TemporaryDirectory(prefix="hpscan-dashboard-") as mirrors:

        def open_scan(scan_namespace: str, name: str) -> ClusterScan:
            folder = Path(mirrors) / scan_namespace / name
            folder.mkdir(parents=True, exist_ok=True)
            return ClusterScan(name, scan_namespace, context, folder)

        catalog = ScanCatalog(
            lambda: _list_scans(namespace or [], context), open_scan, namespace or [], CLUSTER_POLL_SECONDS
        )
        server = start_catalog(catalog, address, port, frozenset(allow_host or []))
        out.print(f"dashboard of the HPScans of {', '.join(namespace or ['every namespace'])} on "
                  f"http://{address}:{server.server_address[1]}/ (Ctrl-C to stop)", highlight=False)  # fmt: skip
        try:
            threading.Event().wait()
        finally:
            stop(server)
