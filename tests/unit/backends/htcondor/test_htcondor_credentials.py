"""Which credential an HTCondor call uses (hpscan.backends.htcondor.credentials, pure), the messages of a refusal,
and the private token folders the backend keeps per credential. No process is started here: a credential's worker
starts on its first schedd call, which the real pool's tests make (test_htcondor_realpool.py: two namespaces at one
access point, a worker that dies, a token that changes)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hpscan.api.sites import HTCondorSite
from hpscan.api.spec import HPScanSpec
from hpscan.backends.base import ScanRef
from hpscan.backends.htcondor import HTCondorBackend
from hpscan.backends.htcondor.credentials import Connection, Credential, connection_for, refused
from hpscan.backends.htcondor.schedd import call_failed
from hpscan.errors import BackendError, CredentialRefused, SchedulerUnavailable

TOKEN_A = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnLWE"
TOKEN_B = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJiIn0.c2lnLWI"
GRID = {"pool": "cm.example.org:9618", "schedd": "ce01.example.org"}
# What a real 25.x schedd answered the personal pool's tests (test_htcondor_realpool.py).
DENIED = 'Failed to connect to schedd, errmsg=SECMAN:2010:Received "DENIED" from server for user u@hpscan.test using method IDTOKENS.'
UNSIGNED = "Failed to connect to schedd, errmsg=AUTHENTICATE:1003:Failed to authenticate with any method|AUTHENTICATE:1004:Failed to authenticate using IDTOKENS"


def condor(**block: object) -> HTCondorSite:
    return HTCondorSite.model_validate({**GRID, **block})


def test_a_site_with_a_token_secret_is_its_namespaces_credential_at_its_schedd():
    site = condor(tokenSecret={"name": "grid-token"})
    a = connection_for(site, "team-a", reads_secrets=True)
    assert a == Connection(GRID["pool"], GRID["schedd"], Credential("team-a", "grid-token", "token"))
    assert connection_for(site, "team-a", reads_secrets=True) == a  # scans of one namespace share it
    assert connection_for(site, "team-b", reads_secrets=True) != a  # the same Secret name elsewhere: another one
    assert connection_for(condor(tokenSecret={"name": "grid-token", "key": "other"}), "team-a", True) != a
    assert connection_for(condor(schedd="ce02", tokenSecret={"name": "grid-token"}), "team-a", True) != a
    assert (
        len({a.slug, connection_for(site, "team-b", True).slug}) == 2
        and a.slug == connection_for(site, "team-a", True).slug
    )


def test_a_site_without_a_token_secret_uses_the_operators_identity_for_every_namespace():
    plain = condor()
    assert connection_for(plain, "team-a", True) == connection_for(plain, "team-b", True) == Connection(**GRID)
    # No Secret reader (hpscan run on a laptop): the environment's credentials, as the field's description says.
    assert connection_for(condor(tokenSecret={"name": "grid-token"}), "team-a", False).credential is None


@pytest.mark.parametrize("message", [DENIED, UNSIGNED])
def test_a_schedds_refusal_names_the_site_and_the_credential(message):
    credential = Credential("team-b", "grid-token", "token")
    assert refused(message)
    error = call_failed(condor(), "submitting 1 shard job(s)", RuntimeError(message), credential, "grid")
    assert isinstance(error, CredentialRefused)
    assert str(error).startswith(
        "site 'grid': HTCondor schedd ce01.example.org (pool cm.example.org:9618) refused the IDTOKEN in key "
        "'token' of Secret team-b/grid-token while submitting 1 shard job(s): Failed to connect"
    )


@pytest.mark.parametrize("message", ["Failed communication with collector.", "Unable to locate schedd", "timed out"])
def test_a_schedd_that_does_not_answer_is_no_refusal(message):
    assert not refused(message)
    error = call_failed(condor(), "polling", RuntimeError(message))
    assert isinstance(error, SchedulerUnavailable) and "did not answer while polling" in str(error)


def spec_with(*sites: tuple[str, dict]) -> HPScanSpec:
    return HPScanSpec.model_validate(
        {
            "parameters": [{"name": "x", "values": [1, 2]}],
            "sharding": {"shards": 1},
            "payload": {"image": "img:1"},
            "sites": [{"name": name, "htcondor": block} for name, block in sites],
        }
    )


def folders(work_dir: Path) -> dict[str, list[str]]:
    """Each credential folder's mode and files (tokens read back)."""
    found = {}
    for folder in sorted((work_dir / "tokens").iterdir()):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        for path in folder.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        found[folder.name] = sorted(p.read_text().strip() for p in folder.iterdir())
    return found


def test_each_credential_gets_a_private_folder_with_only_its_token(tmp_path):
    secrets = {("team-a", "grid-token", "token"): TOKEN_A, ("team-b", "grid-token", "token"): TOKEN_B}
    backend = HTCondorBackend(tmp_path, read_secret=lambda *key: secrets[key])
    spec = spec_with(("grid", {**GRID, "tokenSecret": {"name": "grid-token"}}), ("local", {}))
    a, b = ScanRef("s", "team-a", "uid-a"), ScanRef("s", "team-b", "uid-b")
    backend.prepare(a, spec, 1)
    backend.prepare(b, spec, 1)
    slug_a = connection_for(condor(tokenSecret={"name": "grid-token"}), "team-a", True).slug
    assert folders(tmp_path) == {
        slug_a: [TOKEN_A],
        connection_for(condor(tokenSecret={"name": "grid-token"}), "team-b", True).slug: [TOKEN_B],
    }  # the site without a tokenSecret ("local") has none: the operator's own identity
    secrets["team-a", "grid-token", "token"] = TOKEN_B  # rotated in team-a's Secret
    backend.prepare(a, spec, 1)
    assert folders(tmp_path)[slug_a] == [TOKEN_B]  # and its worker restarts (test_htcondor_realpool.py)


def test_a_token_secret_that_cannot_be_read_or_holds_no_token_names_site_and_secret(tmp_path):
    def read_secret(namespace: str, name: str, key: str) -> str:
        if namespace == "team-a":
            return "password123"
        raise LookupError(f'secrets "{name}" not found')

    backend = HTCondorBackend(tmp_path, read_secret=read_secret)
    spec = spec_with(("grid", {**GRID, "tokenSecret": {"name": "grid-token"}}))
    with pytest.raises(
        BackendError,
        match=r"^site 'grid': cannot read the IDTOKEN in key 'token' of Secret team-b/grid-token: secrets \"grid-token\" not found",
    ):
        backend.prepare(ScanRef("s", "team-b", "uid-b"), spec, 1)
    with pytest.raises(
        BackendError, match=r"^site 'grid': the IDTOKEN in key 'token' of Secret team-a/grid-token: .* is not a token"
    ):
        backend.prepare(ScanRef("s", "team-a", "uid-a"), spec, 1)


def test_without_a_secret_reader_no_token_is_written(tmp_path):
    backend = HTCondorBackend(tmp_path)
    backend.prepare(ScanRef("s", "team-a", "uid-a"), spec_with(("grid", {**GRID, "tokenSecret": {"name": "t"}})), 1)
    assert not (tmp_path / "tokens").exists()
