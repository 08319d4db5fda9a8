#!/bin/bash
# Tokens per step for gpt2-xl on the device: steady-state tokens/s and MFU at 2k vs 8k tokens a
# step: 8 blocks of 256 (the default for one user's tweets), 32 blocks of 256 (the default's
# GPU-sized step, train.py batch_size) and 8 blocks of 1024. One device call, carry [".gpu",
# ".whl"], as bench/gpu.sh (docs/benchmarks.md); about 3 minutes. Writes "$OUT"/mfu.txt.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 3
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
python3 - <<'PY'
from pathlib import Path
from job.prepare import prepare
from job.config import JobConfig
from job.data.sources import ArchiveSource
from job.training.model import GPT2, build_random
data = prepare({"andreruffert": ArchiveSource(Path(".gpu/archive"))}, Path("/tmp/p"), JobConfig())
build_random(Path("/tmp/xl"), [t.text for t in data.tweets], Path(".gpu/tokenizer"), 42, GPT2["gpt2-xl"].arch)
PY
for run in "256 8" "256 32" "1024 8"; do
  set -- $run; b=$1; n=$2; o=/tmp/o$b-$n
  timeout 80 python3 -m job run andreruffert --jsonl /tmp/p/andreruffert/data/clean.jsonl --base-model /tmp/xl \
    --epochs 6 --block-size $b --batch-size $n --predictions-per-prompt 1 --max-length 24 --out $o > $o.log 2>&1
  python3 -c "
import json; r=json.load(open('$o/andreruffert/job.json'))['result']
n=1557611200; f=6*n+12*48*1600*$b
print('block $b x batch $n', 'steps', r['steps'], 'rate %.3g' % r['learning_rate'], 'steady tok/s', round(r['steady_tokens_per_second']), 'steady MFU %.1f%%' % (100*r['steady_tokens_per_second']*f/989e12), 'peak GiB %.1f' % (r['peak_memory_bytes']/2**30))
" | tee -a "$OUT"/mfu.txt || tail -5 $o.log | tee -a "$OUT"/mfu.txt
done
