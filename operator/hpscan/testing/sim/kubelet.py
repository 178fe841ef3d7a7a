"""The simulated Job controller and kubelet: they start, probe and end the pods of the shard and probe Jobs that the
simulated API server holds, with the faults of the world's plan."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from hpscan.api.status import FINAL_EXITS
from hpscan.backends.kubernetes.names import CONTAINER, LABEL_ROLE, LABEL_SHARD
from hpscan.job.configmap import CONFIGMAP_ENV, GIVE_UP_SECONDS, ConfigMapChannel, transient
from hpscan.testing.sim.kube import ClientApi
from hpscan.testing.sim.scenario import EPOCH, NAMESPACE
from hpscan.testing.sim.workers import SimPod, probe_words

if TYPE_CHECKING:  # the world holds the kubelet, which reads the world back
    from hpscan.testing.sim.world import World


class Kubelet:
    """The Job controller and the kubelet: one pod at a time per Job, retried up to backoffLimit."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.pods: dict[str, SimPod] = {}

    def _job_status(self, name: str, **status: Any) -> None:
        self.world.server.patch("job", NAMESPACE, name, {"status": status})

    def tick(self, now: float) -> None:
        w = self.world
        for (kind, _, name), job in sorted(w.server.objects.items()):
            if kind != "job":
                continue
            status = job.get("status") or {}
            if any(c.get("status") == "True" for c in status.get("conditions") or []):
                continue
            pod = self.pods.get(name)
            if job["metadata"].get("labels", {}).get(LABEL_ROLE) == "probe":
                self._probe(name, job, now)
                continue
            if job["spec"].get("suspend"):
                if pod is not None:
                    w.interrupted(pod)
                    del self.pods[name]
                    self._job_status(name, active=0, ready=0)
                continue
            if pod is None:
                failed = status.get("failed") or 0
                if failed > job["spec"].get("backoffLimit", 6):
                    condition = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                 "message": "Job has reached the specified backoff limit"}  # fmt: skip
                    self._job_status(name, conditions=[condition], active=0, ready=0)
                    continue
                self._start(name, job, now)
                continue
            faults = w.faults_now()
            if w.rng.random() < faults.pod_death:
                self._end(name, pod, failed=True)
                continue
            if w.rng.random() < faults.eviction:
                self._end(name, pod, failed=False)
                continue
            if not pod.started and not self._first_reads(name, pod, now):
                continue
            code = pod.tick(now)
            if code == 0:
                del self.pods[name]
                done = {"type": "Complete", "status": "True"}
                self._job_status(name, active=0, ready=0, succeeded=1, conditions=[done])
            elif code in FINAL_EXITS:  # the Job's podFailurePolicy: FailJob
                self._end(name, pod, failed=True)
                message = (
                    f"Container payload for pod {name}-0 failed with exit code {code} matching FailJob rule at index 0"
                )
                failed = {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": message}
                self._job_status(name, conditions=[failed])
            elif code is not None:
                self._end(name, pod, failed=True)

    def _probe(self, name: str, job: dict[str, Any], now: float) -> None:
        """A site probe's pod runs the gpu check: the stand-in's exit code (CONTRACT_GPU_CHECK_EXIT, as
        tests/support/payloads/contract_payload.gpu_check), with its words as the termination message."""
        env = {
            e["name"]: e.get("value") for c in job["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])
        }
        code, words = probe_words(env)
        labels = {**job["spec"]["template"]["metadata"].get("labels", {}), "batch.kubernetes.io/job-name": name}
        when = (EPOCH + timedelta(seconds=now)).isoformat()
        terminated = {"exitCode": code, "message": words}
        self.world.server.create("pod", NAMESPACE, {
            "metadata": {"name": f"{name}-probe", "labels": labels, "creationTimestamp": when},
            "status": {"phase": "Succeeded" if code == 0 else "Failed",
                       "containerStatuses": [{"name": CONTAINER, "state": {"terminated": terminated}}]},
        })  # fmt: skip
        ended = {"type": "Complete" if code == 0 else "Failed", "status": "True"}
        self._job_status(name, conditions=[ended], succeeded=int(code == 0), failed=int(code != 0))

    def _start(self, name: str, job: dict[str, Any], now: float) -> None:
        w = self.world
        container = next(c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == CONTAINER)
        base = next(e["value"] for e in container["env"] if e["name"] == CONFIGMAP_ENV)
        channel = ConfigMapChannel(base, NAMESPACE, api_client=object(), clock=lambda: w.server.now)
        channel.core = ClientApi(w.server, w.pod_faults)  # type: ignore[assignment]
        shard = int(job["metadata"]["labels"][LABEL_SHARD])
        pod = SimPod(shard, channel, w.scenario.epochs, float(w.rng.randint(1, 4)), now, w)
        pod.attempt = int((job.get("status") or {}).get("failed") or 0) + 1
        self.pods[name] = pod
        self._job_status(name, active=1, ready=1)

    def _first_reads(self, name: str, pod: SimPod, now: float) -> bool:
        """ConfigMapChannel.start: the pod's first reads, tried again while the API server fails transiently (for
        up to GIVE_UP_SECONDS); a refusal, or failing that long, fails the attempt. Whether the pod may go on."""
        try:
            pod.start()
        except Exception as error:
            if transient(error) and now - pod.started_at < GIVE_UP_SECONDS:
                return False
            self._end(name, pod, failed=True)
            return False
        pod.started = True
        return True

    def _end(self, name: str, pod: SimPod, failed: bool) -> None:
        self.world.interrupted(pod)
        del self.pods[name]
        if failed:  # the failed pod stays, with its termination message (FallbackToLogsOnError: its last words)
            job = self.world.server.objects[("job", NAMESPACE, name)]
            labels = {**job["spec"]["template"]["metadata"].get("labels", {}), "batch.kubernetes.io/job-name": name}
            when = (EPOCH + timedelta(seconds=self.world.server.now)).isoformat()
            terminated = {"exitCode": pod.exit_code or 137, "message": "\n".join(pod.said[-3:])}
            self.world.server.create("pod", NAMESPACE, {
                "metadata": {"name": f"{name}-{pod.attempt}", "labels": labels, "creationTimestamp": when},
                "status": {"phase": "Failed", "containerStatuses": [{"name": CONTAINER, "state": {"terminated": terminated}}]},
            })  # fmt: skip
        status = self.world.server.objects[("job", NAMESPACE, name)].get("status") or {}
        self._job_status(name, active=0, ready=0, failed=(status.get("failed") or 0) + int(failed))
