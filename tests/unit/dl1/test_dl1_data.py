"""Synthetic jets, reading dumper-style files, defaults, scaling, weights and the split; bad inputs."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from dl1.data import (
    apply_scaling,
    compute_scale_dict,
    flavour_weights,
    load_dataset,
    parse_data_settings,
    read_jets,
    split_by_event,
)
from dl1.errors import DataError, SettingsError
from dl1.synthetic import generate_file, generate_jets, synthetic_jets
from dl1.variables import DL1R_VARIABLES, LABEL


@pytest.fixture(scope="module")
def jets() -> np.ndarray:
    return synthetic_jets(6000, seed=5)


def test_synthetic_jets_are_deterministic_per_seed():
    a, b, c = generate_jets(500, 3), generate_jets(500, 3), generate_jets(500, 4)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_synthetic_jets_have_the_dumper_layout_and_flavours(jets):
    assert set(DL1R_VARIABLES) <= set(jets.dtype.names)
    assert {"pt", "eta", "eventNumber", LABEL} <= set(jets.dtype.names)
    fractions = np.bincount(np.searchsorted([0, 4, 5], jets[LABEL]), minlength=3) / len(jets)
    assert fractions == pytest.approx([0.60, 0.11, 0.29], abs=0.03)
    assert len(np.unique(jets["eventNumber"])) == len(jets)
    assert np.all(jets["pt"] >= 20e3)


def test_synthetic_physics_separates_flavours(jets):
    b, c, u = (jets[LABEL] == k for k in (5, 4, 0))
    # light jets rarely have a secondary vertex; b jets mostly do
    assert jets["SV1_isDefaults"][u].mean() > 0.9 > 0.7 > jets["SV1_isDefaults"][b].mean()
    # no vertex: missing value (NaN) or -1 for counts, as the dumper writes them
    no_sv = jets["SV1_isDefaults"] == 1
    assert np.all(np.isnan(jets["SV1_masssvx"][no_sv])) and np.all(jets["SV1_NGTinSvx"][no_sv] == -1)
    # b vertices are heavier and more displaced than c vertices
    assert np.nanmedian(jets["SV1_masssvx"][b]) > np.nanmedian(jets["SV1_masssvx"][c])
    assert np.nanmedian(jets["SV1_significance3d"][b]) > np.nanmedian(jets["SV1_significance3d"][u])
    assert np.nanmedian(jets["IP3D_bu"][b]) > np.nanmedian(jets["IP3D_bu"][u])
    assert np.median(jets["rnnip_pb"][b]) > np.median(jets["rnnip_pb"][u])
    rnnip = jets["rnnip_pb"] + jets["rnnip_pc"] + jets["rnnip_pu"]
    assert rnnip == pytest.approx(np.ones(len(jets)), abs=1e-5)


def test_generated_file_equals_the_in_memory_sample(tmp_path):
    path = tmp_path / "jets.h5"
    generate_file(path, 700, seed=2)
    with h5py.File(path) as f:
        on_disk = f["jets"][:]
    assert on_disk.tobytes() == synthetic_jets(700, 2).tobytes()


def test_split_is_two_thirds_one_sixth_one_sixth_by_event(jets):
    train, val, test = split_by_event(jets)
    assert len(train) + len(val) + len(test) == len(jets)
    assert len(train) / len(jets) == pytest.approx(2 / 3, abs=0.03)
    assert set(train["eventNumber"] % 6) == {0, 1, 2, 3}
    assert set(test["eventNumber"] % 6) == {5}


def test_defaults_and_scaling(jets):
    variables = ["SV1_masssvx", "SV1_NGTinSvx", "SV1_isDefaults", "pt_btagJes"]
    scale = compute_scale_dict(jets, variables)
    assert scale["SV1_isDefaults"] == {"shift": 0.0, "scale": 1.0, "default": 0.0}
    assert scale["SV1_NGTinSvx"]["default"] == -1.0  # umami's fixed default for counts
    assert scale["SV1_masssvx"]["default"] == pytest.approx(np.nanmean(jets["SV1_masssvx"]), rel=1e-6)
    x = apply_scaling(jets, variables, scale)
    assert x.dtype == np.float32 and np.all(np.isfinite(x))
    assert x[:, 3].mean() == pytest.approx(0.0, abs=1e-4) and x[:, 3].std() == pytest.approx(1.0, abs=1e-3)
    assert set(np.unique(x[:, 2])) <= {0.0, 1.0}
    with pytest.raises(DataError, match="'SV1_Lxy'"):
        apply_scaling(jets, ["SV1_Lxy"], scale)
    with pytest.raises(DataError, match="'pt_btagJes' needs numbers"):
        apply_scaling(jets, ["pt_btagJes"], {"pt_btagJes": {"mean": 1.0}})


def test_weights_give_every_flavour_the_b_shape_and_equal_share(jets):
    y = np.searchsorted([0, 4, 5], jets[LABEL])
    w = flavour_weights(jets, y)
    assert w.mean() == pytest.approx(1.0, rel=1e-5)
    totals = [w[y == k].sum() for k in range(3)]
    assert totals == pytest.approx([len(jets) / 3] * 3, rel=1e-4)
    # the weighted light pT spectrum follows the b spectrum
    edges = [20e3, 40e3, 80e3, 1e9]
    hist = [np.histogram(jets["pt"][y == k], edges, weights=w[y == k])[0] for k in (0, 2)]
    assert hist[0] / hist[0].sum() == pytest.approx(hist[1] / hist[1].sum(), abs=0.03)


def test_load_dataset_from_synthetic_settings():
    dataset = load_dataset({"synthetic": {"jets": 3000, "seed": 1}})
    assert dataset.train.x.shape[1] == 44
    assert len(dataset.train) > len(dataset.validation) > 0
    assert set(np.unique(dataset.test.y)) == {0, 1, 2}
    again = load_dataset({"synthetic": {"jets": 3000, "seed": 1}})
    assert np.array_equal(dataset.train.x, again.train.x)


def _write(path, jets):
    with h5py.File(path, "w") as f:
        f.create_dataset("jets", data=jets)


def test_load_dataset_from_a_file_with_fewer_variables_and_a_stored_scale_dict(tmp_path, jets):
    path = tmp_path / "train.h5"
    _write(path, jets)
    variables = ["SV1_masssvx", "IP3D_bu", "rnnip_pb"]
    out = tmp_path / "scale.json"
    dataset = load_dataset({"train": str(path), "variables": variables, "weighting": "none"}, scale_dict_out=out)
    assert dataset.train.x.shape[1] == 3
    assert np.all(dataset.train.weights == 1.0)
    reused = load_dataset({"train": str(path), "variables": variables, "scale_dict": str(out)})
    assert np.allclose(reused.test.x, dataset.test.x)
    resampled = load_dataset({"train": str(path), "variables": variables, "weighting": "resample"})
    assert len(resampled.train) == len(dataset.train)
    assert np.bincount(resampled.train.y)[0] / len(resampled.train) == pytest.approx(1 / 3, abs=0.05)


def test_read_jets_reads_the_first_max_jets_of_a_file(tmp_path, jets):
    # through H5Reader.load's count (num_global_objects since atlas-ftag-tools 0.3.5)
    path = tmp_path / "train.h5"
    _write(path, jets)
    first = read_jets(path, ["IP3D_bu"], max_jets=1234)
    assert len(first) == 1234
    assert np.array_equal(first["IP3D_bu"], jets["IP3D_bu"][:1234], equal_nan=True)
    assert len(read_jets(path, ["IP3D_bu"])) == len(jets)


def test_missing_field_names_file_and_field(tmp_path, jets):
    path = tmp_path / "no_ip3d.h5"
    names = [n for n in jets.dtype.names if n != "IP3D_bu"]
    _write(path, jets[names])
    with pytest.raises(DataError, match=r"no_ip3d\.h5: field 'IP3D_bu' missing"):
        load_dataset({"train": str(path)})


def test_empty_file_and_files_that_are_not_dumper_files(tmp_path, jets):
    empty = tmp_path / "empty.h5"
    _write(empty, jets[:0])
    with pytest.raises(DataError, match=r"empty\.h5: 'jets' is empty"):
        read_jets(empty, ["IP3D_bu"])
    nojets = tmp_path / "nojets.h5"
    with h5py.File(nojets, "w") as f:
        f.create_dataset("tracks", data=np.zeros(3))
    with pytest.raises(DataError, match="no 'jets' dataset"):
        read_jets(nojets, ["IP3D_bu"])
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        read_jets(text, ["IP3D_bu"])
    with pytest.raises(DataError, match="no such file"):
        read_jets(tmp_path / "absent.h5", ["IP3D_bu"])


def test_one_flavour_only_is_refused_naming_what_is_there(tmp_path, jets):
    path = tmp_path / "bonly.h5"
    _write(path, jets[jets[LABEL] == 5])
    with pytest.raises(DataError, match=r"bonly\.h5 \(training split\): needs b, c and light jets .* found only: b"):
        load_dataset({"train": str(path)})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "settings.data is missing"),
        ({}, "exactly one of 'synthetic' or 'train'"),
        ({"synthetic": {"jets": 100}, "train": "x.h5"}, "exactly one"),
        ({"synthetic": {"jets": 100, "seeed": 1}}, r"settings\.data\.synthetic\.seeed"),
        ({"synthetic": {"jets": 10}}, r"synthetic\.jets"),
        ({"train": "a.h5", "weighting": "magic"}, r"settings\.data\.weighting"),
    ],
)
def test_bad_data_settings_name_the_field(raw, message):
    with pytest.raises(SettingsError, match=message):
        parse_data_settings(raw)


def test_the_calibrated_sample_has_not_changed():
    # the recorded rejections (payload/README.md) belong to these exact jets: a change here means recalibrating
    jets = generate_jets(2000, 7)
    assert float(np.nansum(jets["IP3D_bu"].astype(np.float64))) == pytest.approx(5811.607060003793, rel=1e-6)
    assert int(jets["SV1_NGTinSvx"].sum()) == 2
    assert int((jets[LABEL] == 5).sum()) == 589
