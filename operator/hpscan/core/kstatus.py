"""The conditions kstatus reads, from a scan's phase. Pure.

kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status), the library behind Flux's health checks, Helm 4's `--wait` and
the cli-utils appliers, judges a custom resource by, in order: `status.observedGeneration` against
`metadata.generation` (behind: InProgress), a `Reconciling` condition that is True (InProgress, with its message), a
`Stalled` condition that is True (Failed), then a `Ready` condition (True: Current; False or Unknown: InProgress),
and, with none of these, Current. An HPScan's own conditions (Running, Complete, Failed, ...) mean nothing to it,
so without these a running scan and a failed one would both read Current.

A suspended scan is Current: the operator did what the spec asks (its shards are stopped, its results kept), and a
tool that waits on it (Flux's `wait: true`, `helm install --wait`) must neither block until its timeout nor report
a failure for a scan paused on purpose. Reconciling and Stalled are False (reason Suspended), and Ready is left out:
Ready False would read as InProgress (kstatus's last rule), and Ready True would tell `kubectl wait
--for=condition=Ready` that a paused scan is done. docs/gitops.md says the same for users.
"""

from __future__ import annotations

from hpscan.api.status import ConditionType, Reason, ScanPhase

Wanted = tuple[bool, str, str]
"""A condition as decided: whether it is True, its CamelCase reason, its message."""

ACTIVE_SCAN_PHASES = frozenset({ScanPhase.PENDING, ScanPhase.RUNNING})
"""Phases in which the operator is still working towards the spec: kstatus must read InProgress."""


def kstatus_conditions(phase: ScanPhase, reason: str, message: str, progress: str) -> dict[ConditionType, Wanted]:
    """Ready, Reconciling and Stalled for a scan in ``phase``, with the reason and message the phase was decided
    with (hpscan.core.decisions.decide_phase, or an invalid spec's) and the status's ``progress`` (recorded/total).
    Ready is left out of a suspended scan's (see the module's docstring)."""
    active = phase in ACTIVE_SCAN_PHASES
    doing = f"{progress} recorded; {message}" if message else f"{progress} recorded"
    wanted: dict[ConditionType, Wanted] = {
        ConditionType.RECONCILING: (active, reason, doing if active else message),
        ConditionType.STALLED: (
            phase == ScanPhase.FAILED,
            reason if phase == ScanPhase.FAILED else Reason.NOT_FAILED,
            message if phase == ScanPhase.FAILED else "",
        ),
    }
    if phase != ScanPhase.SUSPENDED:
        wanted[ConditionType.READY] = (phase == ScanPhase.SUCCEEDED, reason, doing if active else message)
    return wanted
