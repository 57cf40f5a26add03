"""resources: the memory estimate against what torch really allocates, the refusal of runs that cannot
fit (in milliseconds, allocating nothing), and the memory a device has left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc

import pytest
import torch
import torch.nn.functional as F

from actexp import resources
from actexp.components import OPTIMIZERS
from actexp.config import config_from_dict
from actexp.data import load_data
from actexp.diagnostics import PROBE_SIZE
from actexp.errors import ConfigError
from actexp.model import build_model
from actexp.resources import available_bytes, check_fits, estimate_bytes, human_bytes
from actexp.evaluation import EVAL_BATCH
from actexp.training import build_optimizer
from conftest import REPO, tiny_config

# (n_features, n_samples, n_classes) as data.py knows them
MNIST = (784, 70_000, 10)
CIFAR = (3072, 60_000, 100)
GB = 10**9


def xor(n_train: int = 2000, n_test: int = 1000) -> tuple[int, int, int]:
    return 2, n_train + n_test, 2


def test_constants_and_optimizers_match_the_code_they_describe():
    assert resources.EVAL_BATCH == EVAL_BATCH
    assert resources.PROBE_SIZE == PROBE_SIZE
    assert set(resources.OPTIMIZER_STATE) == set(OPTIMIZERS)


MODELS = [
    {"hidden": [32, 16]},
    {"hidden": [24, 12], "activation": {"name": "maxout", "k": 3}, "batch_norm": True},
    {"hidden": [10, 10, 10], "activation": "prelu", "dropout": [0.1, 0.2, 0.0]},
    {"hidden": [40], "activation": "tanh", "batch_norm": True, "dropout": 0.5},
]


@pytest.mark.parametrize("model_section", MODELS, ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()))
@pytest.mark.parametrize("shape", [MNIST, CIFAR], ids=["mnist", "cifar100"])
def test_parameters_and_gradients_are_what_torch_allocates(model_section, shape):
    n_features, n_samples, n_classes = shape
    config = config_from_dict({"model": model_section})
    torch.manual_seed(0)
    model = build_model(config.model, n_features, n_classes)
    floats = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    x, y = torch.randn(8, n_features), torch.randint(0, n_classes, (8,))
    F.cross_entropy(model(x), y).backward()
    estimate = estimate_bytes(config, n_features, n_samples, n_classes)
    assert estimate["parameters"] == sum(t.nbytes for t in floats)
    assert estimate["gradients"] == sum(p.grad.nbytes for p in model.parameters())


OPTIMIZER_SPECS = [
    "sgd",
    {"name": "sgd", "momentum": 0.9},
    "adam",
    {"name": "adam", "amsgrad": True},
    "adamw",
    {"name": "adamw", "amsgrad": True},
    "nadam",
    "rmsprop",
    {"name": "rmsprop", "momentum": 0.9},
    {"name": "rmsprop", "centered": True},
    {"name": "rmsprop", "momentum": 0.5, "centered": True},
    "adagrad",
]


@pytest.mark.parametrize("spec", OPTIMIZER_SPECS, ids=str)
def test_optimizer_state_is_what_torch_keeps_after_a_step(spec):
    config = config_from_dict(tiny_config(model={"hidden": [32, 16], "batch_norm": True}, optim={"optimizer": spec}))
    torch.manual_seed(0)
    model = build_model(config.model, *MNIST[::2])
    optimizer, _ = build_optimizer(config, model)
    x, y = torch.randn(8, 784), torch.randint(0, 10, (8,))
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    kept = sum(t.nbytes for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t) and t.dim() > 0)
    assert estimate_bytes(config, *MNIST)["optimizer state"] == kept


@pytest.mark.slow
def test_every_optimizer_is_measured():
    names = {spec if isinstance(spec, str) else spec["name"] for spec in OPTIMIZER_SPECS}
    assert names == set(OPTIMIZERS)


@pytest.mark.parametrize(
    "model_section",
    [*MODELS, {"hidden": [256, 128], "activation": "gelu", "dropout": [0.1, 0.5]}, {"hidden": [512], "activation": "sigmoid"}],
    ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()),
)
def test_training_batch_bounds_what_autograd_keeps(model_section):
    # Every tensor autograd saves for the backward pass of one training batch (parameters aside),
    # counted once per storage: the estimate is above it, within a small factor (it also counts the
    # gradients the backward pass makes, and is generous per layer).
    config = config_from_dict({"model": model_section, "train": {"batch_size": 500}})
    torch.manual_seed(0)
    model = build_model(config.model, 784, 10)
    x, y = torch.randn(5000, 784), torch.randint(0, 10, (5000,))
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    index = torch.randperm(5000)[:500]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(x[index]), y[index]).backward()
    ratio = estimate_bytes(config, 784, 5000, 10)["training batch"] / sum(saved.values())
    assert 1 <= ratio <= 3, ratio


def test_data_is_what_load_data_keeps(data_root):
    # The fixture MNIST (600 + 200 images in torchvision's layout) and a generated XOR set, as loaded.
    for section, shape in [({"dataset": "mnist"}, (784, 800, 10)), ({"dataset": {"name": "xor", "n_train": 1000, "n_test": 500}}, xor(1000, 500))]:
        config = config_from_dict(tiny_config(data=section))
        data = load_data(config.data, torch.device("cpu"), download=False)
        kept = sum(t.nbytes for t in (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test))
        order = 8 * shape[1]  # an epoch's shuffled order, counted with the data
        assert estimate_bytes(config, *shape)["data"] - order == kept


# Run in a fresh process (the pytest process's memory would hide the run's): trains each config after a
# warm-up run, and reports the peak resident memory the training added (VmHWM, reset through
# /proc/self/clear_refs before each run) next to the estimate's total. glibc's adaptive mmap threshold
# would keep freed batches in the heap and count them again; a fixed threshold returns them.
PEAK_SCRIPT = """
import json, os, sys
import torch
torch.set_num_threads(1)
import actexp
from actexp.config import config_from_dict
from actexp.resources import estimate_bytes

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

results = []
for raw in json.loads(sys.argv[1]):
    actexp.train(config_from_dict({**raw, "model": {"hidden": [4]}}), runs_dir="warm-up")
    config = config_from_dict(raw)
    params = config.data.dataset.params
    estimate = estimate_bytes(config, 2, params["n_train"] + params["n_test"], 2)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    actexp.train(config, runs_dir="runs")
    results.append({"measured": status("VmHWM") - before, "estimate": estimate})
print(json.dumps(results))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc/self/clear_refs to reset the peak RSS")
def test_total_against_a_real_run(tmp_path):
    xor_data = {"dataset": {"name": "xor", "n_train": 200, "n_test": 100}}
    configs = [
        # parameters, gradients, Adam's state and the diagnostics' weight copy: ~180 MB
        {"data": xor_data, "model": {"hidden": [2048, 2048, 2048]}, "train": {"epochs": 1, "device": "cpu"}},
        # one large training batch: ~90 MB
        {"data": {"dataset": {"name": "xor", "n_train": 100_000, "n_test": 20_000}}, "model": {"hidden": [256, 256]},
         "train": {"epochs": 1, "batch_size": 20_000, "device": "cpu"}},
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MALLOC_MMAP_THRESHOLD_": "131072", "ACTEXP_DATA": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, json.dumps(configs)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for config, result in zip(configs, json.loads(out.stdout.strip().splitlines()[-1])):
        ratio = result["estimate"]["total"] / result["measured"]
        assert 0.8 <= ratio <= 2, (config["model"], ratio, result)


# ----------------------------------------------------------------------------- refusing, fast


GIANTS = [
    # (id, config, dataset shape, the key the line names)
    ("width 1e6 on MNIST", {"model": {"depth": 2, "width": 1_000_000}}, MNIST, "model.hidden"),
    ("one layer of 1e6 units", {"model": {"hidden": [1_000_000]}}, MNIST, "model.hidden"),
    ("1000 layers of 1e5", {"model": {"depth": 1000, "width": 100_000}}, CIFAR, "model.hidden"),
    ("maxout k 64 of 1e5 units", {"model": {"hidden": [100_000], "activation": {"name": "maxout", "k": 64}}}, CIFAR, "model.hidden"),
    ("a batch of 1e7 on wide layers", {"data": {"dataset": {"name": "xor", "n_train": 10_000_000, "n_test": 10_000_000}},
                                        "model": {"hidden": [4096, 4096]}, "train": {"batch_size": 10_000_000}}, xor(10_000_000, 10_000_000), "train.batch_size"),
    ("a batch of all CIFAR", {"model": {"hidden": [65536]}, "optim": {"optimizer": "sgd"}, "train": {"batch_size": 60000, "diagnostics": False}}, CIFAR, "train.batch_size"),
]


@pytest.mark.parametrize("section,shape,key", [g[1:] for g in GIANTS], ids=[g[0] for g in GIANTS])
def test_giants_are_refused_in_milliseconds_without_allocating(section, shape, key):
    config = config_from_dict(section)
    tracemalloc.start()
    start = time.thread_time()  # this thread's CPU time: a busy machine (a parallel test run) must not fail it
    with pytest.raises(ConfigError) as error:
        check_fits(estimate_bytes(config, *shape), 8 * GB, "cpu")
    seconds = time.thread_time() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    message = str(error.value)
    assert message.startswith(f"{key}: this run needs about ") and "on cpu (" in message and "but 8.0 GB is available; " in message
    assert "\n" not in message
    assert seconds < 0.05 and peak < 1_000_000, (seconds, peak)


@pytest.mark.parametrize(
    "section",
    [
        {"model": {"depth": 1_000_000, "width": 8}},
        {"model": {"hidden": [10**9]}},
        {"model": {"depth": 2, "width": 10**9}},
        {"model": {"activation": {"name": "maxout", "k": 10**9}}},
        {"data": {"dataset": {"name": "xor", "n_train": 10**11}}},
    ],
    ids=["depth 1e6", "hidden 1e9", "width 1e9", "maxout k 1e9", "xor 1e11"],
)
def test_absurd_sizes_are_refused_by_the_bounds(section):
    start = time.thread_time()
    with pytest.raises(ConfigError, match="out of range"):
        config_from_dict(section)
    assert time.thread_time() - start < 0.05


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_fits_in_8_gb(path):
    from actexp.config import load_config, read_yaml

    if "base" in read_yaml(path):
        pytest.skip("a sweep file (its runs are configs of the same sizes)")
    config = load_config(path)
    dataset = config.data.dataset
    shape = {"mnist": MNIST, "fashion_mnist": MNIST, "cifar100": CIFAR}.get(dataset.name) or xor(dataset.params.get("n_train", 0), dataset.params.get("n_test", 0))
    check_fits(estimate_bytes(config, *shape), 8 * GB, "cpu")


def test_the_default_config_on_mnist():
    estimate = estimate_bytes(config_from_dict({}), *MNIST)
    assert estimate["data"] == 70_000 * (784 * 4 + 8) + 70_000 * 8  # float32 features, int64 labels and order
    assert estimate["parameters"] == 4 * (784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10)
    assert estimate["optimizer state"] == 2 * estimate["gradients"]  # Adam
    assert estimate["best weights"] == estimate["parameters"]  # the selected (best val_loss) epoch's copy
    assert 250e6 < estimate["total"] < 350e6
    stopping = estimate_bytes(config_from_dict({"train": {"early_stopping": True, "diagnostics": False}}), *MNIST)
    assert stopping["best weights"] == stopping["parameters"] and stopping["diagnostics"] == stopping["probe batch"] == 0
    last = estimate_bytes(config_from_dict({"train": {"early_stopping": {"restore_best": False}}}), *MNIST)
    assert last["best weights"] == 0  # the last epoch is the result: no copy is kept


def test_the_refusal_line():
    estimate = {"parameters": 12 * GB, "gradients": 12 * GB, "optimizer state": 24 * GB, "best weights": 0, "data": 200_000_000,
                "diagnostics": 12 * GB, "training batch": 50_000_000, "evaluation batch": 400_000_000, "probe batch": 90_000_000}
    estimate["total"] = sum(estimate.values()) - 50_000_000 - 90_000_000  # the passes count by the largest
    with pytest.raises(ConfigError) as error:
        check_fits(estimate, int(21.3 * GB), "cuda:0")
    assert str(error.value) == (
        "model.hidden: this run needs about 60.6 GB on cuda:0 (parameters 12.0 GB, gradients 12.0 GB, optimizer state 24.0 GB, "
        "diagnostics 12.0 GB) but 21.3 GB is available; use fewer or narrower layers"
    )
    check_fits(estimate, estimate["total"], "cuda:0")  # exactly enough is enough


@pytest.mark.parametrize("n,text", [(0, "0 B"), (999, "999 B"), (1000, "1.0 KB"), (38_240_000_000, "38.2 GB"), (512_000_000, "512 MB"),
                                    (4 * 10**15, "4.0 PB"), (3 * 10**18, "3.0 EB")])
def test_human_bytes(n, text):
    assert human_bytes(n) == text


@pytest.mark.slow
def test_available_bytes_on_the_cpu_is_torch_free():
    code = "import sys\nfrom actexp.resources import available_bytes\nprint(available_bytes('cpu'), 'torch' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    available, torch_loaded = out.stdout.split()
    assert torch_loaded == "False"
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < int(available) <= total


def test_a_cgroup_limit_caps_what_is_available(tmp_path, monkeypatch):
    # A container's limit (cgroup v2), two levels up from the process's own cgroup, which has none.
    (tmp_path / "cgroup").write_text("0::/jobs/one\n")
    mount = tmp_path / "sys"
    (mount / "jobs" / "one").mkdir(parents=True)
    (mount / "jobs" / "one" / "memory.max").write_text("max\n")
    (mount / "memory.max").write_text(f"{2 * GB}\n")
    (mount / "memory.current").write_text(f"{GB}\n")
    (mount / "memory.stat").write_text(f"anon 1\ninactive_file {GB // 4}\nactive_file 5\n")
    monkeypatch.setattr(resources, "_OWN_CGROUP", str(tmp_path / "cgroup"))
    monkeypatch.setattr(resources, "_CGROUPS", (("", str(mount), "memory.max", "memory.current", "inactive_file"),))
    assert resources._cgroup_rooms() == [2 * GB - (GB - GB // 4)]
    assert available_bytes("cpu") == min(resources._meminfo_available(), int(1.25 * GB))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_available_bytes_on_a_gpu():
    free, total = torch.cuda.mem_get_info()
    assert 0 < available_bytes("cuda") <= total and 0 < available_bytes("cuda:0") <= total
