"""Site probes: one Job per scan and site (manifests.probe_manifest, spec.payload.gpuCheck), created once, suspended
when the probe is ended (the operator may patch Jobs, never delete them) and resumed by a later probe of the site.
What a probe's Job and pods say is read by states.probe_outcome."""

from __future__ import annotations

from hpscan.api.sites import Site
from hpscan.api.spec import HPScanSpec
from hpscan.backends.base import ScanRef
from hpscan.backends.kubernetes.api import KubernetesApi
from hpscan.backends.kubernetes.kueue import Kueue
from hpscan.backends.kubernetes.manifests import probe_manifest
from hpscan.backends.kubernetes.names import LABEL_ROLE, LABEL_SCAN, LABEL_SITE, probe_job_name, site_name
from hpscan.backends.kubernetes.states import kueue_queue, kueue_words, probe_outcome, workload_active
from hpscan.core.brokering import ProbeOutcome


class Probes:
    """Starts, reads and ends the site probes of the scans."""

    def __init__(self, api: KubernetesApi, kueue: Kueue) -> None:
        self.api = api
        self.kueue = kueue

    def probe(self, scan: ScanRef, spec: HPScanSpec, site: Site | None) -> ProbeOutcome:
        """Create the site's probe Job when it has none, resume it when end() suspended it; else what it says now."""
        where = site_name(site)
        selector = f"{LABEL_SCAN}={scan.name},{LABEL_ROLE}=probe,{LABEL_SITE}={where}"
        jobs = self.api.jobs(scan.namespace, selector)
        if not jobs:
            self.api.create(self.api.batch.create_namespaced_job, scan.namespace, probe_manifest(scan, spec, site))
            return ProbeOutcome(None, "probe sent")
        (job,) = jobs
        if kueue_queue(job) and (job.get("spec") or {}).get("suspend"):
            workload = self.kueue.workloads(scan.namespace).get(job["metadata"]["uid"])
            if not workload_active(workload):
                self.kueue.activate(scan.namespace, workload, True)
                return ProbeOutcome(None, "probe sent again")
            return ProbeOutcome(None, kueue_words(job, workload))
        if (job.get("spec") or {}).get("suspend"):
            name = probe_job_name(scan.name, where)
            self.api.batch.patch_namespaced_job(name, scan.namespace, {"spec": {"suspend": False}})
            return ProbeOutcome(None, "probe sent again")
        return probe_outcome(job, self.api.pods(scan.namespace, selector))

    def end(self, scan: ScanRef, site: Site | None) -> None:
        """Suspend the probe Job (its pod goes; under Kueue its Workload is deactivated, which frees the quota)."""
        from kubernetes.client.rest import ApiException

        name = probe_job_name(scan.name, site_name(site))
        job = self.api.job(scan.namespace, name)
        if job is not None and any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
                                   for c in (job.get("status") or {}).get("conditions") or []):  # fmt: skip
            return  # it ended: nothing holds a GPU (nor, under Kueue, quota)
        try:
            self.kueue.pause(scan.namespace, [name], [job] if job is not None else [])
        except ApiException as error:
            if error.status != 404:
                raise
