"""`--gpus` specs, worker id suffixes, `queue=N` needs and the free-GPU-memory gate (on a fake NVML)."""

from __future__ import annotations

from typing import Any

import pytest

from notebook_agent.config import load_config
from notebook_agent.engine.gpus import (
    QueueNeed,
    compact_ids,
    gib_to_mib,
    gpus_have_free_memory,
    looks_like_queue_gpus,
    nvml_gpu_ids,
    parse_gpus,
    parse_queue_gpus,
    worker_id_suffix,
)
from notebook_agent.engine.worker import Worker, WorkerOptions
from notebook_agent.engine.worker_id import lease_worker_id
from notebook_agent.monitor import GpuMonitor
from tests.fakes.fake_nvml import FakeGpu, FakeNvml, NVMLError_DriverNotLoaded

EIGHT = [str(i) for i in range(8)]
NO_SERVER: Any = object()  # the refusals below happen before the worker touches its session


def eight_gpus(**used_mb: float) -> FakeNvml:
    """8 fake 40 GiB boards; `used_mb={"g0": ...}` sets the memory in use of GPU 0."""
    return FakeNvml(
        FakeGpu(uuid=f"GPU-{i:08d}", memory_used_mb=used_mb.get(f"g{i}", 0.0), memory_total_mb=40960.0)
        for i in range(8)
    )


class TestParseGpus:
    @pytest.mark.parametrize(
        ("spec", "expected"),
        [
            ("0", ["0"]),
            ("0,1", ["0", "1"]),
            (" 0, 1 ", ["0", "1"]),
            ("0-3", ["0", "1", "2", "3"]),
            ("0-1,6", ["0", "1", "6"]),
            ("3,1", ["3", "1"]),  # the task's cuda:0 is the first one given
            ("0:1", ["0:1"]),
            ("0.1", ["0:1"]),  # clearml-agent's other spelling of a MIG slice
            ("0:0,0:1,1:0,1:1", ["0:0", "0:1", "1:0", "1:1"]),
            ("MIG-1a2b3c4d-aaaa-bbbb-cccc-0123456789ab", ["MIG-1a2b3c4d-aaaa-bbbb-cccc-0123456789ab"]),
            ("GPU-00000003", ["GPU-00000003"]),
        ],
    )
    def test_accepted_forms(self, spec: str, expected: list[str]) -> None:
        assert parse_gpus(spec, EIGHT) == expected
        assert parse_gpus(spec, None) == expected  # NVML unknown: nothing to check against

    def test_all_takes_every_gpu_nvml_sees(self) -> None:
        assert parse_gpus("all", 8) == EIGHT
        assert parse_gpus("ALL", EIGHT) == EIGHT
        with pytest.raises(ValueError, match="NVML unavailable"):
            parse_gpus("all", None)
        with pytest.raises(ValueError, match="no GPU on this machine"):
            parse_gpus("all", 0)

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("0,0", "GPU 0 given twice"),
            ("0-3,2", "GPU 2 given twice"),
            ("0,0:1", "MIG slice 0:1 is part of GPU 0"),
            ("3-1", "runs backwards; write 1-3"),
            ("x", "cannot read 'x'"),
            ("0;1", "cannot read '0;1'"),
            ("", "empty"),
        ],
    )
    def test_malformed_specs_say_what_is_wrong(self, spec: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            parse_gpus(spec, EIGHT)

    def test_out_of_range_names_the_spec_and_the_gpus_that_exist(self) -> None:
        with pytest.raises(ValueError) as caught:
            parse_gpus("0-9", EIGHT)
        assert str(caught.value) == "--gpus 0-9: no GPU 8, 9; this machine has GPU 0-7"
        with pytest.raises(ValueError, match="no GPU 2; this machine has GPU 0,1"):
            parse_gpus("2", 2)
        with pytest.raises(ValueError, match="NVML sees no GPU"):
            parse_gpus("0", 0)

    def test_mig_slices_are_checked_against_their_gpu_or_the_listed_slices(self) -> None:
        assert parse_gpus("1:3", ["0", "1"]) == ["1:3"]
        with pytest.raises(ValueError, match="no GPU 2:0"):
            parse_gpus("2:0", ["0", "1"])
        with pytest.raises(ValueError, match="no GPU 0:2; this machine has GPU 0:0,0:1"):
            parse_gpus("0:2", ["0:0", "0:1"])


def test_nvml_gpu_ids_from_the_seam() -> None:
    assert nvml_gpu_ids(GpuMonitor(nvml=eight_gpus())) == EIGHT
    assert nvml_gpu_ids(GpuMonitor(nvml=FakeNvml(init_error=NVMLError_DriverNotLoaded))) is None
    # the whole chain: `--gpus all` on the 8 fake boards
    assert parse_gpus("all", nvml_gpu_ids(GpuMonitor(nvml=eight_gpus()))) == EIGHT


class TestWorkerIdSuffix:
    def test_fixed_sets_are_comma_lists_as_clearml_agent_reads_them_back(self) -> None:
        assert worker_id_suffix(["0"]) == "gpu0"
        assert worker_id_suffix(["0", "1"]) == "gpu0,1"
        assert worker_id_suffix(parse_gpus("0-3")) == "gpu0,1,2,3"
        assert worker_id_suffix(["0:1", "1:0"]) == "gpu0.1,1.0"  # ':' separates worker id parts

    def test_a_dynamic_pool_is_compact(self) -> None:
        assert worker_id_suffix(EIGHT, dynamic=True) == "dgpu0-7"
        assert worker_id_suffix(["0", "1"], dynamic=True) == "dgpu0,1"
        assert worker_id_suffix(["0:0", "0:1"], dynamic=True) == "dgpu0.0,0.1"

    def test_agents_on_one_host_lease_their_own_ids(self, tmp_path) -> None:
        leases = [
            lease_worker_id(tmp_path, name="box", gpus="0"),
            lease_worker_id(tmp_path, name="box", gpus="1"),
            lease_worker_id(tmp_path, name="box", gpus="0:1,0:2"),
            lease_worker_id(tmp_path, name="box", gpus=",".join(EIGHT), dynamic_gpus=True),
            lease_worker_id(tmp_path, name="box", gpus=",".join(EIGHT), dynamic_gpus=True),
        ]
        assert [lease.worker_id for lease in leases] == [
            "box:gpu0",
            "box:gpu1",
            "box:gpu0.1,0.2",
            "box:dgpu0-7",
            "box:dgpu0-7:1",  # a second dynamic agent on the same pool does not collide
        ]
        for lease in leases:
            lease.close()

    def test_compact_ids(self) -> None:
        assert compact_ids(["0", "1", "2", "3", "6"]) == "0-3,6"
        assert compact_ids(["0", "1", "5", "6", "7", "0:1"]) == "0,1,5-7,0:1"
        assert compact_ids(["3", "2", "1"]) == "3,2,1"


class TestParseQueueGpus:
    @pytest.mark.parametrize(
        ("spec", "expected"),
        [
            ("quad_gpu=4", QueueNeed("quad_gpu", 4, 4)),
            ("dual=2", QueueNeed("dual", 2, 2)),
            ("opportunistic=1-4", QueueNeed("opportunistic", 1, 4)),
            ("q=-4", QueueNeed("q", 1, 4)),  # clearml-agent: a missing minimum is 1
            ("team=a=2", QueueNeed("team=a", 2, 2)),  # the name is everything before the last '='
        ],
    )
    def test_counts_and_ranges(self, spec: str, expected: QueueNeed) -> None:
        assert parse_queue_gpus(spec) == expected
        assert parse_queue_gpus(spec)[1:] == expected[1:]  # also a plain (queue, min, max) tuple

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("quad", "each queue is <name>=<gpus>"),
            ("=4", "each queue is <name>=<gpus>"),
            ("q=", "cannot read the GPU count ''"),
            ("q=x", "cannot read the GPU count 'x'"),
            ("q=0.5", "fractional GPUs are not supported"),
            ("q=0", "at least 1 GPU"),
            ("q=4-2", "maximum 2 is below the minimum 4"),
        ],
    )
    def test_bad_needs(self, spec: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            parse_queue_gpus(spec)

    def test_looks_like_queue_gpus(self) -> None:
        assert looks_like_queue_gpus("quad=4") and looks_like_queue_gpus("o=1-4") and looks_like_queue_gpus("f=0.5")
        assert not looks_like_queue_gpus("default") and not looks_like_queue_gpus("a=b")


class TestFreeMemoryGate:
    def test_every_selected_gpu_needs_the_minimum(self) -> None:
        monitor = GpuMonitor(nvml=eight_gpus(g0=40960.0 - 1228.8))  # 1.2 GiB free on GPU 0
        assert gpus_have_free_memory(monitor, ["1", "2"], gib_to_mib(4.0)) == (True, "")
        assert gpus_have_free_memory(monitor, ["0", "1"], gib_to_mib(4.0)) == (
            False,
            "GPU 0 has 1.2 GiB free, needs 4.0 GiB",
        )
        # no selection: every GPU NVML sees
        assert gpus_have_free_memory(monitor, [], gib_to_mib(4.0))[0] is False
        assert gpus_have_free_memory(monitor, [], gib_to_mib(1.0)) == (True, "")

    def test_readings_are_live(self) -> None:
        nvml = eight_gpus()
        monitor = GpuMonitor(nvml=nvml)
        assert gpus_have_free_memory(monitor, ["3"], 8192.0) == (True, "")
        nvml.gpus[3].memory_used_mb = 36864.0  # the notebook took 36 GiB
        assert gpus_have_free_memory(monitor, ["3"], 8192.0) == (False, "GPU 3 has 4.0 GiB free, needs 8.0 GiB")

    def test_every_short_gpu_is_named(self) -> None:
        monitor = GpuMonitor(nvml=eight_gpus(g1=40960.0, g2=39936.0))
        ok, reason = gpus_have_free_memory(monitor, ["1", "2", "3"], 2048.0)
        assert not ok
        assert reason == "GPU 1 has 0.0 GiB free, needs 2.0 GiB; GPU 2 has 1.0 GiB free, needs 2.0 GiB"

    def test_mig_slices_by_their_gpu_and_uuids_by_nvml_uuid(self) -> None:
        monitor = GpuMonitor(nvml=eight_gpus(g0=40000.0))
        assert gpus_have_free_memory(monitor, ["0:1"], 2048.0)[0] is False
        assert gpus_have_free_memory(monitor, ["GPU-00000000"], 2048.0)[0] is False
        assert gpus_have_free_memory(monitor, ["GPU-00000005"], 2048.0) == (True, "")

    def test_off_or_unmeasurable_lets_the_agent_pull(self) -> None:
        nvml = eight_gpus()
        assert gpus_have_free_memory(GpuMonitor(nvml=nvml), ["0"], 0) == (True, "")
        assert nvml.init_calls == 0  # off: NVML is not even opened
        broken = GpuMonitor(nvml=FakeNvml(init_error=NVMLError_DriverNotLoaded))
        assert gpus_have_free_memory(broken, ["0"], 1024.0) == (
            True,
            "free GPU memory not checked: NVML unavailable (NVMLError_DriverNotLoaded: Driver Not Loaded)",
        )
        mig = "MIG-1a2b3c4d-aaaa-bbbb-cccc-0123456789ab"
        assert gpus_have_free_memory(GpuMonitor(nvml=nvml), [mig], 1024.0) == (
            True,
            f"free GPU memory not checked for GPU {mig}: NVML cannot read it",
        )
        no_gpu = GpuMonitor(nvml=FakeNvml())
        assert gpus_have_free_memory(no_gpu, [], 1024.0) == (True, "free GPU memory not checked: NVML sees no GPU")


class TestWorkerStart:
    """The worker refuses, before leasing an id or calling the server, what it cannot do."""

    def worker(self, tmp_path, config_text: str = "", **options) -> Worker:
        conf = tmp_path / "agent.conf"
        conf.write_text(config_text)
        opts = WorkerOptions(queues=["q"], state_dir=tmp_path / "state", **options)
        return Worker(load_config(conf, env={}), opts, session=NO_SERVER, base_env={})

    def test_dynamic_gpus_with_services_mode(self, tmp_path) -> None:
        worker = self.worker(tmp_path, dynamic_gpus=True, gpus="0,1,2,3", queue_gpus={"q": (2, 2)}, services_mode=2)
        with pytest.raises(NotImplementedError, match="--services-mode with --dynamic-gpus is not supported"):
            worker.run()
        assert not (tmp_path / "state").exists()  # no worker id was leased

    def test_dynamic_gpus_need_a_count_for_every_queue(self, tmp_path) -> None:
        worker = self.worker(tmp_path, dynamic_gpus=True, gpus="0,1", queue_gpus={"other": (1, 1)})
        with pytest.raises(ValueError, match=r"give each queue its GPU count, e\.g\. --queue q=2"):
            worker.run()
        with pytest.raises(ValueError, match="queue q needs 4 GPUs but only 2 are given"):
            self.worker(tmp_path, dynamic_gpus=True, gpus="0,1", queue_gpus={"q": (4, 4)}).run()
        assert not (tmp_path / "state").exists()

    def test_a_bad_gpu_spec_from_the_notebook(self, tmp_path) -> None:
        with pytest.raises(ValueError, match="--gpus 0,0: GPU 0 given twice"):
            self.worker(tmp_path, gpus="0,0").run()
