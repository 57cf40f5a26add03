"""How many torch threads a run computes with, on a machine it may share.

Two facts decide the default. First, the thread count can change a run's numbers: a BLAS library
may split a matrix multiply's sums by thread, and torch splits full reductions (a weight matrix's
L1/L2 penalty, a gradient norm) into one partial sum per thread. Second, torch's OpenMP threads
spin while they wait for each other, so a multiply split over every core stalls when another
process holds one of them (bench/contention.py: several times slower beside a busy loop on 2
cores), and passive waiting costs a quiet machine about as much as one thread does.

So `train.threads: auto` (the default) computes with one thread on a CPU, whatever the machine's
load: the same config and seed give the same numbers alone or beside other work, and a busy
neighbour slows a run by its share of the core, never by a stall. Parallelism comes from running
runs side by side (a sweep's worker processes fill the cores, and each trains a fused group).
`train.threads: N` fixes N threads (bit-identical wherever N is the same, fast on a quiet machine,
stalls when the cores are contended); `train.threads: adaptive` follows the load (a
ThreadGovernor), fast alone and safe when shared, but its numbers may then depend on that load.
summary.json records the policy and the counts used.

torch is imported on first use.
"""

from __future__ import annotations

import contextlib
import os
import time

from .components import LazyModule

torch = LazyModule("torch")

CHECK_SECONDS = 0.5  # how often the governor looks; a look (busy_others) takes about 30 µs on 2 cores


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (taskset, Slurm, a container's cpuset), else all of them."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """How many cores this process can keep busy: its CPUs (usable_cpus), or fewer where its cgroup
    caps its CPU time (`docker --cpus`, a Kubernetes CPU limit, systemd's CPUQuota), rounded down
    (at least 1). A container on a 64-core host capped at 2 CPUs sees all 64 in its affinity; 64
    spinning OpenMP threads sharing 2 cores' time would mostly wait."""
    cpus = len(usable_cpus())
    quota = cpu_quota()
    return cpus if quota is None else max(1, min(cpus, int(quota)))


def cpu_quota(cgroup_root: str = "/sys/fs/cgroup", own: str = "/proc/self/cgroup") -> float | None:
    """The tightest CPU bandwidth limit, in cores, on this process's cgroup and its ancestors
    (cgroup v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us); None without one, or where the
    files cannot be read or make no sense."""
    try:
        with open(own, "rb") as f:
            lines = f.read(1 << 16).decode(errors="replace").splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2: one hierarchy
            folders, read = [cgroup_root], _v2_limit
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's hierarchy
            folders, read = [os.path.join(cgroup_root, name) for name in (controllers, "cpu", "cpu,cpuacct")], _v1_limit
        else:
            continue
        parts = [p for p in path.strip().split("/") if p and p != "."]
        if ".." in parts:  # a cgroup outside this namespace's view (or a hostile file): not readable here
            continue
        for base in dict.fromkeys(folders):  # (v1's mount point has one of these names)
            for depth in range(len(parts) + 1):  # the cgroup and each ancestor; in a container, its root is the cgroup
                limit = read(os.path.join(base, *parts[:depth]))
                if limit is not None:
                    limits.append(limit)
    return min(limits) if limits else None


def _read_small(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(256).decode(errors="replace")
    except OSError:
        return None


def _v2_limit(folder: str) -> float | None:
    text = _read_small(os.path.join(folder, "cpu.max"))  # "max 100000" or "200000 100000"
    fields = text.split() if text else []
    return _cores(*fields) if len(fields) == 2 else None


def _v1_limit(folder: str) -> float | None:
    quota, period = (_read_small(os.path.join(folder, name)) for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
    return _cores(quota.strip(), period.strip()) if quota and period else None


def _cores(quota: str, period: str) -> float | None:
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no limit
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def busy_others(previous: tuple[float, float, float] | None, cpus: set[int] | None = None) -> tuple[tuple[float, float, float], float | None]:
    """(a new sample, the cores other processes kept busy since `previous` on the CPUs this process
    may use (`cpus`, default usable_cpus()), None without a previous sample or where /proc/stat
    cannot be read). A sample is (wall seconds, those CPUs' busy seconds, this process's CPU seconds)."""
    cpus = usable_cpus() if cpus is None else cpus
    try:
        with open("/proc/stat", "rb") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError:
        return previous, None
    busy = 0
    for line in lines:
        fields = line.split()
        if len(fields) < 9 or not fields[0].startswith(b"cpu") or not fields[0][3:].isdigit() or int(fields[0][3:]) not in cpus:
            continue
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
        # Niced processes count too: where the kernel groups processes by session (autogroup, the
        # default of most distributions) a process niced in another session competes as an equal.
        busy += user + nice + system + irq + softirq + steal
    own = os.times()
    sample = (time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system)
    if previous is None:
        return sample, None
    wall = sample[0] - previous[0]
    if wall <= 0:
        return previous, None
    others = (sample[1] - previous[1]) - (sample[2] - previous[2])
    return sample, max(others, 0.0) / wall


class ThreadGovernor:
    """Sets torch's thread count to the cores other processes leave free (at least 1, at most
    `most`), checked every CHECK_SECONDS by `tick()` (called once per training step: a clock
    read when it is not time)."""

    def __init__(self, most: int, cores: int | None = None, read=busy_others, every: float = CHECK_SECONDS):
        self.most, self.read, self.every = most, read, every
        self.cores = cores or usable_cores()
        self.sample, _ = read(None)
        self.next_check = time.monotonic() + every
        self.used = {torch.get_num_threads()}

    def tick(self) -> None:
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + self.every
        self.sample, others = self.read(self.sample)
        if others is None:
            return
        # The cores left, rounded: a process that takes 0.3 of a core leaves the whole core to us.
        threads = max(1, min(self.most, round(self.cores - others)))
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            self.used.add(threads)


class _Fixed:
    def __init__(self, threads: int):
        self.used = {threads}

    def tick(self) -> None:
        pass


@contextlib.contextmanager
def thread_policy(threads, device):
    """Compute with `threads` (train.threads: "auto", "adaptive" or a count) for the duration:
    yields the object whose `tick()` the training loop calls each step and whose `used` set says
    which counts ran. torch's thread count is restored afterwards. On a GPU the count only matters
    for the little the CPU computes, and is left as it is."""
    before = torch.get_num_threads()
    if device.type != "cpu" and threads in ("auto", "adaptive"):
        policy = _Fixed(before)
    elif threads == "auto":
        torch.set_num_threads(1)
        policy = _Fixed(1)
    elif threads == "adaptive":
        # At most the cores this process may keep busy, or a worker's share. Under a CPU quota its
        # share of time is its own whatever the rest of the host does (which /proc/stat shows).
        cores = usable_cores()
        most = min(before, cores)
        torch.set_num_threads(most)
        policy = ThreadGovernor(most, cores) if most > 1 and cores == len(usable_cpus()) else _Fixed(most)
    else:
        torch.set_num_threads(threads)
        policy = _Fixed(threads)
    try:
        yield policy
    finally:
        torch.set_num_threads(before)


def describe(threads, policy) -> dict:
    """summary.json's record of the choice."""
    return {"policy": threads if threads in ("auto", "adaptive") else "fixed", "used": sorted(policy.used)}
