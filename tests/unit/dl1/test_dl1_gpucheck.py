"""The GPU check's logic with injected probes: no GPU, missing driver, CPU fallback, too small, OK."""

from __future__ import annotations

from dl1.gpucheck import DriverInfo, MatmulResult, Probes, Requirement, TFDevice, check

DRIVER = DriverInfo("libcuda.so.1", "550.54", "12.4", [81559])
H100 = TFDevice(name="/physical_device:GPU:0", device_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")


def probes(
    nodes=("/dev/nvidia0",),
    driver=DRIVER,
    gpus=(H100,),
    ran_on="GPU:0",
    raise_in=None,
):
    def maybe_raise(name, value):
        def probe():
            if raise_in == name:
                raise OSError(f"{name} exploded")
            return value

        return probe

    return Probes(
        device_nodes=maybe_raise("nodes", list(nodes)),
        driver=maybe_raise("driver", driver),
        tf_gpus=maybe_raise("tf", list(gpus)),
        matmul=maybe_raise("matmul", MatmulResult(device=ran_on, gpu_seconds=0.001, cpu_seconds=0.5)),
    )


def test_a_working_gpu_passes_with_its_details():
    report = check(probes())
    assert report.ok, report.reason
    assert "H100" in report.reason
    assert report.speedup == 500.0
    assert report.driver["cuda_version"] == "12.4"
    assert report.gpus[0]["compute_capability"] == "9.0"


def test_no_device_nodes_means_no_gpu_in_the_container():
    report = check(probes(nodes=()))
    assert not report.ok
    assert "no NVIDIA device nodes" in report.reason


def test_driver_library_not_loadable():
    assert "driver library" in check(probes(driver=None)).reason
    report = check(probes(raise_in="driver"))
    assert not report.ok and "driver exploded" in report.reason


def test_tensorflow_without_gpus_is_a_cpu_fallback():
    report = check(probes(gpus=()))
    assert not report.ok
    assert "fall back to CPU" in report.reason


def test_matmul_that_ran_on_the_cpu_is_detected():
    report = check(probes(ran_on="CPU:0"))
    assert not report.ok
    assert "silent CPU fallback" in report.reason
    assert "\n" not in report.reason


def test_requirements_on_count_capability_and_memory():
    assert "needs 2" in check(probes(), Requirement(count=2)).reason
    old = TFDevice(name="/physical_device:GPU:0", device_name="Tesla K80", compute_capability="3.7")
    report = check(probes(gpus=(old,)), Requirement(min_compute_capability="7.0"))
    assert not report.ok and "3.7" in report.reason and "7.0" in report.reason
    assert check(probes(gpus=(old,)), Requirement(min_compute_capability="3.5")).ok
    report = check(probes(), Requirement(min_memory_mb=100_000))
    assert not report.ok and "81559 MiB" in report.reason
    # capability compared numerically, not as text: 10.0 is newer than 9.0
    new = TFDevice(name="g", device_name="future", compute_capability="10.0")
    assert check(probes(gpus=(new,)), Requirement(min_compute_capability="9.0")).ok


def test_a_crashing_probe_is_a_failed_check_not_a_crash():
    report = check(probes(raise_in="matmul"))
    assert not report.ok and "matmul exploded" in report.reason
    assert check(probes(raise_in="nodes")).ok is False
