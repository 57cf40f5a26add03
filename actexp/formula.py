"""Formula activations: `model.activation: {expr: "x * sigmoid(beta * x)", beta: 1.702}`.

A formula is read by Python's parser (`ast.parse`, mode "eval") and by nothing else of Python: the
parse tree is walked against a whitelist and rebuilt as a tree of `Node`s, which `evaluate`
computes with torch operations. Nothing is compiled or run by Python, so a formula can name no
attribute, module or function outside FUNCTIONS. It is bounded before it is parsed (ast.parse of a
deeply nested 100 kB text can exhaust the interpreter's stack) and while it is walked (depth, node
count, the size of numbers and exponents), so a hostile config is refused in milliseconds.

The grammar: numbers, the variable `x`, named parameters (given beside the formula), `pi`,
`+ - * / **`, unary minus, comparisons (`<`, `<=`, `>`, `>=`, `==`, `!=`: 1.0 where true, else
0.0), `where(comparison, a, b)` and the functions in FUNCTIONS. Gradients come from autograd.

The parser is torch-free (`actexp validate` answers without torch); `evaluate` imports torch.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import keyword
import math
from dataclasses import dataclass

from .components import LazyModule
from .errors import ConfigError

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")

# Bounds that no sensible activation comes near (GELU's tanh form is well inside each): they keep a
# hostile formula's cost to milliseconds.
MAX_LENGTH = 1000  # characters, checked before the text is parsed
MAX_DEPTH = 32  # nesting levels of the expression
MAX_NODES = 256  # numbers, names, operations and calls
MAX_NUMBER = 1e6  # the magnitude of a number or a parameter's value
MAX_EXPONENT = 16  # the magnitude of a constant exponent: x ** 3 is common, x ** 1000 is inf
MAX_PARAMETERS = 16

VARIABLE = "x"
CONSTANTS = {"pi": math.pi}
# name -> number of arguments
FUNCTIONS = {
    **dict.fromkeys(("sigmoid", "tanh", "relu", "softplus", "exp", "expm1", "log", "log1p", "erf", "abs", "sqrt",
                     "sign", "sin", "cos", "atan", "asinh"), 1),
    "minimum": 2,
    "maximum": 2,
    "clamp": 3,
    "where": 3,
}
FORMULA = "formula"  # the name a formula activation's config component has
# The keys of a formula mapping besides its parameters (no parameter may take these names).
FORMULA_KEYS = ("expr", "learn", "gain", "name")

BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
COMPARISONS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
ALLOWED = (f"allowed: numbers, x, parameters, pi, + - * / **, comparisons, where(condition, a, b), "
           f"{', '.join(f for f in FUNCTIONS if f != 'where')}")

# Printing precedence: a child with a lower one than its place needs parentheses.
_PRECEDENCE = {"compare": 1, "+": 2, "-": 2, "*": 3, "/": 3, "neg": 4, "**": 5}
_ATOM = 6


@dataclass(frozen=True)
class Node:
    """One operation of a formula: `op` is "num" (value: the number), "const" (value: its name),
    "x", "param" (value: its name), "+", "-", "*", "/", "**", "neg", "compare" (value: the
    comparison), or a function's name; `args` are its operands."""

    op: str
    args: tuple = ()
    value: float | str | None = None


@dataclass(frozen=True)
class Formula:
    text: str  # normalized: one spelling per tree (normalize(parse(t).text) == parse(t).text)
    tree: Node
    parameters: tuple[str, ...]  # the names it uses besides x, in order of first use
    exponents: tuple[str, ...]  # the parameters used as exponents (their values are bounded too)


def parse_formula(text, path: str = "expr") -> Formula:
    """The formula `text` as a tree of whitelisted operations. Raises ConfigError naming `path` and
    the column of the problem."""
    if not isinstance(text, str):
        raise ConfigError(f"{path}: expected a formula in x (a string), e.g. \"x * sigmoid(x)\"")
    if len(text) > MAX_LENGTH:
        raise ConfigError(f"{path}: {len(text)} characters; a formula has at most {MAX_LENGTH}")
    if not text.strip():
        raise ConfigError(f"{path}: empty; give a formula in x, e.g. \"x * sigmoid(x)\"")
    for column, char in enumerate(text, 1):
        if not " " <= char <= "~":  # ASCII without control characters: one line, whose columns are characters
            raise ConfigError(f"{path}: column {column}: {char!r}: only printable ASCII characters are allowed")
    try:
        parsed = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        where = f"column {e.offset}: " if e.offset else ""
        raise ConfigError(f"{path}: {where}not a formula ({e.msg}); e.g. \"x * sigmoid(beta * x)\"") from e
    except (RecursionError, MemoryError, ValueError) as e:
        raise ConfigError(f"{path}: not a formula ({type(e).__name__}); nest it less") from e
    indent = len(text) - len(text.lstrip())  # ast's columns count from the stripped text
    walk = _Walk(text.strip(), path, indent)
    tree = walk.build(parsed.body, 1)
    if not walk.uses_x:
        raise ConfigError(f"{path}: the formula never uses x; an activation is a function of x, e.g. \"x * sigmoid(x)\"")
    if len(walk.parameters) > MAX_PARAMETERS:
        raise ConfigError(f"{path}: {len(walk.parameters)} parameters; a formula has at most {MAX_PARAMETERS}")
    return Formula(to_text(tree), tree, tuple(walk.parameters), tuple(walk.exponents))


class _Walk:
    """One walk over a parse tree: the whitelist, the bounds, and what the formula uses."""

    def __init__(self, text: str, path: str, indent: int):
        self.text, self.path, self.indent = text, path, indent
        self.nodes = 0
        self.uses_x = False
        self.parameters: list[str] = []
        self.exponents: list[str] = []

    def refuse(self, node, problem: str):
        column = getattr(node, "col_offset", 0) + 1 + self.indent
        segment = ast.get_source_segment(self.text, node) or self.text
        shown = segment if len(segment) <= 40 else segment[:37] + "..."
        raise ConfigError(f"{self.path}: column {column}: {shown!r}: {problem}")

    def build(self, node, depth: int) -> Node:
        if depth > MAX_DEPTH:
            self.refuse(node, f"nests deeper than {MAX_DEPTH} levels")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.refuse(node, f"the formula has more than {MAX_NODES} operations and operands")
        kind = type(node)
        if kind is ast.Constant:
            return self.number(node)
        if kind is ast.Name:
            return self.name(node)
        if kind is ast.UnaryOp:
            operand = self.build(node.operand, depth + 1)
            if isinstance(node.op, ast.UAdd):
                return operand
            if not isinstance(node.op, ast.USub):
                self.refuse(node, f"{'not' if isinstance(node.op, ast.Not) else '~'} is not allowed; use where(condition, a, b) ({ALLOWED})")
            return Node("num", value=-operand.value) if operand.op == "num" else Node("neg", (operand,))
        if kind is ast.BinOp:
            op = BINARY.get(type(node.op))
            if op is None:
                self.refuse(node, f"the operator {_operator(node, self.text)} is not allowed ({ALLOWED})")
            left = self.build(node.left, depth + 1)
            right = self.build(node.right, depth + 1)
            if op == "**":
                self.exponent(node.right, right)
            return Node(op, (left, right))
        if kind is ast.Compare:
            if len(node.ops) != 1:
                self.refuse(node, "a chained comparison; compare two values at a time, e.g. where(x > 0, x, 0)")
            symbol = COMPARISONS.get(type(node.ops[0]))
            if symbol is None:
                self.refuse(node, f"is, in and their negations are not allowed; compare with < <= > >= == != ({ALLOWED})")
            return Node("compare", (self.build(node.left, depth + 1), self.build(node.comparators[0], depth + 1)), symbol)
        if kind is ast.Call:
            return self.call(node, depth)
        self.refuse(node, _NOT_ALLOWED.get(kind, f"{_what(kind)} is not allowed") + f" ({ALLOWED})")

    def number(self, node) -> Node:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.refuse(node, f"{_what(type(value))} is not allowed; a formula holds numbers ({ALLOWED})")
        if abs(value) > MAX_NUMBER or not math.isfinite(value):  # (an int of 500 digits: compared, never made a float)
            self.refuse(node, f"a number beyond ±{MAX_NUMBER:g}")
        return Node("num", value=float(value))

    def name(self, node) -> Node:
        name = node.id
        if name == VARIABLE:
            self.uses_x = True
            return Node("x")
        if name in CONSTANTS:
            return Node("const", value=name)
        if name in FUNCTIONS:
            self.refuse(node, f"{name} is a function: call it, e.g. {name}(x)")
        if name.startswith("_") or keyword.iskeyword(name) or name in ("True", "False", "None") or name in FORMULA_KEYS:
            self.refuse(node, f"the name {name} is not allowed ({ALLOWED})")
        if name not in self.parameters:
            self.parameters.append(name)
        return Node("param", value=name)

    def exponent(self, node, built: Node) -> None:
        if built.op == "num":
            if abs(built.value) > MAX_EXPONENT:
                self.refuse(node, f"an exponent beyond ±{MAX_EXPONENT}")
        elif built.op == "param":
            self.exponents.append(built.value)
        else:
            self.refuse(node, f"an exponent is a number (at most ±{MAX_EXPONENT}) or a fixed parameter; for growth in x use exp(...)")

    def call(self, node, depth: int) -> Node:
        func = node.func
        if type(func) is not ast.Name:
            self.refuse(func, f"only the listed functions can be called ({ALLOWED})")
        name = func.id
        if name not in FUNCTIONS:
            close = difflib.get_close_matches(name, list(FUNCTIONS), n=1, cutoff=0.7)
            hint = f"did you mean {close[0]}? " if close else ""
            self.refuse(func, f"{name} is not a function here ({hint}{ALLOWED})")
        if node.keywords or any(type(a) is ast.Starred for a in node.args):
            self.refuse(node, f"{name} takes its arguments by position, e.g. {name}({', '.join(['x'] * FUNCTIONS[name])})")
        if len(node.args) != FUNCTIONS[name]:
            self.refuse(node, f"{name} takes {FUNCTIONS[name]} argument{'s' if FUNCTIONS[name] > 1 else ''}, got {len(node.args)}")
        if name == "where" and type(node.args[0]) is not ast.Compare:
            self.refuse(node.args[0], "where's first argument is a comparison, e.g. where(x > 0, x, 0.01 * x)")
        return Node(name, tuple(self.build(a, depth + 1) for a in node.args))


_NOT_ALLOWED = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "indexing is not allowed",
    ast.IfExp: "a conditional expression is not allowed; use where(condition, a, b)",
    ast.BoolOp: "and/or are not allowed; use where(condition, a, b)",
    ast.Lambda: "lambda is not allowed",
    ast.NamedExpr: "assignment is not allowed",
    ast.JoinedStr: "a string is not allowed",
}


def _what(kind) -> str:
    names = {str: "a string", bytes: "bytes", complex: "a complex number", type(None): "None", bool: "a boolean",
             type(...): "...", ast.Tuple: "a tuple", ast.List: "a list", ast.Dict: "a mapping", ast.Set: "a set",
             ast.ListComp: "a comprehension", ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
             ast.GeneratorExp: "a comprehension", ast.Starred: "unpacking", ast.Await: "await", ast.Yield: "yield",
             ast.YieldFrom: "yield"}
    return names.get(kind, getattr(kind, "__name__", "this"))


def _operator(node, text: str) -> str:
    """The operator's own characters, as written between the operands."""
    between = text[node.left.end_col_offset : node.right.col_offset] if node.left.end_lineno == node.right.lineno else ""
    return repr(between.strip(" ()") or type(node.op).__name__)


# ----------------------------------------------------------------------------- one spelling


def to_text(node: Node) -> str:
    """The normalized text of a tree: single spaces around binary operators, no redundant
    parentheses, numbers in their shortest form (integral ones without a decimal point)."""
    op = node.op
    if op == "num":
        return _number(node.value)
    if op == "const":
        return node.value
    if op == "x":
        return VARIABLE
    if op == "param":
        return node.value
    if op == "neg":
        return "-" + _child(node.args[0], _PRECEDENCE["neg"], strict=True)
    if op in FUNCTIONS:
        return f"{op}({', '.join(to_text(a) for a in node.args)})"
    symbol = node.value if op == "compare" else op
    level = _PRECEDENCE[op]
    if op == "**":  # right-associative: a ** b ** c is a ** (b ** c); the base binds tighter than a sign
        return f"{_child(node.args[0], level, strict=True)} ** {_child(node.args[1], _PRECEDENCE['neg'], strict=False)}"
    # A comparison's operands are never comparisons unparenthesized: a > b > c would read as a chain.
    return f"{_child(node.args[0], level, strict=op == 'compare')} {symbol} {_child(node.args[1], level, strict=True)}"


def _child(node: Node, level: int, strict: bool) -> str:
    text = to_text(node)
    mine = _level(node)
    return f"({text})" if mine < level or (strict and mine == level) else text


def _level(node: Node) -> int:
    if node.op == "num" and node.value < 0:
        return _PRECEDENCE["neg"]
    return _PRECEDENCE.get(node.op, _ATOM)


def _number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def formula_label(text: str) -> str:
    """A short, stable name for a formula (run names, table rows): its first characters that a
    folder name can hold, then 8 hex digits of the SHA-256 of its normalized text."""
    readable = "".join(c if c.isalnum() or c in "._" else "-" for c in text)
    readable = "-".join(part for part in readable.split("-") if part)[:24].rstrip("-.")
    return f"{readable}-{formula_hash(text)}" if readable else formula_hash(text)


def formula_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------- computing


def evaluate(node: Node, x, values):
    """The formula's value at x (a tensor) with the parameters' `values` (numbers or tensors that
    broadcast against x)."""
    op = node.op
    if op == "x":
        return x
    if op == "num":
        return node.value
    if op == "const":
        return CONSTANTS[node.value]
    if op == "param":
        return values[node.value]
    if op == "where":
        condition, a, b = node.args
        return torch.where(_compare(condition, x, values), _tensor(evaluate(a, x, values), x), _tensor(evaluate(b, x, values), x))
    if op == "compare":
        return _compare(node, x, values).to(x.dtype)
    args = [evaluate(a, x, values) for a in node.args]
    if op in _ARITHMETIC:
        if not any(torch.is_tensor(a) for a in args):  # numbers alone: torch's arithmetic, not Python's (-8 ** 0.5)
            args[0] = _tensor(args[0], x)
        return _ARITHMETIC[op](*args)
    return _FUNCTIONS[op](*(_tensor(a, x) for a in args))


def _compare(node: Node, x, values):
    a, b = (evaluate(arg, x, values) for arg in node.args)
    return _COMPARE[node.value](_tensor(a, x), b)


def _tensor(value, like):
    return value if torch.is_tensor(value) else torch.tensor(value, dtype=like.dtype, device=like.device)


_ARITHMETIC = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "**": lambda a, b: a**b,
    "neg": lambda a: -a,
}
_COMPARE = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}
_FUNCTIONS = {
    **{name: (lambda name: lambda a: getattr(torch, name)(a))(name)
       for name in ("sigmoid", "tanh", "relu", "exp", "expm1", "log", "log1p", "erf", "abs", "sqrt", "sign", "sin", "cos", "atan", "asinh")},
    "softplus": lambda a: F.softplus(a),
    "minimum": lambda a, b: torch.minimum(a, b),
    "maximum": lambda a, b: torch.maximum(a, b),
    "clamp": lambda a, low, high: torch.clamp(a, low, high),
}


# ----------------------------------------------------------------------------- the init gain


# The second moment E[f(z)^2], z ~ N(0, 1), by the trapezoid rule on a fine grid rather than by
# Gauss-Hermite quadrature, which converges slowly at kinks such as ReLU's.
GAIN_GRID_HALF_WIDTH = 12.0  # the normal density beyond ±12 is below 1e-31
GAIN_GRID_POINTS = 240_001


def second_moment_gain(activation) -> float:
    """1 / sqrt(E[f(z)^2]) for z ~ N(0, 1): the weight scale (times 1/sqrt(fan_in)) that keeps a
    layer's pre-activations' second moment at 1 through f, as He's sqrt(2) does for ReLU (whose
    E[relu(z)^2] is 1/2). `activation` maps a float64 tensor of z values to f(z), elementwise.
    ValueError when the moment is 0 or not finite."""
    with torch.no_grad():
        z = torch.linspace(-GAIN_GRID_HALF_WIDTH, GAIN_GRID_HALF_WIDTH, GAIN_GRID_POINTS, dtype=torch.float64)
        density = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        moment = float(torch.trapezoid(activation(z).to(torch.float64) ** 2 * density, z))
    if not math.isfinite(moment) or moment <= 0:
        raise ValueError(f"E[f(z)^2] for z ~ N(0, 1) is {moment:g}")
    return 1.0 / math.sqrt(moment)
