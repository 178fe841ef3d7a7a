"""Record pages: a shard of any size is paged so that no page, full of the largest records, passes the object limit;
what does not fit (a record's long error, a settings blob, a Role past the limit) is cut or refused, and says so."""

from __future__ import annotations

import json
import math

import pytest

from hpscan.api.contract import Combination, ResultRecord
from hpscan.api.spec import HPScanSpec
from hpscan.backends.base import ScanRef
from hpscan.backends.kubernetes import KubernetesBackend, page_layout, payload_rbac, shard_pages
from hpscan.backends.kubernetes.page_layout import OBJECT_LIMIT, PAGE_BUDGET
from hpscan.core.planning import plan
from hpscan.job.pages import compact, fit_record, join_pages, record_limit, record_patch, stored_size

REF = ScanRef(name="paged", namespace="physics", uid="u-paged")
PAYLOAD = {"image": "x:1", "command": ["my-payload"]}


def spec_of(parameters: list[dict], sharding: dict, **more: object) -> HPScanSpec:
    return HPScanSpec.model_validate({"parameters": parameters, "sharding": sharding, "payload": PAYLOAD, **more})


def object_size(obj: object) -> int:
    return len(json.dumps(obj, separators=(",", ":")))


# Long string values with quotes (escaped in the object's JSON), a continuous axis, many metrics, huge errors:
# the worst a page can hold.
AWKWARD = [
    {"name": "optimizer_with_a_long_parameter_name", "values": ['adam "amsgrad"', "sgd" * 30, "rmsprop"]},
    {"name": "learning_rate", "range": {"min": 1.0e-5, "max": 1.0e-1, "scale": "log"}},
    {"name": "layers", "values": [1, 2, 3, 4, 5, 6, 7, 8]},
]


@pytest.mark.parametrize(
    "parameters",
    [[{"name": "a", "values": list(range(100))}, {"name": "b", "values": list(range(30))}], AWKWARD],
    ids=["numbers", "awkward"],
)
def test_a_page_full_of_the_largest_records_stays_under_the_object_limit(parameters):
    sampling = {"sampling": {"strategy": "random", "samples": 3000, "seed": 1}} if parameters is AWKWARD else {}
    spec = spec_of(parameters, {"shards": 2}, **sampling)
    layout = page_layout(spec, 2)
    shard_file = plan("paged", spec).shard_file(0)
    page = shard_pages(REF, shard_file, layout.size)[0]
    held = json.loads(page["data"]["page.json"])["combinations"]
    assert len(held) == layout.size > 100  # a page holds hundreds of records, not a handful
    by_id = {c.id: c for c in shard_file.combinations}
    records = []
    for combination in held:
        huge = ResultRecord(
            id=combination["id"], shard=0, parameters=combination["parameters"], status="failed",
            metrics={f"metric_{i}": 1.0e-300 for i in range(40)}, device='GPU:0 "NVIDIA" H200' * 5,
            error='Traceback (most recent call last): "x"\n' * 500,
        )  # fmt: skip
        fitted = fit_record(huge, record_limit(by_id[combination["id"]]), "val_loss")
        assert stored_size(compact(fitted.to_wire())) <= record_limit(by_id[combination["id"]])
        records.append(fitted)
    page["data"].update(record_patch(records)["data"])
    # What the API server keeps besides: each record key in managedFields, for the operator's and the pod's manager.
    page["metadata"]["managedFields"] = [
        {"manager": manager, "operation": "Update", "apiVersion": "v1", "time": "2026-11-29T18:00:00Z",
         "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {f"f:{key}": {} for key in page["data"]}}}
        for manager in ("hpscan", "Python")
    ]  # fmt: skip
    data_and_keys = object_size(page["data"]) + object_size(page["metadata"]["managedFields"][1]["fieldsV1"])
    assert data_and_keys <= PAGE_BUDGET
    assert object_size(page) < OBJECT_LIMIT


def test_a_record_too_large_for_its_page_keeps_the_head_of_its_error_and_says_how_long_it_was():
    small = ResultRecord(id="c0001-aa", shard=0, parameters={"x": 1}, metrics={"val_loss": 0.5}, status="succeeded")
    assert fit_record(small, 600, "val_loss") == small
    failed = small.model_copy(update={"status": "failed", "metrics": {}, "error": "ValueError: " + "é" * 5000})
    cut = fit_record(failed, 600, "val_loss")
    assert cut.error.startswith("ValueError: éé") and cut.error.endswith("[cut from 5,012 characters]")
    assert 500 < stored_size(compact(cut.to_wire())) <= 600
    chatty = small.model_copy(update={"metrics": {"val_loss": 0.5, **{f"m{i}": 1.0 for i in range(100)}}})
    assert fit_record(chatty, 600, "val_loss").metrics == {"val_loss": 0.5}  # the objective survives


def test_a_shard_of_any_size_is_paged_and_its_pods_role_names_every_page():
    """One shard of 1,000,000 combinations (the planner's limit) is 1,800-odd pages; one of 20,000 (one
    ConfigMap held 2,400 records, and its shard file alone passed 1 MiB near 7,000) is paged and read back whole."""
    axes = [{"name": "a", "values": list(range(1000))}, {"name": "b", "values": list(range(1000))}]
    spec = spec_of(axes, {"shards": 1})
    assert KubernetesBackend().refusals(plan("paged", spec)) == []
    layout = page_layout(spec, 1)
    assert layout.pages_per_shard == math.ceil(1_000_000 / layout.size) > 1000
    (_, role, _) = payload_rbac(REF, 1, layout.pages_per_shard)
    assert object_size(role) < OBJECT_LIMIT

    spec = spec_of([axes[0], {"name": "b", "values": list(range(20))}], {"shards": 1})
    planned = plan("paged", spec)
    layout = page_layout(spec, 1)
    assert layout.pages_per_shard == math.ceil(20_000 / layout.size)
    pages = shard_pages(REF, planned.shard_file(0), layout.size)
    assert len(pages) == layout.pages_per_shard and all(object_size(p) < OBJECT_LIMIT for p in pages)
    assert max(object_size(p) for p in pages) < 64 * 1024  # the shard file's part: records have room
    read = join_pages(lambda k: pages[k]["data"])
    assert read.shard_file == planned.shard_file(0)
    (_, role, _) = payload_rbac(REF, 1, layout.pages_per_shard)
    assert set(role["rules"][0]["resourceNames"]) == {p["metadata"]["name"] for p in pages}
    assert object_size(role) < OBJECT_LIMIT


def test_what_no_page_or_role_can_hold_is_refused_before_anything_is_submitted():
    from hpscan.controller.reconcile import reconcile_scan

    axes = [{"name": "a", "values": list(range(1000))}, {"name": "b", "values": list(range(100))}]
    one_a_shard = spec_of(axes, {"combinationsPerShard": 1})  # 100,000 shards: one page each
    (refusal,) = KubernetesBackend().refusals(plan("paged", one_a_shard))
    assert "Role would name 100,000 record pages" in refusal and "use fewer shards" in refusal
    body = {"apiVersion": "hpscan.io/v1alpha1", "kind": "HPScan", "spec": one_a_shard.to_wire(),
            "metadata": {"name": "paged", "namespace": "physics", "uid": "u-big", "generation": 1}}  # fmt: skip
    outcome = reconcile_scan(body, {"kubernetes": KubernetesBackend()})
    assert outcome.status.phase == "Failed" and "use fewer shards" in outcome.status.message

    blob = spec_of(axes[:1], {"shards": 1}, payload={**PAYLOAD, "settings": {"weights": "0" * 400_000}})
    (refusal,) = KubernetesBackend().refusals(plan("paged", blob))
    assert "cannot hold one combination" in refusal and "spec.payload.settings takes up to 393 KiB" in refusal


def test_the_operators_index_keeps_a_pages_records_not_its_managed_fields():
    """A page's managedFields name every record key again; the watch cache keeps name, resourceVersion and data."""
    import kopf

    from hpscan.controller.handlers import shard_configmaps

    raw = {
        "metadata": {"name": "paged-shard-000-p0", "resourceVersion": "7", "labels": {"hpscan.io/scan": "paged"},
                     "managedFields": [{"manager": "Python", "fieldsV1": {"f:data": {"f:c0001-aa": {}}}}]},
        "data": {"c0001-aa": "{}"},
    }  # fmt: skip
    ((key, held),) = shard_configmaps(
        namespace="physics", labels=raw["metadata"]["labels"], body=kopf.Body(raw)
    ).items()
    assert key == ("physics", "paged") and held["data"] == raw["data"]
    assert held["metadata"]["resourceVersion"] == "7" and "managedFields" not in held["metadata"]


def test_a_dl1_record_with_its_physics_fits_its_room_and_a_cut_keeps_every_objective_and_its_error():
    """A real dl1 record (dl1 train-shard on a two-layer scan, its 38 metrics: losses, rejections with errors at
    eight working points, the network's cost) fits RECORD_ROOM with a device name as long as an H100's; cut to a
    smaller room, the objectives of a multi-objective scan survive with their errors."""
    metrics = {"loss": 0.782218873500824, "val_loss": 0.7607998847961426, "val_accuracy": 0.6723135113716125,
               "best_epoch": 3.0, "n_parameters": 5059.0, "inference_ms_per_1k_jets": 0.6535}  # fmt: skip
    for prefix, flavours, points in (
        ("", ("light", "c"), (60, 70, 77, 85)),
        ("ctag_", ("light", "b"), (20, 30, 40, 50)),
    ):
        for flavour in flavours:
            for point in points:
                metrics[f"{prefix}{flavour}_rejection_{point}"] = 1.235e4  # 4 significant digits, the longest form
                metrics[f"{prefix}{flavour}_rejection_{point}_err"] = 1.235e-05
    combination = Combination(id="c123456-0a1b2c3d", parameters={"layer1": 64, "layer2": 32, "learning_rate": 0.001,
                                                                 "activation": "relu"})  # fmt: skip
    record = ResultRecord(
        id=combination.id, shard=12, parameters=dict(combination.parameters), metrics=metrics, status="succeeded",
        started_at="2026-12-06T15:47:52.372625Z", finished_at="2026-12-06T15:47:53.353017Z",
        duration_seconds=0.9803917407989502, device="GPU:0 NVIDIA H100 80GB HBM3", epochs=30, max_epochs=30,
    )  # fmt: skip
    limit = record_limit(combination)
    assert fit_record(record, limit, "val_loss") == record  # nothing is cut
    objectives = ["light_rejection_77", "light_rejection_77_err", "c_rejection_77", "c_rejection_77_err"]
    cut = fit_record(record, stored_size(compact(combination.model_dump(mode="json"))) + 512, objectives)
    assert cut.metrics == {name: metrics[name] for name in objectives}
