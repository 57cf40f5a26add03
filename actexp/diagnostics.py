"""Per-layer training diagnostics: vanishing gradients, dead units, saturated activations.

Each epoch, and once before training (epoch 0), every hidden layer and the output layer get a record:

  grad_norm           L2 norm of the layer's weight gradient, mean over the epoch's steps, summed on
                      the device (no host sync per step). Epoch 0 has no steps: the mean over the
                      probe batch cut into batches of train.batch_size, in eval mode.
  weight_norm         ‖W‖ at the end of the epoch.
  update_ratio        ‖W_end − W_start‖ / ‖W_start‖ over the epoch (none at epoch 0).
  grad_ratio          grad_norm / the output layer's grad_norm. Layer 1's is the vanishing-gradient figure.

and, hidden layers only, measured on a fixed probe batch (PROBE_SIZE training samples drawn once with
a generator of their own, so the run's RNG and batch order are untouched), in eval mode:

  act_mean, act_std   of the layer's activation outputs over all (sample, unit) pairs.
  saturated_fraction  share of (sample, unit) pairs where |f'(z)| < SATURATION of the largest |f'|
                      (sigmoid/tanh near their asymptotes, the flat side of ReLU).
  dead_fraction       share of units saturated for every probe sample: they pass no gradient, so
                      they cannot learn (keras-contrib's "did not fire once").

f' comes from autograd on the layer's activation module, so every registered activation works with
no special case. A unit's derivative is the largest derivative of its output with respect to any
of its pre-activations: for an elementwise activation that is f'(z); for maxout it is the selected
piece's, which is always 1 — a maxout unit always passes gradient to the piece that won, so it
never counts as saturated or dead (pieces that never win are not counted).

torch is imported on first use: `actexp show` reads thresholds and warnings from here without it.
"""

from __future__ import annotations

from .components import LazyModule

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")

PROBE_SIZE = 2048
SATURATION = 0.01  # |f'(z)| below 1% of its largest value: saturated
DERIVATIVE_GRID = 20.0  # the largest |f'| is the largest on z in [-20, 20]

# Warning thresholds (the README lists them).
DEAD_WARNING = 0.25  # a quarter of a layer's units dead, through to the last epoch
SATURATED_WARNING = 0.5  # half the outputs saturated, for activations that flatten on both sides
VANISHING_RATIO = 1e-2  # first-layer gradient below 1% of the output layer's
EXPLODING_RATIO = 1e2  # or above 100 times it

WEIGHT_METRICS = ("grad_norm", "weight_norm", "update_ratio", "grad_ratio")
PROBE_METRICS = ("act_mean", "act_std", "saturated_fraction", "dead_fraction")
METRICS = WEIGHT_METRICS + PROBE_METRICS
OUTPUT_LAYER = "output"


# ----------------------------------------------------------------------------- measuring


class Tracker:
    """One run's probe and figures: the epoch-0 record, and each epoch's per-layer figures from the
    weight-side ones a StackedTracker collects for the run's fused group (K >= 1 members)."""

    def __init__(self, model, x_train, y_train, seed: int, batch_size: int, probe=None):
        """`probe`: the (x, y) that choose_probe(x_train, y_train, seed) returns, when the caller
        has it already (members of a fused group with equal seeds share one)."""
        self.model, self.batch_size = model, batch_size
        self.weights = [linear.weight for linear in model.linears()]
        self.probe_x, self.probe_y = probe if probe is not None else choose_probe(x_train, y_train, seed)

    def epoch_zero(self) -> list[dict]:
        """The model as initialized: gradients of the probe batch's loss, no update yet."""
        return self._layers(probe_grad_norms(self.model, self.probe_x, self.probe_y, self.batch_size), None)

    def saturates_both_sides(self) -> bool:
        first = self.model.hidden[0]
        return saturates_both_sides(first.activation, pieces_of(first), like=self.probe_x)

    def _layers(self, grad, update) -> list[dict]:
        """One dict per hidden layer with every figure, then the output layer's weight-side figures
        (it has no activation, and its gradient is the ratios' reference)."""
        nan = torch.full_like(grad, float("nan"))
        weight = torch.stack([w.detach().norm() for w in self.weights])
        weight_side = torch.stack([grad, weight, nan if update is None else update, grad / grad[-1]], 1)
        probe = probe_activations(self.model, self.probe_x)
        probe = torch.cat([probe, probe.new_full((1, len(PROBE_METRICS)), float("nan"))])
        *hidden, output = torch.cat([weight_side, probe], 1).tolist()  # the one host read
        layers = [{"layer": i + 1, **_figures(METRICS, row)} for i, row in enumerate(hidden)]
        return layers + [{"layer": OUTPUT_LAYER, **_figures(WEIGHT_METRICS[:3], output)}]


def choose_probe(x, y, seed: int):
    """PROBE_SIZE training samples, chosen once with a generator of their own (not the run's RNG)."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(y), generator=generator)[:PROBE_SIZE].to(x.device)
    return x[index], y[index]


def probe_grad_norms(model, x, y, batch_size: int):
    """Each linear layer's weight-gradient norm, mean over (x, y) cut into training-sized batches
    (as an epoch's steps would see them: a full-batch gradient is far smaller, since per-sample
    gradients cancel), in eval mode (no dropout draws, no batch-norm statistics updated); .grad is
    left alone."""
    was_training = model.training
    model.eval()
    weights = [linear.weight for linear in model.linears()]
    total = torch.zeros(len(weights), device=x.device)
    starts = range(0, len(y), batch_size)
    with torch.enable_grad():
        for start in starts:
            loss = F.cross_entropy(model(x[start : start + batch_size]), y[start : start + batch_size])
            total += torch.stack(torch._foreach_norm(torch.autograd.grad(loss, weights)))
    model.train(was_training)
    return total / len(starts)


def probe_activations(model, x):
    """(hidden layers, 4): act_mean, act_std, saturated_fraction, dead_fraction on x, in eval mode."""
    was_training = model.training
    model.eval()
    rows = []
    with torch.no_grad():
        for layer in model.hidden:
            # HiddenLayer.forward, split to reach the pre-activation z; dropout is identity in eval mode.
            z = layer.norm(layer.linear(x))
            derivative, x = unit_derivatives(layer.activation, z, pieces_of(layer))
            flat = derivative < SATURATION * derivative_on_grid(layer.activation, pieces_of(layer), z).max()
            rows.append(torch.stack([x.mean(), x.std(), flat.float().mean(), flat.all(0).float().mean()]))
    model.train(was_training)
    return torch.stack(rows)


def unit_derivatives(activation, z, pieces: int = 1):
    """|∂a/∂z| per (sample, unit) by autograd, and the activation a. Elementwise activations: the
    gradient of a.sum() is f'(z). A unit fed by `pieces` pre-activations (maxout) gets the largest."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        a = activation(z)
        (derivative,) = torch.autograd.grad(a.sum(), z)
    return derivative.abs().unflatten(-1, (-1, pieces)).amax(-1), a.detach()


def derivative_on_grid(activation, pieces: int = 1, like=None):
    """|f'| of one unit over z in [-20, 20] (distinct values, so maxout's pieces never tie)."""
    grid = torch.linspace(-DERIVATIVE_GRID, DERIVATIVE_GRID, 4001 * pieces)
    if like is not None:
        grid = grid.to(like)
    return unit_derivatives(activation, grid.view(-1, pieces), pieces)[0]


def saturates_both_sides(activation, pieces: int = 1, like=None) -> bool:
    """Whether f' is flat at both ends (sigmoid, tanh): there saturation is the problem to warn of;
    for one-sided activations (ReLU and kin) the flat side is ordinary sparsity, and dead covers it."""
    derivative = derivative_on_grid(activation, pieces, like)
    return bool(max(derivative[0], derivative[-1]) < SATURATION * derivative.max())


def pieces_of(layer) -> int:
    return getattr(layer.activation, "pieces", 1)


def _figures(names, row) -> dict:
    return {name: _tidy(value) for name, value in zip(names, row)}


def _tidy(value: float) -> float | None:
    """Six significant digits for the JSON; a non-finite value (a zero output gradient) as null."""
    return float(f"{value:.6g}") if value == value and abs(value) != float("inf") else None


# ----------------------------------------------------------------------------- reading


def layer_values(records: list[dict], layer, metric: str) -> list[tuple[int, float]]:
    """(epoch, value) of one layer's metric over the records that have it."""
    out = []
    for record in records:
        for row in record.get("layers", ()):
            if row["layer"] == layer and row.get(metric) is not None:
                out.append((record["epoch"], row[metric]))
    return out


def layer_names(records: list[dict]) -> list:
    return [row["layer"] for row in next((r["layers"] for r in records if r.get("layers")), [])]


def long_rows(records: list[dict]):
    """diagnostics.csv in long form: (epoch, layer, metric, value)."""
    for record in records:
        for row in record.get("layers", ()):
            for metric in METRICS:
                if row.get(metric) is not None:
                    yield record["epoch"], row["layer"], metric, row[metric]


def is_problem(metric: str, value: float | None, saturating: bool, layer=None) -> bool:
    """Whether one figure crosses its warning threshold (`actexp show` highlights it)."""
    if value is None:
        return False
    if metric == "dead_fraction":
        return value >= DEAD_WARNING
    if metric == "saturated_fraction":
        return saturating and value >= SATURATED_WARNING
    if metric == "grad_ratio" and layer == 1:
        return not VANISHING_RATIO <= value <= EXPLODING_RATIO
    return False


def diagnostic_warnings(records: list[dict], activation: str, saturating: bool) -> list[str]:
    """Plain sentences for summary.json: dead layers, saturated layers, vanishing/exploding gradients."""
    return list(diagnostic_findings(records, activation, saturating).values())


def diagnostic_findings(records: list[dict], activation: str, saturating: bool) -> dict[str, str]:
    """diagnostic_warnings' sentences by what each is about: "dead layer N", "saturated",
    "vanishing" or "exploding". A sentence's figures change as epochs come in, what it is about
    does not: that tells a live display which warnings it has shown already."""
    warnings, saturated = {}, {}
    for layer in layer_names(records):
        if layer == OUTPUT_LAYER:
            continue
        dead = layer_values(records, layer, "dead_fraction")
        since = None  # the start of the last stretch of epochs at or above the threshold
        for epoch, value in dead:
            if value < DEAD_WARNING:
                since = None
            elif since is None:
                since = epoch
        if since is not None:
            warnings[f"dead layer {layer}"] = f"layer {layer}: {dead[-1][1]:.0%} of units dead from epoch {since}"
        first = next(((e, v) for e, v in layer_values(records, layer, "saturated_fraction") if v >= SATURATED_WARNING), None)
        if saturating and first:
            saturated[layer] = first
    if saturated:
        warnings["saturated"] = _saturation_sentence(saturated, activation)
    ratios = layer_values(records, 1, "grad_ratio")
    for kind, bad in (("vanishing", lambda r: r < VANISHING_RATIO), ("exploding", lambda r: r > EXPLODING_RATIO)):
        epoch, ratio = next(((e, r) for e, r in ratios if bad(r)), (None, None))
        if epoch is not None:
            warnings[kind] = f"first-layer gradient {ratio:.1e}× the output layer's at epoch {epoch} ({kind} gradient)"
    return warnings


def _saturation_sentence(first: dict, activation: str) -> str:
    """One sentence for all saturated layers: {layer: (first epoch at or above the threshold, value then)}."""
    if len(first) == 1:
        ((layer, (epoch, value)),) = first.items()
        return f"layer {layer}: {value:.0%} of {activation} outputs saturated at epoch {epoch}"
    layers = list(first)
    consecutive = layers == list(range(layers[0], layers[-1] + 1))
    names = f"{layers[0]}–{layers[-1]}" if consecutive else ", ".join(map(str, layers))
    values = [v for _, v in first.values()]
    return (
        f"layers {names}: {min(values):.0%}–{max(values):.0%} of {activation} outputs saturated "
        f"(first at epoch {min(e for e, _ in first.values())})"
    )


# ----------------------------------------------------------------------------- fused groups

class StackedTracker:
    """diagnostics.Tracker's per-step and per-epoch weight figures for all members at once (one
    norm per layer per step over the stacked gradients); each member's own Tracker (over its MLP,
    whose weights are views of the stack) measures its probe and writes its records."""

    def __init__(self, weights, trackers):
        self.weights, self.trackers = weights, trackers
        self.grad_sums = None
        self.steps = 0
        self.start = None

    def begin_epoch(self) -> None:
        self.start = [w.detach().clone() for w in self.weights]
        self.grad_sums = torch.zeros(len(self.weights), self.weights[0].shape[0], device=self.weights[0].device)
        self.steps = 0

    def after_backward(self) -> None:
        with torch.no_grad():
            self.grad_sums += torch.stack([torch.linalg.vector_norm(w.grad, dim=(1, 2)) for w in self.weights])
        self.steps += 1

    def carry(self, other: StackedTracker, keep: list[int]) -> None:
        """Take over the kept members' figures of the epoch so far from `other`."""
        self.start = [s[keep] for s in other.start]
        self.grad_sums, self.steps = other.grad_sums[:, keep], other.steps

    def end_epoch(self) -> list:
        """Each member's `layers` list (None for a member without diagnostics)."""
        with torch.no_grad():
            update = torch.stack([
                torch.linalg.vector_norm(w.detach() - s, dim=(1, 2)) / torch.linalg.vector_norm(s, dim=(1, 2))
                for w, s in zip(self.weights, self.start)
            ])
            grad = self.grad_sums / max(self.steps, 1)
        self.start = None
        return [t._layers(grad[:, k], update[:, k]) if t is not None else None for k, t in enumerate(self.trackers)]
