"""`notebook-agent daemon` GPU options: --gpus, --dynamic-gpus with `--queue name=N|min-max`, --gpu-min-free-gb."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from notebook_agent.cli.daemon_cmd import GpuPlan, gpu_plan
from notebook_agent.cli.main import build_parser
from notebook_agent.config import ConfigError, load_config

EIGHT = [str(i) for i in range(8)]


def plan(*argv: str, available: list[str] | int | None = EIGHT) -> GpuPlan:
    return gpu_plan(build_parser().parse_args(["daemon", *argv]), available)


class TestGpus:
    def test_a_list_stays_as_it_was_and_a_range_is_written_out(self) -> None:
        assert plan("--queue", "default", "--gpus", "0,1") == GpuPlan(["default"], "0,1", False, {}, None)
        assert plan("--gpus", "0-3").gpus == "0,1,2,3"
        assert plan("--gpus", "all").gpus == "0,1,2,3,4,5,6,7"
        assert plan("--gpus", "0:1,0.2").gpus == "0:1,0:2"
        assert plan().gpus is None

    def test_ids_are_checked_against_nvml_when_it_is_there(self) -> None:
        with pytest.raises(ValueError, match="--gpus 0-9: no GPU 8, 9; this machine has GPU 0-7"):
            plan("--gpus", "0-9")
        assert plan("--gpus", "0-9", available=None).gpus == "0,1,2,3,4,5,6,7,8,9"  # no NVML: as given
        with pytest.raises(ValueError, match="NVML unavailable"):
            plan("--gpus", "all", available=None)

    def test_conflicts(self) -> None:
        with pytest.raises(ValueError, match="--gpus and --cpu-only exclude each other"):
            plan("--gpus", "0", "--cpu-only")
        with pytest.raises(ValueError, match="--dynamic-gpus and --cpu-only exclude each other"):
            plan("--dynamic-gpus", "--cpu-only", "--queue", "a=1")
        with pytest.raises(ValueError, match="--queue quad=4: a GPU count per queue needs --dynamic-gpus"):
            plan("--gpus", "0-7", "--queue", "quad=4")
        assert plan("--queue", "a=b").queues == ["a=b"]  # an odd queue name, not a GPU count

    def test_min_free_memory(self) -> None:
        assert plan("--gpus", "0", "--gpu-min-free-gb", "4").gpu_min_free_gb == 4.0
        with pytest.raises(ValueError, match="give 0 \\(off\\) or more GiB"):
            plan("--gpu-min-free-gb", "-1")


class TestDynamicGpus:
    def test_the_seed_example(self) -> None:
        assert plan("--dynamic-gpus", "--gpus", "0-7", "--queue", "quad_gpu=4", "dual_gpu=2") == GpuPlan(
            queues=["quad_gpu", "dual_gpu"],
            gpus="0,1,2,3,4,5,6,7",
            dynamic_gpus=True,
            queue_gpus={"quad_gpu": (4, 4), "dual_gpu": (2, 2)},
            gpu_min_free_gb=None,
        )
        opportunistic = plan("--dynamic-gpus", "--gpus", "0-7", "--queue", "dual=2", "opportunistic=1-4")
        assert opportunistic.queue_gpus == {"dual": (2, 2), "opportunistic": (1, 4)}

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["--queue", "a=1"], "needs the GPUs to share out, e.g. --gpus 0-7"),
            (["--gpus", "0-7"], "needs queues with GPU counts"),
            (["--gpus", "0-7", "--queue", "default"], "each queue is <name>=<gpus>"),
            (["--gpus", "0-7", "--queue", "half=0.5"], "fractional GPUs are not supported"),
            (["--gpus", "0-7", "--queue", "big=9"], "queue big needs 9 GPUs but only 8 are given"),
            (["--gpus", "0-7", "--queue", "o=9-12"], "queue o needs 9 GPUs"),
            (["--gpus", "0-7", "--queue", "a=1", "a=2"], "queue a is given twice"),
            (["--gpus", "0-3,2", "--queue", "a=1"], "GPU 2 given twice"),
        ],
    )
    def test_errors(self, argv: list[str], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            plan("--dynamic-gpus", *argv)


def run_daemon(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "notebook_agent", "daemon", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "CLEARML_CONFIG_FILE": str(home / "none.conf")},
    )


def test_the_command_refuses_a_bad_plan_before_connecting(tmp_path: Path) -> None:
    done = run_daemon(tmp_path, "--dynamic-gpus", "--gpus", "0", "--queue", "quad=4")
    assert done.returncode == 2
    assert done.stderr.strip() == "notebook-agent daemon: queue quad needs 4 GPUs but only 1 are given (0)"
    assert done.stdout == ""  # nothing connected, no embedded server started
    done = run_daemon(tmp_path, "--gpus", "1-0")
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "notebook-agent daemon: --gpus 1-0: range 1-0 runs backwards; write 0-1",
    )


def test_the_config_key_is_checked(tmp_path: Path) -> None:
    assert load_config(tmp_path / "none.conf", env={}).agent("gpu_min_free_memory_gb") == 0
    conf = tmp_path / "c.conf"
    conf.write_text('agent { gpu_min_free_memory_gb: "4.5" }\n')
    assert load_config(conf, env={}).agent("gpu_min_free_memory_gb") == 4.5
    conf.write_text("agent {\n  gpu_min_free_memory_gb: -1\n}\n")
    with pytest.raises(ConfigError) as info:
        load_config(conf, env={})
    assert "agent.gpu_min_free_memory_gb" in str(info.value) and "0 or more" in str(info.value)


class TestServicesMode:
    def parse(self, *argv: str):
        return build_parser().parse_args(["daemon", *argv])

    def test_no_limit_without_n_and_off_without_the_flag(self) -> None:
        assert self.parse("--services-mode", "--queue", "services").services_mode == 0
        assert self.parse("--services-mode", "3", "--queue", "services").services_mode == 3
        assert self.parse("--queue", "services").services_mode is None

    def test_a_limit_below_one_is_a_usage_error(self) -> None:
        with pytest.raises(SystemExit):
            self.parse("--services-mode", "0")

    def test_it_excludes_dynamic_gpus(self) -> None:
        with pytest.raises(ValueError, match="--dynamic-gpus and --services-mode exclude each other"):
            plan("--dynamic-gpus", "--services-mode", "--gpus", "0-7", "--queue", "quad=4")
