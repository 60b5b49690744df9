"""Worker ids as clearml-agent makes them, and slot leases that keep two agents on one host apart."""

import pytest

from notebook_agent.engine.worker_id import gpu_suffix, lease_worker_id, standalone_worker_id, worker_name


def test_shapes_of_worker_ids(tmp_path):
    with_cpu = lease_worker_id(tmp_path, name="box", cpu_only=True)
    plain = lease_worker_id(tmp_path, name="box")
    gpus = lease_worker_id(tmp_path, name="box", gpus="0,1")
    explicit = lease_worker_id(tmp_path, explicit_id="my-worker:7")
    assert [with_cpu.worker_id, plain.worker_id, gpus.worker_id, explicit.worker_id] == [
        "box:cpu:0",
        "box:0",
        "box:gpu0,1",
        "my-worker:7",
    ]
    for lease in (with_cpu, plain, gpus, explicit):
        lease.close()
    assert gpu_suffix("0, 1", False) == "gpu0,1"
    assert worker_name("") and standalone_worker_id("box").startswith("box:")


def test_two_agents_never_share_an_id_and_a_released_slot_is_reused(tmp_path):
    first = lease_worker_id(tmp_path, name="box", cpu_only=True)
    second = lease_worker_id(tmp_path, name="box", cpu_only=True)
    same_gpus = lease_worker_id(tmp_path, name="box", gpus="0")
    other_same_gpus = lease_worker_id(tmp_path, name="box", gpus="0")
    assert (first.worker_id, second.worker_id) == ("box:cpu:0", "box:cpu:1")
    assert (same_gpus.worker_id, other_same_gpus.worker_id) == ("box:gpu0", "box:gpu0:1")
    first.close()
    assert lease_worker_id(tmp_path, name="box", cpu_only=True).worker_id == "box:cpu:0"


def test_an_explicit_id_in_use_is_refused(tmp_path):
    held = lease_worker_id(tmp_path, explicit_id="dup:1")
    with pytest.raises(RuntimeError, match="already used"):
        lease_worker_id(tmp_path, explicit_id="dup:1")
    held.close()
