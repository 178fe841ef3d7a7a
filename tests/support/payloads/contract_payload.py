"""A tiny payload that honours the hpscan payload contract, for testing the runner without TensorFlow.
`contract_payload.py gpu-check` is the site probe's stand-in (see gpu_check).

It is a stand-in for a real payload (the real one, dl1, is tested end to end in tests/integration): it reads
the shard file, "trains" each combination not yet recorded by computing a deterministic loss from its
parameters, appends one record per combination to OUT/results.jsonl, and logs each trained id to
OUT/trained.log so tests can check that nothing is trained twice. Behaviour knobs come from
payload.settings.contractPayload: sleep (seconds per combination), finishOnTerm (on SIGTERM, finish and record the
combination in training, then exit 143, as dl1 ends its epoch), failAttempts {shard: n} (exit 1 on the
first n attempts of a shard, after one record), exitCode (exit with it at once), failIds (record as failed),
trainedLog (an absolute path that also gets each trained id: outlives a pod's emptyDir). From the environment
(what a site's env sets): CONTRACT_GPU_LOST_AFTER=n exits 3 after n combinations of an attempt. When the shard file asks
for models (artifacts.saveModels), each succeeded combination gets OUT/models/<id>/ with model.json and weights.txt.

A shard file with ``pull: true`` makes it a worker that pulls (hpscan.api.trials, re-implemented here in plain JSON
as a third-party payload would): it trains the trials of OUT/trials.jsonl as they come, ``epochs`` (knob, default
3) epochs each with a falling val_loss reported to OUT/progress.jsonl, stops a trial named in OUT/stop.jsonl at the
next epoch boundary (recorded pruned), and exits 0 once it read the end line and recorded all it holds.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path


def gpu_check() -> int:
    """The site probe's stand-in (no GPU exists here): exits with CONTRACT_GPU_CHECK_EXIT (0 when unset), saying so
    the way `dl1 gpu-check --require` does. A site's env sets it, as a site admin's preload fix would change it."""
    code = int(os.environ.get("CONTRACT_GPU_CHECK_EXIT", "0"))
    print("gpu-check: 1 GPU usable (stand-in)" if code == 0 else f"gpu-check: no usable GPU (stand-in, exit {code})")
    return code


def main(argv: list[str]) -> int:
    if argv[:1] == ["gpu-check"]:
        return gpu_check()
    shard_path, out = Path(argv[0]), Path(argv[argv.index("--out") + 1])
    shard = json.loads(shard_path.read_text())
    knobs = shard["settings"].get("contractPayload", {})
    out.mkdir(parents=True, exist_ok=True)
    if knobs.get("exitCode") is not None:
        print(f"exiting with {knobs['exitCode']} as asked", file=sys.stderr)
        return int(knobs["exitCode"])
    attempts_file = out / "attempts"
    attempt = int(attempts_file.read_text()) + 1 if attempts_file.exists() else 1
    attempts_file.write_text(str(attempt))
    fail_first = int(knobs.get("failAttempts", {}).get(str(shard["shard"]), 0))
    results = out / "results.jsonl"
    done = (
        {json.loads(line)["id"] for line in results.read_text().splitlines() if line.strip()}
        if results.exists()
        else set()
    )
    if shard.get("pull"):
        return pull(shard, knobs, out, done)
    trained = 0
    stopping: list[int] = []
    if knobs.get("finishOnTerm"):
        signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    for combination in shard["combinations"]:
        if stopping:
            print("stopped by SIGTERM after recording the combination in training", file=sys.stderr)
            return 128 + stopping[0]
        if combination["id"] in done:
            continue
        if attempt <= fail_first and trained == 1:
            print(f"attempt {attempt}: simulated crash", file=sys.stderr)
            return 1
        if trained == int(os.environ.get("CONTRACT_GPU_LOST_AFTER", "-1")):  # a site whose GPUs break mid-scan
            print(f"no usable GPU any more after {trained} combination(s) (stand-in)", file=sys.stderr)
            return 3
        started = datetime.now(UTC)
        time.sleep(float(knobs.get("sleep", 0.0)))
        numbers = [v for v in combination["parameters"].values() if isinstance(v, int | float)]
        loss = 1.0 + sum((v - 3) ** 2 for v in numbers) / 10
        failed = combination["id"] in knobs.get("failIds", [])
        record = {
            "id": combination["id"],
            "shard": shard["shard"],
            "parameters": combination["parameters"],
            "metrics": {} if failed else objective_values(shard, loss, numbers),
            "status": "failed" if failed else "succeeded",
            "error": "diverged (NaN loss)" if failed else None,
            "startedAt": started.isoformat(),
            "finishedAt": datetime.now(UTC).isoformat(),
            "durationSeconds": 0.0,
            "device": "CPU",
            "epochs": 1,
        }
        if shard.get("artifacts", {}).get("saveModels") and not failed:
            folder = out / "models" / combination["id"]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "weights.txt").write_text(f"{loss}\n")
            (folder / "model.json").write_text(
                json.dumps({"id": combination["id"], "parameters": combination["parameters"]})
            )
        with results.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        for log in [out / "trained.log", *([Path(knobs["trainedLog"])] if knobs.get("trainedLog") else [])]:
            with log.open("a") as handle:
                handle.write(combination["id"] + "\n")
        trained += 1
    return 0


def objective_values(shard: dict, loss: float, numbers: list[float]) -> dict[str, float]:
    """The loss under the objective's name; a multi-objective scan's other objectives get the sum of the numeric
    parameters (a "size" that trades off against the loss, which is smallest at 3)."""
    values = {objective["metric"]: float(sum(numbers)) for objective in shard.get("objectives", [])[1:]}
    return {shard["objective"]["metric"]: loss, **values}


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]


def _append(path: Path, value: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(value) + "\n")


def pull(shard: dict, knobs: dict, out: Path, done: set[str]) -> int:
    """A worker: trials from OUT/trials.jsonl until the end line, epochs reported, stops honoured."""
    epochs = int(knobs.get("epochs", 3))
    metric = shard["objective"]["metric"]
    while True:
        lines = _lines(out / "trials.jsonl")
        held: dict[str, dict] = {}  # in order: a withdraw takes a trial back, a later hand-out gives it again
        for line in lines:
            if "trial" in line:
                held[line["trial"]["id"]] = line["trial"]
            elif "withdraw" in line:
                held.pop(line["withdraw"], None)
        todo = [trial for trial_id, trial in held.items() if trial_id not in done]
        if not todo:
            if {"end": True} in lines:
                return 0
            time.sleep(0.1)
            continue
        trial = todo[0]
        numbers = [v for v in trial["parameters"].values() if isinstance(v, int | float)]
        loss = 1.0 + sum((v - 3) ** 2 for v in numbers) / 10
        started, status, ran, value = datetime.now(UTC), "succeeded", 0, loss
        for epoch in range(1, epochs + 1):
            time.sleep(float(knobs.get("sleep", 0.0)) / epochs)
            value = loss * (1 + (epochs - epoch) / epochs)  # falls to the final loss: a bad trial stays bad
            ran = epoch
            _append(out / "progress.jsonl", {"id": trial["id"], "epoch": epoch, "metrics": {metric: value}})
            stops = {line["id"] for line in _lines(out / "stop.jsonl")}
            if trial["id"] in stops and epoch < epochs:
                status = "pruned"
                break
        record = {
            "id": trial["id"],
            "shard": shard["shard"],
            "parameters": trial["parameters"],
            "metrics": {metric: value},
            "status": status,
            "startedAt": started.isoformat(),
            "finishedAt": datetime.now(UTC).isoformat(),
            "device": "CPU",
            "epochs": ran,
            "maxEpochs": epochs,
        }
        _append(out / "results.jsonl", record)
        for log in [out / "trained.log", *([Path(knobs["trainedLog"])] if knobs.get("trainedLog") else [])]:
            with log.open("a") as handle:
                handle.write(trial["id"] + "\n")
        done.add(trial["id"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
