"""A schedd STAND-IN for tests: HTCondor daemons cannot be installed on our machines (no Debian package; the
``htcondor`` wheel has bindings only).

``ScheddStandIn`` keeps the method names and signatures of ``htcondor2.Schedd`` that the backend uses (query,
submit, act, spool, retrieve, edit), takes real ``htcondor2.Submit`` objects, evaluates constraints with the real
ClassAd library (a completed job stays queued only while its ``leave_in_queue`` holds), and returns real
``classad2.ClassAd`` objects and a real ``htcondor2.SubmitResult``. It does not
match or run anything: a test moves jobs along with ``start``/``chirp``/``complete``/``hold``/``set``. Every call
is logged in ``calls`` so tests can count queries. docs/htcondor.md says how to run the same tests against a real
access point.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import classad2
import htcondor2

from hpscan.job.chirp import CHIRP_LINE_MAX, chirp_line_length

IDLE, RUNNING, REMOVED, COMPLETED, HELD = 1, 2, 3, 4, 5
_DEFAULT = object()


class ScheddStandIn:
    """In-memory job queue behind the ``htcondor2.Schedd`` interface (a stand-in, not a schedd)."""

    def __init__(self, name: str = "standin") -> None:
        self.name = name
        self.jobs: dict[str, classad2.ClassAd] = {}
        self.submitted: dict[str, dict[str, str]] = {}
        """The expanded submit commands of each job, by job id: what condor_submit would have turned into an ad."""
        self.history: dict[str, classad2.ClassAd] = {}
        self.outputs: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.down: str | None = None
        """When set, every call raises htcondor2.HTCondorException with this message (a schedd not answering)."""
        self._next_cluster = 1

    def _call(self, method: str, detail: Any = None) -> None:
        self.calls.append((method, detail))
        if self.down is not None:
            raise htcondor2.HTCondorException(self.down)

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    def _select(self, job_spec: Any) -> list[str]:
        if isinstance(job_spec, int):
            return [j for j, ad in self.jobs.items() if ad.eval("ClusterId") == job_spec]
        if isinstance(job_spec, list):
            return [j for j in job_spec if j in self.jobs]
        text = str(job_spec)
        if text in self.jobs or text.replace(".", "").isdigit():
            return [j for j in self.jobs if j == text or j.split(".")[0] == text]
        expression = classad2.ExprTree(text)
        return [j for j, ad in self.jobs.items() if expression.eval(ad) is True]

    # --- htcondor2.Schedd's methods -----------------------------------------------------------------------

    def query(
        self,
        constraint: str | classad2.ExprTree = "True",
        projection: list[str] = [],  # noqa: B006 (the real signature)
        callback: Any = None,
        limit: int = -1,
        opts: Any = None,
    ) -> list[classad2.ClassAd]:
        self._call("query", (str(constraint), list(projection)))
        expression = classad2.ExprTree(str(constraint))
        found = []
        for ad in self.jobs.values():
            if expression.eval(ad) is not True:
                continue
            copy = classad2.ClassAd()
            for key in projection or list(ad.keys()):
                if key in ad:
                    copy[key] = ad.lookup(key)
            found.append(callback(copy) if callback else copy)
            if 0 <= limit <= len(found):
                break
        return found

    def submit(
        self,
        description: htcondor2.Submit,
        count: int = 0,
        spool: bool = False,
        itemdata: Iterator[str] | Iterator[dict] | None = _DEFAULT,  # type: ignore[assignment]
        queue: str | None = None,
    ) -> htcondor2.SubmitResult:
        if not isinstance(description, htcondor2.Submit):
            raise TypeError("description must be an htcondor2.Submit object")
        items = list(itemdata) if itemdata not in (_DEFAULT, None) else list(description.itemdata() or [{}])
        self._call("submit", {"spool": spool, "items": items})
        cluster = self._next_cluster
        self._next_cluster += 1
        procs = 0
        for item in items:
            for _ in range(max(count, 1)):
                job = f"{cluster}.{procs}"
                expanded = htcondor2.Submit(dict(description.items()))
                for key, value in (item if isinstance(item, dict) else {"Item": item}).items():
                    expanded[key] = str(value)
                commands = {key: expanded.expand(key) for key, _ in description.items()}
                ad = classad2.ClassAd()
                ad["ClusterId"] = cluster
                ad["ProcId"] = procs
                ad["JobStatus"] = HELD if spool else IDLE
                if spool:
                    ad["HoldReasonCode"] = 16
                    ad["HoldReason"] = "Spooling input data files"
                ad["NumJobStarts"] = 0
                ad["EnteredCurrentStatus"] = int(time.time())
                ad["Iwd"] = commands.get("initialdir", "")
                for key, value in commands.items():
                    if key.lower().startswith("my."):
                        ad[key[3:]] = classad2.ExprTree(value)
                    elif key == "request_gpus":
                        ad["RequestGPUs"] = int(value)
                    elif key == "allowed_execute_duration":
                        ad["AllowedExecuteDuration"] = int(value)
                self.jobs[job] = ad
                self.submitted[job] = commands
                procs += 1
        return htcondor2.SubmitResult(cluster, 0, procs, classad2.ClassAd({"ClusterId": cluster}), None)

    def spool(self, result: htcondor2.SubmitResult) -> None:
        self._call("spool", result.cluster())
        for ad in self.jobs.values():
            if ad.eval("ClusterId") == result.cluster() and ad.eval("JobStatus") == HELD:
                ad["JobStatus"] = IDLE
                del ad["HoldReasonCode"]
                del ad["HoldReason"]

    def act(self, action: htcondor2.JobAction, job_spec: Any, reason: str | None = None) -> classad2.ClassAd:
        self._call("act", (action, str(job_spec), reason))
        selected = self._select(job_spec)
        for job in selected:
            if action == htcondor2.JobAction.Remove:
                # The stand-in's job stops at once (a real one gets SIGTERM and keeps RemoteHost until its shadow
                # ends); it leaves the queue then, unless its leave_in_queue holds.
                ad = self.jobs[job]
                if "RemoteHost" in ad:
                    del ad["RemoteHost"]
                ad["RemoveReason"] = reason or "via stand-in"
                self.set(job, JobStatus=REMOVED)
                self._leave_if_removed(job)
            elif action == htcondor2.JobAction.Hold:
                self.hold(job, reason or "via stand-in")
            elif action == htcondor2.JobAction.Release:
                self.set(job, JobStatus=IDLE)
        return classad2.ClassAd({"TotalSuccess": len(selected)})

    def edit(
        self,
        job_spec: Any,
        attr: str,
        value: str | classad2.ExprTree,
        flags: Any = None,
    ) -> int:
        self._call("edit", (str(job_spec), attr, str(value)))
        selected = self._select(job_spec)
        if not selected:  # conservative: the schedd refuses an edit that matches no job
            raise htcondor2.HTCondorException("Unable to edit job: no job matched")
        for job in selected:
            self.jobs[job][attr] = classad2.ExprTree(str(value))
            self._settle(job)
            self._leave_if_removed(job)
        return len(selected)

    def retrieve(self, job_spec: Any) -> None:
        self._call("retrieve", job_spec if isinstance(job_spec, list) else str(job_spec))
        for job in self._select(job_spec):
            if self.jobs[job].eval("JobStatus") not in (COMPLETED, REMOVED):  # a removed job's spool, as the real
                continue  # schedd sends it while leave_in_queue keeps the job
            for name, text in self.outputs.pop(job, {}).items():
                (Path(self.jobs[job].eval("Iwd")) / name).write_text(text)

    # --- what a pool would do (test controls) -----------------------------------------------------------------

    def set(self, job: str, **attributes: Any) -> None:
        ad = self.jobs[job]
        if "JobStatus" in attributes and attributes["JobStatus"] != ad.eval("JobStatus"):
            ad["EnteredCurrentStatus"] = int(time.time())
        for key, value in attributes.items():
            ad[key] = value
        self._settle(job)

    def _kept(self, job: str) -> bool:
        """Whether the job's leave_in_queue expression holds."""
        keep = self.submitted.get(job, {}).get("leave_in_queue", "false")
        return classad2.ExprTree(keep).eval(self.jobs[job]) is True

    def _settle(self, job: str) -> None:
        """A completed job leaves the queue unless its leave_in_queue expression holds (as the schedd does). A job a
        test sets REMOVED stays: its shadow is still ending (the real schedd shows it so until then)."""
        ad = self.jobs[job]
        if ad.eval("JobStatus") == COMPLETED and not self._kept(job):
            self.history[job] = self.jobs.pop(job)

    def _leave_if_removed(self, job: str) -> None:
        """A removed job whose shadow ended (no RemoteHost) leaves the queue unless its leave_in_queue holds."""
        ad = self.jobs.get(job)
        if ad is not None and ad.eval("JobStatus") == REMOVED and "RemoteHost" not in ad and not self._kept(job):
            self.history[job] = self.jobs.pop(job)

    def start(self, job: str) -> None:
        ad = self.jobs[job]
        self.set(job, JobStatus=RUNNING, NumJobStarts=int(ad.eval("NumJobStarts")) + 1, RemoteHost="slot1@standin")

    def chirp(self, job: str, attribute: str, value: str) -> None:
        """What condor_chirp set_job_attr does: the value is a ClassAd expression. A line longer than htchirp sends
        is refused, as htchirp refuses it (HTChirp.TooBig)."""
        if chirp_line_length(attribute, value) > CHIRP_LINE_MAX:
            raise OSError(f"set_job_attr {attribute}: that request is too big to execute (over {CHIRP_LINE_MAX} bytes)")
        self.jobs[job][attribute] = classad2.ExprTree(value)

    def hold(self, job: str, reason: str, code: int = 13) -> None:
        self.set(job, JobStatus=HELD, HoldReason=reason, HoldReasonCode=code)

    def periodic(self) -> None:
        """What the schedd's periodic policy pass does (every PERIODIC_EXPR_INTERVAL) to a held job: release it when
        its periodic_release holds, else remove it when its periodic_remove holds, with its PeriodicRemoveReason
        as the RemoveReason (the job leaves the queue unless its leave_in_queue holds); the hold reason moves to
        LastHoldReason(Code) either way, as the schedd moves it. A removed job whose leave_in_queue no longer holds
        leaves the queue in the same pass."""
        for job in [j for j, ad in self.jobs.items() if ad.eval("JobStatus") == REMOVED and not self._kept(j)]:
            self.history[job] = self.jobs.pop(job)
        for job in [j for j, ad in self.jobs.items() if ad.eval("JobStatus") == HELD]:
            ad, commands = self.jobs[job], self.submitted.get(job, {})
            release = classad2.ExprTree(commands.get("periodic_release", "false")).eval(ad) is True
            remove = not release and classad2.ExprTree(commands.get("periodic_remove", "false")).eval(ad) is True
            if not (release or remove):
                continue
            why = ad.eval("PeriodicRemoveReason") if "PeriodicRemoveReason" in ad else None  # while still held
            ad["LastHoldReason"], ad["LastHoldReasonCode"] = ad.eval("HoldReason"), ad.eval("HoldReasonCode")
            del ad["HoldReason"]
            del ad["HoldReasonCode"]
            if release:
                self.set(job, JobStatus=IDLE)
                continue
            reason = why if isinstance(why, str) else "The job attribute PeriodicRemove expression evaluated to TRUE"
            self.set(job, JobStatus=REMOVED, RemoveReason=reason)
            if not self._kept(job):
                self.history[job] = self.jobs.pop(job)  # gone once its shadow is, unless leave_in_queue holds

    def complete(
        self, job: str, exit_code: int = 0, outputs: dict[str, str] | None = None, spooled: bool = False
    ) -> None:
        """The job exited; its output sandbox goes to its Iwd, or stays in the spool until ``retrieve``."""
        if spooled:
            self.outputs[job] = dict(outputs or {})
        else:
            for name, text in (outputs or {}).items():
                (Path(self.jobs[job].eval("Iwd")) / name).write_text(text)
        self.set(job, JobStatus=COMPLETED, ExitCode=exit_code, ExitBySignal=False)

    def run_idle(self, environment: Mapping[str, str] | None = None, timeout: float = 120) -> int:
        """What a startd and starter would do for each idle job, one at a time (a STAND-IN for an execute node,
        for vanilla-universe jobs): copy the input sandbox to a scratch folder, run the job's executable with
        its arguments there (no chirp: the starter's proxy is not here), copy the output sandbox back, and
        apply max_retries and retry_until the way the schedd's generated OnExitRemove does. Returns the number
        of attempts run."""
        ran = 0
        for job in [j for j, ad in self.jobs.items() if ad.eval("JobStatus") == IDLE]:
            commands, iwd = self.submitted[job], Path(self.jobs[job].eval("Iwd"))
            self.start(job)
            ran += 1
            with tempfile.TemporaryDirectory(prefix="standin-scratch-") as scratch:
                for name in _file_list(commands.get("transfer_input_files", "")):
                    if (iwd / name).exists():
                        shutil.copy(iwd / name, scratch)
                arguments = shlex.split(commands.get("arguments", "").strip().strip('"'))
                finished = subprocess.run(
                    [commands["executable"], *arguments],
                    cwd=scratch,
                    env={**os.environ, **(environment or {})},
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
                code = finished.returncode
                for key, text in (("output", finished.stdout), ("error", finished.stderr)):
                    if commands.get(key):
                        (iwd / commands[key]).write_bytes(text)
                for name in _file_list(commands.get("transfer_output_files", "")):
                    if (Path(scratch) / name).exists():
                        shutil.copy(Path(scratch) / name, iwd / name)
            ad = self.jobs[job]
            ad["ExitCode"] = code
            retries = int(commands.get("max_retries", "0"))
            stop = classad2.ExprTree(commands.get("retry_until", "false")).eval(ad) is True
            if code != 0 and not stop and int(ad.eval("NumJobStarts")) <= retries:
                self.set(job, JobStatus=IDLE)
            else:
                self.set(job, JobStatus=COMPLETED, ExitBySignal=False)
        return ran

    def probe_of(self, uid: str, site: str) -> str:
        """The id of the newest site probe job of a scan."""
        wanted = classad2.ExprTree(f'HPScanUid == "{uid}" && HPScanProbe == "{site}"')
        found = [job for job, ad in self.jobs.items() if wanted.eval(ad) is True]
        if not found:
            raise KeyError(f"no probe job for site {site} of {uid}")
        return max(found, key=lambda job: tuple(int(part) for part in job.split(".")))

    def job_of(self, uid: str, shard: int) -> str:
        """The id of the queued job of a scan's shard."""
        wanted = classad2.ExprTree(f'HPScanUid == "{uid}" && HPScanShard == {shard}')
        for job, ad in self.jobs.items():
            if wanted.eval(ad) is True:
                return job
        raise KeyError(f"no job for shard {shard} of {uid}")


class JobChirp:
    """What htchirp.HTChirp does inside one job of the stand-in: get_job_attr answers with the attribute's expression
    as the ClassAd library unparses it (the shadow's answer), set_job_attr sets an expression (refused past a chirp
    line, as htchirp refuses it). ``down``: the starter's chirp proxy does not answer."""

    def __init__(self, schedd: ScheddStandIn, job: str) -> None:
        self.schedd, self.job = schedd, job
        self.down = False

    def __enter__(self) -> JobChirp:
        if self.down:
            raise ConnectionRefusedError("no chirp proxy")
        return self

    def __exit__(self, *args: object) -> None:
        return None

    def get_job_attr(self, job_attribute: str) -> str:
        ad = self.schedd.jobs[self.job]
        return str(ad.lookup(job_attribute)) if job_attribute in ad else "UNDEFINED"

    def set_job_attr(self, job_attribute: str, attribute_value: str) -> None:
        self.schedd.chirp(self.job, job_attribute, attribute_value)


def _file_list(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]
