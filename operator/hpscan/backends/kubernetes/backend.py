"""KubernetesBackend: sends what hpscan.backends.kubernetes.manifests builds through the official client."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import wraps
from typing import Any, ClassVar, Protocol

from hpscan.api.contract import ResultRecord
from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.api.status import ACTIVE_PHASES, ShardPhase, ShardStatus
from hpscan.api.trials import Assignment, Progress, read_progress
from hpscan.backends.base import Backend, ScanRef, ShardLaunch
from hpscan.backends.kubernetes.manifests import (
    job_manifest,
    payload_rbac,
    probe_manifest,
    pull_inbox,
    pull_page,
    shard_network_policy,
    shard_pages,
    site_account,
    site_account_binding,
)
from hpscan.backends.kubernetes.names import (
    LABEL_PAGE,
    LABEL_ROLE,
    LABEL_SCAN,
    LABEL_SHARD,
    LABEL_SITE,
    job_name,
    probe_job_name,
    shard_pages_name,
    site_name,
)
from hpscan.backends.kubernetes.page_layout import page_layout, page_refusals
from hpscan.backends.kubernetes.states import (
    FAILURE_ANNOTATION,
    failure_cause,
    image_pull_timeout,
    image_verdict,
    kueue_queue,
    kueue_words,
    probe_outcome,
    shard_state,
    workload_active,
    workloads_by_job,
)
from hpscan.core.brokering import ProbeOutcome
from hpscan.core.planning import Plan
from hpscan.errors import BackendError, SchedulerUnavailable
from hpscan.job.configmap import (
    INBOX_SUFFIX,
    PAGE_SIZE_KEY,
    PROGRESS_KEY,
    STOPS_KEY,
    TRIALS_KEY,
    inbox_assignment,
    inbox_name,
    json_lines,
    pulled_trials,
    records_of,
    trial_page_count,
    unrecorded,
)

SUBMIT_THREADS = 32
KUEUE_API = ("kueue.x-k8s.io", "v1beta2", "workloads")


def load_client_config() -> None:
    """In a pod: the service account; elsewhere: KUBECONFIG or ~/.kube/config (as kubectl does)."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def _failed_by_policy(job: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Failed" and c.get("status") == "True" and c.get("reason") == "PodFailurePolicy"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _api_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """An API server's refusal (a quota, an admission webhook, RBAC, a lost connection) as a BackendError naming
    it, so the engine shows it as this site's outage and goes on with the other sites."""

    @wraps(method)
    def guarded(self: KubernetesBackend, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(self, *args, **kwargs)
        except ApiException as error:
            detail = error.reason
            with contextlib.suppress(ValueError, AttributeError):  # a body that is not a Status: the reason
                detail = json.loads(error.body or "{}").get("message") or detail
            raise BackendError(f"the Kubernetes API refused {method.__name__} ({error.status}): {detail}") from None
        except HTTPError as error:
            raise SchedulerUnavailable(f"the Kubernetes API did not answer ({method.__name__}): {error}") from None

    return guarded


class ShardObjectCache(Protocol):
    """A watch-fed view of a scan's shard Jobs and ConfigMaps (the operator's kopf indexes: an informer cache), so
    polling costs no API request. None from a method: not cached, LIST instead."""

    def jobs(self, namespace: str, scan: str) -> list[dict[str, Any]] | None: ...

    def configmaps(self, namespace: str, scan: str) -> list[dict[str, Any]] | None: ...


class KubernetesBackend(Backend):
    """Sends the manifests above through the official client (synchronous; kopf runs it in a thread)."""

    name: ClassVar[str] = "kubernetes"
    pulls: ClassVar[bool] = True  # a worker's inbox ConfigMap (hpscan.job.configmap)

    def __init__(
        self, api_client: Any = None, cache: ShardObjectCache | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.cache = cache
        self._clock = clock  # wall time: how long a pod has tried to pull its image (pods carry wall-clock times)
        self._causes: dict[tuple[str, str], tuple[int, str]] = {}
        """(namespace, Job) -> (its failed attempts when its pods were read, the newest one's cause): pods are listed
        again only when another attempt failed."""
        self._unreadable: dict[tuple[str, str], int] = {}  # (namespace, scan): shard ConfigMap entries not records
        self._parsed: dict[tuple[str, str], tuple[str, int]] = {}
        """(namespace, ConfigMap) -> (the resourceVersion last read, its unreadable entries): a ConfigMap is read
        again only when it changed, so a scan costs in proportion to what its pods reported, and no record is
        held here (the aggregator folds them)."""
        self._inboxes: dict[tuple[str, str], dict[str, str]] = {}
        """(namespace, inbox) -> the trials and stops text this operator wrote: the authority for the next append
        (the watch cache may not show the last patch yet). Read from the API server once after a restart."""
        self._progress_seen: dict[tuple[str, str], str] = {}  # (namespace, inbox) -> resourceVersion last read
        self._page_sizes: dict[tuple[str, str], int] = {}
        self._checked: set[tuple[str, str]] = set()  # (namespace, Job) Complete, whose records were looked for
        self._fresh: dict[tuple[str, str], list[dict[str, Any]]] = {}
        """(namespace, scan) -> pages read from the API server past the watch cache, for the next fetch_records."""
        self._bound: set[tuple[str, str, str]] = set()  # (namespace, scan, site account) bound to the scan's Role

    # Kueue (docs/kueue.md) ---------------------------------------------------------------------------------------
    # A Job of a site with a queueName is created suspended and Kueue unsuspends it once its Workload is admitted.
    # Kueue also unsuspends an admitted Job that someone else suspends (its reconciler: "Job admitted,
    # unsuspending"), so hpscan pauses such a Job through its Workload instead: spec.active false makes Kueue evict
    # it (the Job is suspended, its pods go) and release its quota; spec.active true queues it again. Deleting the
    # Job would free the quota too, but its pods' recorded pages and its attempts would go with it, and the
    # operator never deletes Jobs.

    def use_watch_cache(self, cache: ShardObjectCache) -> None:
        """The operator's watch-fed indexes of shard Jobs and ConfigMaps (handed over at every reconcile): polls read
        them instead of listing. A cache given to the constructor is kept."""
        if self.cache is None:
            self.cache = cache

    def _workloads(self, namespace: str) -> dict[str, dict[str, Any]]:
        """The namespace's Kueue Workloads by the uid of their Job (one LIST; only for Kueue-managed Jobs)."""
        listed: Any = self.custom.list_namespaced_custom_object(KUEUE_API[0], KUEUE_API[1], namespace, KUEUE_API[2])
        return workloads_by_job(listed.get("items") or [])

    def _activate(self, namespace: str, workload: dict[str, Any] | None, active: bool) -> None:
        """Set a Workload's spec.active (no Workload yet: nothing to do; the next step sees it)."""
        if workload is None or workload_active(workload) == active:
            return
        name = workload["metadata"]["name"]
        self.custom.patch_namespaced_custom_object(
            *KUEUE_API[:2], namespace, KUEUE_API[2], name, {"spec": {"active": active}}
        )

    def _job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One Job as a dict, or None (a LIST by name: the operator's role lists Jobs, it does not get them)."""
        listed = self.batch.list_namespaced_job(namespace, field_selector=f"metadata.name={name}").items
        return self.batch.api_client.sanitize_for_serialization(listed[0]) if listed else None

    def _pause(self, namespace: str, job: dict[str, Any] | None, name: str) -> None:
        """Stop a Job's pods, keeping the Job: suspend it, or deactivate its Workload when Kueue manages it."""
        if job is not None and kueue_queue(job):
            self._activate(namespace, self._workloads(namespace).get(job["metadata"]["uid"]), False)
        else:
            self.batch.patch_namespaced_job(name, namespace, {"spec": {"suspend": True}})

    @staticmethod
    def _create(create: Any, namespace: str, body: dict[str, Any]) -> bool:
        """Create, treating AlreadyExists as done (names are deterministic: a retry never duplicates)."""
        from kubernetes.client.rest import ApiException

        try:
            create(namespace, body)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def refusals(self, planned: Plan) -> list[str]:
        return page_refusals(planned.scan, planned.spec, planned.shard_count)

    @_api_errors
    def prepare(self, scan: ScanRef, spec: HPScanSpec, shard_count: int) -> None:
        """The scan's payload ServiceAccount, Role (naming every record page its shards can have) and RoleBinding,
        and the NetworkPolicy of its shard pods."""
        layout = page_layout(spec, shard_count)
        account, role, binding = payload_rbac(scan, shard_count, layout.pages_per_shard, inboxes=spec.pull)
        self._create(self.networking.create_namespaced_network_policy, scan.namespace, shard_network_policy(scan))
        self._create(self.core.create_namespaced_service_account, scan.namespace, account)
        self._create(self.rbac.create_namespaced_role, scan.namespace, role)
        self._create(self.rbac.create_namespaced_role_binding, scan.namespace, binding)

    # workers that pull: each has an inbox ConfigMap and record pages for the trials handed to it ---------------

    def _inbox(self, scan: ScanRef, shard: int) -> tuple[str, dict[str, str]]:
        name = inbox_name(shard_pages_name(scan.name, shard))
        key = (scan.namespace, name)
        if key not in self._inboxes:
            data = self.core.read_namespaced_config_map(name, scan.namespace).data or {}
            self._inboxes[key] = {k: data.get(k) or "" for k in (TRIALS_KEY, STOPS_KEY)}
            self._page_sizes[key] = int(json.loads(data.get(PAGE_SIZE_KEY) or "0") or 0)
        return name, self._inboxes[key]

    @_api_errors
    def assign(self, scan: ScanRef, shard: int, lines: Sequence[dict]) -> None:
        """Append to the worker's trials; first create the record pages its new trials will fill (the pod may
        patch them at once, and has no right to create them)."""
        name, held = self._inbox(scan, shard)
        text = held[TRIALS_KEY] + "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        size = self._page_sizes.get((scan.namespace, name)) or 1
        before = trial_page_count(pulled_trials({TRIALS_KEY: held[TRIALS_KEY]}), size)
        after = trial_page_count(pulled_trials({TRIALS_KEY: text}), size)
        for page in range(before, after):
            self._create(self.core.create_namespaced_config_map, scan.namespace, pull_page(scan, shard, page))
        self.core.patch_namespaced_config_map(name, scan.namespace, {"data": {TRIALS_KEY: text}})
        held[TRIALS_KEY] = text

    @_api_errors
    def stop_trials(self, scan: ScanRef, shard: int, trial_ids: Sequence[str]) -> None:
        name, held = self._inbox(scan, shard)
        text = held[STOPS_KEY] + "".join(json.dumps({"id": i}) + "\n" for i in trial_ids)
        self.core.patch_namespaced_config_map(name, scan.namespace, {"data": {STOPS_KEY: text}})
        held[STOPS_KEY] = text

    def _shard_configmaps(self, scan: ScanRef) -> list[dict[str, Any]]:
        """The scan's record pages and inboxes: from the watch cache in the operator, else one LIST; pages read from
        the API server since the last fetch_records (_confirm_records) in place of the cache's copies."""
        cached = self.cache.configmaps(scan.namespace, scan.name) if self.cache is not None else None
        if cached is None:
            listed = self.core.list_namespaced_config_map(
                scan.namespace, label_selector=f"{LABEL_SCAN}={scan.name},{LABEL_ROLE}=shard"
            ).items
            cached = [self.core.api_client.sanitize_for_serialization(cm) for cm in listed]
        if fresh := {cm["metadata"]["name"]: cm for cm in self._fresh.get((scan.namespace, scan.name), [])}:
            cached = [cm for cm in cached if cm["metadata"]["name"] not in fresh] + list(fresh.values())
        return cached

    def _confirm_records(self, scan: ScanRef, states: dict[int, ShardStatus]) -> None:
        """A Job the watch cache shows Complete while its pages there lack records of what they hand out: its last
        page patches may not have reached the cache yet (two watches, no order between them). Its pages are read
        once from the API server, and the next fetch_records hands over what they hold: only records missing there
        too make the shard RecordsMissing (for a scan's last shard, a terminal phase: it is never looked at again)."""
        cached: list[dict[str, Any]] | None = None
        for index, state in sorted(states.items()):
            key = (scan.namespace, state.job or "")
            if state.phase != ShardPhase.SUCCEEDED or key in self._checked:
                continue
            cached = self._shard_configmaps(scan) if cached is None else cached
            mine = [cm for cm in cached if (cm["metadata"].get("labels") or {}).get(LABEL_SHARD) == str(index)]
            # A worker's inbox as this operator wrote it, when it did: the cache may lag that too.
            held = [self._inboxes.get((scan.namespace, cm["metadata"]["name"])) or cm.get("data") or {} for cm in mine]
            if unrecorded(held):
                self._fresh.setdefault((scan.namespace, scan.name), []).extend(self._pages_now(scan, index).values())
            self._checked.add(key)

    def _pages_now(self, scan: ScanRef, shard: int) -> dict[int, dict[str, Any]]:
        """A shard's record pages by number, as the API server holds them now (one LIST, past the watch cache)."""
        selector = f"{LABEL_SCAN}={scan.name},{LABEL_ROLE}=shard,{LABEL_SHARD}={shard}"
        listed = self.core.list_namespaced_config_map(scan.namespace, label_selector=selector).items
        pages = [self.core.api_client.sanitize_for_serialization(cm) for cm in listed]
        return {int(cm["metadata"]["labels"][LABEL_PAGE]): cm for cm in pages if LABEL_PAGE in cm["metadata"]["labels"]}

    def _inbox_configmaps(self, scan: ScanRef) -> list[dict[str, Any]]:
        return [cm for cm in self._shard_configmaps(scan) if cm["metadata"]["name"].endswith(INBOX_SUFFIX)]

    @_api_errors
    def fetch_progress(self, scan: ScanRef) -> list[Progress]:
        """The newest per-epoch reports of inboxes that changed since the last call."""
        reports: list[Progress] = []
        for configmap in self._inbox_configmaps(scan):
            key = (scan.namespace, configmap["metadata"]["name"])
            version = str(configmap["metadata"].get("resourceVersion") or "")
            if version and self._progress_seen.get(key) == version:
                continue
            self._progress_seen[key] = version
            reports += read_progress(json_lines((configmap.get("data") or {}).get(PROGRESS_KEY)))
        return reports

    @_api_errors
    def assignments(self, scan: ScanRef) -> dict[int, Assignment]:
        """What each worker's inbox says it was handed (a restarted operator rebuilds its search from these)."""
        return {
            int(cm["metadata"]["labels"][LABEL_SHARD]): inbox_assignment(cm.get("data"))
            for cm in self._inbox_configmaps(scan)
        }

    @_api_errors
    def submit(self, scan: ScanRef, spec: HPScanSpec, launches: Sequence[ShardLaunch]) -> None:
        # Shards are independent: send them concurrently (a 100-shard scan of one page a shard is 200 requests).
        if not launches:
            return
        page_size = page_layout(spec, launches[0].shard_file.shards).size
        for account in sorted({a for launch in launches if (a := site_account(launch.site))}):
            if (scan.namespace, scan.name, account) not in self._bound:  # before its pods ask for their pages
                binding = site_account_binding(scan, account)
                self._create(self.rbac.create_namespaced_role_binding, scan.namespace, binding)
                self._bound.add((scan.namespace, scan.name, account))
        with ThreadPoolExecutor(max_workers=SUBMIT_THREADS) as pool:
            list(pool.map(lambda launch: self._submit_one(scan, spec, launch, page_size), launches))

    def _submit_one(self, scan: ScanRef, spec: HPScanSpec, launch: ShardLaunch, page_size: int) -> None:
        shard = launch.shard_file.shard
        # The pages before the Job, as its pod reads them at start; page 0, which announces the others, last, so an
        # operator stopped halfway leaves no page 0 that names a missing page.
        if launch.shard_file.pull:  # the inbox before page 0: the pod finds both when it starts
            self._create(self.core.create_namespaced_config_map, scan.namespace, pull_inbox(scan, shard, page_size))
        pages_created = [
            self._create(self.core.create_namespaced_config_map, scan.namespace, page)
            for page in reversed(shard_pages(scan, launch.shard_file, page_size))
        ]
        if not all(pages_created) and not launch.shard_file.pull:
            # Pages of an earlier attempt, or of a shard moved back here: they keep their records and now list only
            # what is left to train (launch.shard_file), or the pod would train again what another site recorded.
            held = {page: cm.get("data") or {} for page, cm in self._pages_now(scan, shard).items()}
            for page in reversed(shard_pages(scan, launch.shard_file, page_size, held)):
                number = int(page["metadata"]["labels"][LABEL_PAGE])
                if number in held:
                    name = page["metadata"]["name"]
                    self.core.patch_namespaced_config_map(name, scan.namespace, {"data": page["data"]})
                else:
                    self._create(self.core.create_namespaced_config_map, scan.namespace, page)
        manifest = job_manifest(scan, spec, shard, launch.site, moves=launch.moves)
        created = self._create(self.batch.create_namespaced_job, scan.namespace, manifest)
        if not created:  # an existing Job: resume it if it was suspended
            name = job_name(scan.name, shard, launch.moves)
            resume: dict[str, Any] = {
                "metadata": {"annotations": {FAILURE_ANNOTATION: None}},
                "spec": {"suspend": False},
            }
            if kueue_queue(manifest) and (job := self._job(scan.namespace, name)) is not None:
                resume.pop("spec")  # Kueue unsuspends it once admitted again
                self._activate(scan.namespace, self._workloads(scan.namespace).get(job["metadata"]["uid"]), True)
            self.batch.patch_namespaced_job(name, scan.namespace, resume)

    @_api_errors
    def probe(self, scan: ScanRef, spec: HPScanSpec, site: Site | None) -> ProbeOutcome:
        """The site's probe Job: created once; resumed when end_probe suspended it (a later probe of the site)."""
        where = site_name(site)
        selector = f"{LABEL_SCAN}={scan.name},{LABEL_ROLE}=probe,{LABEL_SITE}={where}"
        api = self.batch.api_client
        jobs = [api.sanitize_for_serialization(j) for j in self.batch.list_namespaced_job(
            scan.namespace, label_selector=selector).items]  # fmt: skip
        if not jobs:
            self._create(self.batch.create_namespaced_job, scan.namespace, probe_manifest(scan, spec, site))
            return ProbeOutcome(None, "probe sent")
        (job,) = jobs
        if kueue_queue(job) and (job.get("spec") or {}).get("suspend"):
            workload = self._workloads(scan.namespace).get(job["metadata"]["uid"])
            if not workload_active(workload):
                self._activate(scan.namespace, workload, True)
                return ProbeOutcome(None, "probe sent again")
            return ProbeOutcome(None, kueue_words(job, workload))
        if (job.get("spec") or {}).get("suspend"):
            name = probe_job_name(scan.name, where)
            self.batch.patch_namespaced_job(name, scan.namespace, {"spec": {"suspend": False}})
            return ProbeOutcome(None, "probe sent again")
        pods = [api.sanitize_for_serialization(pod) for pod in self.core.list_namespaced_pod(
            scan.namespace, label_selector=selector).items]  # fmt: skip
        return probe_outcome(job, pods)

    @_api_errors
    def end_probe(self, scan: ScanRef, site: Site | None) -> None:
        """Suspend the probe Job (its pod goes; the operator may patch Jobs, never delete them): the next probe of
        the site resumes it."""
        from kubernetes.client.rest import ApiException

        name = probe_job_name(scan.name, site_name(site))
        job = self._job(scan.namespace, name)
        if job is not None and any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
                                   for c in (job.get("status") or {}).get("conditions") or []):  # fmt: skip
            return  # it ended: nothing holds a GPU (nor, under Kueue, quota)
        try:
            self._pause(scan.namespace, job, name)
        except ApiException as error:
            if error.status != 404:
                raise

    @_api_errors
    def poll(self, scan: ScanRef) -> dict[int, ShardStatus]:
        selector = f"{LABEL_SCAN}={scan.name},{LABEL_ROLE}=shard"
        api = self.batch.api_client
        cached = self.cache.jobs(scan.namespace, scan.name) if self.cache is not None else None
        if cached is not None:
            jobs = cached
        else:
            listed = self.batch.list_namespaced_job(scan.namespace, label_selector=selector).items
            jobs = [api.sanitize_for_serialization(j) for j in listed]
        # Pods are read only when they say something the Job does not: why an active pod is not ready (the scheduler
        # cannot place it, its image cannot be pulled), or why an attempt failed (once per failed attempt).
        waiting = any(
            (j.get("status") or {}).get("active", 0) > ((j.get("status") or {}).get("ready") or 0) for j in jobs
        )
        unexplained = [j for j in jobs if self._failures(j) and self._failures(j) != self._cause_of(scan, j)[0]]
        pods_by_job: dict[str, list[dict[str, Any]]] = {}
        if waiting or unexplained:
            for pod in self.core.list_namespaced_pod(scan.namespace, label_selector=selector).items:
                pod_dict = api.sanitize_for_serialization(pod)
                labels = pod_dict["metadata"].get("labels") or {}
                job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name") or ""
                pods_by_job.setdefault(job, []).append(pod_dict)
        for job in unexplained:
            key = (scan.namespace, job["metadata"]["name"])
            self._causes[key] = (self._failures(job), failure_cause(pods_by_job.get(key[1], [])))
        workloads = self._workloads(scan.namespace) if any(kueue_queue(j) for j in jobs) else {}
        states: dict[int, ShardStatus] = {}
        for job in jobs:
            name = job["metadata"]["name"]
            pods = pods_by_job.get(name, [])
            workload = workloads.get(str(job["metadata"].get("uid")))
            if waiting and (said := self._image_failure(scan, job, pods)):
                job = self._fail_job(scan, job, said, workload)
            state = shard_state(job, {name: self._cause_of(scan, job)[1]}, pods, workload)
            held = states.get(state.index)
            if held is None or held.moves < state.moves:  # a moved shard's newest Job speaks for it
                states[state.index] = state
        if self.cache is not None:  # without one the pages are listed after the Jobs: they cannot lag
            self._confirm_records(scan, states)
        return states

    @_api_errors
    def fetch_records(self, scan: ScanRef) -> list[ResultRecord]:
        """The records of the scan's record pages that changed since the last call (all of them on the first call:
        a restarted operator gets everything back; the aggregator folds repeats); from the watch cache in the
        operator, else one LIST. A page is parsed again only when its resourceVersion changed."""
        cached = self._shard_configmaps(scan)
        self._fresh.pop((scan.namespace, scan.name), None)  # handed over now; the cache catches up meanwhile
        records: list[ResultRecord] = []
        for configmap in cached:
            key = (scan.namespace, configmap["metadata"]["name"])
            version = str(configmap["metadata"].get("resourceVersion") or "")
            held = self._parsed.get(key)
            if held is None or held[0] != version or not version:
                found, bad = records_of(configmap.get("data"))
                records += found
                self._parsed[key] = (version, bad)
        names = {(scan.namespace, configmap["metadata"]["name"]) for configmap in cached}
        self._unreadable[(scan.namespace, scan.name)] = sum(self._parsed[key][1] for key in names)
        return records

    @staticmethod
    def _failures(job: dict[str, Any]) -> int:
        """A Job's failed attempts, or 1 for a Job failed before any attempt counted (e.g. by its deadline)."""
        status = job.get("status") or {}
        failed = any(c.get("type") == "Failed" and c.get("status") == "True" for c in status.get("conditions") or [])
        return max(status.get("failed") or 0, 1 if failed else 0)

    def _cause_of(self, scan: ScanRef, job: dict[str, Any]) -> tuple[int, str]:
        return self._causes.get((scan.namespace, job["metadata"]["name"]), (0, ""))

    def _image_failure(self, scan: ScanRef, job: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
        """The kubelet's words when the Job's pod cannot get its image and should wait no longer (image_verdict)."""
        if not pods or (job.get("spec") or {}).get("suspend"):
            return None
        return image_verdict(pods, self._clock(), image_pull_timeout(job))

    def _fail_job(
        self, scan: ScanRef, job: dict[str, Any], said: str, workload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Fail a Job whose pod cannot get its image: the words on an annotation (shard_state reads them, also after
        a restart) and the Job suspended (its pod goes and frees its GPU; under Kueue, its Workload deactivated,
        which suspends it and frees the quota). The Job as patched."""
        patch: dict[str, Any] = {"metadata": {"annotations": {FAILURE_ANNOTATION: said[:1024]}}}
        if kueue_queue(job):
            self._activate(scan.namespace, workload, False)
        else:
            patch["spec"] = {"suspend": True}
        self.batch.patch_namespaced_job(job["metadata"]["name"], scan.namespace, patch)
        annotations = dict(job["metadata"].get("annotations") or {}, **{FAILURE_ANNOTATION: said})
        spec = (job.get("spec") or {}) | {"suspend": True}
        return job | {"metadata": job["metadata"] | {"annotations": annotations}, "spec": spec}

    def unreadable(self, scan: ScanRef) -> int:
        return self._unreadable.get((scan.namespace, scan.name), 0)

    @_api_errors
    def cancel(self, scan: ScanRef, shards: Collection[int] | None = None) -> None:
        """Suspend the shards' Jobs; a Kueue-managed Job's Workload is deactivated instead (see _pause), so its quota
        goes back to the queue."""
        stopping = {
            state.job or job_name(scan.name, index, state.moves)
            for index, state in self.poll(scan).items()
            if (shards is None or index in shards) and state.phase in ACTIVE_PHASES
        }
        if not stopping:
            return
        selector = f"{LABEL_SCAN}={scan.name},{LABEL_ROLE}=shard"
        api = self.batch.api_client
        listed = self.batch.list_namespaced_job(scan.namespace, label_selector=selector).items
        kueue = {job["metadata"]["name"]: job for j in listed if kueue_queue(job := api.sanitize_for_serialization(j))}
        workloads = self._workloads(scan.namespace) if kueue.keys() & stopping else {}
        for name in sorted(stopping):
            if name in kueue:
                self._activate(scan.namespace, workloads.get(kueue[name]["metadata"]["uid"]), False)
            else:
                self.batch.patch_namespaced_job(name, scan.namespace, {"spec": {"suspend": True}})
