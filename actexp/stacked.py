"""The stacked model: K members' MLPs as stacked tensors, every layer one batched matmul for all
members, each activation applied to its members' slice, batch norm per member. Each member's own
MLP (model.MLP, built by model.build_model with its seed) stays alive with its parameters turned
into views of its slice (`StackedMLP.bind`), so evaluation, diagnostics and checkpoints read an
ordinary MLP. Nothing reduces across members: every operation computes each member's slice as it
would alone, so a fused member's numbers are its solo run's (tests/test_layer_contract.py holds
every registry entry to that).

torch is imported on first use.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .components import LazyModule
from .planning import activation_key, runs_of_equal, stacks_activation

torch = LazyModule("torch")
nn = LazyModule("torch.nn")
F = LazyModule("torch.nn.functional")

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
    """Members start..end share an activation: `modules` (a member's own activation module per
    hidden layer); `learned`, the names of its learnable parameters (stacked per member: PReLU's
    slope, a formula's `learn`, a plugin's); `stacks`, whether it applies to the slice's stack
    [n, B, U] at once (elementwise activations, maxout) or to each member's [B, U] (a plugin that is
    not elementwise; such runs train solo)."""

    start: int
    end: int
    modules: list  # per hidden layer
    learned: tuple = ()
    stacks: bool = True


@dataclass
class _Activations:
    """Which members get which activation: `slices`, one per activation, over the members in the
    order `gather` takes them from the stack (None: the stack's own order), `scatter` puts back."""

    slices: list[_Slice]
    gather: object = None  # a LongTensor of stack positions, or None
    scatter: object = None


def apply_to_stack(module, part, params: dict):
    """The activation `module` on a stack of members' pre-activations `part` [n, B, U], each member
    with its own learnable parameters (`params`: name -> [n, *the parameter's shape]), shaped to
    broadcast against its slice ([n, 1, 1] for one number per layer). nn.PReLU as
    where(z > 0, z, slope·z) (F.prelu takes a slope per channel, not per member); a module with a
    `forward_with(z, params)` (a formula) through it; any other through torch.func.functional_call."""
    if not params:
        return module(part)
    shaped = {name: p.view(p.shape[0], *[1] * (part.dim() - p.dim()), *p.shape[1:]) for name, p in params.items()}
    if isinstance(module, nn.PReLU):
        return torch.where(part > 0, part, shaped["weight"] * part)
    forward_with = getattr(module, "forward_with", None)
    if forward_with is not None:
        return forward_with(part, shaped)
    return torch.func.functional_call(module, shaped, (part,))


class StackedMLP:
    """K members' MLPs as stacked tensors, in the members' parameter order (per hidden layer its
    linear weight [K, out, in] and bias [K, out], batch norm's weight and bias [K, width], each
    learnable activation parameter [K, *shape] (PReLU's slope, a formula's `learn`); then the output
    layer's). `bind` turns each member's own parameters and buffers into views of its slice."""

    def __init__(self, models):
        self.k = len(models)
        first = models[0]
        self.n_hidden = len(first.hidden)
        self.names: list[str] = []  # parameter names as the members' MLPs call them
        self.params: list = []
        self.buffers: dict = {}
        self.layers = []
        for index in range(self.n_hidden):
            prefix = f"hidden.{index}"
            layer = {
                "weight": self._stack(models, f"{prefix}.linear.weight"),
                "bias": self._stack(models, f"{prefix}.linear.bias"),
                "norm": None,
                "activation": {},  # a learnable activation parameter's name in its module -> [K, *shape]
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
            learned = [name for model in models for name, _ in model.hidden[index].activation.named_parameters()]
            for name in dict.fromkeys(learned):
                layer["activation"][name] = self._stack(models, f"{prefix}.activation.{name}")
            self.layers.append(layer)
        self.output = {
            "weight": self._stack(models, "output.weight"),
            "bias": self._stack(models, "output.bias"),
        }
        self.index = {name: i for i, name in enumerate(self.names)}
        self.linear_weights = [layer["weight"] for layer in self.layers] + [self.output["weight"]]

    def _stack(self, models, name: str):
        owned = [dict(model.named_parameters()).get(name) for model in models]
        present = next(p for p in owned if p is not None)
        tensors = []
        for own in owned:
            if own is None:  # an activation parameter in a member without one: unused, zero
                own = torch.zeros_like(present)
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
        stacked = self.layers[index]["activation"]
        for s, part in zip(slices, pieces):
            params = {name: (stacked[name] if gather is None else stacked[name].index_select(0, gather))[s.start : s.end] for name in s.learned}
            module = s.modules[index]
            if s.stacks:
                parts.append(apply_to_stack(module, part, params))
            else:  # each member alone, with its own parameters (the stack's, so their gradients reach it)
                parts.append(torch.stack([torch.func.functional_call(module, {name: p[j] for name, p in params.items()}, (part[j],))
                                          for j in range(len(part))]))
        a = parts[0] if len(parts) == 1 else torch.cat(parts)
        return a if gather is None else a.index_select(0, activations.scatter)


def _batch_norm(z, norm):
    """BatchNorm1d in training mode per member: every (member, unit) has its own batch statistics
    and running averages. On a CPU each member's [B, U] slice is normalized by its own call, as its
    solo run's is: torch's kernel sums a channel's batch in an order that depends on the batch and
    the number of channels, so one call over [B, K·U] channels can round differently from K calls
    over [B, U]. On a GPU, where every call is a kernel launch, the whole stack is one call."""
    k, b, u = z.shape
    if _normalizes_per_member(z.device):
        out = torch.stack([
            F.batch_norm(z[m], norm["running_mean"][m], norm["running_var"][m], norm["weight"][m], norm["bias"][m],
                         training=True, momentum=norm["momentum"], eps=norm["eps"])
            for m in range(k)
        ])
        norm["num_batches_tracked"].add_(1)
        return out
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


def _normalizes_per_member(device) -> bool:
    """Whether batch norm runs one call per member (a CPU; see _batch_norm)."""
    return device.type != "cuda"


def _activations(members, device) -> _Activations:
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
    slices = []
    for start, end in runs_of_equal([keys[k] for k in order]):
        member = members[order[start]]
        modules = [layer.activation for layer in member.model.hidden]
        learned = tuple(name for name, _ in modules[0].named_parameters())
        slices.append(_Slice(start, end, modules, learned, stacks_activation(member.config)))
    if order == sorted(order):
        return _Activations(slices)
    gather = torch.tensor(order, device=device)
    return _Activations(slices, gather, torch.argsort(gather))


def _gathers_activations(device) -> bool:
    """Whether each activation's members are gathered into one slice (a GPU; see _activations)."""
    return device.type == "cuda"
