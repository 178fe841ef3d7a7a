"""Synthetic ttbar-like jets in the training-dataset-dumper layout, with physically motivated DL1r inputs.

The generator follows one jet from its truth flavour to the low-level tagger outputs:

1. flavour (ttbar-like fractions), jet pT (b harder than light) and eta;
2. the heavy hadron: momentum fraction, boost, proper decay length (b: c tau = 455 um, then the
   cascade c hadron; c: a D0/D+/Ds/Lambda_c mixture), charged decay multiplicity and visible mass;
3. tracks: prompt fragmentation tracks (Gaussian core plus resolution tails), decay tracks whose impact
   parameter scales with c tau, K_S/Lambda and material-interaction tracks in light jets, and light jets whose
   b or c hadron lies just outside the labelling cone; resolution worsens at low pT and large |eta|;
4. the low-level taggers computed from those tracks (``dl1.synthetic_taggers``): IP2D/IP3D log-likelihood
   ratios from fixed templates, SV1 (one inclusive vertex, V0 veto), JetFitter (b and c vertices along the
   flight axis), track relative eta, and an RNNIP-like score from the ordered track significances;
5. ``*_isDefaults`` flags and missing values (NaN, or -1 for counts) where a tagger finds nothing.

Everything is drawn from one ``numpy.random.Generator`` seeded by the caller, so a seed gives the same jets
on every machine. The knobs were calibrated so that a DL1r-sized network lands near the published DL1r
performance (see the issue note and ``payload/README.md``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dl1.synthetic_taggers import (
    Tracks,
    Truth,
    ip_taggers,
    jetfitter,
    jetfitter_secondary_vertex,
    rnnip,
    sv1,
)
from dl1.variables import DL1R_VARIABLES, LABEL

FRACTIONS = {"u": 0.60, "c": 0.11, "b": 0.29}
"""Flavour fractions of the generated jets (ttbar-like, pT > 20 GeV)."""

B_MASS, C_MASS = 5.28, 1.87  # GeV
B_CTAU = 0.455  # mm
C_CTAU = np.array([0.123, 0.312, 0.150, 0.060])  # D0, D+, Ds, Lambda_c (mm)
C_SPECIES = np.array([0.60, 0.24, 0.10, 0.06])
KS_CTAU = 26.8  # mm

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


def _truth(rng: np.random.Generator, n: int, cal: dict[str, float]) -> Truth:
    """Steps 1 and 2: flavour, kinematics and the heavy hadrons (GeV, mm)."""
    # 1. flavour and kinematics
    flav = rng.choice(np.array([0, 4, 5]), size=n, p=[FRACTIONS["u"], FRACTIONS["c"], FRACTIONS["b"]])
    is_b, is_c, is_u = flav == 5, flav == 4, flav == 0
    log_pt = np.where(is_b, rng.normal(np.log(62.0), 0.55, n), rng.normal(np.log(45.0), 0.65, n))
    pt = np.clip(np.exp(log_pt), 20.0, 2500.0)  # GeV
    pt = np.where(pt <= 20.0, 20.0 + rng.exponential(5.0, n), pt)
    eta = rng.normal(0.0, np.where(is_b, 1.05, 1.25), n)
    eta = np.where(np.abs(eta) > 2.5, rng.uniform(-2.5, 2.5, n), eta)

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

    # dense cores and hadronic interactions lose decay tracks: a per-jet reconstruction efficiency
    trk_eff = np.clip(cal["track_efficiency"] + rng.normal(0.0, 0.25, n), 0.2, 1.0)
    n_decay_b = np.where(has_b, rng.binomial(rng.poisson(1.2, n) + 1, trk_eff), 0)
    n_decay_c = np.where(
        has_b | has_c,
        rng.binomial(rng.choice([1, 2, 3, 4], size=n, p=[0.05, 0.30, 0.40, 0.25]), trk_eff),
        0,
    )
    return Truth(
        flavour=flav,
        pt=pt,
        eta=eta,
        abs_eta=np.abs(eta),
        has_b=has_b,
        clean_light=is_u & ~hf_out,
        x_frac=x_frac,
        c_ctau=c_ctau,
        flight_b=flight_b,
        flight_c=flight_c,
        decay_len=flight_b + flight_c,  # the cascade c vertex lies beyond the b vertex
        n_decay_b=n_decay_b,
        n_decay=n_decay_b + n_decay_c,
        had_mass=np.where(has_b, B_MASS, np.where(has_c, C_MASS, 0.0)),
    )


def _tracks(rng: np.random.Generator, truth: Truth, cal: dict[str, float]) -> Tracks:
    """Step 3: a fixed-width padded track table per jet (max 24 tracks) and what the detector measures of it."""
    n, pt, eta, has_b = len(truth.pt), truth.pt, truth.eta, truth.has_b
    n_decay_b, n_decay = truth.n_decay_b, truth.n_decay
    n_prompt = np.clip(rng.poisson(2.0 + pt / 25.0, n) + 1, 1, 20)
    n_prompt = np.where(has_b, np.maximum(n_prompt - 1, 1), n_prompt)
    v0 = truth.clean_light & (rng.random(n) < cal["v0_rate"] * np.clip(pt / 60.0, 0.5, 2.0))
    material = truth.clean_light & ~v0 & (rng.random(n) < cal["material_rate"])
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
    decay_pt = pt[:, None] * truth.x_frac[:, None] / (n_decay[:, None] + 2.0)
    trk_pt = np.where(kind >= 1, np.maximum(trk_pt, decay_pt), trk_pt)
    sigma_d0 = (cal["d0_resolution_um"] + cal["d0_ms_um_gev"] / trk_pt * np.sqrt(np.cosh(eta))[:, None]) * 1e-3  # mm
    sigma_z0 = sigma_d0 * (1.3 + 0.6 * truth.abs_eta[:, None])

    # true impact parameters: ~ c tau * |sin| for decay tracks, independent of the boost
    ang = np.abs(rng.normal(0.0, 0.8, (n, max_tracks)))
    exp_t = rng.exponential(1.0, (n, max_tracks))
    d0_true = np.zeros((n, max_tracks))
    d0_true = np.where(kind == 1, B_CTAU * exp_t * ang * cal["b_ip_scale"], d0_true)
    c_ip = np.where(has_b, (truth.c_ctau + 0.5 * B_CTAU) * cal["b_ip_scale"], truth.c_ctau * cal["c_ip_scale"])
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
    return Tracks(
        valid=valid,
        kind=kind,
        energy=trk_pt * np.cosh(eta)[:, None],
        s_d0=s_d0,
        s_3d=s_3d,
        rel_eta=rel_eta,
        selected=valid & (trk_pt > 1.0),
    )


def generate_jets(n_jets: int, seed: int) -> np.ndarray:
    """Generate ``n_jets`` synthetic jets (structured array, dumper layout, MeV and mm), deterministic per seed."""
    if n_jets < 1:
        raise ValueError(f"jets must be at least 1, got {n_jets}")
    rng = np.random.default_rng(seed)
    n = n_jets
    # the order of these steps is the order of the random draws: part of what a seed means
    truth = _truth(rng, n, CALIBRATION)
    tracks = _tracks(rng, truth, CALIBRATION)
    out = ip_taggers(tracks)
    sv1_columns, shared = sv1(rng, truth, tracks, CALIBRATION)
    out.update(sv1_columns)
    jf_columns, vertices = jetfitter(rng, truth, tracks, shared)
    out.update(jf_columns)
    out.update(jetfitter_secondary_vertex(truth, tracks, shared, vertices))
    out.update(rnnip(rng, tracks, CALIBRATION))
    # kinematics
    out["pt_btagJes"] = truth.pt * 1e3 * rng.normal(1.0, 0.03, n)
    out["absEta_btagJes"] = truth.abs_eta

    jets = np.zeros(n, dtype=jets_dtype())
    jets["pt"] = truth.pt * 1e3
    jets["eta"] = truth.eta
    jets["eventNumber"] = rng.permutation(n).astype(np.int64) * 7 + rng.integers(0, 7, n)
    jets[LABEL] = truth.flavour
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
