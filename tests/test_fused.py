"""Fused training: which configs group, members starting from their solo weights, per-member
activations (maxout, PReLU's slope, SELU), hyperparameters, dropout and penalties, a diverging member
that leaves the others alone, per-member early stopping, run folders that are solo run folders,
and resuming an interrupted group (Ctrl-C and SIGTERM)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from actexp import stacked as stacked_model, stepper as stepper_module
from actexp.config import config_from_dict, config_to_dict
from actexp.data import load_data
from actexp.errors import ActexpError, ConfigError, Terminated
from actexp.planning import group_bytes, group_key, plan_groups
from actexp.stepper import Stepper, optimizer_for
from actexp.model import build_model
from actexp.runs import read_history, read_summary
from actexp.training import _prepare, train, train_group
from conftest import REPO, cli, tiny_config

CPU = torch.device("cpu")


def cfg(name: str, **sections):
    return config_from_dict({**tiny_config(**sections), "name": name})


def trained(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def records(folder):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_history(folder)]


def last(folder, name="last.pt"):
    return torch.load(folder / "checkpoints" / name, weights_only=True)


TRAIN = {"epochs": 3, "batch_size": 50, "device": "cpu"}

# One group whose members differ in everything a member may: activation (PReLU's learnable slope,
# SELU), init, seed, dropout, optimizer and its hyperparameters and schedule, penalties, max-norm,
# gradient clipping, diagnostics and checkpoints.
MIXED = [
    cfg("relu"),
    cfg("tanh-dropout", model={"activation": "tanh", "dropout": 0.2}, train={**TRAIN, "seed": 1}),
    cfg("prelu-lr", model={"activation": "prelu", "init": "he_normal"}, optim={"optimizer": "adam", "lr": 0.01}, train={**TRAIN, "seed": 2}),
    cfg("selu-l1l2", model={"activation": "selu", "init": "lecun_normal", "bias_init": 0.01}, regularization={"l1": 1e-4, "l2": 1e-3}),
    cfg("sigmoid-clip", model={"activation": "sigmoid", "init": {"name": "normal", "std": 1.0}},
        optim={"optimizer": "adam", "lr": 0.003, "grad_clip": 0.5}, regularization={"max_norm": 1.0}, train={**TRAIN, "seed": 3}),
    cfg("elu-activity", model={"activation": "elu"}, regularization={"activity_l1": 1e-4, "activity_l2": 1e-4}, train={**TRAIN, "diagnostics": False}),
    cfg("sgd-nesterov", optim={"optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True}, "lr": 0.05, "schedule": "cosine"}),
    cfg("adamw-wd", model={"activation": "gelu"}, optim={"optimizer": "adamw", "lr": 0.003, "weight_decay": 0.5,
                                                         "schedule": {"name": "step", "step_size": 1, "gamma": 0.5}},
        train={**TRAIN, "checkpoint": "both"}),
    cfg("per-layer-penalties", model={"hidden": [32], "activation": "tanh"},
        regularization={"l1": [1e-4, 0.0], "l2": [0.0, 1e-2], "activity_l1": [1e-3], "activity_l2": 1e-4}, train={**TRAIN, "seed": 5}),
]
MAXOUT = [
    cfg("maxout", model={"hidden": [32, 16], "activation": "maxout"}),
    cfg("maxout-dropout", model={"hidden": [32, 16], "activation": "maxout", "dropout": [0.2, 0.0]}, train={**TRAIN, "seed": 1}),
]
# 401 samples in batches of 100: batch norm's lone last sample joins the previous batch.
BATCH_NORM = [
    cfg("bn-relu", data={"dataset": "mnist", "subset": 401}, model={"hidden": [16], "batch_norm": True}, train={**TRAIN, "batch_size": 100}),
    cfg("bn-tanh", data={"dataset": "mnist", "subset": 401}, model={"hidden": [16], "batch_norm": True, "activation": "tanh", "dropout": 0.1},
        optim={"optimizer": "rmsprop", "lr": 0.001}, train={**TRAIN, "batch_size": 100, "seed": 4}),
]


def solo_runs(configs, tmp_path):
    return [train(c, runs_dir=tmp_path / "solo") for c in configs]


def assert_same_run(fused_run, solo_run):
    """A fused member's run is its solo run, bit for bit: every record (diagnostics included), the
    result, the warnings and the final weights."""
    assert fused_run.status == solo_run.status
    assert trained(fused_run.history) == trained(solo_run.history)
    assert records(fused_run.dir) == records(solo_run.dir)
    for key in ("test_loss", "test_acc", "selected_epoch", "best_epoch", "best_val_loss", "epochs_completed", "stopped_early", "warnings", "error", "n_params"):
        assert fused_run.summary.get(key) == solo_run.summary.get(key), key
    if (solo_run.dir / "checkpoints" / "last.pt").exists():
        a, b = last(fused_run.dir)["model"], last(solo_run.dir)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- grouping


def test_group_key_lets_members_differ_in_everything_but_shapes_data_and_schedule():
    base = cfg("base")
    same = [
        cfg("other-name"),
        cfg("a", model={"activation": "tanh"}),
        cfg("b", model={"activation": "prelu", "init": "he_uniform", "bias_init": 0.1, "dropout": 0.3}),
        cfg("c", train={**TRAIN, "seed": 7, "diagnostics": False, "checkpoint": "both", "early_stopping": {"patience": 1}}),
        cfg("d", optim={"optimizer": {"name": "sgd", "momentum": 0.9}, "lr": 0.1, "weight_decay": 0.01, "schedule": "cosine", "grad_clip": 1.0}),
        cfg("e", regularization={"l1": 0.1, "l2": 0.1, "activity_l1": 0.1, "activity_l2": 0.1, "max_norm": 2.0}),
        cfg("f", regularization={"l1": [0.1, 0.0], "l2": [0.0, 0.1], "activity_l1": [0.1], "activity_l2": [0.0]}),
    ]
    assert all(group_key(c) == group_key(base) for c in same)
    differ = [
        cfg("a", model={"hidden": [64]}),
        cfg("b", model={"activation": "maxout"}),  # k pieces per unit: other layer shapes
        cfg("c", model={"batch_norm": True}),
        cfg("d", train={**TRAIN, "batch_size": 25}),
        cfg("e", train={**TRAIN, "epochs": 4}),
        cfg("f", train={**TRAIN, "device": "auto"}),
        cfg("g", data={"dataset": "mnist", "subset": 300}),
        cfg("h", data={"dataset": "mnist", "split_seed": 1}),
        cfg("i", data={"dataset": "fashion_mnist"}),
        cfg("j", data={"dataset": "mnist", "normalize": "unit"}),  # other inputs
        cfg("k", data={"dataset": "mnist", "normalize": "none"}),
    ]
    assert len({group_key(c) for c in differ} | {group_key(base)}) == len(differ) + 1
    assert group_key(cfg("m2", model={"activation": {"name": "maxout", "k": 2}})) != group_key(cfg("m3", model={"activation": {"name": "maxout", "k": 3}}))


def test_plan_groups_sorts_members_by_optimizer_seed_and_activation_and_splits_by_size_and_memory():
    configs = [
        cfg("relu0"), cfg("tanh0", model={"activation": "tanh"}), cfg("wide", model={"hidden": [64]}),
        cfg("relu1", train={**TRAIN, "seed": 1}), cfg("tanh1", model={"activation": "tanh"}, optim={"lr": 0.01}),
        cfg("sigmoid0", model={"activation": "sigmoid"}),
    ]
    # lr 0.003 (seed 0: relu, sigmoid, tanh; then seed 1), then lr 0.01: optimizer settings, seeds
    # and activations contiguous
    assert plan_groups(configs) == [[0, 5, 1, 3, 4], [2]]
    assert plan_groups(configs, max_group=2) == [[0, 5], [1, 3], [4], [2]]
    assert plan_groups(configs, available=1) == [[0], [5], [1], [3], [4], [2]]
    two = group_bytes([configs[0], configs[5]])["total"]
    assert group_bytes([configs[0]])["total"] < two < group_bytes([configs[0], configs[5], configs[1]])["total"]
    assert plan_groups(configs, available=two) == [[0, 5], [1, 3], [4], [2]]


def test_train_group_refuses_configs_of_different_groups_and_groups_that_cannot_fit(tmp_path, data_root, monkeypatch):
    with pytest.raises(ValueError, match="cannot train as one group"):
        train_group([cfg("a"), cfg("b", model={"hidden": [64]})], runs_dir=tmp_path)
    import actexp.training as training

    monkeypatch.setattr(training, "available_bytes", lambda device: 10_000)
    with pytest.raises(ConfigError, match="needs about"):
        train_group([cfg("a"), cfg("b")], runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- same start, same experiment


def make_stepper(configs, tmp_path):
    data = load_data(configs[0].data, CPU)
    with contextlib.ExitStack() as held:
        members = [_prepare(c, CPU, data, held, None, runs_dir=tmp_path, folder=None, resume=False)[0] for c in configs]
    return Stepper(members, data), data


def test_members_start_from_exactly_their_solo_weights_and_stay_views_of_the_stack(tmp_path, data_root):
    configs = [MIXED[0], MIXED[2], MIXED[3], MIXED[4]]
    stepper, data = make_stepper(configs, tmp_path)
    for k, (config, member) in enumerate(zip(configs, stepper.members)):
        torch.manual_seed(config.train.seed)
        solo = build_model(config.model, data.n_features, data.n_classes).state_dict()
        assert member.model.state_dict().keys() == solo.keys()
        for name, value in solo.items():
            stacked = stepper.model.params[stepper.model.index[name]]
            assert torch.equal(stacked[k], value), (config.name, name)
            assert member.model.get_parameter(name).untyped_storage().data_ptr() == stacked.untyped_storage().data_ptr()
    assert [(s.start, s.end, s.learned) for s in stepper.activations.slices] == [(0, 1, ()), (1, 2, ("weight",)), (2, 3, ()), (3, 4, ())]


@pytest.mark.parametrize("configs", [MIXED, MAXOUT, BATCH_NORM], ids=["mixed", "maxout", "batch-norm"])
def test_a_fused_member_is_its_solo_run_bit_for_bit(tmp_path, data_root, configs):
    solo = solo_runs(configs, tmp_path)
    group = train_group(configs, runs_dir=tmp_path / "group")
    for fused_run, solo_run in zip(group, solo):
        assert fused_run.status == "completed" and fused_run.summary["fused"] == {"members": len(configs)}
        assert fused_run.dir.parent == tmp_path / "group" / solo_run.summary["name"]
        assert_same_run(fused_run, solo_run)
    if configs is MIXED:  # PReLU's slope is learned per member
        slope = last(group[2].dir)["model"]["hidden.0.activation.weight"]
        assert slope.shape == (1,) and slope.item() != 0.25
        assert "hidden.0.activation.weight" not in last(group[0].dir)["model"]


def test_members_of_one_seed_share_their_first_layers_batches(tmp_path, data_root, monkeypatch):
    runs_seen = []
    real = stacked_model._shared_input_linear()

    class Spy(real):
        @staticmethod
        def forward(ctx, x, weight, bias, runs):
            runs_seen.append((tuple(x.shape), runs))
            return real.forward(ctx, x, weight, bias, runs)

    monkeypatch.setattr(stacked_model, "_shared_input_linear", lambda: Spy)
    configs = [cfg("a"), cfg("b", model={"activation": "tanh"}), cfg("c", train={**TRAIN, "seed": 1})]
    stepper, _ = make_stepper(configs, tmp_path)
    stepper.train_epoch()
    assert runs_seen[0] == ((2, 50, 784), [(0, 2), (2, 3)])  # seed 0's two members, then seed 1's
    alone, _ = make_stepper([configs[2]], tmp_path)  # one member: the plain batched matmul
    runs_seen.clear()
    alone.train_epoch()
    assert runs_seen == []


def test_dropout_masks_are_the_ones_f_dropout_draws_for_the_seed(tmp_path, data_root):
    stepper, _ = make_stepper([cfg("plain"), cfg("dropping", model={"hidden": [32], "dropout": 0.3}, train={**TRAIN, "seed": 1})], tmp_path)
    torch.manual_seed(5)
    stepper.members[1].dropout.set_state(torch.get_rng_state())
    expected = F.dropout(torch.ones(7, 32), 0.3, training=True)
    (mask,) = stepper._masks(7)
    assert torch.equal(mask[1], expected)
    assert torch.equal(mask[0], torch.ones(7, 32))  # no dropout: no draw, no change


def test_each_member_has_its_own_learning_rate_one_at_zero_stays_put(tmp_path, data_root, optimizer_layout):
    stepper, _ = make_stepper([cfg("moving"), cfg("still", optim={"optimizer": "adam", "lr": 0.01}, train={**TRAIN, "seed": 1})], tmp_path)
    assert [list(s.members) for s in stepper.segments] == [[0], [1]]
    stepper.segments[1].optimizer.param_groups[0]["lr"] = 0.0
    before = [{k: v.clone() for k, v in m.model.state_dict().items()} for m in stepper.members]
    losses, _ = stepper.train_epoch()
    after = [m.model.state_dict() for m in stepper.members]
    assert all(torch.equal(before[1][k], after[1][k]) for k in after[1])
    assert not torch.equal(before[0]["output.weight"], after[0]["output.weight"])
    alone, _ = make_stepper([cfg("moving")], tmp_path)
    assert alone.train_epoch()[0] == losses[:1]


def test_members_that_share_their_optimizer_settings_take_one_step(tmp_path, data_root):
    stepper, _ = make_stepper([cfg("a"), cfg("b", model={"activation": "tanh"}, train={**TRAIN, "seed": 1})], tmp_path)
    (segment,) = stepper.segments
    (group,) = segment.optimizer.param_groups
    # on a CPU, each member's own tensors (views of the stack), in its order
    own = [stepper.model.params[stepper.model.index[name]][k] for k, names in enumerate(stepper.member_names) for name in names]
    assert [(p.data_ptr(), p.shape) for p in group["params"]] == [(v.data_ptr(), v.shape) for v in own]
    assert group["fused"]  # torch's fused kernel (components._fused), as a solo run's


@pytest.fixture(params=["own tensors", "stacked slices"])
def optimizer_layout(request, monkeypatch):
    """Both ways a segment's optimizer steps its members: each member's own tensors (a CPU's) and
    the stacked parameters' slices (a GPU's), both on this CPU."""
    slices = request.param == "stacked slices"
    monkeypatch.setattr(stepper_module, "_steps_slices", lambda device: slices)
    return slices


def test_on_a_gpu_a_segment_steps_the_stacked_slices_whatever_k_is(tmp_path, data_root, optimizer_layout):
    stepper, _ = make_stepper([cfg("a"), cfg("b", model={"activation": "prelu"}), cfg("c", optim={"lr": 0.01}, train={**TRAIN, "seed": 1})], tmp_path)
    first, second = stepper.segments
    assert (list(first.members), list(second.members)) == ([0, 1], [2])
    if optimizer_layout:
        assert [(p.data_ptr(), p.shape) for p in first.optimizer.param_groups[0]["params"]] == [
            (s.data_ptr(), (2, *s.shape[1:])) for s in stepper.model.params]
    else:
        assert len(first.optimizer.param_groups[0]["params"]) == len(stepper.member_names[0]) + len(stepper.member_names[1])


def test_each_members_optimizer_state_has_its_solo_form_and_restacks_to_the_same_state(tmp_path, data_root, optimizer_layout):
    configs = [cfg("relu"), cfg("prelu", model={"activation": "prelu"}, train={**TRAIN, "seed": 1}),
               cfg("rmsprop", optim={"optimizer": "rmsprop", "lr": 0.001}, train={**TRAIN, "seed": 2})]
    stepper, data = make_stepper(configs, tmp_path)
    stepper.train_epoch()
    states = [stepper.optimizer_state(k) for k in range(3)]
    for k, config in enumerate(configs):  # the form a solo optimizer of the member's own parameters writes
        solo_model = stepper.members[k].model
        solo = optimizer_for(config, list(solo_model.parameters()))[0]
        solo.load_state_dict(states[k])  # torch checks the groups and parameter counts
        assert sorted(states[k]["state"]) == list(range(len(list(solo_model.parameters()))))
        for j, p in enumerate(solo_model.parameters()):
            for key, value in states[k]["state"][j].items():
                if torch.is_tensor(value) and value.dim() > 0:
                    assert value.shape == p.shape and value.untyped_storage().nbytes() == value.numel() * value.element_size(), key
    for m, state in zip(stepper.members, states):  # restacked, as a resumed group or a retirement does
        m.optimizer_state = state
    again = Stepper(stepper.members, data)
    for k in range(3):
        restated = again.optimizer_state(k)
        for j, entry in states[k]["state"].items():
            for key, value in entry.items():
                assert torch.equal(torch.as_tensor(restated["state"][j][key]), torch.as_tensor(value)), (k, j, key)


def test_members_whose_optimizer_steps_disagree_cannot_step_together(tmp_path, data_root, optimizer_layout):
    stepper, data = make_stepper([cfg("a"), cfg("b", train={**TRAIN, "seed": 1})], tmp_path)
    stepper.train_epoch()
    states = [stepper.optimizer_state(k) for k in range(2)]
    for entry in states[1]["state"].values():
        entry["step"] = entry["step"] + 1
    for m, state in zip(stepper.members, states):
        m.optimizer_state = state
    if optimizer_layout:
        with pytest.raises(ValueError, match="disagree on 'step'"):
            Stepper(stepper.members, data)
    else:  # each member's own tensors keep their own counts
        Stepper(stepper.members, data)


# ----------------------------------------------------------------------------- per-layer penalties

PENALIZED = dict(data={"dataset": "mnist", "subset": 200}, model={"hidden": [16, 8], "activation": "tanh"},
                 optim={"optimizer": "sgd", "lr": 0.1}, train={**TRAIN, "batch_size": 200, "epochs": 1})


def one_step_gradients(configs, tmp_path):
    """The stacked weight gradients [K, out, in] per matrix of one full-batch step (the only step
    of the epoch; they stay on the stacked tensors), the weights they were taken at, and the batch."""
    stepper, data = make_stepper(configs, tmp_path)
    before = [w.detach().clone() for w in stepper.model.linear_weights]
    params = [{n: p.detach().clone() for n, p in m.model.named_parameters()} for m in stepper.members]
    stepper.train_epoch()
    return [w.grad.clone() for w in stepper.model.linear_weights], before, params, data


def hand_gradients(params, x, y, reg):
    """The gradients of CE + Σ l1_i·Σ|W_i| + Σ l2_i·ΣW_i² + Σ (a1_j·Σ|a_j| + a2_j·Σa_j²)/batch of a
    tanh MLP, written out by hand with per-layer coefficients (a number: the same for every layer)."""
    names = ["hidden.0.linear", "hidden.1.linear", "output"]
    w = {n: params[f"{n}.weight"].clone().requires_grad_() for n in names}
    h, penalty = x, 0.0
    for j, n in enumerate(names[:2]):
        h = torch.tanh(h @ w[n].T + params[f"{n}.bias"])
        penalty = penalty + (coef(reg, "activity_l1", j) * h.abs().sum() + coef(reg, "activity_l2", j) * h.square().sum()) / len(x)
    loss = F.cross_entropy(h @ w["output"].T + params["output.bias"], y)
    for i, n in enumerate(names):
        penalty = penalty + coef(reg, "l1", i) * w[n].abs().sum() + coef(reg, "l2", i) * w[n].square().sum()
    (loss + penalty).backward()
    return [w[n].grad for n in names]


def coef(reg, key, i):
    value = reg.get(key, 0.0)
    return value[i] if isinstance(value, list) else value


def test_a_matrix_with_penalty_zero_gets_no_penalty_term(tmp_path, data_root):
    """l1/l2 on the output matrix only: the hidden matrices' gradients are those of a run without
    penalties, bit for bit; the output's differs by l1·sign(W) + 2·l2·W. An activity penalty on the
    second hidden layer only leaves the output matrix's gradient alone."""
    plain = cfg("plain", **PENALIZED)
    output_only = cfg("output-only", **PENALIZED, regularization={"l1": [0.0, 0.0, 0.01], "l2": [0.0, 0.0, 0.1]})
    activity = cfg("activity-layer-2", **PENALIZED, regularization={"activity_l1": [0.0, 0.05], "activity_l2": [0.0, 0.02]})
    (g_plain, before, _, _), (g_out, _, _, _), (g_act, _, _, _) = (one_step_gradients([c], tmp_path) for c in (plain, output_only, activity))
    assert torch.equal(g_out[0], g_plain[0]) and torch.equal(g_out[1], g_plain[1])
    w = before[2]
    assert not torch.equal(g_out[2], g_plain[2])
    assert torch.allclose(g_out[2] - g_plain[2], 0.01 * w.sign() + 2 * 0.1 * w, atol=1e-6)
    assert torch.equal(g_act[2], g_plain[2])
    assert not torch.equal(g_act[1], g_plain[1]) and not torch.equal(g_act[0], g_plain[0])
    stepper, _ = make_stepper([output_only], tmp_path)
    assert [i for i, _ in stepper.l1] == [2] and stepper.activity_l1 is None  # no term for a zero


def test_per_layer_penalties_match_a_hand_computation_in_a_fused_group(tmp_path, data_root):
    regs = [
        {"l1": [0.01, 0.0, 0.003], "l2": [0.0, 0.05, 0.02], "activity_l1": [0.02, 0.0], "activity_l2": [0.0, 0.01]},
        {"l1": 0.002, "l2": [0.01, 0.0, 0.0], "activity_l1": 0.01},
        {},
    ]
    configs = [cfg(f"m{i}", **PENALIZED, regularization=reg) for i, reg in enumerate(regs)]
    grads, _, params, data = one_step_gradients(configs, tmp_path)
    x, y = data.x_train, data.y_train  # the whole training split is the one batch
    for k, reg in enumerate(regs):
        expected = hand_gradients(params[k], x, y, reg)
        for i in range(3):
            assert torch.allclose(grads[i][k], expected[i], rtol=1e-4, atol=1e-6), (k, i)


def test_a_list_of_equal_values_is_the_number(tmp_path, data_root):
    """A list with one value for every matrix trains exactly as that number does."""
    number = cfg("number", regularization={"l1": 1e-3, "l2": 1e-2, "activity_l1": 1e-3})
    listed = cfg("listed", regularization={"l1": [1e-3, 1e-3], "l2": [1e-2, 1e-2], "activity_l1": [1e-3]})
    a, b = solo_runs([number, listed], tmp_path)
    assert trained(a.history) == trained(b.history)
    assert all(torch.equal(last(a.dir)["model"][k], last(b.dir)["model"][k]) for k in last(a.dir)["model"])


# ----------------------------------------------------------------------------- isolation


def test_a_diverging_member_is_retired_and_the_others_go_on_unaffected(tmp_path, data_root):
    good = [cfg("relu"), cfg("tanh", model={"activation": "tanh", "dropout": 0.2}, train={**TRAIN, "seed": 1})]
    boom = cfg("boom", optim={"optimizer": "sgd", "lr": 1e6})
    runs = train_group([good[0], boom, good[1]], runs_dir=tmp_path / "with")
    assert [r.status for r in runs] == ["completed", "diverged", "completed"]
    assert "non-finite in epoch 1" in runs[1].summary["error"] and runs[1].summary["epochs_completed"] == 0
    assert [r["epoch"] for r in read_history(runs[1].dir)] == [0]
    without = train_group(good, runs_dir=tmp_path / "without")
    for a, b, solo in zip([runs[0], runs[2]], without, solo_runs(good, tmp_path)):
        assert_same_run(a, b)
        assert_same_run(a, solo)


def test_early_stopping_is_per_member_and_the_others_go_on(tmp_path, data_root):
    long = {**TRAIN, "epochs": 8}
    configs = [
        cfg("stops", train={**long, "early_stopping": {"monitor": "val_acc", "patience": 1}}),
        cfg("runs-on", model={"activation": "tanh"}, train={**long, "seed": 1}),
        cfg("stops-later", model={"activation": "tanh"}, train={**long, "seed": 2, "early_stopping": {"patience": 3, "min_delta": 10.0}}),
    ]
    group = train_group(configs, runs_dir=tmp_path / "group")
    assert group[0].summary["stopped_early"] and group[0].summary["epochs_completed"] < 8
    assert not group[1].summary["stopped_early"] and group[1].summary["epochs_completed"] == 8
    assert group[2].summary["stopped_early"] and group[2].summary["epochs_completed"] == 4
    for fused_run, solo_run in zip(group, solo_runs(configs, tmp_path)):
        assert_same_run(fused_run, solo_run)


# ----------------------------------------------------------------------------- run folders


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != ".lock")


def test_run_folders_are_solo_run_folders(tmp_path, data_root):
    configs = [MIXED[7], MIXED[1]]
    group = train_group(configs, runs_dir=tmp_path / "group")
    for fused_run, solo_run in zip(group, solo_runs(configs, tmp_path)):
        a, b = fused_run.dir, solo_run.dir
        assert files(a) == files(b)
        assert (a / "config.yaml").read_text() == (b / "config.yaml").read_text()
        summary_a, summary_b = read_summary(a), read_summary(b)
        assert summary_a.pop("fused") == {"members": 2}
        assert summary_a.keys() == summary_b.keys()
        shared = ("wall_seconds", "started", "run_id")
        assert {k: v for k, v in summary_a.items() if k not in shared} == {k: v for k, v in summary_b.items() if k not in shared}
        for name in ["last.pt"] + (["best.pt"] if (b / "checkpoints" / "best.pt").exists() else []):
            ca, cb = last(a, name), last(b, name)
            assert ca.keys() == cb.keys()
            assert ca["epoch"] == cb["epoch"] and ca["best"] == cb["best"] and ca["scheduler"] == cb["scheduler"]
            for key in ("model", "best_model"):
                assert ca[key].keys() == cb[key].keys()
                assert all(torch.equal(ca[key][k], cb[key][k]) and ca[key][k].is_contiguous() for k in ca[key])
            # each tensor is the member's own (a view would have saved the whole stack)
            assert all(v.untyped_storage().nbytes() == v.numel() * v.element_size() for v in ca["model"].values())
            assert ca["optimizer"]["param_groups"] == cb["optimizer"]["param_groups"]
            assert ca["optimizer"]["state"].keys() == cb["optimizer"]["state"].keys()
            for i, state in ca["optimizer"]["state"].items():
                assert state.keys() == cb["optimizer"]["state"][i].keys()
                assert all(torch.equal(v, cb["optimizer"]["state"][i][k]) for k, v in state.items())
            assert all(torch.equal(ca["rng"][k], cb["rng"][k]) for k in ("torch", "batch_order"))
    assert cli("runs", tmp_path / "group").exit_code == 0
    assert cli("show", group[0].dir).exit_code == 0
    done = cli("train", "--resume", group[0].dir)
    assert done.exit_code == 1 and "already completed" in done.output


def test_progress_events_per_member(tmp_path, data_root):
    events = [[], []]
    configs = [cfg("a"), cfg("b", model={"activation": "tanh"})]
    train_group(configs, runs_dir=tmp_path, progress_for=[lambda e, i, k=k: events[k].append((e, i)) for k in range(2)])
    for member in events:
        kinds = [e for e, _ in member]
        assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 3 and kinds.count("step") == 30
        start = member[0][1]
        assert start["first_epoch"] == 1 and start["epochs"] == 3 and start["steps"] == 10
        assert all(0 < i["loss"] < 10 for e, i in member if e == "step")
        assert [i["record"]["epoch"] for e, i in member if e == "epoch"] == [1, 2, 3]


# ----------------------------------------------------------------------------- interruption and resume


RESUMABLE = [
    cfg("adam-dropout-step", model={"dropout": 0.2}, optim={"optimizer": "adam", "lr": 0.003, "schedule": {"name": "step", "step_size": 2, "gamma": 0.5}},
        train={**TRAIN, "epochs": 5}),
    cfg("sgd-tanh-cosine", model={"activation": "tanh"}, optim={"optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True}, "lr": 0.02, "schedule": "cosine"},
        train={**TRAIN, "epochs": 5, "checkpoint": "both", "seed": 1}),
    cfg("prelu-rmsprop", model={"activation": "prelu"}, optim={"optimizer": "rmsprop", "lr": 0.001}, train={**TRAIN, "epochs": 5, "seed": 2}),
]


def _stop_after(epoch, error=KeyboardInterrupt):
    def progress(event, info):
        if event == "epoch" and info["record"]["epoch"] == epoch:
            raise error("stop")

    return progress


def test_an_interrupted_group_resumes_from_its_members_checkpoints(tmp_path, data_root, optimizer_layout):
    reference = train_group(RESUMABLE, runs_dir=tmp_path / "reference")
    folders = [tmp_path / "group" / c.name for c in RESUMABLE]
    with pytest.raises(KeyboardInterrupt):
        train_group(RESUMABLE, folders, progress_for=[None, _stop_after(2, Terminated), None])
    for folder, full in zip(folders, reference):
        summary = read_summary(folder)
        assert summary["status"] == "interrupted" and summary["epochs_completed"] == 2
        assert last(folder)["epoch"] == 2
        assert records(folder) == records(full.dir)[:3]  # epoch 0, 1, 2: every member committed epoch 2
    resumed = train_group(RESUMABLE, folders, resume=[True] * 3)
    for run, full, folder in zip(resumed, reference, folders):
        assert run.dir == folder and run.status == "completed"
        assert trained(run.history) == trained(full.history) and records(folder) == records(full.dir)
        for key in ("test_loss", "test_acc", "best_epoch", "selected_epoch", "epochs_completed"):
            assert run.summary[key] == full.summary[key], key
    assert all(isinstance(r, ActexpError) and "already completed" in str(r) for r in train_group(RESUMABLE, folders, resume=[True] * 3))


def test_a_fused_members_checkpoint_resumes_solo_and_members_at_different_epochs_resume_together(tmp_path, data_root):
    reference = solo_runs(RESUMABLE[:2], tmp_path)
    folders = [tmp_path / "group" / c.name for c in RESUMABLE[:2]]
    with pytest.raises(KeyboardInterrupt):
        train_group(RESUMABLE[:2], folders, progress_for=[_stop_after(1), None])
    solo = train(RESUMABLE[0], resume=folders[0])  # the member's checkpoint is a solo run's
    assert_same_run(solo, reference[0])
    later = tmp_path / "later"
    with pytest.raises(KeyboardInterrupt):
        train(RESUMABLE[0], run_dir=later, progress=_stop_after(3))
    fresh = tmp_path / "fresh"
    runs = train_group([RESUMABLE[0], RESUMABLE[1], RESUMABLE[1]], [later, folders[1], fresh], resume=[True, True, False])
    assert [r.status for r in runs] == ["completed"] * 3
    assert_same_run(runs[0], reference[0])
    assert_same_run(runs[1], reference[1])
    assert_same_run(runs[2], reference[1])


def test_a_member_that_cannot_start_does_not_stop_the_others(tmp_path, data_root):
    done = train(cfg("done"), runs_dir=tmp_path)
    missing = tmp_path / "nothing-here"
    runs = train_group([cfg("done"), cfg("fresh"), cfg("done")], [done.dir, None, missing], runs_dir=tmp_path, resume=[True, False, True])
    assert isinstance(runs[0], ActexpError) and "already completed" in str(runs[0])
    assert isinstance(runs[2], ActexpError) and "not a run folder" in str(runs[2])
    assert runs[1].status == "completed"
    assert read_summary(done.dir)["status"] == "completed"


def test_an_interrupt_before_a_member_opened_its_folder_leaves_that_folder_alone(tmp_path, data_root):
    def stop_at_start(event, info):
        if event == "start":
            raise KeyboardInterrupt

    folders = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(KeyboardInterrupt):
        train_group([cfg("a"), cfg("b", train={**TRAIN, "seed": 1})], folders, progress_for=[stop_at_start, None])
    assert read_summary(folders[0])["status"] == "interrupted" and (folders[0] / "config.yaml").is_file()
    assert not (folders[1] / "summary.json").exists()  # it never started: nothing claims otherwise
    runs = train_group([cfg("a"), cfg("b", train={**TRAIN, "seed": 1})], folders, resume=[True, False])
    assert isinstance(runs[0], ActexpError) and "nothing to resume" in str(runs[0])
    assert runs[1].status == "completed" and runs[1].dir == folders[1]


SIGTERM_DRIVER = """
import sys, torch
torch.set_num_threads(1)
from actexp.config import config_from_dict
from actexp.training import train_group
import json
configs = [config_from_dict(c) for c in json.loads(sys.argv[1])]
train_group(configs, json.loads(sys.argv[2]), resume=[len(sys.argv) > 3] * len(configs))
"""


@pytest.mark.slow
def test_sigterm_stops_a_group_with_every_member_recorded_and_resumable(tmp_path, data_root):
    configs = [cfg("a", model={"hidden": [64], "dropout": 0.1}, train={**TRAIN, "epochs": 40}),
               cfg("b", model={"hidden": [64], "activation": "tanh"}, train={**TRAIN, "epochs": 40, "seed": 1})]
    folders = [str(tmp_path / "group" / c.name) for c in configs]
    plain = json.dumps([config_to_dict(c) for c in configs])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", SIGTERM_DRIVER, plain, json.dumps(folders)], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    # Each member has finished an epoch (its checkpoint waits in memory: the signal writes it).
    while not all(len(read_history(folder)) >= 2 for folder in folders if Path(folder, "metrics.jsonl").exists()) or not all(
            Path(folder, "metrics.jsonl").exists() for folder in folders):
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=60)[1].decode()
    assert "Terminated" in stderr
    epochs = set()
    for folder in folders:
        summary = read_summary(folder)
        assert summary["status"] == "interrupted" and "SIGTERM" in summary["error"]
        trained_epochs = [r["epoch"] for r in read_history(folder) if r["epoch"] > 0]
        assert trained_epochs == list(range(1, summary["epochs_completed"] + 1))
        assert torch.load(f"{folder}/checkpoints/last.pt", weights_only=True)["epoch"] == summary["epochs_completed"]
        epochs.add(summary["epochs_completed"])
    assert len(epochs) == 1 and 0 < epochs.pop() < 40  # the epoch was committed for both or for neither
    resumed = train_group(configs, folders, resume=[True, True])
    reference = train_group(configs, runs_dir=tmp_path / "reference")
    for run, full in zip(resumed, reference):
        assert run.status == "completed" and trained(run.history) == trained(full.history)


# ----------------------------------------------------------------------------- devices


def test_the_batched_weight_gradient_agrees_with_the_per_member_one():
    torch.manual_seed(0)
    x, grad = torch.randn(5, 16, 12), torch.randn(5, 16, 7)
    per_member, batched = stacked_model.weight_grad(x, grad, per_member=True), stacked_model.weight_grad(x, grad, per_member=False)
    assert per_member.shape == (5, 7, 12)
    torch.testing.assert_close(per_member, batched)
    weight = torch.randn(5, 7, 12, requires_grad=True)
    F.linear(x[2], weight[2]).backward(grad[2])
    assert torch.equal(per_member[2], weight.grad[2])


def test_a_group_trains_the_same_with_the_gpus_batched_gradient(tmp_path, data_root, monkeypatch):
    """The code path a GPU takes (one bmm for the weight gradients), here on the CPU."""
    real = stacked_model.weight_grad
    monkeypatch.setattr(stacked_model, "weight_grad", lambda x, grad, per_member=None: real(x, grad, per_member=False))
    configs = [MIXED[0], MIXED[1]]
    group = train_group(configs, runs_dir=tmp_path / "group")
    for run, solo in zip(group, solo_runs(configs, tmp_path)):
        for a, b in zip(run.history, solo.history):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_a_group_on_a_gpu_matches_its_solo_runs(tmp_path, data_root):
    configs = [config_from_dict({**config_to_dict(c), "train": {**config_to_dict(c)["train"], "device": "cuda"}}) for c in MIXED[:4]]
    group = train_group(configs, runs_dir=tmp_path / "group")
    for run, solo in zip(group, solo_runs(configs, tmp_path)):
        assert run.status == solo.status == "completed" and run.summary["device"].startswith("cuda")
        for a, b in zip(run.history, solo.history):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-2, abs=1e-4)
        assert run.summary["test_acc"] == pytest.approx(solo.summary["test_acc"], abs=0.02)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("configs", [MIXED, BATCH_NORM], ids=["mixed", "batch-norm"])
def test_on_a_gpu_stepping_the_stacked_slices_is_stepping_each_members_own_tensors(tmp_path, data_root, monkeypatch, configs):
    configs = [config_from_dict({**config_to_dict(c), "train": {**config_to_dict(c)["train"], "device": "cuda"}}) for c in configs]
    sliced = train_group(configs, runs_dir=tmp_path / "sliced")
    monkeypatch.setattr(stepper_module, "_steps_slices", lambda device: False)
    own = train_group(configs, runs_dir=tmp_path / "own")
    for a, b in zip(sliced, own):
        assert a.status == b.status == "completed"
        assert trained(a.history) == trained(b.history)
        weights_a, weights_b = last(a.dir)["model"], last(b.dir)["model"]
        assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_b)


@pytest.mark.parametrize("gathered", [False, True], ids=["runs of members", "gathered"])
def test_an_activation_spread_over_the_stack_is_one_slice_on_a_gpu_and_members_stay_their_solo_runs(tmp_path, data_root, monkeypatch, gathered):
    # seeds before activations: relu, prelu, tanh for seed 0, then again for seed 1
    configs = [cfg(f"{activation}{seed}", model={"activation": activation}, train={**TRAIN, "seed": seed})
               for seed in (0, 1) for activation in ("relu", "prelu", "tanh")]
    monkeypatch.setattr(stacked_model, "_gathers_activations", lambda device: gathered)
    stepper, _ = make_stepper(configs, tmp_path)
    plan = stepper.activations
    if gathered:  # a GPU's: one slice per activation, members gathered by activation and put back
        assert [(s.start, s.end, s.learned) for s in plan.slices] == [(0, 2, ()), (2, 4, ("weight",)), (4, 6, ())]
        assert plan.gather.tolist() == [0, 3, 1, 4, 2, 5] and plan.scatter.tolist() == [0, 2, 4, 1, 3, 5]
    else:  # a CPU's: a slice for each run of members
        assert len(plan.slices) == 6 and plan.gather is None
    for fused_run, solo_run in zip(train_group(configs, runs_dir=tmp_path / "group"), solo_runs(configs, tmp_path)):
        assert_same_run(fused_run, solo_run)


def test_batch_norm_over_the_whole_stack_as_on_a_gpu_stays_within_rounding_of_per_member_calls(tmp_path, data_root, monkeypatch):
    """A GPU normalizes the stack in one call (one kernel launch); a CPU calls once per member, bit
    for bit its solo run. Here the GPU's way runs on the CPU: the same figures within rounding,
    as three epochs of training amplify it."""
    configs = [cfg(f"bn{seed}", model={"hidden": [16, 12], "batch_norm": True, "dropout": 0.1}, train={**TRAIN, "batch_size": 50, "seed": seed})
               for seed in (0, 1)]
    per_member = train_group(configs, runs_dir=tmp_path / "per-member")
    monkeypatch.setattr(stacked_model, "_normalizes_per_member", lambda device: False)
    whole = train_group(configs, runs_dir=tmp_path / "whole")
    for a, b in zip(per_member, whole):
        for x, y in zip(a.history, b.history):
            assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-2) and x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-2)
