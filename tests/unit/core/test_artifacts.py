"""Trained models kept by a scan (spec.artifacts): the pure decision, the local run's folder, the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpscan.api.contract import Objective, ResultRecord
from hpscan.api.spec import Artifacts, HPScan
from hpscan.api.status import ScanPhase
from hpscan.cli import app
from hpscan.core.artifacts import models_to_keep, pick_ranks, rank_records
from hpscan.core.planning import plan
from hpscan.engine import EngineSettings
from hpscan.local_scan import Machine, run_scan
from support import CONTRACT_PAYLOAD
from support.run_observers import Quiet

PAYLOAD = CONTRACT_PAYLOAD
FAST = EngineSettings(poll_seconds=0.05)  # a step every 50 ms: the stand-in payload is quick
CPU_ONLY = Machine(cpus=2, gpus=[])


def record(combination_id: str, value: float | None) -> ResultRecord:
    return ResultRecord(
        id=combination_id,
        shard=0,
        parameters={"x": 1},
        metrics={} if value is None else {"val_loss": value},
        status="failed" if value is None else "succeeded",
    )


def test_top_k_keeps_the_best_and_the_report_s_median_and_worst():
    records = [record(f"c{i}-x", float(v)) for i, v in enumerate([5, 1, 3, 9, 7, 2, 8])] + [record("c9-x", None)]
    ranked = rank_records(records, Objective())
    assert [r.value for r in ranked] == [1, 2, 3, 5, 7, 8, 9]
    assert pick_ranks(len(ranked)) == {"best": 0, "median": 3, "worst": 6}
    keep = models_to_keep(ranked, Artifacts(keep="top", top=2))
    assert keep == {"c1-x", "c5-x", "c0-x", "c3-x"}  # 1 and 2 (top 2), 5 (median), 9 (worst)
    assert models_to_keep(ranked, Artifacts(keep="all")) == {r.id for r in ranked}
    assert models_to_keep(ranked, Artifacts(keep="none")) == set()
    assert models_to_keep([], Artifacts()) == set()


def test_duplicates_rank_by_their_best_value_and_maximise_is_honoured():
    records = [record("c0-a", 0.5), record("c0-a", 0.2), record("c1-b", 0.3)]
    assert [r.id for r in rank_records(records, Objective())] == ["c0-a", "c1-b"]
    assert [r.id for r in rank_records(records, Objective(goal="maximize"))] == ["c0-a", "c1-b"]
    assert rank_records(records, Objective(goal="maximize"))[0].value == 0.5


def test_the_shard_file_asks_for_models_unless_keep_is_none():
    scan = toy_scan({"keep": "none"})
    assert not plan("toy", scan.spec).shard_file(0).artifacts.save_models
    assert plan("toy", toy_scan().spec).shard_file(0).artifacts.save_models
    assert plan("toy", toy_scan().spec).shard_file(0).to_wire()["artifacts"] == {"saveModels": True}


def toy_scan(artifacts: dict | None = None) -> HPScan:
    spec = {
        "parameters": [{"name": "x", "values": [1, 2, 3, 4, 5, 6]}, {"name": "act", "values": ["relu", "elu"]}],
        "sharding": {"shards": 3},
        "gpu": {"count": 0, "required": False},
        "payload": {"image": "local", "command": [sys.executable, str(PAYLOAD)], "settings": {}},
    }
    if artifacts is not None:
        spec["artifacts"] = artifacts
    return HPScan.model_validate({"metadata": {"name": "toy"}, "spec": spec})


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    status = run_scan(toy_scan({"top": 2}), tmp_path, Quiet(), machine=CPU_ONLY, settings=FAST)
    assert status.phase == ScanPhase.SUCCEEDED
    return tmp_path


def test_a_local_run_keeps_top_k_plus_median_and_worst_in_the_run_folder(finished_run: Path):
    kept = sorted(p.name for p in (finished_run / "models").iterdir())
    records = [json.loads(line) for line in (finished_run / "results.jsonl").read_text().splitlines()]
    by_loss = sorted(records, key=lambda r: (r["metrics"]["val_loss"], r["id"]))
    wanted = {by_loss[0]["id"], by_loss[1]["id"], by_loss[(len(by_loss) - 1) // 2]["id"], by_loss[-1]["id"]}
    assert set(kept) == wanted
    assert not list(finished_run.glob("work/*/models/*"))  # the others are deleted
    # a re-run (resume of a finished scan) changes nothing
    run_scan(toy_scan({"top": 2}), finished_run, Quiet(), machine=CPU_ONLY, settings=FAST)
    assert sorted(p.name for p in (finished_run / "models").iterdir()) == kept


def test_cli_lists_and_fetches_kept_models(finished_run: Path, tmp_path_factory):
    runner = CliRunner()
    listing = runner.invoke(app, ["models", str(finished_run), "--json"])
    assert listing.exit_code == 0, listing.output
    rows = json.loads(listing.output)
    assert [row["rank"] for row in rows] == sorted(row["rank"] for row in rows) and rows[0]["rank"] == 1
    table = runner.invoke(app, ["models", str(finished_run)])
    assert "kept models" in table.output and rows[0]["id"] in table.output

    target = tmp_path_factory.mktemp("fetched") / "best"
    fetched = runner.invoke(app, ["fetch-model", str(finished_run), "--out", str(target)])
    assert fetched.exit_code == 0, fetched.output
    assert json.loads((target / "model.json").read_text())["id"] == rows[0]["id"]

    by_id = tmp_path_factory.mktemp("fetched") / "worst"
    assert (
        runner.invoke(app, ["fetch-model", str(finished_run), "--id", rows[-1]["id"], "--out", str(by_id)]).exit_code
        == 0
    )
    assert (by_id / "weights.txt").exists()

    missing = runner.invoke(
        app, ["fetch-model", str(finished_run), "--rank", "5", "--out", str(tmp_path_factory.mktemp("x") / "m")]
    )
    assert missing.exit_code == 2 and "no kept model of rank 5" in missing.output
    taken = runner.invoke(app, ["fetch-model", str(finished_run), "--out", str(target)])
    assert taken.exit_code == 2 and "not an empty folder" in taken.output
    # A name that is no folder is an HPScan on the cluster (tests/integration/store/test_model_store.py reads one).
    cluster = runner.invoke(app, ["models", "my-scan-on-kubernetes"], env={"KUBECONFIG": "/nonexistent/kubeconfig"})
    assert cluster.exit_code == 1 and "no Kubernetes configuration found" in cluster.output
    path = runner.invoke(app, ["models", str(finished_run / "no-such-run")])
    assert path.exit_code == 2 and "no such run folder" in path.output


def test_keep_none_saves_nothing(tmp_path: Path):
    run_scan(toy_scan({"keep": "none"}), tmp_path, Quiet(), machine=CPU_ONLY, settings=FAST)
    assert not (tmp_path / "models").exists() and not list(tmp_path.glob("work/*/models"))


def test_run_set_overrides_make_a_reduced_local_form_of_a_cluster_scan():
    from hpscan.cli.run import apply_overrides
    from hpscan.core.manifest import load_scan
    from hpscan.errors import ManifestError

    scan = load_scan(Path(__file__).parents[3] / "examples" / "dl1-seed-scan.yaml")
    reduced = apply_overrides(
        scan,
        [
            "gpu.count=0",
            "gpu.required=false",
            "payload.settings.epochs=5",
            "spec.payload.settings.data.synthetic.jets=120000",
        ],
    )
    assert reduced.spec.gpu.count == 0 and not reduced.spec.gpu.required
    assert reduced.spec.payload.settings["epochs"] == 5
    assert reduced.spec.payload.settings["data"]["synthetic"] == {"jets": 120000, "seed": 1}
    assert plan("s", reduced.spec).total == 800
    with pytest.raises(ManifestError, match="PATH=VALUE"):
        apply_overrides(scan, ["epochs"])
    with pytest.raises(ManifestError, match="retries"):
        apply_overrides(scan, ["retries=-3"])
