"""What a formula activation costs against the built-in it equals: the time of one training step
(forward, backward, Adam) of the relu_xavier network (784-256-256-10, batch 100, one torch thread)
with silu vs `x * sigmoid(x)`, the learnable `x * sigmoid(beta * x)`, and mish vs
`x * tanh(softplus(x))`. Each figure is the median of ROUNDS rounds of STEPS steps, the variants
interleaved round by round (the machine is shared: compare figures of one invocation). Prints a
Markdown table. Run it from the repository root:

    python bench/formula_overhead.py [--rounds 7] [--steps 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from actexp.config import config_from_dict  # noqa: E402
from actexp.model import build_model  # noqa: E402

VARIANTS = {
    "silu (built-in)": "silu",
    "x * sigmoid(x)": {"expr": "x * sigmoid(x)"},
    "x * sigmoid(beta * x), beta learned": {"expr": "x * sigmoid(beta * x)", "beta": 1.0, "learn": ["beta"]},
    "mish (built-in)": "mish",
    "x * tanh(softplus(x))": {"expr": "x * tanh(softplus(x))"},
}


def step_seconds(model, optimizer, x, y, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = torch.randn(100, 784), torch.randint(0, 10, (100,))
    setups = {}
    for label, activation in VARIANTS.items():
        torch.manual_seed(0)
        model = build_model(config_from_dict({"model": {"activation": activation}}).model, 784, 10)
        setups[label] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))
        step_seconds(*setups[label], x, y, 20)  # warm-up
    times = {label: [] for label in VARIANTS}
    for _ in range(args.rounds):
        for label, (model, optimizer) in setups.items():
            times[label].append(step_seconds(model, optimizer, x, y, args.steps))
    print(f"| activation | ms per step (median of {args.rounds} rounds of {args.steps}) | vs its built-in |")
    print("|---|---:|---:|")
    for label, seconds in times.items():
        base = "silu (built-in)" if "sigmoid" in label or "silu" in label else "mish (built-in)"
        median = statistics.median(seconds)
        print(f"| {label} | {1000 * median:.3f} | {median / statistics.median(times[base]):.2f}x |")


if __name__ == "__main__":
    main()
