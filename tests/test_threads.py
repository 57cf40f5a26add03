"""train.threads: the governor that computes with the cores other processes leave free, the fixed
count, and what summary.json records."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

import actexp
from actexp.config import config_hash, config_from_dict
from actexp.errors import ConfigError
from actexp import threads
from actexp.threads import ThreadGovernor, busy_others, cpu_quota, thread_policy

from conftest import tiny_config


class FakeStat:
    """busy_others with a script of how many cores the other processes take at each check."""

    def __init__(self, others: list[float]):
        self.others = list(others)

    def __call__(self, previous):
        if previous is None:
            return "sample", None
        return "sample", self.others.pop(0)


def test_the_governor_gives_up_the_cores_others_take_and_takes_them_back():
    torch.set_num_threads(2)
    governor = ThreadGovernor(2, cores=2, read=FakeStat([1.0, 1.0, 0.1, 0.6, 2.0]), every=0)
    seen = []
    for _ in range(5):
        governor.tick()
        seen.append(torch.get_num_threads())
    # a core taken: 1 thread; the machine quiet again: 2; 0.6 of a core taken rounds to a whole core
    assert seen == [1, 1, 2, 1, 1]
    assert governor.used == {1, 2}


def test_the_governor_stays_within_its_bounds_and_waits_between_checks():
    torch.set_num_threads(4)
    governor = ThreadGovernor(4, cores=8, read=FakeStat([0.0, 7.5]), every=0)
    governor.tick()
    assert torch.get_num_threads() == 4  # never more than it was given, though 8 cores are free
    governor.tick()
    assert torch.get_num_threads() == 1  # never fewer than one
    slow = ThreadGovernor(4, cores=8, read=FakeStat([]), every=3600)
    slow.tick()  # not yet time: reads nothing (the script is empty)
    assert torch.get_num_threads() == 1


@pytest.mark.slow
def test_a_busy_process_is_seen():
    sample, _ = busy_others(None)
    if sample is None:
        pytest.skip("no /proc/stat here")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        sample, _ = busy_others(None)
        elsewhere, _ = busy_others(None, cpus=set())
        time.sleep(1.0)
        _, others = busy_others(sample)
        _, on_no_cpu_of_ours = busy_others(elsewhere, cpus=set())
    finally:
        spinner.kill()
        spinner.wait()
    assert others >= 0.5  # the loop's core (more where the machine is busy with other work too)
    assert on_no_cpu_of_ours == 0.0  # only the CPUs this process may use count (taskset, cpusets)


def test_a_policy_restores_the_count_it_found():
    torch.set_num_threads(2)
    with thread_policy(1, torch.device("cpu")) as policy:
        assert torch.get_num_threads() == 1 and policy.used == {1}
    assert torch.get_num_threads() == 2
    with thread_policy("auto", torch.device("cpu")) as policy:
        assert torch.get_num_threads() == 1 and policy.used == {1}
    assert torch.get_num_threads() == 2
    with thread_policy("adaptive", torch.device("cpu")) as policy:
        assert isinstance(policy, ThreadGovernor) and policy.most == min(2, threads.usable_cores())
    assert torch.get_num_threads() == 2


def test_auto_is_one_thread_whatever_the_load(monkeypatch):
    """The count auto computes with depends on nothing the machine's load can change."""
    torch.set_num_threads(2)
    for busy in (0.0, 1.0, 2.0):
        monkeypatch.setattr(threads, "busy_others", lambda previous, cpus=None, busy=busy: ((0.0, 0.0, 0.0), busy))
        with thread_policy("auto", torch.device("cpu")) as policy:
            policy.tick()
            assert torch.get_num_threads() == 1 and policy.used == {1}
    assert torch.get_num_threads() == 2


def cgroup(tmp_path, own: str, files: dict[str, str]):
    """A fake cgroup mount under tmp_path/fs and /proc/self/cgroup saying `own`: (root, own file)."""
    root = tmp_path / "fs"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "cgroup").write_text(own)
    return str(root), str(tmp_path / "cgroup")


@pytest.mark.parametrize("own,files,cores", [
    # cgroup v2: docker --cpus=2 (in the container's namespace its cgroup is the root), none, 1.5 CPUs
    ("0::/\n", {"cpu.max": "200000 100000\n"}, 2.0),
    ("0::/\n", {"cpu.max": "max 100000\n"}, None),
    ("0::/user.slice/job\n", {"user.slice/job/cpu.max": "150000 100000\n"}, 1.5),
    # the tightest of the cgroup and its ancestors
    ("0::/a/b\n", {"a/cpu.max": "100000 100000\n", "a/b/cpu.max": "400000 100000\n"}, 1.0),
    # cgroup v1: the cpu controller's quota and period; -1 is none; other controllers' lines ignored
    ("4:memory:/x\n3:cpu,cpuacct:/docker/c1\n", {"cpu,cpuacct/docker/c1/cpu.cfs_quota_us": "300000\n",
                                                   "cpu,cpuacct/docker/c1/cpu.cfs_period_us": "100000\n"}, 3.0),
    ("3:cpu,cpuacct:/\n", {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None),
    # nonsense is no limit: garbage, a zero period, a path that climbs out, an empty file
    ("0::/\n", {"cpu.max": "lots of cpu\n"}, None),
    ("0::/\n", {"cpu.max": "100000 0\n"}, None),
    ("0::/../../etc\n", {"etc/cpu.max": "100000 100000\n"}, None),
    ("", {}, None),
])
def test_a_cgroup_cpu_quota_is_read(tmp_path, own, files, cores):
    root, own_file = cgroup(tmp_path, own, files)
    assert cpu_quota(root, own_file) == cores


def test_a_quota_caps_the_threads_and_the_governor_stands_down(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: set(range(64)))  # a big host ...
    monkeypatch.setattr(threads, "cpu_quota", lambda: 2.5)  # ... and docker --cpus=2.5
    assert threads.usable_cores() == 2
    torch.set_num_threads(4)
    with thread_policy("adaptive", torch.device("cpu")) as policy:
        assert torch.get_num_threads() == 2 and policy.used == {2} and not isinstance(policy, ThreadGovernor)
    assert torch.get_num_threads() == 4
    monkeypatch.setattr(threads, "cpu_quota", lambda: 0.2)
    assert threads.usable_cores() == 1
    monkeypatch.setattr(threads, "cpu_quota", lambda: None)
    assert threads.usable_cores() == 64
    torch.set_num_threads(2)


def test_summary_records_the_choice_and_fixed_counts_repeat_exactly(data_root, tmp_path):
    torch.set_num_threads(2)
    runs = [actexp.train(tiny_config(train={"epochs": 2, "batch_size": 50, "seed": 0, "device": "cpu", "threads": t}), runs_dir=tmp_path)
            for t in (1, 1, "auto", "adaptive")]
    fixed, again, auto, adaptive = (r.summary for r in runs)
    assert fixed["threads"] == 1 and fixed["thread_policy"] == {"policy": "fixed", "used": [1]}
    assert auto["threads"] == 1 and auto["thread_policy"] == {"policy": "auto", "used": [1]}
    assert adaptive["thread_policy"]["policy"] == "adaptive" and set(adaptive["thread_policy"]["used"]) <= {1, 2}
    def figures(run):
        return [{k: v for k, v in record.items() if k != "seconds"} for record in run.history]

    assert figures(runs[0]) == figures(runs[1]) == figures(runs[2])
    assert torch.get_num_threads() == 2  # the caller's count is back


def test_threads_is_validated_and_leaves_the_experiment_unchanged():
    assert config_from_dict(tiny_config(train={"threads": "auto"})).train.threads == "auto"
    assert config_from_dict(tiny_config(train={"threads": "adaptive"})).train.threads == "adaptive"
    for bad, message in ((0, "out of range"), ("two", "auto, adaptive"), (True, "integer"), ([2], "integer")):
        with pytest.raises(ConfigError, match=rf"train\.threads: .*{message}"):
            config_from_dict(tiny_config(train={"threads": bad}))
    # how many threads compute a run does not make it another experiment (sweeps recognise it)
    hashes = {config_hash(config_from_dict(tiny_config(train={"threads": t}))) for t in (1, 2, "auto", "adaptive")}
    assert len(hashes) == 1


@pytest.mark.slow
def test_the_same_config_gives_the_same_numbers_alone_and_beside_a_busy_process(data_root, tmp_path):
    """With the default threads the numbers do not depend on what else runs: the penalties and
    gradient clipping bring in the full reductions torch splits by thread."""
    torch.set_num_threads(2)
    config = tiny_config(model={"hidden": [256, 256]}, regularization={"l1": 1e-5, "l2": 1e-4},
                         optim={"optimizer": "sgd", "lr": 0.3, "grad_clip": 1.0}, train={"epochs": 2, "seed": 1, "device": "cpu"})

    def figures(run):
        return [{k: v for k, v in record.items() if k != "seconds"} for record in run.history]

    alone = actexp.train(config, runs_dir=tmp_path / "alone")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        shared = actexp.train(config, runs_dir=tmp_path / "shared")
    finally:
        spinner.kill()
        spinner.wait()
    # The thread counts first: whether two counts round alike is the BLAS library's choice per CPU.
    assert alone.summary["thread_policy"] == shared.summary["thread_policy"] == {"policy": "auto", "used": [1]}
    assert figures(alone) == figures(shared)
    assert alone.summary["test_loss"] == shared.summary["test_loss"]
    assert torch.get_num_threads() == 2
