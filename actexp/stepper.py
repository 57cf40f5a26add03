"""The stepper: the batched computation of K >= 1 members around a stacked.StackedMLP (a solo run
is K = 1). Each member keeps everything of its own: activation, weight and bias init, seed (its
batch order and dropout draws), dropout rates, optimizer, its hyperparameters and schedule,
L1/L2/activity penalties, max-norm, gradient clipping.

- The optimizer step runs torch's own optimizers (the same factory as a solo run: fused kernels
  where torch has them): one call for each slice of members whose optimizer settings are equal.
  Every optimizer in components.OPTIMIZERS is elementwise. On a GPU the call steps the slice of
  each stacked parameter, a handful of tensors whatever K is; on a CPU it steps each member's own
  tensors (views of the stack), see Stepper._segments. Either way a checkpoint gets the member's
  own state, in the form its solo optimizer's state_dict has.
- A member that diverges or stops early is retired: the others are re-stacked without it (from the
  same per-member state a checkpoint holds), so it is frozen and no longer costs its update.

torch is imported on first use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .components import OPTIMIZERS, SCHEDULES, LazyModule
from .diagnostics import StackedTracker
from .planning import optimizer_key, runs_of_equal
from .stacked import StackedMLP, _activations

torch = LazyModule("torch")
nn = LazyModule("torch.nn")
F = LazyModule("torch.nn.functional")

def optimizer_for(config, params):
    """The config's optimizer and schedule over `params` (components.OPTIMIZERS: torch's fused
    kernels where it has them). torch's own argument checks become ConfigError."""
    from .errors import ConfigError

    opt = config.optim
    try:
        optimizer = OPTIMIZERS[opt.optimizer.name](params, opt.lr, opt.weight_decay, **_tuples(opt.optimizer.params))
        scheduler = SCHEDULES[opt.schedule.name](optimizer, config.train.epochs, **opt.schedule.params)
    except ValueError as e:
        raise ConfigError(f"optim: {e}") from e
    return optimizer, scheduler


def _tuples(params) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


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
        self.model = StackedMLP([m.model for m in members])
        self.model.bind([m.model for m in members])
        device = data.x_train.device
        self.device = device
        self.activations = _activations(members, device)
        self.member_names = [[name for name, _ in m.model.named_parameters()] for m in members]
        self.segments = self._segments()

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
        for start, end in runs_of_equal([optimizer_key(m.config) for m in self.members]):
            if _steps_slices(self.device):  # (an activation's parameter only where a member of the slice has one)
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
        runs = runs_of_equal([m.config.train.seed for m in self.members])
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
