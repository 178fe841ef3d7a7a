"""The paper's GPU test container as a function: is a GPU really usable, or would TensorFlow fall back to CPU?

``check(probes, requirement)`` is pure logic over four probes (device nodes, driver library, TensorFlow's GPU
list, a matrix product and where it ran). ``Probes.system()`` gives the real probes; tests inject fakes.
"""

from __future__ import annotations

import ctypes
import glob
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DriverInfo:
    """What the NVIDIA driver library reports."""

    library: str
    driver_version: str | None = None
    cuda_version: str | None = None
    memory_mb: list[int] = field(default_factory=list)
    """Total memory per device (NVML), MiB."""


@dataclass
class TFDevice:
    """A GPU as TensorFlow sees it."""

    name: str
    device_name: str | None = None
    compute_capability: str | None = None


@dataclass
class MatmulResult:
    """A matrix product placed on the GPU: where it really ran and how long it took."""

    device: str
    gpu_seconds: float | None
    cpu_seconds: float | None


@dataclass
class Probes:
    """The four questions the check asks; each may raise, which counts as a failed probe."""

    device_nodes: Callable[[], list[str]]
    driver: Callable[[], DriverInfo | None]
    tf_gpus: Callable[[], list[TFDevice]]
    matmul: Callable[[], MatmulResult]

    @classmethod
    def system(cls) -> Probes:
        """The probes of this machine."""
        return cls(device_nodes=_device_nodes, driver=_driver, tf_gpus=_tf_gpus, matmul=_matmul)


@dataclass
class Requirement:
    """What the shard asks for (the shard file's ``gpu`` block)."""

    count: int = 1
    min_compute_capability: str | None = None
    min_memory_mb: int | None = None


@dataclass
class Report:
    """The check's answer; ``ok`` false comes with a one-line ``reason``."""

    ok: bool
    reason: str
    device_nodes: list[str] = field(default_factory=list)
    driver: dict[str, Any] | None = None
    gpus: list[dict[str, Any]] = field(default_factory=list)
    matmul: dict[str, Any] | None = None
    speedup: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _cc_tuple(value: str) -> tuple[int, ...]:
    return tuple(int(p) for p in value.split("."))


def _probe(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    try:
        return fn(), None
    except Exception as exc:  # a probe that crashes is a failed probe, never a crashed check
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(
            ": "
        )


def check(probes: Probes, requirement: Requirement | None = None) -> Report:
    """Run the probes in order and say whether a usable GPU is there; stops at the first failure."""
    req = requirement or Requirement()
    nodes, err = _probe(probes.device_nodes)
    report = Report(ok=False, reason="", device_nodes=list(nodes or []))
    if err or not nodes:
        report.reason = "no NVIDIA device nodes (/dev/nvidia*): the container was started without a GPU" + (
            f" ({err})" if err else ""
        )
        return report
    driver, err = _probe(probes.driver)
    if err or driver is None:
        report.reason = (
            "the NVIDIA driver library (libcuda.so.1) cannot be loaded: the driver is not mounted into the container"
            + (f" ({err})" if err else "")
        )
        return report
    report.driver = asdict(driver)
    gpus, err = _probe(probes.tf_gpus)
    report.gpus = [asdict(g) for g in gpus or []]
    if err or not gpus:
        report.reason = (
            "TensorFlow sees no GPU although the driver loads: CUDA libraries missing or mismatched, it would fall back to CPU"
            + (f" ({err})" if err else "")
        )
        return report
    if len(gpus) < req.count:
        report.reason = f"{len(gpus)} GPU(s) visible to TensorFlow, the shard needs {req.count}"
        return report
    if req.min_compute_capability:
        low = [
            g
            for g in gpus
            if g.compute_capability and _cc_tuple(g.compute_capability) < _cc_tuple(req.min_compute_capability)
        ]
        if low:
            report.reason = f"GPU {low[0].device_name or low[0].name} has compute capability {low[0].compute_capability}, the shard needs {req.min_compute_capability}"
            return report
    if req.min_memory_mb and driver.memory_mb and min(driver.memory_mb) < req.min_memory_mb:
        report.reason = f"GPU memory {min(driver.memory_mb)} MiB, the shard needs {req.min_memory_mb} MiB"
        return report
    result, err = _probe(probes.matmul)
    if err or result is None:
        report.reason = f"a matrix product on the GPU failed ({err})"
        return report
    report.matmul = asdict(result)
    if "GPU" not in result.device.upper():
        report.reason = f"a matrix product placed on the GPU ran on {result.device}: silent CPU fallback"
        return report
    if result.gpu_seconds and result.cpu_seconds:
        report.speedup = result.cpu_seconds / result.gpu_seconds
    report.ok = True
    report.reason = f"{len(gpus)} usable GPU(s): {gpus[0].device_name or gpus[0].name}"
    return report


# --- the real probes -------------------------------------------------------------------------------------


def _device_nodes() -> list[str]:
    return sorted(p for p in glob.glob("/dev/nvidia*") if p[len("/dev/nvidia") :].isdigit())


def _driver() -> DriverInfo | None:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    info = DriverInfo(library="libcuda.so.1")
    version = ctypes.c_int(0)
    if cuda.cuDriverGetVersion(ctypes.byref(version)) == 0:
        info.cuda_version = f"{version.value // 1000}.{(version.value % 1000) // 10}"
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return info
    if nvml.nvmlInit_v2() != 0:
        return info
    buf = ctypes.create_string_buffer(96)
    if nvml.nvmlSystemGetDriverVersion(buf, 96) == 0:
        info.driver_version = buf.value.decode()
    count = ctypes.c_uint(0)
    if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0:

        class _Memory(ctypes.Structure):
            _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

        for i in range(count.value):
            handle = ctypes.c_void_p()
            memory = _Memory()
            if (
                nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) == 0
                and nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) == 0
            ):
                info.memory_mb.append(int(memory.total // (1024 * 1024)))
    nvml.nvmlShutdown()
    return info


def _tf_gpus() -> list[TFDevice]:
    import tensorflow as tf

    out = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        cc = details.get("compute_capability")
        out.append(
            TFDevice(
                name=gpu.name,
                device_name=details.get("device_name"),
                compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
            )
        )
    return out


def _timed_matmul(device: str, n: int = 2048, repeat: int = 5) -> tuple[str, float]:
    import tensorflow as tf

    with tf.device(device):
        a = tf.random.normal((n, n))
        b = tf.random.normal((n, n))
        c = tf.matmul(a, b)  # warm-up
        _ = c.numpy()
        start = time.perf_counter()
        for _ in range(repeat):
            c = tf.matmul(a, b)
        _ = c.numpy()
        elapsed = (time.perf_counter() - start) / repeat
    return c.device, elapsed


def _matmul() -> MatmulResult:
    import tensorflow as tf

    tf.debugging.set_log_device_placement(False)
    gpu_device, gpu_s = _timed_matmul("/GPU:0")
    _, cpu_s = _timed_matmul("/CPU:0", n=1024, repeat=2)
    return MatmulResult(
        device=gpu_device.split("device:")[-1], gpu_seconds=gpu_s, cpu_seconds=cpu_s * 8
    )  # 2x size = 8x work
