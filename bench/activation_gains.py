"""The init gain of every built-in elementwise activation two ways: torch's calculate_gain (what
actexp gives the built-ins: components.activation_gain, sqrt(2) where torch has none) and the
second-moment gain that a formula's or a plugin's `gain: auto` computes (formula.second_moment_gain:
1/sqrt(E[f(z)^2]) for z ~ N(0, 1)), with their ratio. Prints a Markdown table (docs/activations.md
holds it). Run it from the repository root:

    python bench/activation_gains.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from actexp.components import ACTIVATIONS, activation_gain  # noqa: E402
from actexp.config import component_defaults  # noqa: E402
from actexp.formula import second_moment_gain  # noqa: E402


def main() -> None:
    print("| activation | calculate_gain (built-ins) | gain: auto | auto / calculate_gain |")
    print("|---|---:|---:|---:|")
    for name, factory in ACTIVATIONS.items():
        if name == "maxout":  # not elementwise: no gain of one unit's input
            continue
        params = component_defaults(factory)
        module = factory(**params)
        with torch.no_grad():
            auto = second_moment_gain(lambda z: module(z.float()))
        torch_gain = activation_gain(name, params)
        print(f"| {name} | {torch_gain:.4f} | {auto:.4f} | {auto / torch_gain:.3f} |")


if __name__ == "__main__":
    main()
