"""Hostile formula activations: a formula is a string in a config, and nothing of it may run as
Python. Each case is refused by `validate` and `train` (and as a --set override) with exactly one
line, `error: ...`, naming the key and the column of the problem, exit code 2, in well under a
second of CPU, with no run folder made and no data touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import cli, tiny_config, write_yaml
from test_config_corpus import _refused as refused

SECONDS = 0.5  # CPU seconds of the calling thread per CLI call; the refusals take milliseconds
PWNED = "pwned"  # what a formula that ran would create

# (id, formula, fragments the one line must hold besides the config's path)
BAD_FORMULAS = [
    # attribute access and dunder names: the ways out of an expression evaluator
    ("attribute access", "x.__class__", ["model.activation.expr", "column 1", "'x.__class__'", "attribute access is not allowed", "allowed:"]),
    ("attribute further in", "1 + x.real", ["column 5", "'x.real'", "attribute access is not allowed"]),
    ("class escape", "().__class__.__bases__[0].__subclasses__()", ["column 1", "only the listed functions can be called"]),
    ("dunder name", "__import__", ["column 1", "__import__", "not allowed"]),
    ("dunder call", f"__import__('os').system('touch {PWNED}')", ["column 1", "only the listed functions can be called"]),
    ("builtins", "__builtins__ * x", ["column 1", "the name __builtins__ is not allowed"]),
    ("underscore name", "_ * x", ["the name _ is not allowed"]),
    # calls outside the list
    ("eval", "eval('1') * x", ["column 1", "eval is not a function here"]),
    ("exec", f"exec('open(\"{PWNED}\", \"w\")')", ["exec is not a function here"]),
    ("open", f"open('{PWNED}', 'w')", ["open is not a function here"]),
    ("getattr", "getattr(x, 'grad')", ["getattr is not a function here"]),
    ("torch", "torch.tanh(x)", ["column 1", "'torch.tanh'", "only the listed functions can be called"]),
    ("a method", "x.exp()", ["only the listed functions can be called"]),
    ("a call of a call", "tanh(x)(x)", ["only the listed functions can be called"]),
    ("keyword arguments", "clamp(x, min=0, max=1)", ["clamp takes its arguments by position"]),
    ("unpacking", "clamp(*x)", ["clamp takes its arguments by position"]),
    ("too many arguments", "tanh(x, x)", ["tanh takes 1 argument, got 2"]),
    ("where without a comparison", "where(x, x, 0)", ["column 7", "where's first argument is a comparison"]),
    # other Python
    ("lambda", "(lambda: x)()", ["only the listed functions can be called"]),
    ("comprehension", "[x for x in x]", ["a comprehension is not allowed"]),
    ("conditional", "x if x > 0 else 0", ["a conditional expression is not allowed", "use where"]),
    ("and", "x and x", ["and/or are not allowed"]),
    ("walrus", "(y := x)", ["assignment is not allowed"]),
    ("string", "'x' * 3", ["a string is not allowed"]),
    ("f-string", "f'{x}'", ["a string is not allowed"]),
    ("bytes", "b'x'", ["bytes is not allowed"]),
    ("indexing", "x[0]", ["indexing is not allowed"]),
    ("floor division", "x // 2", ["the operator '//' is not allowed"]),
    ("bit operators", "x << 2", ["the operator '<<' is not allowed"]),
    ("matrix product", "x @ x", ["the operator '@' is not allowed"]),
    ("chained comparison", "0 < x < 1", ["a chained comparison"]),
    ("identity comparison", "x is x", ["is, in and their negations are not allowed"]),
    ("boolean", "True * x", ["a boolean is not allowed"]),
    ("complex", "1j * x", ["a complex number is not allowed"]),
    ("statement", "import os", ["not a formula", "invalid syntax"]),
    ("two lines", "x\n+ 1", ["column 2", "only printable ASCII"]),
    ("non-ASCII", "x·x", ["column 2", "only printable ASCII"]),
    ("no x", "2 + 2", ["never uses x"]),
    ("empty", "  ", ["empty"]),
    # sizes: exponents, literals, nesting, length
    ("huge exponent", "x ** 1000", ["column 6", "'1000'", "an exponent beyond ±16"]),
    ("power tower", "9 ** 9 ** 9 ** 9 * x", ["an exponent is a number (at most ±16)"]),
    ("exponent in x", "2 ** x", ["an exponent is a number"]),
    ("huge literal", "1e300 * x", ["column 1", "a number beyond ±1e+06"]),
    ("inf literal", "1e999 * x", ["a number beyond ±1e+06"]),
    ("1000-digit literal", "9" * 990 + " * x", ["a number beyond ±1e+06"]),
    ("deep nesting", "tanh(" * 40 + "x" + ")" * 40, ["nests deeper than 32 levels"]),
    ("deep parentheses", "(" * 400 + "x" + ")" * 400, ["not a formula", "too many nested parentheses"]),
    ("deep unary minus", "-" * 990 + "x", ["nests deeper than 32 levels"]),
    ("long sum", " + ".join(["x"] * 200), ["nests deeper than 32 levels"]),
    ("1001 characters", "x" + " " * 1000, ["1001 characters; a formula has at most 1000"]),
    ("100 kB formula", "x" + " + x" * 25_000, ["100001 characters; a formula has at most 1000"]),
    ("100 kB of nesting", "(" * 50_000 + "x" + ")" * 50_000, ["100001 characters"]),
    ("a list for a formula", ["x"], ["expected a formula in x (a string)"]),
]


def _refused(args, path: Path, fragments) -> str:
    return refused(args, path, fragments, SECONDS)


@pytest.mark.parametrize("formula,fragments", [c[1:] for c in BAD_FORMULAS], ids=[c[0] for c in BAD_FORMULAS])
def test_a_hostile_formula_is_refused_in_one_line_with_its_column(tmp_path, formula, fragments):
    path = write_yaml(tmp_path / "bad.yaml", tiny_config(model={"activation": {"expr": formula}}))
    runs = tmp_path / "runs"
    _refused(["validate", path], path, fragments)
    _refused(["train", path, "--runs-dir", runs], path, fragments)
    assert not runs.exists()
    assert not (tmp_path / "empty-data-root").exists()  # $ACTEXP_DATA (conftest): no data was touched
    assert not (tmp_path / PWNED).exists()


@pytest.mark.parametrize("formula,fragments", [c[1:] for c in BAD_FORMULAS[:6] + BAD_FORMULAS[-6:-2]],
                         ids=[c[0] for c in BAD_FORMULAS[:6] + BAD_FORMULAS[-6:-2]])
def test_a_hostile_formula_in_an_override_is_refused_the_same_way(tmp_path, formula, fragments):
    import json

    path = write_yaml(tmp_path / "ok.yaml", tiny_config())
    override = f"model.activation={json.dumps({'expr': formula})}"
    line = _refused(["train", path, "--runs-dir", tmp_path / "runs", "--set", override], path, fragments)
    assert "override" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / PWNED).exists()


def test_a_hostile_formula_in_a_grid_is_refused_before_anything_trains(tmp_path):
    path = write_yaml(tmp_path / "ok.yaml", tiny_config())
    result = cli("sweep", path, "--grid", "model.activation=[relu, {expr: 'x.__class__'}]", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "attribute access is not allowed" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_the_corpus_is_large():
    assert len(BAD_FORMULAS) >= 50
