"""The backend registry: the one place that maps a backend name to its site block, its operator-side factory
and its in-job live channel.

Everything that depends on which backends exist reads this: the ``Site`` model (which blocks a site may hold,
and the CRD's one-backend-per-site rule), the controller (which backends to construct), ``hpscan run --site``
(which backends can submit from this machine) and ``hpscan shard-run --channel NAME`` (which channel a job
publishes through). Factories and channels are named as ``"module:attr"``
strings and imported on first use, so the API layer imports no backend, a payload image needs no operator
dependency, and a backend whose client library is missing fails with one clear error when it is used.

Adding a backend (Slurm, a Kueue queue, ...) is one new package plus one ``register`` call, and the few edits
docs/architecture.md lists ("Adding a backend"); tests/unit/api/test_registry.py registers a toy backend and drives it
without editing any other file, and hpscan.testing.fake_backend registers an in-memory one on demand.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from hpscan.api.sites import HTCondorSite, KubernetesSite


@dataclass(frozen=True)
class BackendEntry:
    """One backend: a site's ``<name>:`` block is validated by ``site_model``; the operator builds the backend
    with ``factory(context)``; a shard job's runner publishes records through ``channel(shard_file)``."""

    name: str
    site_model: type[BaseModel] | str
    """The site block's pydantic model, or ``"module:Model"``: a backend package's own model, imported when a site
    is validated or the schema is written (``model()``), so the API layer imports no backend."""
    description: str
    factory: str | Callable[..., Any]
    """``"module:function"`` (or the function): BackendContext -> Backend, run in the operator."""
    channel: str | Callable[..., Any]
    """``"module:function"`` (or the function): shard file path -> LiveChannel, run inside the job."""
    extra: str = ""
    """The pip extra that installs the backend's client library, named in the error when it is missing."""
    here_factory: str | Callable[..., Any] | None = None
    """``"module:function"`` (or the function): (scan, run_dir, poll_seconds) -> (Backend, ScanRef), a backend that
    submits from this machine and keeps what it needs under the run folder, for ``hpscan run --site``. None: the
    backend cannot submit from here (e.g. Kubernetes Jobs need the operator's in-cluster channel)."""

    @property
    def submits_from_here(self) -> bool:
        return self.here_factory is not None

    def model(self) -> type[BaseModel]:
        """The site block's model (imported on first use when named as a string)."""
        if not isinstance(self.site_model, str):
            return self.site_model
        module, _, attribute = self.site_model.partition(":")
        model = getattr(importlib.import_module(module), attribute)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise RegistryError(f"the {self.name} backend's site model {self.site_model!r} is not a pydantic model")
        return model


class RegistryError(LookupError):
    """A backend name that is not registered, or whose code cannot be imported."""


_ENTRIES: dict[str, BackendEntry] = {}


def register(entry: BackendEntry) -> BackendEntry:
    """Add (or replace) a backend. Names are the keys of a site's backend block, so they must be lower-case."""
    if not entry.name.isidentifier() or entry.name != entry.name.lower() or entry.name in {"name", "weight"}:
        raise ValueError(f"backend name {entry.name!r} must be a lower-case identifier other than name/weight")
    _ENTRIES[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a backend (tests register toy backends and remove them again)."""
    _ENTRIES.pop(name, None)


def entries() -> dict[str, BackendEntry]:
    """Every registered backend by name, in registration order."""
    return dict(_ENTRIES)


def entry(name: str) -> BackendEntry:
    try:
        return _ENTRIES[name]
    except KeyError:
        raise RegistryError(f"no backend {name!r} (registered: {', '.join(_ENTRIES)})") from None


def resolve(name: str, what: str) -> Callable[..., Any]:
    """A backend's ``factory``, ``channel`` or ``here_factory``, imported on first use."""
    target = getattr(entry(name), what)
    if target is None:
        raise RegistryError(f"the {name} backend has no {what}")
    if callable(target):
        return target
    module, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except ImportError as error:
        extra = entry(name).extra
        hint = f": pip install 'hpscan[{extra}]'" if extra else ""
        raise RegistryError(f"the {name} backend needs the Python package {error.name!r}{hint}") from None


register(
    BackendEntry(
        name="kubernetes",
        site_model=KubernetesSite,
        description="Run shards as Kubernetes Jobs.",
        factory="hpscan.backends.kubernetes:create",
        channel="hpscan.job.configmap:open_channel",
        extra="operator",
    )
)
register(
    BackendEntry(
        name="htcondor",
        site_model=HTCondorSite,
        description="Run shards as HTCondor jobs.",
        factory="hpscan.backends.htcondor:create",
        channel="hpscan.job.chirp:open_channel",
        extra="condor",
        here_factory="hpscan.backends.htcondor.from_here:create",
    )
)
register(
    BackendEntry(
        name="slurm",
        site_model="hpscan.backends.slurm.site:SlurmSite",
        description="Run shards as Slurm batch jobs through the centre's REST API (slurmrestd) or its commands.",
        factory="hpscan.backends.slurm:create",
        channel="hpscan.job.slurm:open_channel",
        here_factory="hpscan.backends.slurm.from_here:create",
    )
)
