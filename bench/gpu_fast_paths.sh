#!/bin/bash
# The GPU fast paths of sampling, each against its switch turned off, on the device
# (docs/benchmarks.md; carry [".gpu", ".whl"] as bench/gpu.sh). Compiled training is the
# probe's (bench/gpu_probe.sh). One model (MODEL, default gpt2-xl at random weights), one job
# run per setting, the predict and train phases of each from its job.json. Estimated for
# gpt2-xl on one H100/H200 (not yet run there): ~60 s to build the base, ~60 s for the sync
# test, ~70 s a run (load, 1 epoch, save 6 GB, sample) x 3: about 5.5 minutes, timeout_s 420.
# MODEL=tiny runs the same on a CPU in about a minute (a check of the script, not a figure).
# Writes "$OUT"/fast_paths.txt, and "$OUT"/syncs.txt: the training step's reads back to the
# host, CUDA's own syncs included (tests/training/test_train.py, run on the device's GPU).
set -u
MODEL=${MODEL:-gpt2-xl}
OUT=${OUT:-/tmp/fast-paths}
mkdir -p "$OUT"
rm -rf /tmp/fp-hf
# shellcheck source=bench/device.sh
. bench/device.sh
device_start "$OUT"/fast_paths.txt pytest
export WANDB_MODE=disabled HF_HOME=/tmp/fp-hf
# --noconftest: the suite's conftest starts loopback servers this test does not need
timeout 120 python3 -m pytest --noconftest -q -p no:cacheprovider tests/training/test_train.py \
  -k reads_nothing_back 2>&1 | tail -15 | tee "$OUT"/syncs.txt
ARCHIVE=${ARCHIVE:-.gpu/archive}
TOKENIZER=${TOKENIZER:-.gpu/tokenizer}
python3 - "$MODEL" "$ARCHIVE" "$TOKENIZER" <<'PY'
import sys
from pathlib import Path
from job.config import JobConfig
from job.data.sources import ArchiveSource
from job.prepare import prepare
from job.training.model import GPT2, build_random
model, archive, tokenizer = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
data = prepare({"andreruffert": ArchiveSource(archive)}, Path("/tmp/fp-p"), JobConfig())
if model != "tiny":
    build_random(Path("/tmp/fp-base"), [t.text for t in data.tweets], tokenizer, 42, GPT2[model].arch)
PY
BASE=/tmp/fp-base
[ "$MODEL" = tiny ] && BASE=tiny
one() {  # name, then the run's extra flags
  local name=$1; shift
  rm -rf /tmp/fp-o
  if timeout 240 python3 -m job run andreruffert --jsonl /tmp/fp-p/andreruffert/data/clean.jsonl \
      --base-model "$BASE" --epochs 1 --out /tmp/fp-o "$@" > "/tmp/fp-$name.log" 2>&1; then
    python3 -c "
import json; j=json.load(open('/tmp/fp-o/andreruffert/job.json')); t=j['timings']; r=j['result']
print('$name: train %.1f s, predict %.1f s, steady %.0f tok/s, perplexity %.1f' % (t['train'], t['predict'], r['steady_tokens_per_second'], r['val_loss'] and __import__('math').exp(r['val_loss'])))
" | tee -a "$OUT"/fast_paths.txt
  else
    { echo "$name: failed"; tail -8 "/tmp/fp-$name.log"; } | tee -a "$OUT"/fast_paths.txt
  fi
}
one plain --sampling-precision fp32 --kv-cache dynamic
one bf16 --sampling-precision bf16 --kv-cache dynamic
one bf16-static --sampling-precision bf16 --kv-cache static  # eager: the probe compiles
rm -rf /tmp/fp-o /tmp/fp-base /tmp/fp-p /tmp/fp-hf  # gpt2-xl: 6 GB each, never left behind
