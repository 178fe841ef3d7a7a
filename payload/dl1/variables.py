"""The DL1r input variables, their defaults and the flavour labels (umami's DL1r_Variables.yaml)."""

from __future__ import annotations

LABEL = "HadronConeExclTruthLabelID"
"""Truth flavour label of a jet in the dumper layout: 5 b, 4 c, 0 light (15 tau is dropped)."""

FLAVOUR_LABELS = (0, 4, 5)
"""Dumper labels in the order of the network's outputs (u, c, b)."""

FLAVOUR_NAMES = ("ujets", "cjets", "bjets")
"""atlas-ftag-tools flavour names in the order of the network's outputs."""

DL1R_VARIABLES: tuple[str, ...] = (
    # kinematics
    "pt_btagJes",
    "absEta_btagJes",
    # JetFitter
    "JetFitter_mass",
    "JetFitter_isDefaults",
    "JetFitter_energyFraction",
    "JetFitter_significance3d",
    "JetFitter_nVTX",
    "JetFitter_nSingleTracks",
    "JetFitter_nTracksAtVtx",
    "JetFitter_N2Tpair",
    "JetFitter_deltaR",
    # SV1
    "SV1_NGTinSvx",
    "SV1_masssvx",
    "SV1_isDefaults",
    "SV1_N2Tpair",
    "SV1_efracsvx",
    "SV1_deltaR",
    "SV1_Lxy",
    "SV1_L3d",
    "SV1_significance3d",
    # IP2D / IP3D log-likelihood ratios
    "IP2D_bu",
    "IP2D_isDefaults",
    "IP2D_bc",
    "IP2D_cu",
    "IP3D_bu",
    "IP3D_isDefaults",
    "IP3D_bc",
    "IP3D_cu",
    # JetFitterSecondaryVertex
    "JetFitterSecondaryVertex_nTracks",
    "JetFitterSecondaryVertex_isDefaults",
    "JetFitterSecondaryVertex_mass",
    "JetFitterSecondaryVertex_energy",
    "JetFitterSecondaryVertex_energyFraction",
    "JetFitterSecondaryVertex_displacement3d",
    "JetFitterSecondaryVertex_displacement2d",
    "JetFitterSecondaryVertex_maximumTrackRelativeEta",
    "JetFitterSecondaryVertex_minimumTrackRelativeEta",
    "JetFitterSecondaryVertex_averageTrackRelativeEta",
    # track relative eta
    "maximumTrackRelativeEta",
    "minimumTrackRelativeEta",
    "averageTrackRelativeEta",
    # RNNIP
    "rnnip_pb",
    "rnnip_pc",
    "rnnip_pu",
)
"""The 44 DL1r inputs, in umami's order."""

COUNT_DEFAULTS: dict[str, float] = {
    "JetFitter_energyFraction": 0.0,
    "JetFitter_significance3d": 0.0,
    "JetFitter_nVTX": -1.0,
    "JetFitter_nSingleTracks": -1.0,
    "JetFitter_nTracksAtVtx": -1.0,
    "JetFitter_N2Tpair": -1.0,
    "SV1_N2Tpair": -1.0,
    "SV1_NGTinSvx": -1.0,
    "SV1_efracsvx": 0.0,
}
"""Fixed replacement values for missing inputs (umami); every other missing value becomes the variable's mean."""


def is_flag(variable: str) -> bool:
    """Whether a variable is a 0/1 flag, which is never scaled."""
    return variable.endswith("isDefaults")
