"""Synthetic ttbar-like jets in the training-dataset-dumper layout, with physically motivated DL1r inputs.

The generator follows one jet from its truth flavour to the low-level tagger outputs:

1. flavour (ttbar-like fractions), jet pT (b harder than light) and eta;
2. the heavy hadron: momentum fraction, boost, proper decay length (b: c tau = 455 um, then the
   cascade c hadron; c: a D0/D+/Ds/Lambda_c mixture), charged decay multiplicity and visible mass;
3. tracks: prompt fragmentation tracks (Gaussian core plus resolution tails), decay tracks whose impact
   parameter scales with c tau, K_S/Lambda and material-interaction tracks in light jets, and light jets whose
   b or c hadron lies just outside the labelling cone; resolution worsens at low pT and large |eta|;
4. the low-level taggers computed from those tracks: IP2D/IP3D log-likelihood ratios from fixed templates,
   SV1 (one inclusive vertex, V0 veto), JetFitter (b and c vertices along the flight axis), track
   relative eta, and an RNNIP-like score from the ordered track significances;
5. ``*_isDefaults`` flags and missing values (NaN, or -1 for counts) where a tagger finds nothing.

Everything is drawn from one ``numpy.random.Generator`` seeded by the caller, so a seed gives the same jets
on every machine. The knobs were calibrated so that a DL1r-sized network lands near the published DL1r
performance (see the issue note and ``payload/README.md``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from dl1.variables import DL1R_VARIABLES, LABEL

FRACTIONS = {"u": 0.60, "c": 0.11, "b": 0.29}
"""Flavour fractions of the generated jets (ttbar-like, pT > 20 GeV)."""

B_MASS, C_MASS = 5.28, 1.87  # GeV
B_CTAU = 0.455  # mm
C_CTAU = np.array([0.123, 0.312, 0.150, 0.060])  # D0, D+, Ds, Lambda_c (mm)
C_SPECIES = np.array([0.60, 0.24, 0.10, 0.06])
KS_CTAU, KS_MASS = 26.8, 0.498
LAMBDA_MASS = 1.116

CALIBRATION = {
    "d0_resolution_um": 12.0,  # intrinsic transverse IP resolution at high pT
    "d0_ms_um_gev": 70.0,  # multiple-scattering term, um * GeV / pT(track)
    "tail_fraction": 0.05,  # prompt tracks with a wide resolution tail
    "tail_width": 4.0,  # width of that tail, in units of the resolution
    "v0_rate": 0.10,  # light jets with a K_S or Lambda among their tracks (at pT = 60 GeV)
    "material_rate": 0.03,  # light jets with a hadronic interaction in the material
    "hf_outside_cone": 0.018,  # light-labelled jets with a b/c hadron just outside the cone
    "c_from_b_outside_cone": 0.12,  # c-labelled jets with a b hadron just outside the cone
    "sv1_v0_veto": 0.85,  # fraction of V0 vertices SV1 rejects
    "rnnip_noise": 0.9,  # Gaussian noise on the RNNIP logits
    "b_ip_scale": 0.5,  # decay-track d0 of b hadrons in units of c tau * |angle|
    "c_ip_scale": 1.0,  # the same for c hadrons in c jets
    "mass_smear": 0.45,  # log-normal width of the reconstructed vertex mass
    "vertex_contamination": 0.8,  # prompt tracks attached to a heavy-flavour vertex (at pT = 50 GeV)
    "track_efficiency": 0.7,  # mean per-jet efficiency to reconstruct and select a decay track
}
"""Detector and fake-rate knobs; the values give DL1r-like rejections (see the module docstring)."""


def jets_dtype(variables: tuple[str, ...] = DL1R_VARIABLES) -> np.dtype:
    """The structured dtype of the ``jets`` dataset the generator writes."""
    fields: list[tuple[str, str]] = [("pt", "f4"), ("eta", "f4"), ("eventNumber", "i8"), (LABEL, "i4")]
    for name in variables:
        is_count = name.endswith(("isDefaults", "nVTX", "nSingleTracks", "nTracksAtVtx", "N2Tpair", "NGTinSvx"))
        is_count = is_count or name == "JetFitterSecondaryVertex_nTracks"
        fields.append((name, "i4" if is_count else "f4"))
    return np.dtype(fields)


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


def generate_jets(n_jets: int, seed: int) -> np.ndarray:
    """Generate ``n_jets`` synthetic jets (structured array, dumper layout, MeV and mm), deterministic per seed."""
    if n_jets < 1:
        raise ValueError(f"jets must be at least 1, got {n_jets}")
    rng = np.random.default_rng(seed)
    cal = CALIBRATION
    n = n_jets

    # 1. flavour and kinematics
    flav = rng.choice(np.array([0, 4, 5]), size=n, p=[FRACTIONS["u"], FRACTIONS["c"], FRACTIONS["b"]])
    is_b, is_c, is_u = flav == 5, flav == 4, flav == 0
    log_pt = np.where(is_b, rng.normal(np.log(62.0), 0.55, n), rng.normal(np.log(45.0), 0.65, n))
    pt = np.clip(np.exp(log_pt), 20.0, 2500.0)  # GeV
    pt = np.where(pt <= 20.0, 20.0 + rng.exponential(5.0, n), pt)
    eta = rng.normal(0.0, np.where(is_b, 1.05, 1.25), n)
    eta = np.where(np.abs(eta) > 2.5, rng.uniform(-2.5, 2.5, n), eta)
    abs_eta = np.abs(eta)

    # light jets with a heavy hadron just outside the labelling cone behave like weak b or c jets
    hf_out = is_u & (rng.random(n) < cal["hf_outside_cone"])
    hf_out_b = hf_out & (rng.random(n) < 0.4)
    hf_out_c = hf_out & ~hf_out_b
    # c-labelled jets whose b hadron lies just outside the cone while its cascade c hadron is inside
    c_from_b = is_c & (rng.random(n) < cal["c_from_b_outside_cone"])
    has_b = is_b | hf_out_b | c_from_b
    has_c = is_c | hf_out_c

    # 2. heavy hadrons: momentum fraction, boost, flight length
    x_frac = np.where(has_b, rng.beta(7.0, 3.0, n), rng.beta(6.0, 3.0, n))
    x_frac = np.where(hf_out, x_frac * 0.6, np.where(c_from_b, x_frac * 0.8, x_frac))
    p_had = pt * np.cosh(eta) * x_frac
    species = rng.choice(len(C_CTAU), size=n, p=C_SPECIES)
    c_ctau = C_CTAU[species]
    bg_b = p_had / B_MASS
    bg_c = np.where(has_b, p_had * 0.6 / C_MASS, p_had / C_MASS)
    flight_b = np.where(has_b, bg_b * B_CTAU * rng.exponential(1.0, n), 0.0)
    flight_c = np.where(has_b | has_c, bg_c * c_ctau * rng.exponential(1.0, n), 0.0)
    decay_len = flight_b + flight_c  # the cascade c vertex lies beyond the b vertex

    # dense cores and hadronic interactions lose decay tracks: a per-jet reconstruction efficiency
    trk_eff = np.clip(cal["track_efficiency"] + rng.normal(0.0, 0.25, n), 0.2, 1.0)
    n_decay_b = np.where(has_b, rng.binomial(rng.poisson(1.2, n) + 1, trk_eff), 0)
    n_decay_c = np.where(
        has_b | has_c,
        rng.binomial(rng.choice([1, 2, 3, 4], size=n, p=[0.05, 0.30, 0.40, 0.25]), trk_eff),
        0,
    )
    n_decay = n_decay_b + n_decay_c
    had_mass = np.where(has_b, B_MASS, np.where(has_c, C_MASS, 0.0))

    # 3. tracks: a fixed-width padded table per jet (max 24 tracks)
    n_prompt = np.clip(rng.poisson(2.0 + pt / 25.0, n) + 1, 1, 20)
    n_prompt = np.where(has_b, np.maximum(n_prompt - 1, 1), n_prompt)
    v0 = is_u & ~hf_out & (rng.random(n) < cal["v0_rate"] * np.clip(pt / 60.0, 0.5, 2.0))
    material = is_u & ~hf_out & ~v0 & (rng.random(n) < cal["material_rate"])
    n_v0 = np.where(v0 | material, 2 + (material & (rng.random(n) < 0.4)), 0)
    max_tracks = 24
    slots = np.arange(max_tracks)[None, :]
    n_total = np.minimum(n_prompt + n_decay + n_v0, max_tracks)
    valid = slots < n_total[:, None]
    kind = np.zeros((n, max_tracks), dtype=np.int8)  # 0 prompt, 1 b decay, 2 c decay, 3 V0/material
    kind[(slots >= n_prompt[:, None]) & (slots < (n_prompt + n_decay_b)[:, None])] = 1
    kind[(slots >= (n_prompt + n_decay_b)[:, None]) & (slots < (n_prompt + n_decay)[:, None])] = 2
    kind[slots >= (n_prompt + n_decay)[:, None]] = 3
    kind[~valid] = -1

    trk_pt = pt[:, None] * rng.dirichlet(np.ones(max_tracks) * 0.7, n) * 0.65 + 0.5
    trk_pt = np.where(kind >= 1, np.maximum(trk_pt, pt[:, None] * x_frac[:, None] / (n_decay[:, None] + 2.0)), trk_pt)
    sigma_d0 = (cal["d0_resolution_um"] + cal["d0_ms_um_gev"] / trk_pt * np.sqrt(np.cosh(eta))[:, None]) * 1e-3  # mm
    sigma_z0 = sigma_d0 * (1.3 + 0.6 * abs_eta[:, None])

    # true impact parameters: ~ c tau * |sin| for decay tracks, independent of the boost
    ang = np.abs(rng.normal(0.0, 0.8, (n, max_tracks)))
    exp_t = rng.exponential(1.0, (n, max_tracks))
    d0_true = np.zeros((n, max_tracks))
    d0_true = np.where(kind == 1, B_CTAU * exp_t * ang * cal["b_ip_scale"], d0_true)
    c_ip = np.where(has_b, (c_ctau + 0.5 * B_CTAU) * cal["b_ip_scale"], c_ctau * cal["c_ip_scale"])
    d0_true = np.where(kind == 2, c_ip[:, None] * exp_t * ang, d0_true)
    d0_true = np.where(kind == 3, np.minimum(KS_CTAU * exp_t * ang * 0.05, 30.0), d0_true)
    z0_true = d0_true * np.abs(rng.normal(0.8, 0.5, (n, max_tracks)))
    # lifetime sign: positive unless the jet axis is mismeasured
    wrong_sign = rng.random((n, max_tracks)) < np.where(kind == 3, 0.3, 0.07)
    sign = np.where(wrong_sign, -1.0, 1.0)
    tail = rng.random((n, max_tracks)) < cal["tail_fraction"]
    width = np.where(tail, cal["tail_width"], 1.0)
    s_d0 = sign * d0_true / sigma_d0 + rng.normal(0.0, 1.0, (n, max_tracks)) * width
    s_z0 = sign * z0_true / sigma_z0 + rng.normal(0.0, 1.0, (n, max_tracks)) * width
    s_3d = np.sign(s_d0) * np.sqrt(s_d0**2 + 0.5 * s_z0**2) / np.sqrt(1.5)

    # track relative eta (to the jet axis): decay products of heavy hadrons have larger pT_rel
    pt_rel = np.where(kind == 1, rng.gamma(3.0, 0.45, (n, max_tracks)), rng.gamma(2.0, 0.22, (n, max_tracks)))
    pt_rel = np.where(kind == 2, rng.gamma(3.0, 0.22, (n, max_tracks)), pt_rel)
    rel_eta = np.log(2.0 * trk_pt * np.cosh(eta)[:, None] / np.maximum(pt_rel, 0.05))

    # 4a. IP2D / IP3D: sum of per-track template log ratios over selected tracks
    selected = valid & (trk_pt > 1.0)
    n_sel = selected.sum(axis=1)
    ip_defaults = n_sel == 0
    out: dict[str, np.ndarray] = {}
    for name, sig in (("IP2D", s_d0), ("IP3D", s_3d)):
        tpl = _templates(np.clip(sig, -60, 60))
        llr = {k: np.where(selected, v, 0.0).sum(axis=1) for k, v in tpl.items()}
        out[f"{name}_bu"] = np.where(ip_defaults, np.nan, llr["b"] - llr["u"])
        out[f"{name}_bc"] = np.where(ip_defaults, np.nan, llr["b"] - llr["c"])
        out[f"{name}_cu"] = np.where(ip_defaults, np.nan, llr["c"] - llr["u"])
        out[f"{name}_isDefaults"] = ip_defaults.astype(np.int32)

    # 4b. SV1: one inclusive vertex from displaced tracks
    displaced = valid & (s_3d > 2.0)
    n_disp = displaced.sum(axis=1)
    n_disp_hf = (displaced & ((kind == 1) | (kind == 2))).sum(axis=1)
    n_disp_v0 = (displaced & (kind == 3)).sum(axis=1)
    v0_vetoed = (n_disp_v0 >= 2) & (n_disp_hf == 0) & (rng.random(n) < cal["sv1_v0_veto"])
    sv1_found = (n_disp >= 2) & ~v0_vetoed & (rng.random(n) < 0.93)
    sv1_ntrk = np.where(sv1_found, n_disp, 0)  # contamination added below, once it is drawn
    trk_e = trk_pt * np.cosh(eta)[:, None]
    e_disp = np.where(displaced, trk_e, 0.0).sum(axis=1)
    e_all = np.where(valid, trk_e, 0.0).sum(axis=1)
    # visible mass: the fraction of the decay products the vertex holds, plus prompt contamination
    n_decay_safe = np.maximum(n_decay, 1)
    vis_frac = np.clip(rng.normal(0.12 + 0.45 * n_disp_hf / n_decay_safe, 0.2, n), 0.08, 0.98)
    # track mis-assignment smears the vertex mass the same way for SV1 and JetFitter
    vis_frac = vis_frac * rng.lognormal(0.0, cal["mass_smear"], n)
    # semileptonic decays: the neutrino's share of the mass is invisible
    semileptonic = rng.random(n) < np.where(has_b, 0.35, 0.15)
    vis_frac = np.where(semileptonic, vis_frac * 0.7, vis_frac)
    # prompt tracks wrongly attached to the vertex (more in dense high-pT cores), seen by SV1 and JetFitter alike
    attached = np.where(n_disp_hf >= 2, rng.poisson(cal["vertex_contamination"] * (0.5 + pt / 100.0), n), 0)
    fake_mass = rng.gamma(2.0, 0.35, n) * np.sqrt(np.maximum(n_disp, 1) / 2.0)
    v0_mass = np.where(rng.random(n) < 0.7, KS_MASS, LAMBDA_MASS) + rng.normal(0, 0.015, n)
    hf_mass = had_mass * vis_frac + 0.3 * (np.maximum(n_disp - n_disp_hf, 0) + attached) * rng.random(n)
    sv_mass = np.where(n_disp_hf >= 2, hf_mass, np.where(n_disp_v0 >= 2, v0_mass, fake_mass))
    sv_mass = np.where(n_disp_hf == 1, 0.5 * hf_mass + 0.5 * fake_mass, sv_mass)
    sv_mass = np.maximum(sv_mass * rng.normal(1.0, 0.06, n), 0.28)
    sigma_l = 0.1 + 1.0 / np.sqrt(pt) * (1 + 0.5 * abs_eta)  # mm
    fake_len = np.where(n_disp_v0 >= 2, np.minimum(rng.exponential(15.0, n), 60.0), rng.exponential(0.4, n))
    true_len = np.where(n_disp_hf >= 2, np.where(has_b, flight_b + 0.5 * flight_c, flight_c), fake_len)
    z_len = rng.normal(0, 1.0, n)  # one measurement error shared by SV1 and JetFitter: they see the same tracks
    l3d = np.abs(true_len + z_len * sigma_l)
    lxy = l3d / np.cosh(eta) * rng.uniform(0.95, 1.0, n)
    dr_scale = np.where(n_disp_hf >= 2, 0.5 / np.sqrt(pt), 0.15)
    dr_draw = np.abs(rng.normal(0, 1, n)) * dr_scale
    sv1_ntrk = np.where(sv1_found, sv1_ntrk + attached, 0)
    sv1 = {
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
    out.update(sv1)

    # 4c. JetFitter: vertices along the flight axis (b and c separately), single tracks count too
    jf_cand = valid & (s_3d > 1.5)
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
    jf_frac = np.clip(vis_frac + rng.normal(0.05, 0.03, n), 0.08, 1.0)
    jf_mass = np.where(jf_hf.sum(axis=1) >= 1, had_mass * jf_frac, fake_mass * 0.9)
    jf_mass = np.where(jf_found, jf_mass * rng.normal(1.0, 0.08, n) + 0.14 * n_single, np.nan)
    e_jf = np.where(jf_cand, trk_e, 0.0).sum(axis=1)
    jf_len = np.where(jf_hf.sum(axis=1) >= 1, decay_len, fake_len * 0.5)
    jf_sig = np.abs(jf_len + z_len * sigma_l * 1.2) / (sigma_l * 1.2)
    out.update(
        {
            "JetFitter_mass": np.where(jf_found, np.maximum(jf_mass, 0.14) * 1e3, np.nan),
            "JetFitter_isDefaults": (~jf_found).astype(np.int32),
            "JetFitter_energyFraction": np.where(jf_found, np.clip(e_jf / np.maximum(e_all, 1e-3), 0, 1), np.nan),
            "JetFitter_significance3d": np.where(jf_found, jf_sig, np.nan),
            "JetFitter_nVTX": np.where(jf_found, jf_nvtx, -1),
            "JetFitter_nSingleTracks": np.where(jf_found, n_single, -1),
            "JetFitter_nTracksAtVtx": np.where(jf_found, n_at_vtx, -1),
            "JetFitter_N2Tpair": np.where(
                jf_found, (jf_cand.sum(axis=1) * (jf_cand.sum(axis=1) - 1)) // 2 + rng.poisson(0.8, n), -1
            ),
            "JetFitter_deltaR": np.where(jf_found, dr_draw * rng.normal(1.1, 0.05, n), np.nan),
        }
    )

    # 4d. JetFitterSecondaryVertex: the most displaced JetFitter vertex and its tracks
    jfsv = jf_nvtx > 0
    in_sv = np.where(
        vtx_c[:, None],
        jf_cand & (kind == 2),
        np.where(vtx_b[:, None], jf_cand & (kind == 1), jf_cand & (kind != 1) & (kind != 2)),
    )
    n_in_sv = in_sv.sum(axis=1)
    jfsv = jfsv & (n_in_sv >= 2)
    e_sv = np.where(in_sv, trk_e, 0.0).sum(axis=1)
    sv_vis = np.where(vtx_c & has_b, jf_mass * 0.45, jf_mass)
    disp3d = np.abs(np.where(vtx_c | vtx_b, decay_len, fake_len) + z_len * sigma_l)
    rel_eta_sv = np.where(in_sv, rel_eta, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows are jets without a vertex
        out.update(
            {
                "JetFitterSecondaryVertex_nTracks": np.where(jfsv, n_in_sv, -1),
                "JetFitterSecondaryVertex_isDefaults": (~jfsv).astype(np.int32),
                "JetFitterSecondaryVertex_mass": np.where(jfsv, np.maximum(sv_vis, 0.14) * 1e3, np.nan),
                "JetFitterSecondaryVertex_energy": np.where(jfsv, e_sv * 1e3, np.nan),
                "JetFitterSecondaryVertex_energyFraction": np.where(
                    jfsv, np.clip(e_sv / np.maximum(e_all, 1e-3), 0, 1), np.nan
                ),
                "JetFitterSecondaryVertex_displacement3d": np.where(jfsv, disp3d, np.nan),
                "JetFitterSecondaryVertex_displacement2d": np.where(jfsv, disp3d / np.cosh(eta), np.nan),
                "JetFitterSecondaryVertex_maximumTrackRelativeEta": np.where(
                    jfsv, np.nanmax(rel_eta_sv, axis=1), np.nan
                ),
                "JetFitterSecondaryVertex_minimumTrackRelativeEta": np.where(
                    jfsv, np.nanmin(rel_eta_sv, axis=1), np.nan
                ),
                "JetFitterSecondaryVertex_averageTrackRelativeEta": np.where(
                    jfsv, np.nanmean(rel_eta_sv, axis=1), np.nan
                ),
            }
        )
        # track relative eta over the JetFitter tracks
        rel_eta_jf = np.where(jf_cand, rel_eta, np.nan)
        out["maximumTrackRelativeEta"] = np.where(jf_found, np.nanmax(rel_eta_jf, axis=1), np.nan)
        out["minimumTrackRelativeEta"] = np.where(jf_found, np.nanmin(rel_eta_jf, axis=1), np.nan)
        out["averageTrackRelativeEta"] = np.where(jf_found, np.nanmean(rel_eta_jf, axis=1), np.nan)

    # 4e. RNNIP: sees the ordered track significances (and z0), better than the summed templates
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
    out["rnnip_pu"], out["rnnip_pc"], out["rnnip_pb"] = probs[:, 0], probs[:, 1], probs[:, 2]

    # kinematics
    out["pt_btagJes"] = pt * 1e3 * rng.normal(1.0, 0.03, n)
    out["absEta_btagJes"] = abs_eta

    jets = np.zeros(n, dtype=jets_dtype())
    jets["pt"] = pt * 1e3
    jets["eta"] = eta
    jets["eventNumber"] = rng.permutation(n).astype(np.int64) * 7 + rng.integers(0, 7, n)
    jets[LABEL] = flav
    for name in DL1R_VARIABLES:
        jets[name] = out[name]
    return jets


def write_jets(path: Path | str, jets: np.ndarray) -> None:
    """Write a structured jet array as the ``jets`` dataset of a dumper-style HDF5 file."""
    import h5py  # only where a file is written: dl1.validation imports this module without h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("jets", data=jets)


CHUNK = 250_000
"""Jets generated per random stream: bounds memory, and fixes the jets of a seed whatever the total."""


def synthetic_blocks(n_jets: int, seed: int):
    """Yield ``(start, jets)`` blocks of the synthetic sample for ``(n_jets, seed)``; the same blocks every time."""
    if n_jets < 1:
        raise ValueError(f"jets must be at least 1, got {n_jets}")
    for i, low in enumerate(range(0, n_jets, CHUNK)):
        high = min(low + CHUNK, n_jets)
        block = generate_jets(high - low, seed * 1_000_003 + i)
        block["eventNumber"] += low * 7
        yield low, block


TEST_STREAM = 500_000
"""Offset of the random streams of a separate test sample (``synthetic_test_jets``) from the training sample's."""


def synthetic_test_jets(n_jets: int, seed: int) -> np.ndarray:
    """A test sample for ``seed`` drawn from its own random streams: independent of ``synthetic_jets(n, seed)``
    for any n, the same for the same ``(n_jets, seed)`` everywhere."""
    blocks = []
    for i, low in enumerate(range(0, n_jets, CHUNK)):
        block = generate_jets(min(CHUNK, n_jets - low), seed * 1_000_003 + TEST_STREAM + i)
        block["eventNumber"] += low * 7
        blocks.append(block)
    return np.concatenate(blocks)


def synthetic_jets(n_jets: int, seed: int) -> np.ndarray:
    """The synthetic sample for ``(n_jets, seed)`` in memory: identical to what ``generate_file`` writes."""
    return np.concatenate([block for _, block in synthetic_blocks(n_jets, seed)])


def generate_file(path: Path | str, n_jets: int, seed: int) -> int:
    """Write the synthetic sample for ``(n_jets, seed)`` into a dumper-style HDF5 file; returns the count."""
    import h5py  # only where a file is written: dl1.validation imports this module without h5py

    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "jets", shape=(n_jets,), dtype=jets_dtype(), compression="lzf", chunks=(min(n_jets, 10_000),)
        )
        f.attrs["generator"] = "dl1.synthetic"
        f.attrs["seed"] = seed
        for low, block in synthetic_blocks(n_jets, seed):
            ds[low : low + len(block)] = block
    return n_jets
