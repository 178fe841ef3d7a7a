"""Step 4 of the synthetic jet generator (``dl1.synthetic``): the low-level taggers computed from a jet's tracks.

IP2D/IP3D from fixed templates, SV1 (one inclusive vertex, V0 veto), JetFitter (b and c vertices along the
flight axis) and its most displaced vertex, and an RNNIP-like score. Each step draws from the generator's one
``numpy.random.Generator`` in a fixed order: the order of the calls in ``dl1.synthetic.generate_jets`` and of
the draws inside each function is part of what a seed means, so reordering them changes every sample.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

KS_MASS, LAMBDA_MASS = 0.498, 1.116  # GeV

Columns = dict[str, np.ndarray]


@dataclass(frozen=True)
class Truth:
    """Per jet: the truth the generator drew (GeV, mm)."""

    flavour: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    abs_eta: np.ndarray
    has_b: np.ndarray
    clean_light: np.ndarray
    """Light jets without a heavy hadron just outside the cone: the ones with V0s and material interactions."""
    x_frac: np.ndarray
    c_ctau: np.ndarray
    flight_b: np.ndarray
    flight_c: np.ndarray
    decay_len: np.ndarray
    n_decay_b: np.ndarray
    n_decay: np.ndarray
    had_mass: np.ndarray


@dataclass(frozen=True)
class Tracks:
    """Per jet and track slot (a padded table): what the taggers see."""

    valid: np.ndarray
    kind: np.ndarray
    """0 prompt, 1 b decay, 2 c decay, 3 V0/material, -1 an empty slot."""
    energy: np.ndarray
    s_d0: np.ndarray
    s_3d: np.ndarray
    rel_eta: np.ndarray
    selected: np.ndarray
    """Tracks the IP taggers and RNNIP use (pT > 1 GeV)."""


@dataclass(frozen=True)
class Vertexing:
    """What SV1 and JetFitter share: they fit the same tracks, so they see the same mass and length errors."""

    vis_frac: np.ndarray
    fake_mass: np.ndarray
    fake_len: np.ndarray
    z_len: np.ndarray
    sigma_l: np.ndarray
    dr_draw: np.ndarray
    e_all: np.ndarray


@dataclass(frozen=True)
class JetFitterVertices:
    """JetFitter's vertices and tracks, for its secondary-vertex and track-eta variables."""

    candidates: np.ndarray
    found: np.ndarray
    n_vtx: np.ndarray
    vtx_b: np.ndarray
    vtx_c: np.ndarray
    mass: np.ndarray


def _templates(s: np.ndarray) -> dict[str, np.ndarray]:
    """Per-track log densities of the signed IP significance that IP2D/IP3D assume for u, c and b jets.

    Fixed shapes (as the taggers' reference histograms are), deliberately not the generator's own densities:
    the network can still learn from how they disagree.
    """
    core = np.exp(-0.5 * s**2) / np.sqrt(2 * np.pi)
    tail = np.exp(-0.5 * (s / 4.0) ** 2) / (4.0 * np.sqrt(2 * np.pi))
    pos = np.where(s > 0, 1.0, 0.08)
    light = 0.96 * core + 0.04 * tail
    charm = 0.75 * core + 0.25 * pos * np.exp(-np.abs(s) / 3.0) / 3.0 / 1.08
    bottom = 0.45 * core + 0.55 * pos * np.exp(-np.abs(s) / 8.0) / 8.0 / 1.08
    return {"u": np.log(light + 1e-12), "c": np.log(charm + 1e-12), "b": np.log(bottom + 1e-12)}


def ip_taggers(tracks: Tracks) -> Columns:
    """4a. IP2D / IP3D: sum of per-track template log ratios over selected tracks."""
    ip_defaults = tracks.selected.sum(axis=1) == 0
    out: Columns = {}
    for name, sig in (("IP2D", tracks.s_d0), ("IP3D", tracks.s_3d)):
        tpl = _templates(np.clip(sig, -60, 60))
        llr = {k: np.where(tracks.selected, v, 0.0).sum(axis=1) for k, v in tpl.items()}
        out[f"{name}_bu"] = np.where(ip_defaults, np.nan, llr["b"] - llr["u"])
        out[f"{name}_bc"] = np.where(ip_defaults, np.nan, llr["b"] - llr["c"])
        out[f"{name}_cu"] = np.where(ip_defaults, np.nan, llr["c"] - llr["u"])
        out[f"{name}_isDefaults"] = ip_defaults.astype(np.int32)
    return out


def sv1(rng: np.random.Generator, truth: Truth, tracks: Tracks, cal: dict[str, float]) -> tuple[Columns, Vertexing]:
    """4b. SV1: one inclusive vertex from displaced tracks; also the mass and length errors JetFitter shares."""
    n = len(truth.pt)
    pt, kind, valid = truth.pt, tracks.kind, tracks.valid
    displaced = valid & (tracks.s_3d > 2.0)
    n_disp = displaced.sum(axis=1)
    n_disp_hf = (displaced & ((kind == 1) | (kind == 2))).sum(axis=1)
    n_disp_v0 = (displaced & (kind == 3)).sum(axis=1)
    v0_vetoed = (n_disp_v0 >= 2) & (n_disp_hf == 0) & (rng.random(n) < cal["sv1_v0_veto"])
    sv1_found = (n_disp >= 2) & ~v0_vetoed & (rng.random(n) < 0.93)
    e_disp = np.where(displaced, tracks.energy, 0.0).sum(axis=1)
    e_all = np.where(valid, tracks.energy, 0.0).sum(axis=1)
    # visible mass: the fraction of the decay products the vertex holds, plus prompt contamination
    n_decay_safe = np.maximum(truth.n_decay, 1)
    vis_frac = np.clip(rng.normal(0.12 + 0.45 * n_disp_hf / n_decay_safe, 0.2, n), 0.08, 0.98)
    # track mis-assignment smears the vertex mass the same way for SV1 and JetFitter
    vis_frac = vis_frac * rng.lognormal(0.0, cal["mass_smear"], n)
    # semileptonic decays: the neutrino's share of the mass is invisible
    semileptonic = rng.random(n) < np.where(truth.has_b, 0.35, 0.15)
    vis_frac = np.where(semileptonic, vis_frac * 0.7, vis_frac)
    # prompt tracks wrongly attached to the vertex (more in dense high-pT cores), seen by SV1 and JetFitter alike
    attached = np.where(n_disp_hf >= 2, rng.poisson(cal["vertex_contamination"] * (0.5 + pt / 100.0), n), 0)
    fake_mass = rng.gamma(2.0, 0.35, n) * np.sqrt(np.maximum(n_disp, 1) / 2.0)
    v0_mass = np.where(rng.random(n) < 0.7, KS_MASS, LAMBDA_MASS) + rng.normal(0, 0.015, n)
    hf_mass = truth.had_mass * vis_frac + 0.3 * (np.maximum(n_disp - n_disp_hf, 0) + attached) * rng.random(n)
    sv_mass = np.where(n_disp_hf >= 2, hf_mass, np.where(n_disp_v0 >= 2, v0_mass, fake_mass))
    sv_mass = np.where(n_disp_hf == 1, 0.5 * hf_mass + 0.5 * fake_mass, sv_mass)
    sv_mass = np.maximum(sv_mass * rng.normal(1.0, 0.06, n), 0.28)
    sigma_l = 0.1 + 1.0 / np.sqrt(pt) * (1 + 0.5 * truth.abs_eta)  # mm
    fake_len = np.where(n_disp_v0 >= 2, np.minimum(rng.exponential(15.0, n), 60.0), rng.exponential(0.4, n))
    flight = np.where(truth.has_b, truth.flight_b + 0.5 * truth.flight_c, truth.flight_c)
    true_len = np.where(n_disp_hf >= 2, flight, fake_len)
    z_len = rng.normal(0, 1.0, n)  # one measurement error shared by SV1 and JetFitter: they see the same tracks
    l3d = np.abs(true_len + z_len * sigma_l)
    lxy = l3d / np.cosh(truth.eta) * rng.uniform(0.95, 1.0, n)
    dr_scale = np.where(n_disp_hf >= 2, 0.5 / np.sqrt(pt), 0.15)
    dr_draw = np.abs(rng.normal(0, 1, n)) * dr_scale
    sv1_ntrk = np.where(sv1_found, n_disp + attached, 0)
    columns = {
        "SV1_NGTinSvx": np.where(sv1_found, sv1_ntrk, -1),
        "SV1_masssvx": np.where(sv1_found, sv_mass * 1e3, np.nan),
        "SV1_isDefaults": (~sv1_found).astype(np.int32),
        "SV1_N2Tpair": np.where(sv1_found, sv1_ntrk * (sv1_ntrk - 1) // 2 + rng.poisson(0.6, n), -1),
        "SV1_efracsvx": np.where(sv1_found, np.clip(e_disp / np.maximum(e_all, 1e-3), 0, 1), np.nan),
        "SV1_deltaR": np.where(sv1_found, dr_draw, np.nan),
        "SV1_Lxy": np.where(sv1_found, lxy, np.nan),
        "SV1_L3d": np.where(sv1_found, l3d, np.nan),
        "SV1_significance3d": np.where(sv1_found, l3d / sigma_l, np.nan),
    }
    return columns, Vertexing(vis_frac, fake_mass, fake_len, z_len, sigma_l, dr_draw, e_all)


def jetfitter(
    rng: np.random.Generator, truth: Truth, tracks: Tracks, shared: Vertexing
) -> tuple[Columns, JetFitterVertices]:
    """4c. JetFitter: vertices along the flight axis (b and c separately), single tracks count too."""
    n = len(truth.pt)
    kind = tracks.kind
    jf_cand = tracks.valid & (tracks.s_3d > 1.5)
    jf_hf = jf_cand & (kind >= 1) & (kind <= 2)
    n_jf_b = (jf_cand & (kind == 1)).sum(axis=1)
    n_jf_c = (jf_cand & (kind == 2)).sum(axis=1)
    n_jf_other = (jf_cand & ((kind == 0) | (kind == 3))).sum(axis=1)
    vtx_b = n_jf_b >= 2
    vtx_c = n_jf_c >= 2
    vtx_other = (n_jf_other >= 2) & (rng.random(n) < 0.6)
    jf_nvtx = vtx_b.astype(int) + vtx_c.astype(int) + (vtx_other & ~vtx_b & ~vtx_c).astype(int)
    jf_nvtx = np.where((jf_nvtx == 2) & (rng.random(n) < 0.6), 1, jf_nvtx)  # b and c vertices merged
    n_at_vtx = (
        np.where(vtx_b, n_jf_b, 0) + np.where(vtx_c, n_jf_c, 0) + np.where(vtx_other & ~vtx_b & ~vtx_c, n_jf_other, 0)
    )
    n_single = jf_cand.sum(axis=1) - n_at_vtx
    jf_found = (jf_nvtx > 0) | (n_single > 0)
    jf_frac = np.clip(shared.vis_frac + rng.normal(0.05, 0.03, n), 0.08, 1.0)
    jf_mass = np.where(jf_hf.sum(axis=1) >= 1, truth.had_mass * jf_frac, shared.fake_mass * 0.9)
    jf_mass = np.where(jf_found, jf_mass * rng.normal(1.0, 0.08, n) + 0.14 * n_single, np.nan)
    e_jf = np.where(jf_cand, tracks.energy, 0.0).sum(axis=1)
    jf_len = np.where(jf_hf.sum(axis=1) >= 1, truth.decay_len, shared.fake_len * 0.5)
    jf_sig = np.abs(jf_len + shared.z_len * shared.sigma_l * 1.2) / (shared.sigma_l * 1.2)
    n_cand = jf_cand.sum(axis=1)
    columns = {
        "JetFitter_mass": np.where(jf_found, np.maximum(jf_mass, 0.14) * 1e3, np.nan),
        "JetFitter_isDefaults": (~jf_found).astype(np.int32),
        "JetFitter_energyFraction": np.where(jf_found, np.clip(e_jf / np.maximum(shared.e_all, 1e-3), 0, 1), np.nan),
        "JetFitter_significance3d": np.where(jf_found, jf_sig, np.nan),
        "JetFitter_nVTX": np.where(jf_found, jf_nvtx, -1),
        "JetFitter_nSingleTracks": np.where(jf_found, n_single, -1),
        "JetFitter_nTracksAtVtx": np.where(jf_found, n_at_vtx, -1),
        "JetFitter_N2Tpair": np.where(jf_found, (n_cand * (n_cand - 1)) // 2 + rng.poisson(0.8, n), -1),
        "JetFitter_deltaR": np.where(jf_found, shared.dr_draw * rng.normal(1.1, 0.05, n), np.nan),
    }
    return columns, JetFitterVertices(jf_cand, jf_found, jf_nvtx, vtx_b, vtx_c, jf_mass)


def jetfitter_secondary_vertex(truth: Truth, tracks: Tracks, shared: Vertexing, jf: JetFitterVertices) -> Columns:
    """4d. JetFitterSecondaryVertex: the most displaced JetFitter vertex and its tracks; and the track relative
    eta over all JetFitter tracks."""
    kind, jf_cand = tracks.kind, jf.candidates
    in_sv = np.where(
        jf.vtx_c[:, None],
        jf_cand & (kind == 2),
        np.where(jf.vtx_b[:, None], jf_cand & (kind == 1), jf_cand & (kind != 1) & (kind != 2)),
    )
    n_in_sv = in_sv.sum(axis=1)
    jfsv = (jf.n_vtx > 0) & (n_in_sv >= 2)
    e_sv = np.where(in_sv, tracks.energy, 0.0).sum(axis=1)
    sv_vis = np.where(jf.vtx_c & truth.has_b, jf.mass * 0.45, jf.mass)
    disp3d = np.abs(np.where(jf.vtx_c | jf.vtx_b, truth.decay_len, shared.fake_len) + shared.z_len * shared.sigma_l)
    rel_eta_sv = np.where(in_sv, tracks.rel_eta, np.nan)
    rel_eta_jf = np.where(jf_cand, tracks.rel_eta, np.nan)
    prefix = "JetFitterSecondaryVertex_"
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows are jets without a vertex
        return {
            f"{prefix}nTracks": np.where(jfsv, n_in_sv, -1),
            f"{prefix}isDefaults": (~jfsv).astype(np.int32),
            f"{prefix}mass": np.where(jfsv, np.maximum(sv_vis, 0.14) * 1e3, np.nan),
            f"{prefix}energy": np.where(jfsv, e_sv * 1e3, np.nan),
            f"{prefix}energyFraction": np.where(jfsv, np.clip(e_sv / np.maximum(shared.e_all, 1e-3), 0, 1), np.nan),
            f"{prefix}displacement3d": np.where(jfsv, disp3d, np.nan),
            f"{prefix}displacement2d": np.where(jfsv, disp3d / np.cosh(truth.eta), np.nan),
            f"{prefix}maximumTrackRelativeEta": np.where(jfsv, np.nanmax(rel_eta_sv, axis=1), np.nan),
            f"{prefix}minimumTrackRelativeEta": np.where(jfsv, np.nanmin(rel_eta_sv, axis=1), np.nan),
            f"{prefix}averageTrackRelativeEta": np.where(jfsv, np.nanmean(rel_eta_sv, axis=1), np.nan),
            "maximumTrackRelativeEta": np.where(jf.found, np.nanmax(rel_eta_jf, axis=1), np.nan),
            "minimumTrackRelativeEta": np.where(jf.found, np.nanmin(rel_eta_jf, axis=1), np.nan),
            "averageTrackRelativeEta": np.where(jf.found, np.nanmean(rel_eta_jf, axis=1), np.nan),
        }


def rnnip(rng: np.random.Generator, tracks: Tracks, cal: dict[str, float]) -> Columns:
    """4e. RNNIP: sees the ordered track significances (and z0), better than the summed templates."""
    selected, s_3d = tracks.selected, tracks.s_3d
    n = len(s_3d)
    s_sorted = -np.sort(-np.where(selected, s_3d, -99.0), axis=1)[:, :4]
    s_sorted = np.where(s_sorted < -50, 0.0, s_sorted)
    feat = np.tanh(np.clip(s_sorted, -10, 40) / 6.0)
    n_sig3 = (selected & (s_3d > 3)).sum(axis=1)
    logit_b = 1.6 * feat[:, 0] + 2.2 * feat[:, 1] + 1.8 * feat[:, 2] + 0.9 * np.minimum(n_sig3, 5) - 2.5
    logit_c = 1.8 * feat[:, 0] + 1.6 * feat[:, 1] + 0.3 * np.minimum(n_sig3, 5) - 1.2
    noise = rng.normal(0.0, cal["rnnip_noise"], (n, 2))
    logits = np.stack([np.zeros(n), logit_c + noise[:, 1], logit_b + noise[:, 0]], axis=1)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"rnnip_pu": probs[:, 0], "rnnip_pc": probs[:, 1], "rnnip_pb": probs[:, 2]}
