#!/usr/bin/env bash
# Train every measurable classic experiment (configs/seeds/, configs/activations/) and the dead-ReLU
# learning-rate scan into RUNS_DIR, then print the README table's figures (bench/seed_figures.py).
# Data: MNIST and Fashion-MNIST under $ACTEXP_DATA (CIFAR-100 is not measured here).
#   ACTEXP_DATA=/tmp/data bash bench/seeds.sh /tmp/diag-final
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/seeds}
PYTHON=${PYTHON:-python}
train() { echo "== actexp train $*"; "$PYTHON" -m actexp train "$@" --runs-dir "$RUNS" -q; }

for c in xor_linear xor_sigmoid xor_relu tf1_mnist_normal tf1_mnist_xavier wide_deep wide_deep_dropout \
         vanishing_sigmoid_xavier vanishing_relu_he vanishing_sigmoid_normal \
         dead_relu dead_relu_leaky dead_relu_bias001 dead_relu_adam dead_relu_adam_leaky dead_relu_adam_bias001 \
         fashion_l2_activity; do
  train "configs/seeds/$c.yaml"
done
for c in configs/activations/*.yaml; do
  train "$c"
done
# Where plain SGD starts to kill ReLUs, and where it blows up instead.
for lr in 0.3 0.4 0.45 0.6; do
  for c in dead_relu dead_relu_leaky dead_relu_bias001; do
    train "configs/seeds/$c.yaml" --set optim.lr=$lr --set name=seed_${c#seed_}_lr$lr
  done
done
"$PYTHON" bench/seed_figures.py "$RUNS"
