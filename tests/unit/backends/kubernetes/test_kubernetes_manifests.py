"""What the operator asks Kubernetes for: the Job, record pages (ConfigMaps) and RBAC of a shard, and how Jobs and
pages read back."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hpscan.api.contract import LAST_WORDS_ENV, ResultRecord
from hpscan.api.sites import Site
from hpscan.backends.base import ScanRef
from hpscan.backends.kubernetes import (
    job_manifest,
    job_name,
    payload_rbac,
    shard_pages,
    shard_pages_name,
    shard_state,
)
from hpscan.backends.kubernetes.manifests import probe_manifest
from hpscan.core.manifest import load_scan
from hpscan.core.planning import plan
from hpscan.job.configmap import CONFIGMAP_ENV
from hpscan.job.pages import join_pages, page_name, record_patch, records_of

SCAN = load_scan(Path("examples/dl1-seed-scan.yaml"))
REF = ScanRef(name="dl1-seed-scan", namespace="physics", uid="1234")
GPU_SITE = SCAN.spec.sites[0]


def test_job_asks_for_gpus_on_gpu_nodes_with_the_sites_tolerations():
    job = job_manifest(REF, SCAN.spec, 3, GPU_SITE)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert job["metadata"]["name"] == "dl1-seed-scan-shard-003" == job_name("dl1-seed-scan", 3)
    assert job["spec"]["backoffLimit"] == SCAN.spec.retries


def test_job_is_owned_labelled_and_runs_the_payload_through_the_shard_runner():
    job = job_manifest(REF, SCAN.spec, 3, GPU_SITE)
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("HPScan", "1234", True)
    assert job["metadata"]["labels"]["hpscan.io/shard"] == "3"
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["hpscan", "shard-run"]
    assert command[command.index("--channel") + 1] == "kubernetes"
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[CONFIGMAP_ENV] == shard_pages_name("dl1-seed-scan", 3) == "dl1-seed-scan-shard-003"
    assert command[command.index("--") + 1 :] == ["dl1", "train-shard"]
    # The shard file comes from the pages through the API: the pod mounts no ConfigMap, whatever the shard's size.
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert not any("configMap" in v for v in volumes) and {"name": "shard", "emptyDir": {}} in volumes


def test_shard_and_probe_payloads_write_their_reason_to_the_termination_message_file():
    for job in (job_manifest(REF, SCAN.spec, 0, GPU_SITE), probe_manifest(REF, SCAN.spec, GPU_SITE)):
        container = job["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[LAST_WORDS_ENV] == container["terminationMessagePath"] == "/dev/termination-log"
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"  # payloads that write none


def test_a_probes_pod_meets_the_site_as_a_shards_does_without_its_files_or_api_access():
    shard = job_manifest(REF, SCAN.spec, 0, GPU_SITE)["spec"]["template"]["spec"]
    probe = probe_manifest(REF, SCAN.spec, GPU_SITE)["spec"]["template"]["spec"]
    for field in ("nodeSelector", "tolerations", "securityContext"):
        assert probe[field] == shard[field], field
    (shard_container,), (probe_container,) = shard["containers"], probe["containers"]
    for field in ("image", "resources", "securityContext"):
        assert probe_container[field] == shard_container[field], field
    assert probe_container["command"] == list(SCAN.spec.payload.gpu_check)
    assert [v["name"] for v in probe["volumes"]] == ["out", "tmp"] and "shard" in [v["name"] for v in shard["volumes"]]
    assert probe["automountServiceAccountToken"] is False and "automountServiceAccountToken" not in shard
    assert probe["activeDeadlineSeconds"] == GPU_SITE.probe_timeout_seconds


def test_pod_passes_the_restricted_pod_security_profile():
    pod = job_manifest(REF, SCAN.spec, 0, GPU_SITE)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = pod["containers"][0]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    assert all("hostPath" not in v for v in pod["volumes"])


def test_invalid_input_and_gpu_unavailable_exit_codes_fail_the_job_without_retries():
    rules = job_manifest(REF, SCAN.spec, 0, GPU_SITE)["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2, 3]
    assert all(type(code) is int for code in rules[0]["onExitCodes"]["values"])  # plain JSON numbers


def test_other_gpu_vendors_and_cpu_only_scans():
    amd = GPU_SITE.model_copy(
        update={"kubernetes": GPU_SITE.kubernetes.model_copy(update={"gpu_resource_name": "amd.com/gpu"})}
    )
    limits = job_manifest(REF, SCAN.spec, 0, amd)["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "amd.com/gpu" in limits and "nvidia.com/gpu" not in limits
    cpu_spec = SCAN.spec.model_copy(update={"gpu": SCAN.spec.gpu.model_copy(update={"count": 0})})
    limits = job_manifest(REF, cpu_spec, 0, None)["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert not any(k.endswith("/gpu") for k in limits)


def test_shard_and_probe_pods_ask_for_and_are_limited_to_the_sites_local_disk():
    def disk(site: Site) -> list[tuple[str | None, str | None]]:
        pods = [job_manifest(REF, SCAN.spec, 0, site), probe_manifest(REF, SCAN.spec, site)]
        resources = [pod["spec"]["template"]["spec"]["containers"][0]["resources"] for pod in pods]
        return [(r["requests"].get("ephemeral-storage"), r["limits"].get("ephemeral-storage")) for r in resources]

    assert disk(GPU_SITE) == [("4Gi", "4Gi")] * 2  # the default
    assert GPU_SITE.kubernetes is not None
    big = GPU_SITE.model_copy(
        update={"kubernetes": GPU_SITE.kubernetes.model_copy(update={"ephemeral_storage": "50Gi"})}
    )
    assert disk(big) == [("50Gi", "50Gi")] * 2
    unset = Site.model_validate({"name": "kueue", "kubernetes": {"ephemeralStorage": None}})
    assert disk(unset) == [(None, None)] * 2
    with pytest.raises(ValidationError, match="ephemeralStorage"):
        Site.model_validate({"name": "bad", "kubernetes": {"ephemeralStorage": "lots"}})


def test_long_scan_names_give_valid_distinct_names():
    long = ScanRef(name="a" * 60, namespace="x", uid="u")
    names = {job_name(long.name, i) for i in range(10)}
    assert len(names) == 10 and all(len(n) <= 63 for n in names)


def test_payload_rbac_names_only_the_scans_record_pages():
    account, role, binding = payload_rbac(REF, 10, pages_per_shard=3)
    (rule,) = role["rules"]
    assert rule["verbs"] == ["get", "patch"] and rule["resources"] == ["configmaps"]  # no create, no list
    assert rule["resourceNames"] == [f"dl1-seed-scan-shard-{i:03d}-p{k}" for i in range(10) for k in range(3)]
    assert binding["subjects"][0]["name"] == account["metadata"]["name"]


def test_a_site_account_that_replaces_the_scans_in_the_pod_is_bound_to_the_scans_role_alone():
    from hpscan.backends.kubernetes.manifests import site_account, site_account_binding

    site = GPU_SITE.model_copy(
        update={"kubernetes": GPU_SITE.kubernetes.model_copy(update={"service_account_name": "gpu-runner"})}
    )
    pod = job_manifest(REF, SCAN.spec, 0, site)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == site_account(site) == "gpu-runner" and site_account(GPU_SITE) is None
    _, role, _ = payload_rbac(REF, 10)
    binding = site_account_binding(REF, "gpu-runner")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpu-runner", "namespace": "physics"}]
    assert binding["metadata"]["ownerReferences"][0]["uid"] == "1234"  # it goes with the scan
    names = {site_account_binding(REF, f"{'a' * 250}-{i}")["metadata"]["name"] for i in range(3)}
    assert len(names) == 3 and all(len(n) <= 63 for n in names)


def test_long_scan_names_leave_room_for_the_page_suffix():
    long = "a" * 60
    names = {page_name(shard_pages_name(long, i), 999_999) for i in range(10)}
    assert len(names) == 10 and all(len(n) <= 63 for n in names)


def test_a_shards_pages_carry_its_shard_file_and_read_back_whole():
    planned = plan(SCAN.metadata.name, SCAN.spec)
    shard_file = planned.shard_file(2)  # 80 combinations
    pages = shard_pages(REF, shard_file, page_size=7)
    assert [p["metadata"]["name"] for p in pages] == [f"dl1-seed-scan-shard-002-p{k}" for k in range(12)]
    assert [p["metadata"]["labels"]["hpscan.io/page"] for p in pages] == [str(k) for k in range(12)]
    assert all(p["metadata"]["labels"]["hpscan.io/role"] == "shard" for p in pages)  # the operator's index sees them
    assert "shard.json" in pages[0]["data"] and all("shard.json" not in p["data"] for p in pages[1:])
    record = ResultRecord(id=shard_file.combinations[9].id, shard=2, parameters=shard_file.combinations[9].parameters,
                          metrics={"val_loss": 0.5}, status="succeeded")  # fmt: skip
    pages[1]["data"].update(record_patch([record])["data"])  # the pod's patch of the page holding combination 9
    read = join_pages(lambda k: pages[k]["data"] if k < len(pages) else None)
    assert read.shard_file == shard_file and read.records == [record] and read.unreadable == 0
    assert read.page_of[shard_file.combinations[9].id] == 1 == 9 // 7
    assert set(read.page_of.values()) == set(range(12))


def test_a_missing_or_foreign_page_is_named():
    import pytest

    pages = shard_pages(REF, plan(SCAN.metadata.name, SCAN.spec).shard_file(0), page_size=30)
    with pytest.raises(ValueError, match="page 2 of 3 is missing"):
        join_pages(lambda k: pages[k]["data"] if k < 2 else None)
    with pytest.raises(ValueError, match="page 1 of 3 says it is page 2 of 3"):
        join_pages(lambda k: pages[2 if k == 1 else k]["data"])
    with pytest.raises(ValueError, match="page 0 is missing"):
        join_pages(lambda k: None)


def job(status: dict, suspend: bool = False) -> dict:
    return {
        "metadata": {
            "name": "s-shard-001",
            "labels": {"hpscan.io/shard": "1"},
            "annotations": {"hpscan.io/site": "gpu"},
        },
        "spec": {"suspend": suspend},
        "status": status,
    }


def test_job_states_map_to_shard_phases():
    assert shard_state(job({})).phase == "Pending"
    assert shard_state(job({"active": 1})).phase == "Running"
    retrying = shard_state(job({"active": 1, "failed": 1}))
    assert (retrying.phase, retrying.reason, retrying.attempts) == ("Running", "Retrying", 2)
    assert (
        shard_state(job({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})).phase == "Succeeded"
    )
    assert shard_state(job({}, suspend=True)).phase == "Suspended"
    failed = shard_state(job({"failed": 3, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}))  # fmt: skip
    assert (failed.phase, failed.reason, failed.site) == ("Failed", "BackoffLimitExceeded", "gpu")


def test_gpu_check_failure_reads_as_gpu_unavailable():
    message = "Container payload for pod physics/s-shard-001-x failed with exit code 3 matching FailJob rule at index 0"
    state = shard_state(job({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": message}]}))  # fmt: skip
    assert state.reason == "GPUUnavailable"


def test_records_round_trip_through_a_configmap_patch():
    planned = plan(SCAN.metadata.name, SCAN.spec)
    combo = planned.combination(5)
    record = ResultRecord(
        id=combo.id, shard=5, parameters=combo.parameters, metrics={"val_loss": 0.6}, status="succeeded"
    )
    data = record_patch([record])["data"]
    assert list(data) == [combo.id]
    assert records_of({**data, "junk": "{not json"}) == ([record], 1)
    page = shard_pages(REF, planned.shard_file(5), page_size=100)[0]["data"]
    assert records_of({**page, **data}) == ([record], 0)  # the shard file's keys are not records


def test_the_timeout_bounds_each_attempt_not_the_whole_job():
    spec = SCAN.spec.model_copy(update={"payload": SCAN.spec.payload.model_copy(update={"timeout_seconds": 600})})
    job = job_manifest(REF, spec, 0, GPU_SITE)
    assert job["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 600
    assert "activeDeadlineSeconds" not in job["spec"]


def test_nothing_may_connect_to_shard_pods_and_they_run_as_a_high_uid():
    from hpscan.backends.kubernetes.manifests import shard_network_policy

    policy = shard_network_policy(REF)
    assert policy["spec"]["policyTypes"] == ["Ingress"] and policy["spec"]["ingress"] == []
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "hpscan.io/scan": "dl1-seed-scan",
        "hpscan.io/role": "shard",
    }
    pod = job_manifest(REF, SCAN.spec, 0, GPU_SITE)["spec"]["template"]
    assert pod["metadata"]["labels"]["hpscan.io/role"] == "shard"  # the policy selects every shard pod
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the payload image's user


def test_with_a_watch_cache_polling_sends_nothing_and_parses_only_what_changed(monkeypatch):
    from hpscan.backends.kubernetes import backend as module
    from hpscan.backends.kubernetes.backend import KubernetesBackend
    from hpscan.job.pages import record_patch

    record = ResultRecord(id="c0-aa", shard=0, parameters={"x": 1}, metrics={"val_loss": 0.5}, status="succeeded")
    job = {"metadata": {"name": "s-shard-000", "labels": {"hpscan.io/shard": "0"}}, "spec": {},
           "status": {"active": 1, "ready": 1}}  # fmt: skip
    configmap = {"metadata": {"name": "s-shard-000", "resourceVersion": "7"}, "data": record_patch([record])["data"]}

    class Cache:
        def jobs(self, namespace, scan):
            return [job]

        def configmaps(self, namespace, scan):
            return [configmap]

    parsed = []
    monkeypatch.setattr(module, "records_of", lambda data: parsed.append(1) or ([record], 0))
    backend = KubernetesBackend(api_client=None, cache=Cache())
    backend.core.api_client.call_api = backend.batch.api_client.call_api = None  # any request would fail
    ref = ScanRef("s", "physics", "u")
    assert backend.poll(ref)[0].phase == "Running"
    assert backend.fetch_records(ref) == [record]
    assert backend.fetch_records(ref) == [] and len(parsed) == 1  # an unchanged ConfigMap is not read again
    configmap["metadata"]["resourceVersion"] = "8"
    assert backend.fetch_records(ref) == [record] and len(parsed) == 2
    assert KubernetesBackend(api_client=None, cache=Cache()).fetch_records(ref) == [record]  # a restart: all again


def test_workers_that_pull_get_an_inbox_their_role_names_and_a_bound_on_what_it_holds():
    from hpscan.api.spec import HPScanSpec
    from hpscan.backends.kubernetes.manifests import payload_rbac, pull_inbox, pull_page
    from hpscan.backends.kubernetes.page_layout import inbox_capacity, page_layout, page_refusals
    from hpscan.job.pages import PAGE_SIZE_KEY, inbox_assignment, inbox_name, pulled_trials

    scan = ScanRef("adaptive", "physics", "u-1")
    document = load_scan(Path("examples/adaptive.yaml")).spec.model_dump(mode="json", by_alias=True)
    spec = HPScanSpec.model_validate(document)
    inbox = pull_inbox(scan, 1, page_size=300)
    assert inbox["metadata"]["name"] == inbox_name("adaptive-shard-001") == "adaptive-shard-001-in"
    assert inbox["metadata"]["labels"]["hpscan.io/role"] == "shard"  # watched with the pages
    assert inbox["data"][PAGE_SIZE_KEY] == "300"
    names = payload_rbac(scan, 2, 1, inboxes=True)[1]["rules"][0]["resourceNames"]
    assert {"adaptive-shard-000-in", "adaptive-shard-001-in", "adaptive-shard-000-p0"} <= set(names)
    assert "adaptive-shard-000-in" not in payload_rbac(scan, 2, 1)[1]["rules"][0]["resourceNames"]
    assert pull_page(scan, 1, 2)["metadata"]["name"] == "adaptive-shard-001-p2"
    # a worker may be handed the whole budget: its pages are counted from the budget
    layout = page_layout(spec, 2)
    assert layout.pages_per_shard == max(1, -(-24 // layout.size))
    assert page_refusals("adaptive", spec, 2) == []
    document["parameters"][2]["range"].pop("count")  # a continuous axis: the budget is the bound
    document["sampling"]["samples"] = 10**6
    big = HPScanSpec.model_validate(document)
    assert inbox_capacity(page_layout(big, 2)) < 10**6
    assert any("a worker's inbox on Kubernetes holds at most" in p for p in page_refusals("adaptive", big, 2))
    lines = (
        '{"trial":{"id":"c0000-aaaaaaaa","parameters":{"x":1}}}\n'
        '{"trial":{"id":"c0001-bbbbbbbb","parameters":{"x":2}}}\n{"withdraw":"c0000-aaaaaaaa"}\n{"end":true}\n'
    )
    assert [t.id for t in pulled_trials({"trials.jsonl": lines})] == ["c0000-aaaaaaaa", "c0001-bbbbbbbb"]
    held = inbox_assignment({"trials.jsonl": lines})
    assert list(held.trials) == ["c0001-bbbbbbbb"] and "c0000-aaaaaaaa" in held.withdrawn and held.ended
    assert records_of({"trials.jsonl": lines, "progress.jsonl": "{}", PAGE_SIZE_KEY: "3"}) == ([], 0)
