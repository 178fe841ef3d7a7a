"""The ``dl1`` command: generate jets, train a shard, check the GPU, evaluate a network.

Exit codes (hpscan.api.contract.PayloadExit): 0 done (single combinations of a shard may have failed: their
records say so), 2 bad input (settings, parameters, files), 3 a GPU is required but unusable; 1 anything
unexpected. Errors are one line.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

# quiet TensorFlow before it is imported anywhere: the user should read our lines, not its banner
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from dl1.errors import DL1Error, GPUUnavailableError
from hpscan.api.contract import LAST_WORDS_ENV, PayloadExit
from hpscan.clihelp import HelpCommand, HelpGroup

app = typer.Typer(
    help="DL1 b-tagging payload for hpscan: trains one network per combination of a shard file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=HelpGroup,
)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _json_safe(value: Any) -> Any:
    """Replace NaN and infinities (not JSON) by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


@app.command(cls=HelpCommand)
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="HDF5 file to write (dumper layout, dataset 'jets').")],
    jets: Annotated[int, typer.Option(help="Number of jets.", min=1)] = 100_000,
    seed: Annotated[int, typer.Option(help="Generator seed: the same seed gives the same jets.", min=0)] = 1,
) -> None:
    """Write synthetic ttbar-like jets with the DL1r inputs in the training-dataset-dumper layout."""
    from dl1.synthetic import generate_file

    if out.parent and not out.parent.exists():
        raise DL1Error(f"{out.parent}: no such directory")
    n = generate_file(out, jets, seed)
    _say(f"wrote {n:,} jets (seed {seed}) to {out}")


@app.command("train-shard", cls=HelpCommand)
def train_shard(
    shard_file: Annotated[Path, typer.Argument(help="Shard file (JSON, hpscan's ShardFile).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for results.jsonl (created).")] = Path("."),
    skip_gpu_check: Annotated[
        bool, typer.Option(help="Do not run the GPU check even if the shard requires a GPU.")
    ] = False,
) -> None:
    """Train every combination of a shard; append one record per combination to OUT/results.jsonl."""
    from dl1.shard import ShardRun, read_shard_file

    run = ShardRun(read_shard_file(shard_file), out)
    if not skip_gpu_check:
        run.check_gpu()
    run.run()


@app.command("gpu-check", cls=HelpCommand)
def gpu_check(
    require: Annotated[
        bool, typer.Option("--require", help="Exit 3 with a one-line reason when no usable GPU.")
    ] = False,
    min_compute_capability: Annotated[str | None, typer.Option(help='Lowest compute capability, e.g. "7.0".')] = None,
    min_memory_mb: Annotated[int | None, typer.Option(help="Lowest GPU memory, MiB.")] = None,
) -> None:
    """Check that a GPU is really usable (device nodes, driver, TensorFlow, a matrix product); print JSON."""
    from dl1.gpucheck import Probes, Requirement, check

    report = check(Probes.system(), Requirement(1, min_compute_capability, min_memory_mb))
    print(json.dumps(_json_safe(report.to_json()), indent=2))
    if require and not report.ok:
        raise GPUUnavailableError(report.reason)


def _read_settings(path: Path) -> dict[str, Any]:
    """The settings of a shard file or settings JSON (its ``settings`` or the whole object)."""
    from dl1.errors import SettingsError

    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise DL1Error(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise SettingsError(f"{path}: not JSON ({exc})") from None
    return dict(raw.get("settings", raw)) if isinstance(raw, dict) else {}


def _print_metrics(metrics: dict[str, Any], f_c: float, f_b: float) -> None:
    def shown(value: float, error: float | None, passing: int) -> str:
        text = f"{value:.1f}" if math.isfinite(value) else "inf"
        return f"{text} ± {error:.1f} ({passing} pass)" if error is not None else f"{text} ({passing} pass)"

    jets = metrics["jets"]
    _say(f"test jets: {jets['b']:,} b, {jets['c']:,} c, {jets['light']:,} light")
    _say(f"b-tagging, D_b with f_c = {f_c:g}:")
    for name, wp in metrics["working_points"].items():
        _say(
            f"  {name}% b-eff.: light rejection {shown(wp['light_rejection'], wp['light_rejection_error'], wp['light_passing'])}, "
            f"c rejection {shown(wp['c_rejection'], wp['c_rejection_error'], wp['c_passing'])}"
        )
    _say(f"c-tagging, D_c with f_b = {f_b:g}:")
    for name, wp in metrics["c_tagging"].items():
        _say(
            f"  {name}% c-eff.: light rejection {shown(wp['light_rejection'], wp['light_rejection_error'], wp['light_passing'])}, "
            f"b rejection {shown(wp['b_rejection'], wp['b_rejection_error'], wp['b_passing'])}"
        )


@app.command(cls=HelpCommand)
def evaluate(
    shard_or_settings: Annotated[
        Path | None,
        typer.Argument(
            help="Shard file or settings JSON (its 'settings.data' or 'data' names the data). Without --model a "
            "combination is trained on its training split; with --model its test split is the test set."
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="A saved model folder (hpscan fetch-model, or RUN/models/<id>): evaluate it, no training."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="With --model: a dumper-style HDF5 file; all its b, c and light jets are the test set."
        ),
    ] = None,
    parameters: Annotated[
        str, typer.Option(help='Combination to train, JSON, e.g. \'{"layer1": 64, "learning_rate": 0.001}\'.')
    ] = "{}",
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON file for the metrics.")] = Path("metrics.json"),
    f_c: Annotated[float, typer.Option("--fc", help="c fraction in D_b.", min=0.0, max=1.0)] = 0.018,
    f_b: Annotated[float, typer.Option("--fb", help="b fraction in D_c (c-tagging).", min=0.0, max=1.0)] = 0.2,
    epochs: Annotated[int | None, typer.Option(help="Override settings.epochs.", min=1)] = None,
) -> None:
    """Tagging metrics (b- and c-tagging, with statistical uncertainties) of a network on a test set, as JSON.

    Either train one combination on the settings' training split, or (--model) evaluate a saved model on a file
    (--data) or on the settings' test split."""
    from dl1.errors import ParameterError

    if model is not None:
        _evaluate_model(model, data, shard_or_settings, out, f_c, f_b)
        return
    if shard_or_settings is None:
        raise ParameterError("give a shard or settings file to train a combination, or --model DIR to evaluate one")
    settings_raw = _read_settings(shard_or_settings)
    if epochs:
        settings_raw["epochs"] = epochs
    try:
        combo = json.loads(parameters)
    except ValueError as exc:
        raise ParameterError(f"--parameters is not JSON ({exc})") from None
    if not isinstance(combo, dict):
        raise ParameterError("--parameters must be a JSON object")

    from dl1.data import load_dataset
    from dl1.metrics import tagging_metrics
    from dl1.model import parse_combination
    from dl1.train import parse_settings, train_combination

    settings = parse_settings(settings_raw)
    parse_combination(combo, settings.model_defaults())
    dataset = load_dataset(settings.data)
    _say(f"data: {dataset.describe()}")
    outcome = train_combination(
        combo,
        dataset,
        settings,
        on_epoch=lambda _key, epoch, m: _say(
            f"epoch {epoch}/{settings.epochs}: loss {m['loss']:.4f}, val_loss {m['val_loss']:.4f}, val_accuracy {m['val_accuracy']:.3f}"
        ),
    )
    if outcome.status != "succeeded" or outcome.model is None:
        raise DL1Error(f"training failed: {outcome.error}")
    probs = outcome.model.predict(dataset.test.x)
    metrics = tagging_metrics(probs, dataset.test.y, f_c=f_c, f_b=f_b)
    metrics["training"] = {"parameters": combo, "epochs": outcome.epochs, **outcome.metrics}
    out.write_text(json.dumps(_json_safe(metrics), indent=1))
    _print_metrics(metrics, f_c, f_b)
    _say(f"val_loss {outcome.metrics['val_loss']:.4f}; wrote {out}")


def _evaluate_model(
    model_dir: Path, data_file: Path | None, settings_file: Path | None, out: Path, f_c: float, f_b: float
) -> None:
    from dl1.artifacts import load_model
    from dl1.errors import ParameterError
    from dl1.metrics import tagging_metrics
    from dl1.variables import FLAVOUR_LABELS, LABEL

    if (data_file is None) == (settings_file is None):
        raise ParameterError("with --model, give the test jets: --data FILE.h5, or a settings file (its test split)")
    network = load_model(model_dir)
    if data_file is not None:
        import numpy as np

        from dl1.data import read_jets

        jets = read_jets(data_file, network.variables)
        jets = jets[np.isin(jets[LABEL], FLAVOUR_LABELS)]
        source = str(data_file)
    else:
        assert settings_file is not None
        from dl1.data import load_dataset
        from dl1.train import parse_settings

        dataset = load_dataset(parse_settings(_read_settings(settings_file)).data)
        jets = dataset.test.jets
        source = f"the test split of {settings_file}"
    import numpy as np

    y = np.searchsorted(np.array(FLAVOUR_LABELS), jets[LABEL])
    _say(f"evaluating {network.id} ({model_dir}) on {len(jets):,} jets from {source}")
    probs = network.predict_jets(jets)
    metrics = tagging_metrics(probs, y, f_c=f_c, f_b=f_b)
    metrics["model"] = {"folder": str(model_dir), **{k: network.info.get(k) for k in ("id", "parameters", "metrics")}}
    metrics["data"] = source
    out.write_text(json.dumps(_json_safe(metrics), indent=1))
    _print_metrics(metrics, f_c, f_b)
    _say(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dl1`` console script; returns the exit code."""
    try:
        app(args=argv, standalone_mode=False)
    except DL1Error as exc:
        _say(f"dl1: error: {exc}")
        _last_words(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _say("dl1: interrupted")
        return 130
    except Exception as exc:  # usage errors and anything unexpected: one line, never a traceback
        # typer may bundle its own click: recognise its exceptions by shape, not by class
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            return int(getattr(exc, "exit_code", PayloadExit.INVALID_INPUT))
        if type(exc).__name__ == "Exit":
            return int(getattr(exc, "exit_code", 0))
        if type(exc).__name__ == "Abort":
            return 1
        _say(f"dl1: unexpected error: {type(exc).__name__}: {exc}")
        _last_words(f"unexpected error: {type(exc).__name__}: {exc}")
        return 1
    return PayloadExit.OK


def _last_words(reason: str) -> None:
    """Write why the payload fails to the file the backend reads it from (LAST_WORDS_ENV), when it names one."""
    path = os.environ.get(LAST_WORDS_ENV)
    if not path:
        return
    try:
        Path(path).write_text(" ".join(reason.split()) + "\n")
    except OSError as exc:  # the reason is on stderr too: losing the file only loses the shortcut
        _say(f"dl1: cannot write the last words to {path} ({exc.strerror})")


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
