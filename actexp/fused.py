"""Fused training: K runs that share layer shapes, data, batch size and epochs train as one stacked
model, while each keeps everything else of its own: activation, weight and bias init, seed (its
batch order and dropout draws), dropout rates, optimizer and its hyperparameters and schedule,
L1/L2/activity penalties, max-norm, gradient clipping, early stopping and diagnostics.

- Weights are stacked as [K, out, in] and every layer is one batched matmul (baddbmm) for all
  members. Members are sorted by optimizer settings, then seed, then activation: each set of
  members with equal optimizer settings is a contiguous slice of K (one optimizer call), members
  of one seed draw the same batches, so the first layer (most of an MLP's arithmetic) is one large
  matmul per seed, and each activation is applied to its contiguous slices of K (on a GPU, its
  members are first gathered into one slice: see _activations). Nothing reduces across members:
  the loss is each member's mean, summed over members, so each member's gradient is exactly its
  own.
- Each member is built by model.build_model with its own seed, exactly as its solo run builds it,
  and then stacked. Its own MLP stays alive, its parameters turned into views of its slice of the
  stacked ones (member k's nn.Linear weight is stacked[k]): evaluation, diagnostics and
  checkpoints read the member's ordinary MLP, so its run folder is a solo run's.
- The optimizer step runs torch's own optimizers (the same factory as a solo run: fused kernels
  where torch has them): one call for each slice of members whose optimizer settings are equal
  (one call in all when every member shares them). Every optimizer in components.OPTIMIZERS is
  elementwise. On a GPU the call steps the slice of each stacked parameter, a handful of tensors
  whatever K is; on a CPU it steps each member's own tensors (views of the stack), see
  Stepper._segments. Either way a checkpoint gets the member's own state, in the form its solo
  optimizer's state_dict has.
- A member that diverges or stops early is retired: the others are re-stacked without it (from the
  same per-member state a checkpoint holds), so it is frozen and no longer costs its update.

A solo run is the case K = 1 of the same code. Since every operation here is per member (batched
matmuls and elementwise kernels compute each member's slice as they would alone), a fused member's
numbers are those of its solo run.

torch is imported on first use: group_key and plan_groups answer without it.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass

from .components import OPTIMIZERS, SCHEDULES, LazyModule
from .config import config_to_dict

torch = LazyModule("torch")
nn = LazyModule("torch.nn")
F = LazyModule("torch.nn.functional")


# ----------------------------------------------------------------------------- grouping


def group_key(config) -> tuple | None:
    """What the members of one fused group must share, as a hashable key: the data and its split,
    the layer shapes (hidden widths, maxout's pieces, batch norm), batch size, epochs, device and
    torch threads (one process computes the group).
    None for a config that must train alone (none today: every config the stepper can train
    solo it can train fused)."""
    model, train = config.model, config.train
    activation = model.activation
    pieces = activation.params["k"] if activation.name == "maxout" else 1
    data = json.dumps(config_to_dict(config)["data"], sort_keys=True)
    return (data, tuple(model.hidden), pieces, model.batch_norm, train.batch_size, train.epochs, train.device, train.threads)


def member_order(config) -> tuple:
    """Sort key within a group: by optimizer settings (contiguous: one optimizer call each), then
    seed (members of one seed share their batches: contiguous, their first layer is one matmul),
    then activation (contiguous slices)."""
    return optimizer_key(config), config.train.seed, activation_key(config)


def activation_key(config) -> str:
    activation = config.model.activation
    if activation.name == "prelu":  # the slope is a per-member parameter: its init may differ
        return "prelu"
    return json.dumps(activation.to_plain(), sort_keys=True)


def optimizer_key(config) -> str:
    """Members with equal keys share one optimizer call (its hyperparameters are scalars)."""
    plain = config_to_dict(config)["optim"]
    return json.dumps({k: plain[k] for k in ("optimizer", "lr", "weight_decay", "schedule")}, sort_keys=True)


def plan_groups(configs, max_group: int | None = None, available: int | None = None) -> list[list[int]]:
    """Indices of `configs`, grouped: configs with the same group_key train together, sorted by
    member_order; a group is split where it would exceed `max_group` members or the device memory
    (`available` bytes; default: what resources.available_bytes reports for the group's device).
    Groups come in the order of their first config; a config whose key is None is a group of one."""
    from .data import dataset_shape
    from .resources import available_bytes, estimate_bytes

    buckets: dict = {}
    for index, config in enumerate(configs):
        key = group_key(config)
        buckets.setdefault(("alone", index) if key is None else key, []).append(index)
    rooms: dict = {}
    groups = []
    for indices in buckets.values():
        indices = sorted(indices, key=lambda i: (member_order(configs[i]), i))
        device = configs[indices[0]].train.device
        if device not in rooms:
            rooms[device] = available if available is not None else available_bytes(_resolved(device))
        shape = dataset_shape(configs[indices[0]].data.dataset)
        chunk, size = [], _GroupSize(shape)
        for index in indices:
            estimate = estimate_bytes(configs[index], *shape)
            too_many = max_group is not None and len(chunk) + 1 > max_group
            if chunk and (too_many or size.total_with(estimate) > rooms[device]):
                groups.append(chunk)
                chunk, size = [], _GroupSize(shape)
            chunk.append(index)
            size.add(estimate)
        groups.append(chunk)
    return groups


def training_cost(config) -> int:
    """A run's arithmetic, up to a constant: its parameters times the samples it sees (a fused
    group costs about the sum of its members'); plan_tasks starts the costliest groups first."""
    from .data import dataset_shape
    from .resources import estimate_bytes

    shape = dataset_shape(config.data.dataset)
    return config.train.epochs * shape[1] * estimate_bytes(config, *shape)["gradients"]


def _resolved(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def group_bytes(configs) -> dict[str, int]:
    """resources.estimate_bytes for a fused group: every member's parameters, gradients, optimizer
    state, best weights and diagnostics; the data once (plus each member's epoch order); every
    member's training batch at once (one stacked step), an evaluation or probe batch one member at
    a time; and, for retiring a member (early stopping, divergence), a second copy of the
    parameters (the others are re-stacked)."""
    from .data import dataset_shape
    from .resources import estimate_bytes

    shape = dataset_shape(configs[0].data.dataset)
    size = _GroupSize(shape)
    for config in configs:
        size.add(estimate_bytes(config, *shape))
    return size.items()


class _GroupSize:
    """group_bytes, kept up to date member by member (plan_groups grows groups one at a time)."""

    SUMMED = ("parameters", "gradients", "optimizer state", "best weights", "diagnostics", "training batch")
    LARGEST = ("evaluation batch", "probe batch")

    def __init__(self, shape):
        self.samples = shape[1]
        self.members = 0
        self.values = dict.fromkeys(self.SUMMED + self.LARGEST, 0)
        self.data = 0

    def add(self, estimate: dict) -> None:
        self.members += 1
        self.data = estimate["data"]
        for key in self.SUMMED:
            self.values[key] += estimate[key]
        for key in self.LARGEST:
            self.values[key] = max(self.values[key], estimate[key])

    def items(self) -> dict[str, int]:
        from .resources import INT64, PASSES

        items = dict(self.values)
        items["data"] = self.data + INT64 * self.samples * max(self.members - 1, 0)  # each member's epoch order
        items["retiring"] = items["parameters"] if self.members > 1 else 0
        items["total"] = sum(v for k, v in items.items() if k not in PASSES) + max(items[k] for k in PASSES)
        return items

    def total_with(self, estimate: dict) -> int:
        grown = _GroupSize((0, self.samples, 0))
        grown.members, grown.data, grown.values = self.members, self.data, dict(self.values)
        grown.add(estimate)
        return grown.items()["total"]


# ----------------------------------------------------------------------------- optimizers


def optimizer_for(config, params):
    """The config's optimizer and schedule over `params` (components.OPTIMIZERS: torch's fused
    kernels where it has them). torch's own argument checks become ConfigError."""
    from .errors import ConfigError

    opt = config.optim
    try:
        optimizer = OPTIMIZERS[opt.optimizer.name](params, opt.lr, opt.weight_decay, **_tuples(opt.optimizer.params))
        scheduler = SCHEDULES[opt.schedule.name](optimizer, config.train.epochs, **opt.schedule.params)
    except ValueError as e:
        raise ConfigError(f"optim: {e}") from None
    return optimizer, scheduler


def _tuples(params) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


# ----------------------------------------------------------------------------- the stacked model


@functools.cache
def _stacked_linear():
    """F.linear for every member at once: x [K, B, in], W [K, out, in], b [K, out] -> [K, B, out].

    An autograd Function only for its backward: torch.bmm computes the weight gradient dy^T·x
    (a contraction over the batch) at half the speed of one mm per member on a CPU, so on a CPU it
    is K mm calls into the gradient tensor; elsewhere one bmm. Either way member k's gradient is
    the matmul of its own slices alone, the very product F.linear's backward computes."""

    class StackedLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias):
            ctx.save_for_backward(x, weight)
            return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

        @staticmethod
        def backward(ctx, grad):
            x, weight = ctx.saved_tensors
            grad = grad.contiguous()  # (batch norm's comes back transposed)
            grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
            grad_weight = weight_grad(x, grad) if ctx.needs_input_grad[1] else None
            grad_bias = grad.sum(1) if ctx.needs_input_grad[2] else None
            return grad_x, grad_weight, grad_bias

    return StackedLinear


def weight_grad(x, grad, per_member: bool | None = None):
    """dy^T·x per member ([K, B, in], [K, B, out] -> [K, out, in]); `per_member` (default: on a
    CPU) loops one mm per member, else one bmm."""
    if per_member is None:
        per_member = x.device.type == "cpu"
    if not per_member:
        return torch.bmm(grad.transpose(1, 2), x)
    out = grad.new_empty(x.shape[0], grad.shape[2], x.shape[2])
    for k in range(x.shape[0]):
        torch.mm(grad[k].t(), x[k], out=out[k])
    return out


def stacked_linear(x, weight, bias):
    return _stacked_linear().apply(x, weight, bias)


@functools.cache
def _shared_input_linear():
    """The first layer where runs of members draw the same batch (they share a seed): x [S, B, in]
    holds one batch per run, `runs` the (start, end) of each run in K. Each run's layer is one
    matmul, x @ [W_start; ...; W_end-1]^T, far closer to the machine's peak than K small ones, and
    each member's share of it is the very sum F.linear computes (as is its weight gradient's)."""

    class SharedInputLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, runs):
            ctx.save_for_backward(x)
            ctx.runs = runs
            _, out_features, in_features = weight.shape
            b = x.shape[1]
            out = x.new_empty(weight.shape[0], b, out_features)
            for j, (start, end) in enumerate(runs):
                n = end - start
                z = torch.addmm(bias[start:end].reshape(-1), x[j], weight[start:end].reshape(n * out_features, in_features).t())
                out[start:end] = z.view(b, n, out_features).transpose(0, 1)
            return out

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            grad = grad.contiguous()
            k, b, out_features = grad.shape
            in_features = x.shape[2]
            grad_weight = grad_bias = None
            if ctx.needs_input_grad[1]:
                grad_weight = grad.new_empty(k, out_features, in_features)
                for j, (start, end) in enumerate(ctx.runs):
                    n = end - start
                    rows = grad[start:end].transpose(0, 1).reshape(b, n * out_features)
                    torch.mm(rows.t(), x[j], out=grad_weight[start:end].view(n * out_features, in_features))
            if ctx.needs_input_grad[2]:
                grad_bias = grad.sum(1)
            return None, grad_weight, grad_bias, None

    return SharedInputLinear


@dataclass
class _Slice:
    """Members start..end share an activation: `module` (a member's own activation module), or
    PReLU, whose slopes are a stacked parameter."""

    start: int
    end: int
    modules: list  # per hidden layer
    prelu: bool


@dataclass
class _Activations:
    """Which members get which activation: `slices`, one per activation, over the members in the
    order `gather` takes them from the stack (None: the stack's own order), `scatter` puts back."""

    slices: list[_Slice]
    gather: object = None  # a LongTensor of stack positions, or None
    scatter: object = None


class StackedMLP:
    """K members' MLPs as stacked tensors, in the members' parameter order (per hidden layer its
    linear weight [K, out, in] and bias [K, out], batch norm's weight and bias [K, width], the
    PReLU slope [K, 1]; then the output layer's). `bind` turns each member's own parameters and
    buffers into views of its slice."""

    def __init__(self, models, prelu_members: list[bool]):
        self.k = len(models)
        first = models[0]
        self.n_hidden = len(first.hidden)
        self.names: list[str] = []  # parameter names as the members' MLPs call them
        self.params: list = []
        self.buffers: dict = {}
        any_prelu = any(prelu_members)
        self.layers = []
        for index in range(self.n_hidden):
            prefix = f"hidden.{index}"
            layer = {
                "weight": self._stack(models, f"{prefix}.linear.weight"),
                "bias": self._stack(models, f"{prefix}.linear.bias"),
                "norm": None,
                "slope": None,
            }
            norm = first.hidden[index].norm
            if isinstance(norm, nn.BatchNorm1d):
                layer["norm"] = {
                    "weight": self._stack(models, f"{prefix}.norm.weight"),
                    "bias": self._stack(models, f"{prefix}.norm.bias"),
                    "running_mean": self._stack_buffer(models, f"{prefix}.norm.running_mean"),
                    "running_var": self._stack_buffer(models, f"{prefix}.norm.running_var"),
                    "num_batches_tracked": self._stack_buffer(models, f"{prefix}.norm.num_batches_tracked"),
                    "momentum": norm.momentum,
                    "eps": norm.eps,
                }
            if any_prelu:
                layer["slope"] = self._stack(models, f"{prefix}.activation.weight", missing=(1,))
            self.layers.append(layer)
        self.output = {
            "weight": self._stack(models, "output.weight"),
            "bias": self._stack(models, "output.bias"),
        }
        self.index = {name: i for i, name in enumerate(self.names)}
        self.linear_weights = [layer["weight"] for layer in self.layers] + [self.output["weight"]]

    def _stack(self, models, name: str, missing=None):
        tensors = []
        for model in models:
            own = dict(model.named_parameters()).get(name)
            if own is None:  # a PReLU slope in a member without one: unused, zero
                own = torch.zeros(missing, device=models[0].output.weight.device)
            tensors.append(own.detach())
        param = nn.Parameter(torch.stack(tensors))
        self.names.append(name)
        self.params.append(param)
        return param

    def _stack_buffer(self, models, name: str):
        stacked = torch.stack([dict(model.named_buffers())[name] for model in models])
        self.buffers[name] = stacked
        return stacked

    def bind(self, models) -> None:
        """Point each member's parameters and buffers at its slice of the stacked tensors."""
        for k, model in enumerate(models):
            for name, param in model.named_parameters():
                param.data = self.params[self.index[name]].data[k]
            for name, buffer in model.named_buffers():
                buffer.data = self.buffers[name][k]

    def forward(self, x, activations: _Activations, masks=None, keep_activations: bool = False, runs=None):
        """Training-mode logits [K, B, classes] for x [K, B, features] (or, with `runs`, x
        [S, B, features]: one batch per run of members that share it), and (when asked) each hidden
        layer's activations before dropout (for activity penalties)."""
        kept = []
        h = x
        for index, layer in enumerate(self.layers):
            if index == 0 and runs is not None:
                z = _shared_input_linear().apply(h, layer["weight"], layer["bias"], runs)
            else:
                z = stacked_linear(h, layer["weight"], layer["bias"])
            if layer["norm"] is not None:
                z = _batch_norm(z, layer["norm"])
            a = self._activate(index, z, activations)
            if keep_activations:
                kept.append(a)
            if masks is not None and masks[index] is not None:
                a = a * masks[index]
            h = a
        return stacked_linear(h, self.output["weight"], self.output["bias"]), kept

    def _activate(self, index: int, z, activations: _Activations):
        gather, slices = activations.gather, activations.slices
        if gather is not None:
            z = z.index_select(0, gather)
        # split, not indexing: its backward is one concatenation, where each slice's would be a
        # zero tensor of the whole stack plus an addition
        pieces = z.split([s.end - s.start for s in slices]) if len(slices) > 1 else (z,)
        parts = []
        for s, part in zip(slices, pieces):
            if s.prelu:  # nn.PReLU's x > 0 ? x : slope·x, with a slope per member
                slope = self.layers[index]["slope"]
                slope = (slope if gather is None else slope.index_select(0, gather))[s.start : s.end].view(-1, 1, 1)
                parts.append(torch.where(part > 0, part, slope * part))
            else:
                parts.append(s.modules[index](part))
        a = parts[0] if len(parts) == 1 else torch.cat(parts)
        return a if gather is None else a.index_select(0, activations.scatter)


def _batch_norm(z, norm):
    """BatchNorm1d in training mode per member: [K, B, U] as [B, K·U] channels, so that every
    (member, unit) has its own batch statistics and running averages."""
    k, b, u = z.shape
    out = F.batch_norm(
        z.transpose(0, 1).reshape(b, k * u),
        norm["running_mean"].view(-1),
        norm["running_var"].view(-1),
        norm["weight"].view(-1),
        norm["bias"].view(-1),
        training=True,
        momentum=norm["momentum"],
        eps=norm["eps"],
    )
    norm["num_batches_tracked"].add_(1)
    # Contiguous per member, as a solo run's is: reductions (such as the next layer's bias
    # gradient) then sum each member's numbers in the same order whatever K is.
    return out.view(b, k, u).transpose(0, 1).contiguous()


# ----------------------------------------------------------------------------- the stepper


@dataclass
class Member:
    """One run inside a stepper: its config, its own MLP (built by build_model with its seed), the
    generators of its dropout draws and batch order, its diagnostics Tracker (or None), and, when it
    starts from a checkpoint, the optimizer and scheduler states to start from (the model's weights
    are already loaded into `model`)."""

    config: object
    model: object
    dropout: object  # torch.Generator
    batch_order: object  # torch.Generator
    tracker: object = None
    optimizer_state: dict | None = None
    scheduler_state: dict | None = None


@dataclass
class _Segment:
    """A contiguous slice of the stack whose members share their optimizer settings: one optimizer
    (and schedule) steps `params`, views of the stacked parameters; sources[t] is (the stacked
    parameter's index, its rows) of params[t]: a slice of members, or one member."""

    members: range
    params: list
    sources: list
    optimizer: object
    scheduler: object


class Stepper:
    """The batched computation of K >= 1 members: a training epoch (forward, penalties, backward,
    per-member clipping, optimizer steps, max-norm), the per-member state a checkpoint holds, and
    retiring members. It never touches a run folder."""

    def __init__(self, members: list[Member], data):
        self.members = members
        self.k = len(members)
        self.data = data
        first = members[0].config
        self.batch_size = first.train.batch_size
        self.batch_norm = first.model.batch_norm
        self.epochs = first.train.epochs
        configs = [m.config for m in members]
        prelu = [c.model.activation.name == "prelu" for c in configs]
        self.model = StackedMLP([m.model for m in members], prelu)
        self.model.bind([m.model for m in members])
        device = data.x_train.device
        self.device = device
        self.activations = _activations(members, prelu, device)
        self.member_names = [[name for name, _ in m.model.named_parameters()] for m in members]
        self.segments = self._segments()
        if self.k > 1 and device.type == "cpu":
            keep_freed_memory()

        def per_member(values, absent=0.0):
            values = [absent if v is None else float(v) for v in values]
            return None if all(v == absent for v in values) else torch.tensor(values, device=device)

        reg = [c.regularization for c in configs]
        matrices, hidden = len(first.model.hidden) + 1, len(first.model.hidden)
        self.l1 = per_layer([r.l1 for r in reg], matrices, device)
        self.l2 = per_layer([r.l2 for r in reg], matrices, device)
        self.activity_l1 = per_layer([r.activity_l1 for r in reg], hidden, device)
        self.activity_l2 = per_layer([r.activity_l2 for r in reg], hidden, device)
        self.grad_clip = per_member([c.optim.grad_clip for c in configs], math.inf)
        self.max_norm = per_member([r.max_norm for r in reg], math.inf)
        self.dropout = [_rates(c.model) for c in configs]  # [member][layer]
        self.widths = list(first.model.hidden)
        trackers = [m.tracker for m in members]
        self.tracker = StackedTracker(self.model.linear_weights, trackers) if any(trackers) else None

    # -- optimizers

    def _segments(self) -> list[_Segment]:
        """One optimizer per contiguous slice of members with equal optimizer settings. On a GPU it
        steps each stacked parameter's slice at once: a handful of tensors whatever K is (stepping
        every member's own tensors was a Python loop over K x parameters, 4 of the 10 ms of a
        54-member step). A CPU's kernels (fused Adam's, foreach's) take an element down a vector or
        a scalar path depending on where it sits in its tensor, so a member's slice of a stack can
        round differently from its solo run's tensor: there the optimizer steps each member's own
        tensors, bit-identical to its solo run (the loop is a few percent of a CPU step)."""
        segments = []
        self._where = {}  # (member, stacked index) -> (the position of its tensor in its segment's, its row there or None)
        for start, end in _runs([optimizer_key(m.config) for m in self.members]):
            if _steps_slices(self.device):  # (a PReLU slope only where a member of the slice has one)
                present = {self.model.index[name] for k in range(start, end) for name in self.member_names[k]}
                sources = [(i, slice(start, end)) for i in sorted(present)]
            else:
                sources = [(self.model.index[name], k) for k in range(start, end) for name in self.member_names[k]]
            params = [nn.Parameter(self.model.params[i].data[rows]) for i, rows in sources]
            members = self.members[start:end]
            optimizer, scheduler = optimizer_for(members[0].config, params)
            segment = _Segment(range(start, end), params, sources, optimizer, scheduler)
            for t, (i, rows) in enumerate(sources):
                for k in ([rows] if isinstance(rows, int) else range(start, end)):
                    self._where[k, i] = (t, None if isinstance(rows, int) else k - start)
            states = [m.optimizer_state for m in members]
            if any(s is not None for s in states):
                if any(s is None for s in states):
                    raise ValueError("members that start afresh cannot share an optimizer with members that resume")
                optimizer.load_state_dict(self._joined_state(segment))
                if scheduler is not None:
                    scheduler.load_state_dict(members[0].scheduler_state)
            segments.append(segment)
        for m in self.members:  # held by the segments' optimizers now
            m.optimizer_state = m.scheduler_state = None
        self._segment_at = [segment for segment in segments for _ in segment.members]
        return segments

    def _joined_state(self, segment: _Segment) -> dict:
        """One optimizer state_dict over a segment's tensors from its members' own (each a solo
        optimizer's). For a stacked slice, state tensors shaped like the parameter are stacked and
        the rest (step counts) must agree, as they do for members that resume from the same
        epoch; a parameter a member does not have (another member's PReLU slope) gets zeros, its
        gradient being always zero."""
        owned = {k: {self.member_names[k][int(j)]: entry for j, entry in self.members[k].optimizer_state["state"].items()}
                 for k in segment.members}
        state = {}
        for t, (i, rows) in enumerate(segment.sources):
            name = self.model.names[i]
            if isinstance(rows, int):
                if owned[rows].get(name) is not None:
                    state[t] = owned[rows][name]
                continue
            entries = [owned[k].get(name) for k in segment.members]
            template = next((e for e in entries if e is not None), None)
            if template is None:
                continue
            stacked = {}
            for key, value in template.items():
                if torch.is_tensor(value) and value.dim() > 0:
                    stacked[key] = torch.stack([e[key] if e is not None else torch.zeros_like(value) for e in entries])
                elif any(e is not None and _differs(e[key], value) for e in entries):
                    raise ValueError(f"the members' optimizer states disagree on {key!r}: they cannot step together")
                else:
                    stacked[key] = value
            state[t] = stacked
        group = dict(self.members[segment.members.start].optimizer_state["param_groups"][0])
        group["params"] = list(range(len(segment.params)))
        return {"state": state, "param_groups": [group]}

    def lrs(self) -> list[float]:
        return [self._segment_at[k].optimizer.param_groups[0]["lr"] for k in range(self.k)]

    def step_schedules(self) -> None:
        for segment in self.segments:
            if segment.scheduler is not None:
                segment.scheduler.step()

    # -- per-member state, in the single-model form of a solo run's checkpoint

    def optimizer_state(self, k: int) -> dict:
        """Member k's optimizer state_dict, as its solo optimizer would write it (its rows of the
        state of a stacked slice), in the order of its own parameters."""
        segment = self._segment_at[k]
        full = segment.optimizer.state_dict()
        state = {}
        for j, name in enumerate(self.member_names[k]):
            t, row = self._where[k, self.model.index[name]]
            entry = full["state"].get(t)
            if entry is not None:
                state[j] = entry if row is None else {
                    key: _own(value[row]) if torch.is_tensor(value) and value.dim() > 0 else _copied(value) for key, value in entry.items()
                }
        group = {key: value for key, value in full["param_groups"][0].items() if key != "params"}
        group["params"] = list(range(len(self.member_names[k])))
        return {"state": state, "param_groups": [group]}

    def scheduler_state(self, k: int):
        scheduler = self._segment_at[k].scheduler
        return scheduler.state_dict() if scheduler is not None else None

    def model_state(self, k: int, copy: bool = False) -> dict:
        """Member k's model state_dict (`copy`: always copies, else views that are a whole
        tensor's storage, as a solo run's are, are kept as they are)."""
        return {name: _own(value, copy) for name, value in self.members[k].model.state_dict().items()}

    def rng_state(self, k: int) -> dict:
        """The checkpoint's rng entry: the dropout generator where a solo run kept its global RNG
        (the CPU's under "torch", a GPU's under "cuda"), and the batch order."""
        member = self.members[k]
        on_gpu = member.dropout.device.type == "cuda"
        return {
            "torch": torch.get_rng_state() if on_gpu else member.dropout.get_state(),
            "cuda": member.dropout.get_state() if on_gpu else None,
            "batch_order": member.batch_order.get_state(),
        }

    def without(self, positions) -> Stepper | None:
        """A stepper of the other members (None when none is left); each retired member's MLP gets
        its own copy of its weights, so it keeps them frozen. Built from the same per-member state
        a checkpoint holds, so retiring follows resume's path."""
        positions = set(positions)
        keep = [k for k in range(self.k) if k not in positions]
        states = {k: (self.optimizer_state(k), self.scheduler_state(k)) for k in keep}
        for k in positions:
            _own_storage(self.members[k].model)
        if not keep:
            return None
        members = []
        for k in keep:
            member = self.members[k]
            member.optimizer_state, member.scheduler_state = states[k]
            members.append(member)
        stepper = Stepper(members, self.data)
        if stepper.tracker is not None and self.tracker.start is not None:  # mid-epoch: its figures so far
            stepper.tracker.carry(self.tracker, keep)
        return stepper

    # -- the epoch

    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.data.y_train), self.batch_size, self.batch_norm)

    def train_epoch(self, progress=None, report_every: int = 0, each_step=None) -> tuple[list[float], list[float]]:
        """One pass over the training split for every member: each member's (mean cross-entropy,
        accuracy), nan for a member whose loss became non-finite. `progress(step, steps, losses)`
        is called every `report_every` steps with the members' current losses, `each_step()` after
        every step."""
        x, y = self.data.x_train, self.data.y_train
        n, k, batch_size = len(y), self.k, self.batch_size
        device = x.device
        orders = torch.stack([torch.randperm(n, device=device, generator=m.batch_order) for m in self.members])
        # Members of one seed draw one batch order: their first layer shares its input.
        runs = _runs([m.config.train.seed for m in self.members])
        if len(runs) == k or not all(torch.equal(orders[start], orders[i]) for start, end in runs for i in range(start + 1, end)):
            runs = None
        heads = orders[[start for start, _ in runs]] if runs is not None else None
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device, dtype=torch.int64)
        params = self.model.params
        weights = self.model.linear_weights
        activity = self.activity_l1 is not None or self.activity_l2 is not None
        steps = self.steps_per_epoch()
        if self.tracker is not None:
            self.tracker.begin_epoch()
        for step in range(steps):
            batch = slice(step * batch_size, (step + 1) * batch_size if step < steps - 1 else n)
            index = orders[:, batch]
            xb, yb = x[index if runs is None else heads[:, batch]], y[index]
            b = index.shape[1]
            logits, activations = self.model.forward(xb, self.activations, self._masks(b), activity, runs)
            losses = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").view(k, b).mean(1)
            total = losses.sum()
            if self.l1 is not None:
                total = total + sum(c * weights[i].abs().sum((1, 2)) for i, c in self.l1).sum()
            if self.l2 is not None:
                total = total + sum(c * weights[i].square().sum((1, 2)) for i, c in self.l2).sum()
            if activity:  # Keras divides a layer's activity penalty by the batch size: per sample
                if self.activity_l1 is not None:
                    total = total + sum(c * activations[i].abs().sum((1, 2)) for i, c in self.activity_l1).sum() / b
                if self.activity_l2 is not None:
                    total = total + sum(c * activations[i].square().sum((1, 2)) for i, c in self.activity_l2).sum() / b
            for p in params:
                p.grad = None
            total.backward()
            if self.tracker is not None:
                self.tracker.after_backward()
            if self.grad_clip is not None:
                _clip_per_member(params, self.grad_clip)
            for segment in self.segments:
                for own, (i, rows) in zip(segment.params, segment.sources):
                    own.grad = params[i].grad[rows]
                segment.optimizer.step()
                for own in segment.params:
                    own.grad = None
            if self.max_norm is not None:
                _apply_max_norm(weights, self.max_norm)
            loss_sum += losses.detach() * b
            correct += (logits.argmax(-1) == yb).sum(1)
            if each_step is not None:
                each_step()
            if progress is not None and report_every and (step + 1) % report_every == 0:
                live = losses.tolist()
                progress(step + 1, steps, live)
                if not any(math.isfinite(v) for v in live):  # every member has diverged
                    return [math.nan] * k, [math.nan] * k
        return [s / n for s in loss_sum.tolist()], [c / n for c in correct.tolist()]

    def _masks(self, b: int):
        """Per hidden layer, the [K, b, width] dropout masks (scaled by 1/(1-p)), drawn per member
        from its own generator exactly as F.dropout draws a solo run's (bernoulli_(1-p), then
        div_(1-p)); None for a layer no member drops."""
        masks = []
        for index, width in enumerate(self.widths):
            rates = [r[index] for r in self.dropout]
            if not any(rates):
                masks.append(None)
                continue
            mask = torch.ones(self.k, b, width, device=self.device)
            for k, rate in enumerate(rates):
                if rate > 0:
                    mask[k].bernoulli_(1 - rate, generator=self.members[k].dropout).div_(1 - rate)
            masks.append(mask)
        return masks


def per_layer(values, layers: int, device):
    """A penalty's coefficients: (layer index, [K] tensor of the members' values) for each layer
    that any member penalizes; None when no member penalizes any. A member's value is a number
    (every layer) or a list of one per layer (config checks the length). A layer no member
    penalizes has no term at all, so its gradient carries none. The gradient of c·Σ|W| is c·sign(W)
    whether c multiplies each layer's sum or the sum of all layers (as before lists were allowed):
    the numbers of a run with a number are as they were."""
    rows = [list(v) if isinstance(v, tuple) else [v] * layers for v in values]  # [member][layer]
    terms = [(i, [float(row[i]) for row in rows]) for i in range(layers)]
    terms = [(i, torch.tensor(c, device=device)) for i, c in terms if any(c)]
    return terms or None


def steps_per_epoch(n: int, batch_size: int, batch_norm: bool) -> int:
    """Batches per epoch; with batch norm a lone last sample joins the previous batch, since
    BatchNorm cannot normalize a batch of one."""
    steps = math.ceil(n / batch_size)
    return steps - 1 if batch_norm and n % batch_size == 1 and n > 1 else steps


def _activations(members, prelu: list[bool], device) -> _Activations:
    """The slices of members that share an activation. Members sorted by optimizer settings and
    seed before activation can have an activation in several places of the stack (3 seeds x 6
    activations: 18 runs of members). On a GPU, where kernel launches are most of a step's time and
    each slice launches its own kernels forward and backward, each activation's members are
    gathered into one slice (and scattered back), which costs two copies of the layer's output; on
    a CPU those copies cost more than the launches they save (4% of a 54-member step), so each run
    of members is its own slice."""
    keys = [activation_key(m.config) for m in members]
    order = list(range(len(members)))
    if _gathers_activations(device):
        first = {key: keys.index(key) for key in keys}
        order.sort(key=lambda k: first[keys[k]])
    slices = [_Slice(start, end, [layer.activation for layer in members[order[start]].model.hidden], prelu[order[start]])
              for start, end in _runs([keys[k] for k in order])]
    if order == sorted(order):
        return _Activations(slices)
    gather = torch.tensor(order, device=device)
    return _Activations(slices, gather, torch.argsort(gather))


def _gathers_activations(device) -> bool:
    """Whether each activation's members are gathered into one slice (a GPU; see _activations)."""
    return device.type == "cuda"


def _runs(keys: list) -> list[tuple[int, int]]:
    """(start, end) of each run of equal consecutive keys."""
    runs, start = [], 0
    for end in range(1, len(keys) + 1):
        if end == len(keys) or keys[end] != keys[start]:
            runs.append((start, end))
            start = end
    return runs


def _rates(model_config) -> list[float]:
    dropout = model_config.dropout
    return list(dropout) if isinstance(dropout, tuple) else [dropout] * len(model_config.hidden)


def _steps_slices(device) -> bool:
    """Whether an optimizer steps stacked slices (a GPU) or each member's own tensors (a CPU)."""
    return device.type == "cuda"


def _differs(a, b) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return not (torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.equal(a.cpu(), b.cpu()))
    return a != b


def _copied(value):
    """A state entry shared by a segment's members (a step count), as a member's own."""
    return value.clone() if torch.is_tensor(value) else value


def _own(tensor, copy: bool = False):
    """A tensor for a member's checkpoint: a copy where it is a slice of a stacked tensor (saving a
    view would save the whole stack), itself where it is its storage's one tensor (K = 1)."""
    tensor = tensor.detach()
    whole = tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    return tensor.clone(memory_format=torch.contiguous_format) if copy or not whole else tensor


def keep_freed_memory() -> None:
    """A fused step allocates and frees tensors of tens of MB (K members' activations and
    gradients); glibc gives such blocks back to the system when they are freed and faults them in
    again on the next step (10,000 page faults a step for 54 members of 784-256-256-10, a tenth of
    its time). Raise its mmap and trim thresholds for this process so that it keeps them. The cost:
    the process holds on to its peak memory until it ends. Nothing happens where the C library is
    not glibc."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: blocks below 1 GiB come from the heap
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: free heap is given back beyond 1 GiB only
    except (OSError, AttributeError):
        pass


def _own_storage(model) -> None:
    """Give a member's MLP its own copy of its parameters and buffers (it leaves the stack)."""
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)


def _clip_per_member(params, max_norms) -> None:
    """torch.nn.utils.clip_grad_norm_ per member: each member's gradient norm over all its
    parameters, scaled down to its own max (inf: no clipping); never a norm across members."""
    with torch.no_grad():
        norms = torch.stack([torch.linalg.vector_norm(p.grad.flatten(1), dim=1) for p in params], 1)
        total = torch.linalg.vector_norm(norms, dim=1)
        coef = torch.clamp(max_norms / (total + 1e-6), max=1.0)
        for p in params:
            p.grad.mul_(coef.view(-1, *[1] * (p.dim() - 1)))


def _apply_max_norm(weights, max_norms) -> None:
    """Keras MaxNorm per member: each unit's incoming weights (a row of [out, in]) capped at its
    member's max (members without one untouched)."""
    with torch.no_grad():
        limit = max_norms.view(-1, 1, 1)
        capped = torch.isfinite(limit)
        for w in weights:
            norms = w.norm(dim=2, keepdim=True)
            w.mul_(torch.where(capped, norms.clamp(max=limit) / norms.clamp(min=1e-12), 1.0))


# ----------------------------------------------------------------------------- diagnostics


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
