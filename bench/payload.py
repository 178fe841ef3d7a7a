"""Benchmark: the dl1 payload's training path against a plain ``model.fit`` on NumPy arrays.

Both train the same combinations (DL1r-sized networks, the same batch size) on the same synthetic jets for
the same epochs, validation included, and report trial-jets per second (jets x epochs x combinations / s,
set-up and compilation included). The two paths alternate ``--repeat`` times and each keeps its best time, so
load from other processes skews neither. The last line is ``speedup=<payload / plain>``.

    .venv/bin/python bench/payload.py                       # 200k jets, 4 combinations, batch 1000
    .venv/bin/python bench/payload.py --jets 1000000 --combinations 8
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

LEARNING_RATES = (1e-3, 2e-3, 5e-4, 3e-3, 1.5e-3, 7e-4, 4e-3, 2.5e-3)


def combinations(count: int, batch_size: int) -> list[dict]:
    """``count`` DL1r-sized combinations differing in learning rate and activation."""
    return [
        {
            **{f"layer{i + 1}": w for i, w in enumerate((256, 128, 60, 48, 36, 24, 12, 6))},
            "learning_rate": LEARNING_RATES[k % len(LEARNING_RATES)],
            "batch_size": batch_size,
            "activation": "relu" if k % 2 == 0 else "elu",
        }
        for k in range(count)
    ]


def plain_fit(dataset, combos: list[dict], epochs: int) -> tuple[float, float]:
    """Wall and CPU seconds for ``keras.Model.fit`` on NumPy arrays, one combination after the other."""
    import keras
    import numpy as np

    from dl1.model import parse_combination

    y = np.eye(3, dtype="float32")[dataset.train.y]
    y_val = np.eye(3, dtype="float32")[dataset.validation.y]
    start, cpu_start = time.perf_counter(), time.process_time()
    for params in combos:
        config = parse_combination(params)
        model = keras.Sequential(
            [keras.Input((dataset.train.x.shape[1],))]
            + [keras.layers.Dense(w, activation=config.activation) for w in config.layers]
            + [keras.layers.Dense(3, activation="softmax")]
        )
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="categorical_crossentropy")
        model.fit(
            dataset.train.x,
            y,
            sample_weight=dataset.train.weights,
            batch_size=config.batch_size,
            epochs=epochs,
            validation_data=(dataset.validation.x, y_val, dataset.validation.weights),
            verbose=0,
        )
    return time.perf_counter() - start, time.process_time() - cpu_start


def payload_path(
    dataset, combos: list[dict], epochs: int, fuse: int, xla: str = "auto", precision: str = "auto"
) -> float:
    """Seconds for the payload's own path (``dl1.train.train_many``), as ``dl1 train-shard`` runs it."""
    from dl1.model import parse_combination
    from dl1.train import ResidentData, TrainSettings, train_many

    settings = TrainSettings.model_validate(
        {
            "epochs": epochs,
            "patience": 0,
            "fuse": fuse,
            "xla": xla,
            "precision": precision,
            "data": {"synthetic": {"jets": 60, "seed": 1}},
        }
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    data = ResidentData(dataset.train, dataset.validation)
    done: list = []
    train_many(data, [(f"c{k}", parse_combination(p)) for k, p in enumerate(combos)], settings, done.append)
    elapsed = time.perf_counter() - start, time.process_time() - cpu_start
    failed = [o.key for o in done if o.status != "succeeded"]
    if failed:
        raise SystemExit(f"payload path: combinations failed: {failed}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=200_000, help="synthetic jets (all splits)")
    parser.add_argument("--combinations", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each path, alternating; the best counts")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--fuse", type=int, default=4, help="combinations per fused graph in the payload path")
    parser.add_argument("--xla", choices=["auto", "on", "off"], default="auto", help="XLA for the payload's step")
    parser.add_argument(
        "--precision", choices=["float32", "bfloat16"], default="float32", help="arithmetic of the payload's step"
    )
    args = parser.parse_args()

    import tensorflow as tf

    from dl1.data import load_dataset
    from dl1.train import device_name

    dataset = load_dataset({"synthetic": {"jets": args.jets, "seed": 1}})
    combos = combinations(args.combinations, args.batch_size)
    work = len(dataset.train) * args.epochs * len(combos)
    threads = os.cpu_count()
    print(f"device: {device_name()}, {threads} CPU cores, TensorFlow {tf.__version__}")
    print(f"data: {dataset.describe()}")
    print(f"payload path: fuse {args.fuse}, XLA {args.xla}, {args.precision} arithmetic")
    print(f"work: {len(combos)} DL1r-sized combinations x {args.epochs} epochs, batch size {args.batch_size}")

    # alternate the two paths and keep each one's best time: other load on the machine only ever slows a run.
    # CPU seconds are shown too: they are less sensitive to other processes than wall time.
    plain: list[tuple[float, float]] = []
    payload: list[tuple[float, float]] = []
    for run in range(1, args.repeat + 1):
        plain.append(plain_fit(dataset, combos, args.epochs))
        print(f"  run {run}: plain model.fit  {plain[-1][0]:7.1f} s wall {plain[-1][1]:7.1f} s CPU")
        payload.append(payload_path(dataset, combos, args.epochs, args.fuse, args.xla, args.precision))
        print(f"  run {run}: dl1 payload path {payload[-1][0]:7.1f} s wall {payload[-1][1]:7.1f} s CPU")
    plain_s, payload_s = min(w for w, _ in plain), min(w for w, _ in payload)
    plain_cpu, payload_cpu = min(c for _, c in plain), min(c for _, c in payload)
    print(f"plain model.fit : {work / plain_s:10,.0f} trial-jets/s wall, {work / plain_cpu:10,.0f} per CPU-second")
    print(f"dl1 payload path: {work / payload_s:10,.0f} trial-jets/s wall, {work / payload_cpu:10,.0f} per CPU-second")
    print(f"CPU-time speedup {plain_cpu / payload_cpu:.2f}")
    print(f"speedup={plain_s / payload_s:.2f}")


if __name__ == "__main__":
    main()
