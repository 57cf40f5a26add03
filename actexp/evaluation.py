"""Use what a run trained: `load_run` gives its model with the result weights (the selected epoch's,
kept in model.pt), its config and the preprocessing from raw images to the model's input;
`evaluate_run` (`actexp eval`) measures it on a split, class by class; `decision_grid`
(`actexp plot --boundary`) is a 2-D model's predicted class over a grid of its input plane.

A run folder is read as possibly hostile: config.yaml goes through the config validator, the
weights load with weights_only=True and at most the bytes the config's model can hold, and their
names, shapes and dtypes must be exactly the model's before anything is allocated for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from .components import LazyModule
from .config import Component, Config, DataConfig, config_from_dict, parse_component
from .data import IMAGE_SETS, dataset_shape, input_statistics, load_source, model_inputs, split_indices
from .errors import ActexpError, ConfigError
from .runs import CHECKPOINTS, MODEL, DamagedFile, load_checkpoint, load_weights, read_config, read_summary, run_status

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")

SPLITS = ("test", "val")
# Past this many classes the CLI prints no confusion table (CIFAR-100's would be 100 x 100).
MAX_TABLE_CLASSES = 20
BOUNDARY_RESOLUTION = 200  # grid cells along each axis
# torch.save adds a few hundred bytes per tensor and a zip directory to the numbers themselves.
WEIGHTS_OVERHEAD, TENSOR_OVERHEAD = 64 << 10, 4 << 10


@dataclass(frozen=True)
class Preprocess:
    """Raw inputs -> the model's input, exactly as the run's training data was made: uint8 images
    as the dataset stores them ((N, 28, 28) or (N, 1, 28, 28) for MNIST and Fashion-MNIST, (N, 32,
    32, 3) or (N, 3, 32, 32) for CIFAR-100; one image without N) or features ((N, 2) for XOR) ->
    normalized with the statistics the run used, flattened, on the model's device."""

    data: DataConfig  # the run's: its normalization is the one applied
    mean: tuple[float, ...]  # per channel, 0..1 scale; empty: features used as they are
    std: tuple[float, ...]
    sample_shape: tuple[int, ...]  # one input as a Source holds it: (C, H, W) or (D,)
    device: str = "cpu"

    def __call__(self, raw):
        x = raw if torch.is_tensor(raw) else _tensor(raw)
        if self.mean and x.dtype != torch.uint8:
            raise ActexpError(f"preprocess: expected uint8 pixel values (0..255), as {self.data.dataset.name} stores its images; got {x.dtype}")
        if not self.mean and (x.dtype.is_complex or x.dtype == torch.bool):
            raise ActexpError(f"preprocess: expected real-valued features, got {x.dtype}")
        return model_inputs(self._as_stored(x), self.data, self.mean, self.std).to(self.device)

    def _as_stored(self, x):
        """(N, *sample_shape) from any of the accepted layouts."""
        shape = self.sample_shape
        layouts = [shape]
        if len(shape) == 3:
            c, h, w = shape
            layouts.append((h, w) if c == 1 else (h, w, c))
        for layout in layouts:
            k = len(layout)
            if x.ndim in (k, k + 1) and tuple(x.shape[x.ndim - k:]) == layout:
                x = x.reshape(-1, *layout)
                if layout == shape:
                    return x
                return x.unsqueeze(1) if len(layout) == 2 else x.permute(0, 3, 1, 2)
        accepted = " or ".join(f"(N, {', '.join(map(str, layout))})" for layout in layouts)
        raise ActexpError(f"preprocess: {self.data.dataset.name} inputs are {accepted}; got {tuple(x.shape)}")


def _tensor(raw):
    """A numpy array (or nested lists) as a tensor: a copy, since torch will not share a read-only
    array (one made by np.frombuffer, as IDX readers do) without a warning."""
    import numpy as np

    try:
        return torch.from_numpy(np.array(raw))
    except (TypeError, ValueError) as e:
        raise ActexpError(f"preprocess: expected an array of images or features ({str(e).splitlines()[0][:80]})") from e


@dataclass(frozen=True)
class LoadedRun:
    """A completed run, ready to use: `run.model(run.preprocess(images)).argmax(1)`."""

    dir: Path
    config: Config
    model: object  # the MLP, in eval mode, with the result weights
    preprocess: Preprocess
    epoch: int  # the selected epoch, whose weights these are
    summary: dict

    @property
    def n_classes(self) -> int:
        return self.model.output.out_features

    def predict(self, raw):
        """Predicted class indices of raw inputs (see Preprocess)."""
        with torch.inference_mode():
            return self.model(self.preprocess(raw)).argmax(1)


def load_run(run_dir: str | Path, device: str = "cpu") -> LoadedRun:
    """A completed run's model with its result weights (the selected epoch's, per the run's rule:
    the best epoch unless early_stopping.restore_best is off), its config and its preprocessing.
    ActexpError, one line, for a folder that is not a completed run or whose files are damaged."""
    from .model import build_model

    folder = Path(run_dir)
    summary = read_summary(folder)
    if not summary:
        raise ActexpError(f"{folder}: not a run folder (no summary.json)")
    status = run_status(folder, summary)
    if status != "completed":
        resume = f"; continue it with `actexp train --resume {folder}`" if status == "interrupted" else ""
        raise ActexpError(f"{folder}: the run is {status}; only a completed run has result weights{resume}")
    config = run_config(folder)
    n_features, _, n_classes = dataset_shape(config.data.dataset)
    # The model's names and shapes, without allocating or drawing from any RNG, and uninitialized:
    # torch's normal_ on the meta device imports torch._dynamo, a second or two of eval's start here.
    with torch.device("meta"):
        model = build_model(config.model, n_features, n_classes, initialize=False)
    expected = model.state_dict()
    weights, epoch = _result_weights(folder, summary, expected)
    _check_room(folder, expected, str(device))
    # The loaded tensors become the model's (assign): to_empty would make meta tensors real through
    # torch's Python references, whose first use imports sympy, half a second of eval's start here.
    model.load_state_dict(weights, assign=True)
    model = model.to(device)
    model.eval()
    mean, std = input_statistics(config.data.dataset)
    sample_shape = (len(mean), *(2 * (math.isqrt(n_features // len(mean)),))) if mean else (n_features,)
    return LoadedRun(folder, config, model, Preprocess(config.data, mean, std, sample_shape, str(device)), epoch, summary)


def _check_room(folder: Path, expected: dict, device: str) -> None:
    """The model, about to be allocated, must fit what `device` has left (the weights loaded from
    the file are as large again, and are held too)."""
    from .resources import available_bytes, human_bytes

    needed = sum(t.numel() * t.element_size() for t in expected.values())
    available = available_bytes(device)
    if needed > available:
        raise ActexpError(f"{folder / 'config.yaml'}: its model takes {human_bytes(needed)} on {device} but {human_bytes(available)} "
                          f"is available; load it where there is more memory")


def run_config(folder: Path) -> Config:
    """A run's config.yaml, validated as any config is (a plugin it needs and that is not enabled
    here is named, with where it came from: PluginError)."""
    from .plugins import require_recorded

    raw = read_config(folder)
    if not raw:
        raise DamagedFile(f"{folder / 'config.yaml'}: missing or empty; a run folder keeps its config")
    require_recorded(folder)
    try:
        return config_from_dict(raw)
    except ConfigError as e:
        raise DamagedFile(f"{folder / 'config.yaml'}: {e}") from e


def _result_weights(folder: Path, summary: dict, expected: dict) -> tuple[dict, int]:
    """model.pt's state_dict and epoch, checked against the model's; a run completed before runs
    kept model.pt falls back to the checkpoint that holds its selected epoch's weights."""
    numbers = sum(t.numel() * t.element_size() for t in expected.values())
    max_bytes = numbers + WEIGHTS_OVERHEAD + TENSOR_OVERHEAD * len(expected)
    path = folder / MODEL
    selected = summary.get("selected_epoch")
    if path.exists() or path.is_symlink():
        state = load_weights(path, max_bytes)
        if selected is not None and state["epoch"] != selected:
            raise DamagedFile(f"{path}: holds epoch {state['epoch']}'s weights, but the run selected epoch {selected}")
        return _checked(path, state["model"], expected), state["epoch"]
    for name in ("last.pt", "best.pt"):
        checkpoint = folder / CHECKPOINTS / name
        if selected is None or not checkpoint.is_file():
            continue
        state = load_checkpoint(checkpoint, max_bytes=6 * numbers + (64 << 20))
        best = state["best"] if isinstance(state["best"], dict) else {}
        for epoch, weights in ((state["epoch"], state["model"]), (best.get("epoch"), state.get("best_model"))):
            if epoch == selected and isinstance(weights, dict):
                return _checked(checkpoint, weights, expected), selected
    raise ActexpError(f"{folder}: no {MODEL} (the run finished before actexp kept result weights) and no checkpoint "
                      f"holds its selected epoch {selected}'s weights; train the config again")


def _checked(path: Path, weights: dict, expected: dict) -> dict:
    """The weights, if their names, shapes and dtypes are exactly the model's; DamagedFile otherwise."""
    missing = [name for name in expected if name not in weights]
    unexpected = [name for name in weights if name not in expected]
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {str(unexpected[0])[:80]}"
        raise DamagedFile(f"{path}: does not fit the model config.yaml describes ({what})")
    for name, tensor in expected.items():
        given = weights[name]
        if not torch.is_tensor(given) or given.shape != tensor.shape or given.dtype != tensor.dtype:
            found = f"{tuple(given.shape)} {given.dtype}" if torch.is_tensor(given) else type(given).__name__
            raise DamagedFile(f"{path}: does not fit the model config.yaml describes ({name} is {found}, "
                              f"the model's {tuple(tensor.shape)} {tensor.dtype})")
    return weights


# ----------------------------------------------------------------------------- actexp eval


def evaluate_run(run: str | Path | LoadedRun, split: str = "test", dataset: str | None = None, device: str = "cpu") -> dict:
    """A run's result weights on a split ("test" or "val", the same validation samples training
    held out) of its dataset, or of another dataset (`dataset`) of the same input shape and
    classes, preprocessed as the run's own data. Returns plain data: loss, accuracy, per-class
    accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    run = run if isinstance(run, LoadedRun) else load_run(run, device)
    x, y, data_config = eval_split(run, split, dataset)
    loss, accuracy = evaluate(run.model, x, y)  # as training measured its test figures: the same numbers
    k = run.n_classes
    predicted = _predict(run.model, x)
    confusion = torch.bincount(y.to(predicted.device) * k + predicted, minlength=k * k).view(k, k).cpu()
    names = class_names(data_config.dataset.name, k)
    per_class = []
    for c in range(k):
        row = confusion[c]
        n = int(row.sum())
        others = row.clone()
        others[c] = 0
        confused = int(others.argmax()) if n and int(others.max()) else None
        per_class.append({
            "class": c, "name": names[c], "n": n, "correct": int(row[c]),
            "accuracy": int(row[c]) / n if n else None,
            "confused_with": confused, "confused_count": int(others.max()) if confused is not None else 0,
        })
    return {
        "run": str(run.dir), "name": run.config.name, "epoch": run.epoch,
        "dataset": data_config.dataset.name, "trained_on": run.config.data.dataset.name, "split": split,
        "n": len(y), "loss": loss, "accuracy": accuracy,
        "classes": names, "per_class": per_class, "confusion": confusion.tolist(),
    }


def eval_split(run: LoadedRun, split: str, dataset: str | None = None):
    """(inputs, labels, data config) of a split, preprocessed by the run's preprocessing."""
    data_config = run.config.data
    if dataset is not None and dataset != data_config.dataset.name:
        data_config = replace(data_config, dataset=_fits_the_run(run, parse_component(dataset, "--dataset", "dataset")))
    x, y = raw_split(data_config, split)
    return run.preprocess(x), y.to(run.preprocess.device), data_config


def raw_split(data_config, split: str):
    """(raw inputs, labels) of the test split, or of the validation samples a run with this data
    config held out, as the dataset stores them."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split}: choose test or val")
    source = load_source(data_config.dataset, data_config.root, data_config.split_seed)
    if split == "test":
        return source.x_test, source.y_test
    _, val_idx = split_indices(len(source.y_train), data_config)
    return source.x_train[val_idx], source.y_train[val_idx]


def _fits_the_run(run: LoadedRun, other: Component) -> Component:
    """`other`, if the run's model can be measured on it: the same input shape, and the same
    classes (by name: an MNIST model's outputs mean digits, whatever Fashion-MNIST's labels mean)."""
    trained = run.config.data.dataset
    features, _, classes = dataset_shape(trained)
    other_features, _, other_classes = dataset_shape(other)
    fitting = [name for name in IMAGE_SETS if name != trained.name and _fits(trained, Component(name))]
    choice = f"; datasets that fit: {', '.join(fitting)}" if fitting else f"; no other dataset has {trained.name}'s inputs and classes"
    if (other_features, other_classes) != (features, classes):
        raise ConfigError(f"--dataset {other.name}: {other_features} input features and {other_classes} classes, but the run's "
                          f"model (trained on {trained.name}) takes {features} and tells {classes} classes apart{choice}")
    mean, _ = input_statistics(other)
    if mean and len(mean) != len(run.preprocess.mean):
        raise ConfigError(f"--dataset {other.name}: its images have other channels than {trained.name}'s{choice}")
    if not _same_classes(trained, other):
        raise ConfigError(f"--dataset {other.name}: its classes ({_names(other, other_classes)}) are not the classes the run's model "
                          f"tells apart ({trained.name}'s: {_names(trained, classes)}): its accuracy would pair unrelated labels{choice}")
    return other


def _fits(trained: Component, other: Component) -> bool:
    shape, other_shape = dataset_shape(trained), dataset_shape(other)
    channels = len(input_statistics(trained)[0]) == len(input_statistics(other)[0])
    return shape[::2] == other_shape[::2] and channels and _same_classes(trained, other)


def _same_classes(trained: Component, other: Component) -> bool:
    """Whether two datasets' labels mean the same classes: only known when both name them."""
    if other.name == trained.name:
        return True
    names = [IMAGE_SETS[d.name].classes if d.name in IMAGE_SETS else None for d in (trained, other)]
    return names[0] is not None and names[0] == names[1]


def _names(dataset: Component, n_classes: int) -> str:
    """A dataset's class names for a message: the first three and the last."""
    names = class_names(dataset.name, n_classes)
    return ", ".join(names) if len(names) <= 4 else f"{', '.join(names[:3])}, …, {names[-1]}"


def _predict(model, x, batch: int = 8192):
    with torch.inference_mode():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def class_names(dataset: str, n_classes: int) -> list[str]:
    """Readable class names where the dataset has them (Fashion-MNIST's garments), else the indices."""
    names = IMAGE_SETS[dataset].classes if dataset in IMAGE_SETS else None
    return list(names) if names is not None and len(names) == n_classes else [str(c) for c in range(n_classes)]


# ----------------------------------------------------------------------------- actexp plot --boundary


@dataclass(frozen=True)
class DecisionGrid:
    """A 2-D model's predicted class over its input plane, in the raw features' coordinates."""

    xs: object  # (W,) numpy: the first feature's values along the grid
    ys: object  # (H,) numpy: the second feature's
    classes: object  # (H, W) numpy int: the predicted class at (xs[j], ys[i])
    points: object  # (N, 2) numpy: the split's samples
    labels: object  # (N,) numpy int: their true classes
    accuracy: float  # the model's on those samples

    def class_at(self, x: float, y: float) -> int:
        """The predicted class of the grid cell nearest to (x, y)."""
        import numpy as np

        return int(self.classes[int(np.abs(self.ys - y).argmin()), int(np.abs(self.xs - x).argmin())])


def decision_grid(run: str | Path | LoadedRun, resolution: int = BOUNDARY_RESOLUTION, split: str = "test", margin: float = 0.15) -> DecisionGrid:
    """The model's predicted class on a resolution x resolution grid spanning the split's samples
    (plus `margin` of their range on each side), and the samples. ConfigError for a run whose inputs
    are not 2-D."""
    run = run if isinstance(run, LoadedRun) else load_run(run)
    dataset = run.config.data.dataset
    features = dataset_shape(dataset)[0]
    if features != 2:
        raise ConfigError(f"{run.dir}: plot --boundary draws a model of two input features (xor); this run was trained on "
                          f"{dataset.name}, {features} features; use `actexp eval {run.dir}` for its per-class results")
    points, labels = raw_split(run.config.data, split)
    points = points.float()
    low, high = points.min(0).values, points.max(0).values
    pad = (high - low).clamp(min=1e-3) * margin
    xs = torch.linspace(float(low[0] - pad[0]), float(high[0] + pad[0]), resolution)
    ys = torch.linspace(float(low[1] - pad[1]), float(high[1] + pad[1]), resolution)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    cells = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], 1)
    classes = _predict(run.model, run.preprocess(cells)).view(resolution, resolution).cpu()
    predicted = _predict(run.model, run.preprocess(points)).cpu()
    accuracy = float((predicted == labels).float().mean())
    return DecisionGrid(xs.numpy(), ys.numpy(), classes.numpy(), points.numpy(), labels.numpy(), accuracy)


# ----------------------------------------------------------------------------- the measure training uses

EVAL_BATCH = 8192  # samples a forward pass takes at once (resources.EVAL_BATCH estimates it)


def evaluate(model, x, y) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over (x, y) in eval mode: each epoch's validation figures,
    a run's test figures, and `evaluate_run`'s, one function so that they are the same numbers."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        loss_sum = torch.zeros((), device=x.device)
        correct = torch.zeros((), device=x.device, dtype=torch.int64)
        for start in range(0, len(y), EVAL_BATCH):
            logits = model(x[start : start + EVAL_BATCH])
            yb = y[start : start + EVAL_BATCH]
            loss_sum += F.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    return loss_sum.item() / len(y), correct.item() / len(y)
