#!/usr/bin/env bash
# Train every measurable classic experiment (configs/seeds/, configs/activations/) and the dead-ReLU
# learning-rate scan into RUNS_DIR, print the README table's figures (bench/seed_figures.py), then
# train the seed configs with seeds 0, 1 and 2 and print their test accuracy, mean ± sd.
# Data: MNIST and Fashion-MNIST under $ACTEXP_DATA (CIFAR-100 is not measured here).
#   ACTEXP_DATA=/tmp/data bash bench/seeds.sh /tmp/diag-final
#   ACTEXP_DATA=/tmp/data bash bench/seeds.sh /tmp/seeds3 seeds     # the 3-seed table only
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/seeds}
ONLY=${2:-}
PYTHON=${PYTHON:-python}
MEASURABLE=(xor_linear xor_sigmoid xor_relu tf1_mnist_normal tf1_mnist_xavier wide_deep wide_deep_dropout
            vanishing_sigmoid_xavier vanishing_relu_he vanishing_sigmoid_normal
            dead_relu dead_relu_leaky dead_relu_bias001 dead_relu_adam dead_relu_adam_leaky dead_relu_adam_bias001
            fashion_l2_activity)
train() { echo "== actexp train $*"; "$PYTHON" -m actexp train "$@" --runs-dir "$RUNS" -q; }

# The measurable seed configs as one folder sweep (RUNS_DIR/seed_configs/), seeds 0, 1 and 2, each
# config's seeds trained as one fused group (bit for bit its solo runs); running it again resumes.
three_seeds() {
  local dir
  dir="$(mktemp -d)/seed_configs"
  mkdir "$dir"
  for c in "${MEASURABLE[@]}"; do cp "configs/seeds/$c.yaml" "$dir/"; done
  echo "== actexp sweep seed_configs/ --seeds 0,1,2 --jobs 2"
  "$PYTHON" -m actexp sweep "$dir" --seeds 0,1,2 --jobs 2 --runs-dir "$RUNS" -q
  rm -r "$(dirname "$dir")"
  "$PYTHON" bench/seed_figures.py --seeds "$RUNS/seed_configs"
}

if [ "$ONLY" = seeds ]; then
  three_seeds
  exit
fi

for c in "${MEASURABLE[@]}"; do
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
three_seeds
