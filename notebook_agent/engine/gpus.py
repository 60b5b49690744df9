"""GPU selections: `--gpus` specs, the worker id suffix they give, `queue=N` needs, and the free-memory gate.

Ids are strings in the form CUDA_VISIBLE_DEVICES takes them: `"3"` for a whole GPU, `"0:1"` for MIG slice 1 of
GPU 0 (clearml-agent's syntax; `0.1` is accepted too, as clearml-agent turns `.` into `:` for CUDA), and full
`GPU-...`/`MIG-...` UUIDs, which pass through. Worker ids write a slice as `0.1`, because `:` separates the parts
of a worker id (clearml-agent does the same, and reads sibling ids back that way).

`0:1` is the NVIDIA container toolkit's spelling (NVIDIA_VISIBLE_DEVICES); CUDA itself reads only indices and
GPU/MIG UUIDs in CUDA_VISIBLE_DEVICES, so a task run in a venv should be given MIG slices by UUID
(`nvidia-smi -L`). clearml-agent passes `0:1` to both variables as well; we keep that rather than guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from notebook_agent.monitor.nvml import GpuMonitor

ALL = "all"
_MIB_PER_GIB = 1024.0  # NVML/nvidia-smi "MB" are MiB; the GB the user gives are GiB of those
_INDEX = re.compile(r"\d+")
_RANGE = re.compile(r"(\d+)-(\d+)")
_SLICE = re.compile(r"(\d+)[:.](\d+)")
_UUID = re.compile(r"(GPU|MIG)-[\w/-]+", re.IGNORECASE)
_QUEUE_NEED = re.compile(r"(\d*)(?:-(\d+))?")


class QueueNeed(NamedTuple):
    """How many GPUs a task from `queue` gets in dynamic mode: exactly `min` when min == max, else what is
    free up to `max`, but never fewer than `min` (`--queue quad=4 opportunistic=1-4`)."""

    queue: str
    min: int
    max: int


def parse_gpus(spec: str, available: Sequence[str] | int | None = None) -> list[str]:
    """`0,1`, `0-3`, `all`, `0:1` (MIG slice), `GPU-...`/`MIG-...` UUIDs, or a comma list mixing them, as ids.

    `available` is what exists: NVML's ids (`["0", ..., "7"]`, maybe with MIG ids), a GPU count, or None when
    unknown (NVML unavailable), in which case ids are not checked and `all` cannot be resolved. The order the
    user gave is kept (it is the order the task sees: its cuda:0 is the first id). UUIDs are never checked:
    the NVML seam does not list MIG UUIDs. Raises ValueError naming the spec and the GPUs that exist.
    """
    text = re.sub(r"\s+", "", spec or "")
    known = _known_ids(available)
    if not text:
        raise ValueError(f"--gpus {spec!r}: empty; give ids like 0,1 or a range like 0-3")
    if text.lower() == ALL:
        if known is None:
            raise ValueError(
                f"--gpus {spec}: cannot list the GPUs (NVML unavailable); give the ids instead, e.g. --gpus 0,1"
            )
        if not known:
            raise ValueError(f"--gpus {spec}: {_describe_known(known)}")
        return list(known)
    ids: list[str] = []
    for part in text.split(","):
        ids += _expand(part, spec)
    _check_unique(ids, spec)
    if known is not None:
        missing = [g for g in ids if not _exists(g, known)]
        if missing:
            raise ValueError(f"--gpus {spec}: no GPU {', '.join(missing)}; {_describe_known(known)}")
    return ids


def _expand(part: str, spec: str) -> list[str]:
    if _INDEX.fullmatch(part):
        return [str(int(part))]
    if match := _RANGE.fullmatch(part):
        first, last = int(match[1]), int(match[2])
        if last < first:
            raise ValueError(f"--gpus {spec}: range {part} runs backwards; write {last}-{first}")
        return [str(i) for i in range(first, last + 1)]
    if match := _SLICE.fullmatch(part):
        return [f"{int(match[1])}:{int(match[2])}"]
    if _UUID.fullmatch(part):
        return [part]
    raise ValueError(
        f"--gpus {spec}: cannot read {part!r}; use ids (0,1), a range (0-3), all, MIG slices (0:1) or UUIDs"
    )


def _check_unique(ids: Sequence[str], spec: str) -> None:
    seen: set[str] = set()
    duplicates: list[str] = []
    for gpu in ids:
        if gpu in seen and gpu not in duplicates:
            duplicates.append(gpu)
        seen.add(gpu)
    if duplicates:
        raise ValueError(f"--gpus {spec}: GPU {', '.join(duplicates)} given twice")
    # A whole GPU and one of its MIG slices would hand the same memory to two tasks.
    wholes = {g for g in ids if _INDEX.fullmatch(g)}
    overlapping = [g for g in ids if ":" in g and g.split(":")[0] in wholes]
    if overlapping:
        raise ValueError(f"--gpus {spec}: MIG slice {overlapping[0]} is part of GPU {overlapping[0].split(':')[0]}")


def _known_ids(available: Sequence[str] | int | None) -> list[str] | None:
    if available is None:
        return None
    if isinstance(available, int):
        return [str(i) for i in range(available)]
    return [str(g) for g in available]


def _exists(gpu: str, known: Sequence[str]) -> bool:
    if gpu in known or _UUID.fullmatch(gpu):
        return True
    # A slice is checked against its GPU when NVML's list has whole GPUs only.
    return ":" in gpu and gpu.split(":")[0] in known and not any(":" in k for k in known)


def _describe_known(known: Sequence[str]) -> str:
    if not known:
        return "NVML sees no GPU on this machine"
    return f"this machine has GPU {compact_ids(known)}"


def compact_ids(gpus: Iterable[str]) -> str:
    """`0,1,2,3,6` as `0-3,6`: runs of three or more consecutive whole GPUs become ranges (for messages and
    the dynamic worker id; `0,1` stays `0,1`)."""
    out: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if len(run) >= 3:
            out.append(f"{run[0]}-{run[-1]}")
        else:
            out.extend(str(i) for i in run)
        run.clear()

    for gpu in gpus:
        if _INDEX.fullmatch(gpu) and (not run or int(gpu) == run[-1] + 1):
            run.append(int(gpu))
            continue
        flush()
        if _INDEX.fullmatch(gpu):
            run.append(int(gpu))
        else:
            out.append(gpu)
    flush()
    return ",".join(out)


def worker_id_suffix(gpus: Sequence[str], dynamic: bool = False) -> str:
    """The worker id part for these GPUs: `gpu0,1` (a fixed set) or `dgpu0-7` (a dynamic daemon's pool).

    A fixed set is written out in full, comma-separated, because clearml-agent's dynamic daemons find which
    GPUs are taken by reading sibling `<name>:gpu...` ids as comma lists. MIG slices are written `0.1`.
    """
    ids = [g.replace(":", ".") for g in gpus]
    if dynamic:
        return "dgpu" + compact_ids(ids)
    return "gpu" + ",".join(ids)


def parse_queue_gpus(spec: str) -> QueueNeed:
    """`quad=4` -> (quad, 4, 4); `opportunistic=1-4` -> (opportunistic, 1, 4); `q=-4` -> (q, 1, 4), as
    clearml-agent reads a missing minimum as 1. Fractions (`q=0.5`) need clearml's docker-only fractional GPU
    module and are refused. The name is everything before the last `=`."""
    name, sep, need = spec.rpartition("=")
    name, need = name.strip(), need.strip()
    if not sep or not name:
        raise ValueError(f"--queue {spec}: with --dynamic-gpus each queue is <name>=<gpus>, e.g. dual_gpu=2")
    match = _QUEUE_NEED.fullmatch(need)
    if not match or not (match[1] or match[2]):
        hint = " (fractional GPUs are not supported)" if re.fullmatch(r"[\d.]+(-[\d.]+)?", need) else ""
        raise ValueError(f"--queue {spec}: cannot read the GPU count {need!r}{hint}; use N or min-max, e.g. 1-4")
    low = int(match[1]) if match[1] else 1
    high = int(match[2]) if match[2] else low
    if low < 1:
        raise ValueError(f"--queue {spec}: a task needs at least 1 GPU")
    if high < low:
        raise ValueError(f"--queue {spec}: the maximum {high} is below the minimum {low}")
    return QueueNeed(name, low, high)


def looks_like_queue_gpus(spec: str) -> bool:
    """True for `name=N` / `name=min-max` (what --dynamic-gpus reads), so a plain run can say it needs the flag."""
    name, sep, need = spec.rpartition("=")
    return bool(sep and name and re.fullmatch(r"\d*(-\d+)?|[\d.]+(-[\d.]+)?", need.strip()) and need.strip())


def nvml_gpu_ids(monitor: GpuMonitor) -> list[str] | None:
    """The GPUs NVML sees as ids `"0"`..`"N-1"`, or None when NVML is unavailable (no driver, no library)."""
    if not monitor.open():
        return None
    return [str(i) for i in range(monitor.device_count())]


def gpus_have_free_memory(monitor: GpuMonitor, gpus: Sequence[str], min_free_mb: float) -> tuple[bool, str]:
    """Whether every GPU in `gpus` (every GPU NVML sees when empty) has `min_free_mb` MiB free, and why not.

    Returns (True, "") when all have enough; (False, "GPU 0 has 1.2 GiB free, needs 4.0 GiB") naming each short
    one. The gate fails open with a reason, (True, "free GPU memory not checked: ..."), when it cannot measure
    (NVML unavailable, a GPU not readable, a MIG UUID): it is a courtesy to whatever else uses the GPU (on Colab,
    the notebook itself), and must not stop an agent from ever pulling. A MIG slice `0:1` is judged by its
    GPU 0, as the NVML seam reads whole GPUs.
    """
    if min_free_mb <= 0:
        return True, ""
    if not monitor.open():
        return True, f"free GPU memory not checked: NVML unavailable ({monitor.unavailable_reason})"
    readings = monitor.read()
    by_id = {str(r.index): r for r in readings} | {r.uuid: r for r in readings if r.uuid}
    wanted = list(gpus) or [str(r.index) for r in readings]
    short: list[str] = []
    unread: list[str] = []
    for gpu in wanted:
        reading = by_id.get(gpu.split(":")[0] if _SLICE.fullmatch(gpu) else gpu)
        if reading is None or reading.memory_free_mb is None:
            unread.append(gpu)
            continue
        if reading.memory_free_mb < min_free_mb:
            short.append(
                f"GPU {gpu} has {reading.memory_free_mb / _MIB_PER_GIB:.1f} GiB free, "
                f"needs {min_free_mb / _MIB_PER_GIB:.1f} GiB"
            )
    if short:
        return False, "; ".join(short)
    if unread:
        return True, f"free GPU memory not checked for GPU {', '.join(unread)}: NVML cannot read it"
    if not wanted:
        return True, "free GPU memory not checked: NVML sees no GPU"
    return True, ""


def gib_to_mib(gib: float) -> float:
    """`agent.gpu_min_free_memory_gb` / `--gpu-min-free-gb` are GiB; the gate and NVML work in MiB."""
    return gib * _MIB_PER_GIB
