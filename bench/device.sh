# shellcheck shell=bash
# The device scripts' shared start (bench/gpu.sh, gpu_probe.sh, gpu_fast_paths.sh): sourced, not
# run. Installs the wheels the device's image lacks (carried in .whl/, built here by the
# developer) where a module the job needs is missing, puts them and the checkout on PYTHONPATH,
# and says what the run is on: the card, the driver, torch and transformers, the commit, to
# "$1" (appended). Exit 3 where the wheels cannot be installed.
device_start() {  # LOG [MODULE...]: MODULE, a module the script needs besides the job's
  local log=$1
  shift
  # Found, not imported: importing them (peft brings torch and transformers, wandb its own
  # stack) took 6 s of each call on the dev machine.
  if ! python3 -c "import importlib.util as u, sys; sys.exit(any(not u.find_spec(m) for m in sys.argv[1:]))" \
      pydantic tenacity fontTools peft "$@" 2>/dev/null; then  # the device's image
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 3
    export PYTHONPATH=/tmp/site:$PWD
  fi
  export PYTHONUNBUFFERED=1
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"; } | tee -a "$log"
}
