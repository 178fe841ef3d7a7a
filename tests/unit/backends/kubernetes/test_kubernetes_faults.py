"""The Kubernetes backend and its in-pod channel when the API server misbehaves, races or refuses: a transient error
costs no record, a Job seen Complete before its last page reaches the watch cache keeps its records, a site's own
ServiceAccount may patch its pages, a moved shard trains only what is left, and every pulled trial's page is one the
pods' Role names."""

from __future__ import annotations

import copy
import json
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.rest import ApiException
from urllib3.exceptions import ReadTimeoutError

from hpscan.api.contract import ResultRecord, ShardFile
from hpscan.api.spec import HPScanSpec
from hpscan.backends.base import ScanRef, ShardLaunch
from hpscan.backends.kubernetes import KubernetesBackend, shard_pages
from hpscan.core.planning import plan
from hpscan.errors import HPScanError
from hpscan.job.configmap import ConfigMapChannel
from hpscan.job.pages import page_name, record_patch, records_of
from hpscan.job.runner import run_shard

REF = ScanRef(name="s", namespace="physics", uid="u-s")
BASE = "s-shard-000"


def shard_file(count: int, pull: bool = False) -> ShardFile:
    return ShardFile.model_validate(
        {
            "scan": "s", "shard": 0, "shards": 1, "objective": {}, "gpu": {}, "pull": pull,
            "combinations": [{"id": f"c{i:04d}-0000000{i % 10}", "parameters": {"x": i}} for i in range(count)],
        }
    )  # fmt: skip


def record(combination_id: str, loss: float = 0.5) -> ResultRecord:
    return ResultRecord(id=combination_id, shard=0, parameters={"x": 1}, metrics={"val_loss": loss}, status="succeeded")


class PagesInMemory:
    """The CoreV1Api calls of the pod's channel, on ConfigMaps held in memory. ``failures``: raised by the next
    patches, in order (one each)."""

    def __init__(self, configmaps: dict[str, dict[str, str]]) -> None:
        self.configmaps = configmaps
        self.failures: list[Exception] = []
        self.read_failures: list[Exception] = []  # raised by the next reads, in order
        self.patches = 0

    def read_namespaced_config_map(self, name: str, namespace: str, **options: Any) -> Any:
        if self.read_failures:
            raise self.read_failures.pop(0)
        if name not in self.configmaps:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=dict(self.configmaps[name]))

    def patch_namespaced_config_map(self, name: str, namespace: str, body: dict, **options: Any) -> None:
        self.patches += 1
        if self.failures:
            raise self.failures.pop(0)
        self.configmaps[name].update(body["data"])


def channel_on(pages: list[dict], **options: Any) -> tuple[ConfigMapChannel, PagesInMemory]:
    core = PagesInMemory({p["metadata"]["name"]: dict(p["data"]) for p in pages})
    channel = ConfigMapChannel(BASE, "physics", api_client=object(), **options)
    channel.core = core
    return channel, core


def recorded_ids(core: PagesInMemory) -> set[str]:
    return {r.id for data in core.configmaps.values() for r in records_of(data)[0]}


# 3. a transient API error costs no record -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ApiException(status=503, reason="Service Unavailable"),
        ApiException(status=429, reason="Too Many Requests"),
        ReadTimeoutError(None, "/api", "read timed out"),
    ],
    ids=["503", "429", "timeout"],
)
def test_a_transient_api_error_keeps_the_records_and_sends_them_with_the_next_publish(error, capsys):
    channel, core = channel_on(shard_pages(REF, shard_file(4), page_size=2), retry_seconds=0)
    channel.pages()
    core.failures.append(error)
    channel.publish([record("c0000-00000000"), record("c0003-00000003")])  # the attempt goes on
    assert recorded_ids(core) == set()
    assert "could not publish 2 record(s)" in capsys.readouterr().err
    channel.publish([record("c0001-00000001")])
    assert recorded_ids(core) == {"c0000-00000000", "c0001-00000001", "c0003-00000003"}


PAYLOAD = """
import json, sys, time
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1])
for i in (0, 1):
    with (out / "results.jsonl").open("a") as results:
        results.write(json.dumps({"id": f"c000{i}-0000000{i}", "shard": 0, "parameters": {"x": i},
                                  "metrics": {"val_loss": 0.5}, "status": "succeeded"}) + "\\n")
time.sleep(float(sys.argv[1]))
"""


def run(tmp_path: Path, channel: ConfigMapChannel, payload_seconds: float) -> int:
    file = tmp_path / "shard.json"
    file.write_text(channel.pages().shard_file.model_dump_json(by_alias=True))
    command = [sys.executable, "-c", PAYLOAD, str(payload_seconds)]
    return run_shard(command, file, tmp_path / "out", channel, poll_seconds=0.05)


def test_records_a_failed_patch_left_unsent_are_sent_before_the_runner_ends(tmp_path):
    """The payload's last records meet an API server that is away for a moment: the runner sends them again before
    it exits, so the Job never ends Complete without them."""
    channel, core = channel_on(shard_pages(REF, shard_file(2), page_size=2), retry_seconds=0.05)
    core.failures += [ApiException(status=500, reason="Internal Server Error")] * 3
    assert run(tmp_path, channel, payload_seconds=0) == 0
    assert recorded_ids(core) == {"c0000-00000000", "c0001-00000001"}


def test_pages_that_keep_refusing_end_the_attempt_in_bounded_time_with_a_clear_error(tmp_path):
    channel, core = channel_on(shard_pages(REF, shard_file(2), page_size=2), retry_seconds=0.05, give_up_seconds=0.3)
    core.failures += [ApiException(status=503, reason="Service Unavailable")] * 1000
    with pytest.raises(
        HPScanError,
        match=r"could not publish 2 record\(s\) to s-shard-000-p0 .*for 0 s \(last: 503 Service Unavailable\)",
    ):
        run(tmp_path, channel, payload_seconds=120)  # the payload does not outlive its runner


def test_a_refusal_that_retrying_will_not_mend_ends_the_attempt_at_once_saying_why(monkeypatch):
    channel, core = channel_on(shard_pages(REF, shard_file(2), page_size=2))
    core.failures.append(ApiException(status=403, reason="Forbidden"))
    monkeypatch.setenv("HPSCAN_SERVICE_ACCOUNT", "ml-runner")
    said = r"could not publish 1 record\(s\) .*: system:serviceaccount:physics:ml-runner may not patch ConfigMap physics/s-shard-000-p0 \(403 Forbidden\)"
    with pytest.raises(HPScanError, match=said):
        channel.publish([record("c0000-00000000")])


def test_a_transient_api_error_while_a_pod_starts_costs_no_attempt(capsys):
    """The pod's first reads (its pages, what earlier attempts recorded) meet an API server away for a moment: they
    are tried again, not the end of the attempt (through the fault proxy of test_operator_faults.py, one 500 on page
    0 cost two of three workers an attempt: a Job's retry, spent on nothing)."""
    channel, core = channel_on(shard_pages(REF, shard_file(4), page_size=2), retry_seconds=0)
    core.read_failures += [ApiException(status=500, reason="Internal Server Error"), ReadTimeoutError(None, "/", "")]
    channel.start()
    assert len(channel.pages().shard_file.combinations) == 4 and channel.recorded() == []
    assert "could not read s-shard-000-p0 (the shard's pages), trying again in 0 s: 500 Internal Server Error" in (
        capsys.readouterr().err
    )


def test_start_reads_that_keep_failing_end_the_attempt_in_bounded_time_and_a_refusal_at_once():
    channel, core = channel_on(shard_pages(REF, shard_file(2), page_size=2), retry_seconds=0.05, give_up_seconds=0.2)
    core.read_failures += [ApiException(status=503, reason="Service Unavailable")] * 1000
    with pytest.raises(HPScanError, match=r"could not read s-shard-000-p0 \(the shard's pages\): every try failed"):
        channel.start()
    channel, core = channel_on(shard_pages(REF, shard_file(2), page_size=2))
    core.read_failures.append(ApiException(status=403, reason="Forbidden"))
    with pytest.raises(HPScanError, match=r"may not get ConfigMap physics/s-shard-000-p0 \(403 Forbidden\)"):
        channel.start()


# the operator's side: an API server held in memory ---------------------------------------------------------------


class Cluster:
    """The namespaced objects the backend sends (kind, name -> body), behind the client calls it makes: create (409
    for a taken name), read and patch (404 for a missing one; a patch merges dicts), list (label selectors of
    ``key=value`` terms)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict] = {}
        self.api_client = SimpleNamespace(sanitize_for_serialization=lambda body: copy.deepcopy(body))
        self.requests: list[str] = []

    def __getattr__(self, attribute: str) -> Any:
        verb, _, kind = attribute.partition("_namespaced_")
        if not kind or verb not in ("create", "read", "patch", "list"):
            raise AttributeError(attribute)
        return partial(getattr(self, f"_{verb}"), kind)

    def _create(self, kind: str, namespace: str, body: dict) -> None:
        self.requests.append(f"create {kind} {body['metadata']['name']}")
        if (kind, body["metadata"]["name"]) in self.objects:
            raise ApiException(status=409, reason="Conflict")
        self.objects[(kind, body["metadata"]["name"])] = copy.deepcopy(body)

    def _held(self, kind: str, name: str) -> dict:
        if (kind, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return self.objects[(kind, name)]

    def _read(self, kind: str, name: str, namespace: str, **options: Any) -> Any:
        self.requests.append(f"read {kind} {name}")
        return SimpleNamespace(**copy.deepcopy(self._held(kind, name)))

    def _patch(self, kind: str, name: str, namespace: str, body: dict, **options: Any) -> None:
        self.requests.append(f"patch {kind} {name}")

        def merge(held: dict, patch: dict) -> None:
            for key, value in patch.items():
                if isinstance(value, dict) and isinstance(held.get(key), dict):
                    merge(held[key], value)
                else:
                    held[key] = copy.deepcopy(value)

        merge(self._held(kind, name), body)

    def _list(self, kind: str, namespace: str, label_selector: str = "") -> Any:
        self.requests.append(f"list {kind} {label_selector}")
        terms = dict(term.split("=") for term in label_selector.split(",") if term)
        return SimpleNamespace(
            items=[copy.deepcopy(body) for (held_kind, _), body in self.objects.items()
                   if held_kind == kind and terms.items() <= body["metadata"].get("labels", {}).items()]
        )  # fmt: skip

    def of_kind(self, kind: str) -> list[dict]:
        return [body for (held_kind, _), body in self.objects.items() if held_kind == kind]

    def backend(self, cache: Any = None) -> KubernetesBackend:
        backend = KubernetesBackend(api_client=object(), cache=cache)
        backend.core = backend.batch = backend.rbac = backend.networking = self
        return backend


def spec_of(**more: Any) -> HPScanSpec:
    return HPScanSpec.model_validate(
        {"parameters": [{"name": "x", "values": list(range(8))}], "sharding": {"shards": 2},
         "payload": {"image": "img:1"}, **more}
    )  # fmt: skip


# 5. a site's own ServiceAccount may patch its pods' pages ---------------------------------------------------------


def test_every_account_a_scans_shard_pods_run_as_may_get_and_patch_their_pages():
    """A site admin's serviceAccountName (allowed by the operator's defaults) replaces the scan's own account in
    the pod: that account is bound to the scan's Role too, and only to it."""
    spec = spec_of(sites=[{"name": "t2", "kubernetes": {"serviceAccountName": "gpu-runner"}},
                          {"name": "t3", "kubernetes": {}}])  # fmt: skip
    planned = plan("s", spec)
    cluster = Cluster()
    backend = cluster.backend()
    backend.prepare(REF, spec, planned.shard_count)
    backend.submit(REF, spec, [ShardLaunch(planned.shard_file(0), spec.sites[0]),
                               ShardLaunch(planned.shard_file(1), spec.sites[1])])  # fmt: skip
    (role,) = cluster.of_kind("role")
    bound = {
        subject["name"]
        for binding in cluster.of_kind("role_binding")
        if binding["roleRef"]
        == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
        for subject in binding["subjects"]
        if subject["kind"] == "ServiceAccount" and subject["namespace"] == "physics"
    }
    accounts = {job["spec"]["template"]["spec"]["serviceAccountName"] for job in cluster.of_kind("job")}
    assert accounts == {"gpu-runner", "s-payload"}
    assert bound == accounts  # each pod's account may get and patch its pages; no other account may
    assert {"s-shard-000-p0", "s-shard-001-p0"} <= set(role["rules"][0]["resourceNames"])


# 9. every pulled trial's page is one the Role names ----------------------------------------------------------------


def test_a_trial_handed_again_to_a_worker_keeps_every_page_within_those_the_role_names():
    """A budget of 4 trials, 2 a page: the Role names pages 0 and 1 of the worker. Its trial c0002 is taken back
    (the worker was suspended) and handed to it again, then c0003 comes: both sides put each trial on the page of
    its place among the distinct trials the worker was handed, so none goes to a page the Role does not name."""
    from hpscan.backends.kubernetes.manifests import payload_rbac, pull_inbox

    cluster = Cluster()
    backend = cluster.backend()
    pull = shard_file(0, pull=True)
    for body in (pull_inbox(REF, 0, page_size=2), *shard_pages(REF, pull, page_size=2)):
        cluster._create("config_map", "physics", body)
    trials = shard_file(4).combinations
    handed = [[trials[0], trials[1], trials[2]], [{"withdraw": trials[2].id}], [trials[2]], [trials[3]]]
    for lines in handed:
        backend.assign(REF, 0, [line if isinstance(line, dict) else {"trial": line.model_dump()} for line in lines])
    channel = ConfigMapChannel(BASE, "physics", api_client=object())
    channel.core = cluster  # type: ignore[assignment]
    channel.publish([record(t.id) for t in trials])
    (_, role, _) = payload_rbac(REF, 1, pages_per_shard=2, inboxes=True)
    named = set(role["rules"][0]["resourceNames"])
    held = {name for kind, name in cluster.objects if kind == "config_map"}
    assert held <= named, f"pages the pod may not patch: {sorted(held - named)}"
    pages = {
        name: records_of(body["data"])[0] for (kind, name), body in cluster.objects.items() if kind == "config_map"
    }
    assert {name: [r.id for r in found] for name, found in pages.items() if found} == {
        "s-shard-000-p0": [trials[0].id, trials[1].id],
        "s-shard-000-p1": [trials[2].id, trials[3].id],
    }


# 8. a shard moved back to a Kubernetes site trains only what is left ------------------------------------------------


def pod_view(cluster: Cluster, shard: int = 0) -> Any:
    """What a shard's pod reads at start: its pages, through the API."""
    from hpscan.job.pages import join_pages

    base = f"s-shard-{shard:03d}"
    return join_pages(lambda k: cluster.objects.get(("config_map", page_name(base, k)), {}).get("data"))


def test_a_shard_moved_back_to_a_kubernetes_site_is_handed_only_what_no_site_recorded():
    """The shard ran here first (c0 recorded in its page), moved to another site (c1 and c2 recorded there), and
    comes back: its pages exist, and now list only c3, keeping the record they hold."""
    spec = spec_of(sites=[{"name": "k8s", "kubernetes": {}}])
    planned = plan("s", spec)
    full = planned.shard_file(0)
    cluster = Cluster()
    backend = cluster.backend()
    backend.submit(REF, spec, [ShardLaunch(full, spec.sites[0])])
    first = full.combinations[0]
    cluster._patch("config_map", "s-shard-000-p0", "physics", {"data": record_patch([record(first.id)])["data"]})
    left = full.model_copy(update={"combinations": full.combinations[3:]})  # engine.remaining_shard_file
    backend.submit(REF, spec, [ShardLaunch(left, spec.sites[0], moves=2)])
    view = pod_view(cluster)
    assert view.shard_file == left  # the pod trains c3 only
    assert [r.id for r in view.records] == [first.id]  # what was recorded here stays
    assert [job["metadata"]["name"] for job in cluster.of_kind("job")] == ["s-shard-000", "s-shard-000-m2"]


def test_pages_that_exist_list_what_is_left_each_within_its_room_keeping_every_record():
    """Page size 2: page 0 holds the records of c0 and c1, page 1 that of c2. Left to train: c3 (listed on page 1),
    and c4 and c5, never listed here (a site that lost what it recorded): c3 stays, the others go to a new page."""
    from hpscan.job.pages import PAGE_KEY, split_shard_file

    combos = shard_file(6).combinations
    held = dict(enumerate(split_shard_file(shard_file(4), 2)))
    held[0] |= record_patch([record(combos[0].id), record(combos[1].id)])["data"]
    held[1] |= record_patch([record(combos[2].id)])["data"]
    left = shard_file(6).model_copy(update={"combinations": combos[3:]})
    pages = split_shard_file(left, 2, held)
    listed = [[c["id"] for c in json.loads(page[PAGE_KEY])["combinations"]] for page in pages]
    assert listed == [[], [combos[3].id], [combos[4].id, combos[5].id]]
    assert all(json.loads(page[PAGE_KEY])["pages"] == 3 for page in pages)
    assert split_shard_file(left, 2, {}) == split_shard_file(left, 2)  # no pages yet: plain pages
    assert [len(json.loads(p[PAGE_KEY])["combinations"]) for p in split_shard_file(shard_file(5), 2)] == [2, 2, 1]


# 4. a Job seen Complete before its last page reaches the watch cache -----------------------------------------------


class LaggingCache:
    """The operator's watch indexes, where the pages' lag the Jobs': ``pages`` is a copy taken a moment ago."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.pages = self.snapshot()

    def snapshot(self) -> list[dict]:
        return copy.deepcopy(self.cluster.of_kind("config_map"))

    def jobs(self, namespace: str, scan: str) -> list[dict]:
        return copy.deepcopy(self.cluster.of_kind("job"))

    def configmaps(self, namespace: str, scan: str) -> list[dict]:
        return copy.deepcopy(self.pages)


def finish(cluster: Cluster, shard: int, records: list[ResultRecord], complete: bool = True) -> None:
    """The shard's pod patches its records into its page, and (``complete``) its Job completes."""
    page = f"s-shard-{shard:03d}-p0"
    cluster._patch("config_map", page, "physics", {"data": record_patch(records)["data"]})
    if not complete:
        return
    complete = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    cluster._patch("job", f"s-shard-{shard:03d}", "physics", {"status": complete})


def one_step(backend: KubernetesBackend, agg: Any) -> dict[int, Any]:
    """What the engine does each step with a backend: poll, then fold the records it hands over."""
    from hpscan.core.summary import shard_statuses

    states = backend.poll(REF)
    for found in backend.fetch_records(REF):
        agg.add(found)
    return {s.index: s for s in shard_statuses(agg.plan, agg, states)}


def records_of_shard(planned: Any, shard: int) -> list[ResultRecord]:
    return [
        ResultRecord(id=c.id, shard=shard, parameters=c.parameters, metrics={"val_loss": 0.5}, status="succeeded")
        for c in planned.shard_file(shard).combinations
    ]


def test_a_job_seen_complete_before_its_last_records_reach_the_page_cache_keeps_them():
    from hpscan.core.results import Aggregate

    spec = spec_of()
    planned = plan("s", spec)
    cluster = Cluster()
    cache = LaggingCache(cluster)
    backend = cluster.backend(cache)
    backend.submit(REF, spec, [ShardLaunch(planned.shard_file(i), None) for i in (0, 1)])
    agg = Aggregate(planned)
    done = records_of_shard(planned, 0)
    finish(cluster, 0, done[:3], complete=False)
    cache.pages = cache.snapshot()
    one_step(backend, agg)
    assert agg.shard_done[0] == 3  # of 4
    finish(cluster, 0, done[3:])  # the last patch, then the Job completes: the Jobs' cache sees it first
    states = one_step(backend, agg)
    assert (states[0].phase, states[0].reason, agg.shard_done[0]) == ("Succeeded", None, 4)
    requests = len(cluster.requests)
    one_step(backend, agg)
    assert len(cluster.requests) == requests  # confirmed once: later steps ask the API server nothing

    finish(cluster, 1, records_of_shard(planned, 1)[:2])  # a payload that left two combinations unrecorded
    states = one_step(backend, agg)
    assert (states[1].phase, states[1].reason) == ("Failed", "RecordsMissing")  # read from the API: missing


def test_what_a_shards_pages_and_inbox_hand_out_without_a_record():
    from hpscan.backends.kubernetes.manifests import pull_inbox
    from hpscan.job.pages import unrecorded

    (page,) = shard_pages(REF, shard_file(3), page_size=5)
    assert unrecorded([page["data"] | record_patch([record("c0001-00000001")])["data"]]) == {
        "c0000-00000000",
        "c0002-00000002",
    }
    inbox = pull_inbox(REF, 0, page_size=2)["data"]
    inbox["trials.jsonl"] = (
        '{"trial":{"id":"c0007-aa","parameters":{"x":7}}}\n{"trial":{"id":"c0008-bb","parameters":{"x":8}}}\n'
        '{"withdraw":"c0008-bb"}\n'
    )
    (pulled,) = shard_pages(REF, shard_file(0, pull=True), page_size=2)
    assert unrecorded([inbox, pulled["data"]]) == {"c0007-aa"}  # a withdrawn trial is not the worker's to record
    assert unrecorded([inbox, pulled["data"] | record_patch([record("c0007-aa")])["data"]]) == set()


# The backend's calls: one way an API error reaches the engine, one entry a scan --------------------------------------


class Refusing:
    """Any client call raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, attribute: str) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> None:
            raise self.error

        return refuse


def test_a_refusal_names_the_call_and_its_cause_a_lost_connection_is_an_outage_and_a_bug_passes_unchanged():
    from hpscan.errors import BackendError, SchedulerUnavailable

    backend = Cluster().backend()
    forbidden = ApiException(status=403, reason="Forbidden")
    forbidden.body = json.dumps({"kind": "Status", "message": 'roles "s-payload" is forbidden: exceeded quota'})
    backend.rbac = Refusing(forbidden)
    with pytest.raises(BackendError, match=r"API refused prepare \(403\): roles \"s-payload\" .* quota") as refused:
        backend.prepare(REF, spec_of(), 2)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__  # the message says it all
    backend.rbac = Refusing(ApiException(status=500, reason="Internal Server Error"))  # no Status body: the reason
    with pytest.raises(BackendError, match=r"API refused prepare \(500\): Internal Server Error"):
        backend.prepare(REF, spec_of(), 2)
    backend.rbac = Refusing(ReadTimeoutError(None, "/apis", "read timed out"))
    with pytest.raises(SchedulerUnavailable, match=r"the Kubernetes API did not answer \(prepare\).*read timed out"):
        backend.prepare(REF, spec_of(), 2)
    backend.rbac = Refusing(KeyError("not the API's answer"))
    with pytest.raises(KeyError):
        backend.prepare(REF, spec_of(), 2)


def test_a_forgotten_scan_leaves_nothing_held_and_is_read_again_from_the_api_server_losing_nothing():
    from hpscan.backends.kubernetes.manifests import pull_inbox

    cluster = Cluster()
    backend = cluster.backend()
    for body in (pull_inbox(REF, 0, page_size=2), *shard_pages(REF, shard_file(0, pull=True), page_size=2)):
        cluster._create("config_map", "physics", body)
    trials = [{"trial": trial.model_dump()} for trial in shard_file(2).combinations]
    backend.assign(REF, 0, trials[:1])
    assert len(backend.scans) == 1
    backend.forget(REF)
    assert len(backend.scans) == 0
    cluster.requests.clear()
    backend.assign(REF, 0, trials[1:])
    assert cluster.requests[0] == "read config_map s-shard-000-in"  # what the operator wrote, read back
    inbox = cluster.objects[("config_map", "s-shard-000-in")]["data"]
    assert [line["trial"]["id"] for line in map(json.loads, inbox["trials.jsonl"].splitlines())] == [
        "c0000-00000000",
        "c0001-00000001",
    ]
