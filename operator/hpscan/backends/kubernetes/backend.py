"""KubernetesBackend: submit, poll, records, cancel and forget, over the package's parts (see the package docstring).

One backend instance serves every scan: its state per scan is one ``ScanState`` in one table; ``KubernetesApi``
holds the client and ``api_call`` is the one way a failed call becomes BackendError or SchedulerUnavailable;
``ShardObjects`` reads a scan's shard Jobs and ConfigMaps (from the operator's watch cache when it has one);
``JobFailures`` reads pods when a Job does not say enough; ``PullChannel``, ``Probes`` and ``Kueue`` serve workers
that pull, site probes and Kueue-managed Jobs. Synchronous: kopf runs it in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from hpscan.api.contract import ResultRecord
from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ACTIVE_PHASES, ShardStatus
from hpscan.api.trials import Assignment, Progress
from hpscan.backends.base import Backend, ScanRef, ShardLaunch
from hpscan.backends.kubernetes.api import ClientOf, KubernetesApi, api_call
from hpscan.backends.kubernetes.failures import JobFailures, cause_of
from hpscan.backends.kubernetes.kueue import Kueue
from hpscan.backends.kubernetes.manifests import (
    job_manifest,
    payload_rbac,
    pull_inbox,
    shard_network_policy,
    shard_pages,
    site_account,
    site_account_binding,
)
from hpscan.backends.kubernetes.names import LABEL_PAGE, job_name
from hpscan.backends.kubernetes.page_layout import page_layout, page_refusals
from hpscan.backends.kubernetes.probes import Probes
from hpscan.backends.kubernetes.pull import PullChannel
from hpscan.backends.kubernetes.release_layout import in_release_layout, release_configmap
from hpscan.backends.kubernetes.shard_objects import ShardObjectCache, ShardObjects, shard_selector
from hpscan.backends.kubernetes.state import scan_table
from hpscan.backends.kubernetes.states import FAILURE_ANNOTATION, kueue_queue, shard_state
from hpscan.core.brokering import ProbeOutcome
from hpscan.core.planning import Plan
from hpscan.job.pages import records_of

SUBMIT_THREADS = 32


class KubernetesBackend(Backend):
    """Shards as batch/v1 Jobs, records in their ConfigMap pages; see the module docstring for the wiring."""

    name: ClassVar[str] = "kubernetes"
    pulls: ClassVar[bool] = True  # a worker's inbox ConfigMap (pull.py)

    # The client's APIs, set through the backend for all its parts (tests and the simulation set their own).
    core, batch, rbac, networking, custom = ClientOf(), ClientOf(), ClientOf(), ClientOf(), ClientOf()

    def __init__(
        self, api_client: Any = None, cache: ShardObjectCache | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.api = KubernetesApi(api_client)
        self.scans = scan_table()
        self.objects = ShardObjects(self.api, cache)
        self.kueue = Kueue(self.api)
        self.failures = JobFailures(self.api, self.kueue, clock)
        self.pull = PullChannel(self.api, self.objects)
        self.probes = Probes(self.api, self.kueue)

    def use_watch_cache(self, cache: ShardObjectCache) -> None:
        """The operator's watch-fed indexes of shard Jobs and ConfigMaps (handed over at every reconcile): polls read
        them instead of listing. A cache given to the constructor is kept."""
        if self.objects.cache is None:
            self.objects.cache = cache

    def forget(self, scan: ScanRef) -> None:
        """A deleted scan: its objects go by garbage collection (owner references); what is held for it goes."""
        self.scans.drop(scan)

    def refusals(self, planned: Plan) -> list[str]:
        return page_refusals(planned.scan, planned.spec, planned.shard_count)

    @api_call
    def prepare(self, scan: ScanRef, spec: HPScanSpec, shard_count: int) -> None:
        """The scan's payload ServiceAccount, Role (naming every record page its shards can have) and RoleBinding,
        and the NetworkPolicy of its shard pods."""
        layout = page_layout(spec, shard_count)
        account, role, binding = payload_rbac(scan, shard_count, layout.pages_per_shard, inboxes=spec.pull)
        create = self.api.create
        create(self.networking.create_namespaced_network_policy, scan.namespace, shard_network_policy(scan))
        create(self.core.create_namespaced_service_account, scan.namespace, account)
        create(self.rbac.create_namespaced_role, scan.namespace, role)
        create(self.rbac.create_namespaced_role_binding, scan.namespace, binding)

    # submit -------------------------------------------------------------------------------------------------

    @api_call
    def submit(self, scan: ScanRef, spec: HPScanSpec, launches: Sequence[ShardLaunch]) -> None:
        # Shards are independent: send them concurrently (a 100-shard scan of one page a shard is 200 requests).
        if not launches:
            return
        state = self.scans.open(scan)
        page_size = page_layout(spec, launches[0].shard_file.shards).size
        for account in sorted({a for launch in launches if (a := site_account(launch.site))}):
            if account not in state.bound:  # before its pods ask for their pages
                binding = site_account_binding(scan, account)
                self.api.create(self.rbac.create_namespaced_role_binding, scan.namespace, binding)
                state.bound.add(account)
        configmaps = self.objects.configmaps(state)  # the previous release's layout is kept where it is found
        released = {launch.shard_file.shard: release_configmap(configmaps, scan.name, launch.shard_file.shard)
                    for launch in launches}  # fmt: skip
        with ThreadPoolExecutor(max_workers=SUBMIT_THREADS) as pool:
            list(pool.map(lambda launch: self._submit_one(scan, spec, launch, page_size, released), launches))

    def _submit_one(
        self, scan: ScanRef, spec: HPScanSpec, launch: ShardLaunch, page_size: int, released: dict[int, str | None]
    ) -> None:
        shard, create = launch.shard_file.shard, self.api.create
        manifest = job_manifest(scan, spec, shard, launch.site, moves=launch.moves)
        if configmap := released.get(shard):
            # a shard the previous release started: its payload image speaks only that layout (release_layout)
            self._create_job(scan, in_release_layout(manifest, configmap), launch)
            return
        # The pages before the Job, as its pod reads them at start; page 0, which announces the others, last, so an
        # operator stopped halfway leaves no page 0 that names a missing page.
        if launch.shard_file.pull:  # the inbox before page 0: the pod finds both when it starts
            create(self.core.create_namespaced_config_map, scan.namespace, pull_inbox(scan, shard, page_size))
        pages_created = [
            create(self.core.create_namespaced_config_map, scan.namespace, page)
            for page in reversed(shard_pages(scan, launch.shard_file, page_size))
        ]
        if not all(pages_created) and not launch.shard_file.pull:
            # Pages of an earlier attempt, or of a shard moved back here: they keep their records and now list only
            # what is left to train (launch.shard_file), or the pod would train again what another site recorded.
            held = {page: cm.get("data") or {} for page, cm in self.objects.pages_now(scan, shard).items()}
            for page in reversed(shard_pages(scan, launch.shard_file, page_size, held)):
                number = int(page["metadata"]["labels"][LABEL_PAGE])
                if number in held:
                    name = page["metadata"]["name"]
                    self.core.patch_namespaced_config_map(name, scan.namespace, {"data": page["data"]})
                else:
                    create(self.core.create_namespaced_config_map, scan.namespace, page)
        self._create_job(scan, manifest, launch)

    def _create_job(self, scan: ScanRef, manifest: dict[str, Any], launch: ShardLaunch) -> None:
        shard = launch.shard_file.shard
        if not self.api.create(self.batch.create_namespaced_job, scan.namespace, manifest):
            # An existing Job: resume it if it was suspended (Kueue unsuspends its own once admitted again).
            name = job_name(scan.name, shard, launch.moves)
            resume: dict[str, Any] = {
                "metadata": {"annotations": {FAILURE_ANNOTATION: None}},
                "spec": {"suspend": False},
            }
            if kueue_queue(manifest) and self.kueue.queue_again(scan.namespace, name):
                resume.pop("spec")
            self.batch.patch_namespaced_job(name, scan.namespace, resume)

    # poll and records -----------------------------------------------------------------------------------------

    @api_call
    def poll(self, scan: ScanRef) -> dict[int, ShardStatus]:
        state = self.scans.open(scan)
        jobs = self.objects.jobs(scan)
        waiting, pods_by_job = self.failures.read_pods(state, jobs)
        workloads = self.kueue.workloads(scan.namespace) if any(kueue_queue(j) for j in jobs) else {}
        shards: dict[int, ShardStatus] = {}
        for job in jobs:
            name = job["metadata"]["name"]
            pods = pods_by_job.get(name, [])
            workload = workloads.get(str(job["metadata"].get("uid")))
            if waiting and (said := self.failures.image_failure(job, pods)):
                job = self.failures.fail(scan, job, said, workload)
            shard = shard_state(job, {name: cause_of(state, job)[1]}, pods, workload)
            held = shards.get(shard.index)
            if held is None or held.moves < shard.moves:  # a moved shard's newest Job speaks for it
                shards[shard.index] = shard
        self.objects.confirm_records(state, shards)
        return shards

    @api_call
    def fetch_records(self, scan: ScanRef) -> list[ResultRecord]:
        """The records of the scan's record pages that changed since the last call (all of them on the first call:
        a restarted operator gets everything back; the aggregator folds repeats); from the watch cache in the
        operator, else one LIST. A page is parsed again only when its resourceVersion changed."""
        state = self.scans.open(scan)
        configmaps = self.objects.configmaps(state)
        state.fresh = []  # handed over now; the cache catches up meanwhile
        records: list[ResultRecord] = []
        for configmap in configmaps:
            name = configmap["metadata"]["name"]
            version = str(configmap["metadata"].get("resourceVersion") or "")
            held = state.parsed.get(name)
            if held is None or held[0] != version or not version:
                found, bad = records_of(configmap.get("data"))
                records += found
                state.parsed[name] = (version, bad)
        state.unreadable = sum(state.parsed[name][1] for name in {cm["metadata"]["name"] for cm in configmaps})
        return records

    def unreadable(self, scan: ScanRef) -> int:
        state = self.scans.get(scan)
        return state.unreadable if state is not None else 0

    # workers that pull (pull.py) and site probes (probes.py) ------------------------------------------------

    @api_call
    def assign(self, scan: ScanRef, shard: int, lines: Sequence[dict]) -> None:
        self.pull.assign(self.scans.open(scan), shard, lines)

    @api_call
    def stop_trials(self, scan: ScanRef, shard: int, trial_ids: Sequence[str]) -> None:
        self.pull.stop_trials(self.scans.open(scan), shard, trial_ids)

    @api_call
    def fetch_progress(self, scan: ScanRef) -> list[Progress]:
        """The newest per-epoch reports of inboxes that changed since the last call."""
        return self.pull.progress(self.scans.open(scan))

    @api_call
    def assignments(self, scan: ScanRef) -> dict[int, Assignment]:
        """What each worker's inbox says it was handed (a restarted operator rebuilds its search from these)."""
        return self.pull.assignments(self.scans.open(scan))

    @api_call
    def probe(self, scan: ScanRef, spec: HPScanSpec, site: Site | None) -> ProbeOutcome:
        """The site's probe Job: created once; resumed when end_probe suspended it (a later probe of the site)."""
        return self.probes.probe(scan, spec, site)

    @api_call
    def end_probe(self, scan: ScanRef, site: Site | None) -> None:
        """Suspend the probe Job (its pod goes; the operator may patch Jobs, never delete them): the next probe of
        the site resumes it."""
        self.probes.end(scan, site)

    # cancel -------------------------------------------------------------------------------------------------

    @api_call
    def cancel(self, scan: ScanRef, shards: Collection[int] | None = None) -> None:
        """Suspend the shards' Jobs; a Kueue-managed Job's Workload is deactivated instead (kueue.py), so its quota
        goes back to the queue."""
        stopping = {
            state.job or job_name(scan.name, index, state.moves)
            for index, state in self.poll(scan).items()
            if (shards is None or index in shards) and state.phase in ACTIVE_PHASES
        }
        if stopping:
            self.kueue.pause(scan.namespace, stopping, self.api.jobs(scan.namespace, shard_selector(scan)))
