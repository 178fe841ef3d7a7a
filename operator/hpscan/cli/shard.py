"""`hpscan shard-run`: the shard runner, the one hpscan command that runs inside a shard job (the payload image).

It imports only the API models, the registry and the job-side package: never the operator side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpscan.api import registry
from hpscan.api.contract import MODELS_DIR, PayloadExit, ShardFile
from hpscan.cli.output import Commands, err
from hpscan.errors import ArtifactStoreError, BackendError
from hpscan.job.checkpoints import DEFAULT_UPLOAD_SECONDS, UPLOAD_SECONDS_ENV, CheckpointSync
from hpscan.job.runner import CHECKPOINT_SECONDS_ENV, CheckpointExit, LiveChannel, StdoutChannel, run_shard
from hpscan.job.store import ModelUploader, store_from_env

commands = Commands()


def _read(shard_file: Path) -> ShardFile | None:
    """The shard file, None when unreadable (the payload's to refuse, with exit 2)."""
    try:
        return ShardFile.model_validate_json(shard_file.read_bytes())
    except (OSError, ValueError):
        return None


@commands("shard-run")
def shard_run(
    shard_file: Annotated[Path, typer.Argument(help="The shard file the payload reads.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder (results.jsonl).")],
    payload: Annotated[list[str], typer.Argument(help="The payload command, after --, e.g. -- dl1 train-shard.")],
    channel: Annotated[
        str,
        typer.Option(
            "--channel",
            help="Where records go live: stdout, or the backend that runs the job "
            f"({', '.join(registry.entries())}), which publishes through its own channel.",
        ),
    ] = "stdout",
    checkpoint_exit_code: Annotated[
        int | None,
        typer.Option(
            "--checkpoint-exit-code",
            metavar="CODE",
            help="End with this code once the payload saved a checkpoint (at most every --checkpoint-seconds), so "
            "the batch system keeps OUT/checkpoints/ and starts the job again (HTCondor's checkpoint_exit_code).",
        ),
    ] = None,
    checkpoint_seconds: Annotated[
        float,
        typer.Option(
            "--checkpoint-seconds",
            envvar=CHECKPOINT_SECONDS_ENV,
            min=0,
            metavar="SECONDS",
            help="How often at most (see --checkpoint-exit-code).",
        ),
    ] = 1800.0,
    checkpoint_upload_seconds: Annotated[
        float,
        typer.Option(
            "--checkpoint-upload",
            envvar=UPLOAD_SECONDS_ENV,
            min=0,
            metavar="SECONDS",
            help="With a store (HPSCAN_MODEL_STORE, Kubernetes): upload each trial's changed checkpoint at most this "
            "often, and at the payload's end (a SIGTERM), so the shard's next pod resumes it (docs/checkpoints.md).",
        ),
    ] = DEFAULT_UPLOAD_SECONDS,
) -> None:
    """Run a payload on one shard file, publishing each record as it is written (used inside shard jobs)."""
    live: LiveChannel
    if channel == "stdout":
        live = StdoutChannel()
    else:
        try:
            live = registry.resolve(channel, "channel")(shard_file)
        except registry.RegistryError as error:
            raise BackendError(f"--channel {channel}: {error}") from None
    shard = _read(shard_file)
    if shard is not None and shard.artifacts.save_models:
        # A batch system that transfers models/ back (HTCondor) holds a job whose output list names a missing file.
        (out_dir / MODELS_DIR).mkdir(parents=True, exist_ok=True)
    uploader, checkpoints = None, None
    try:  # a store given to the job (HPSCAN_MODEL_STORE, Kubernetes) is checked before anything is trained
        store = store_from_env()
        if store is not None:
            store.check()
            uploader = ModelUploader(store, out_dir)
            if shard is not None and shard.checkpoints:  # the pod's output folder dies with it: keep them there
                checkpoints = CheckpointSync(store, out_dir, checkpoint_upload_seconds)
    except ArtifactStoreError as error:
        # A credential or a bucket: retrying will not mend it (exit 2, never retried); a store that does not answer
        # may come back (exit 1: the job is retried). Records of earlier attempts stay where they are.
        err.print(f"hpscan shard-run: {error}", highlight=False)
        raise typer.Exit(int(PayloadExit.INVALID_INPUT) if error.final else 1) from None
    checkpoint_exit = CheckpointExit(checkpoint_exit_code, checkpoint_seconds) if checkpoint_exit_code else None
    code = run_shard(
        payload,
        shard_file,
        out_dir,
        live,
        keep_models=uploader,
        checkpoint_exit=checkpoint_exit,
        checkpoints=checkpoints,
    )
    if uploader is not None:
        uploader.finish()
    if uploader is not None and uploader.pending:
        err.print(
            f"hpscan shard-run: {len(uploader.pending)} model(s) could not be uploaded to {uploader.store.location.url}"
            f" ({uploader.uploaded} were); their records are kept",
            highlight=False,
        )
    raise typer.Exit(code)
