#!/bin/bash
# The GPU probe (bench/gpu_probe.py; docs/benchmarks.md): one device call, timeout_s 480, carry
# [".gpu", ".whl"] (docs/benchmarks-history.md, "How to take them again"). Its phases stop
# within 420 s; each appends to "$OUT"/probe.txt and probe.jsonl as it ends, and a failed one
# its log's end. MODEL_LARGE=tiny MODEL_SMALL=tiny BOTS=2 BOT_TOKENS=0 runs it on a CPU (a check
# of the script: about a minute, and 30 s more for the compiled phase); SKIP="PHASE ..." skips.
set -u
OUT=${OUT:-/tmp/probe-out}
mkdir -p "$OUT"
# shellcheck source=bench/device.sh
. bench/device.sh
device_start "$OUT"/probe.txt boto3 moto wandb  # the many phase: S3 and W&B
TWEETS=job/samples/sourdough_sam.jsonl
TOKENIZER=""
if [ -f .gpu/tweets.jsonl ]; then  # andreruffert's real archive, cleaned by the job (make gpu-kit)
  TWEETS=.gpu/tweets.jsonl
  TOKENIZER="--tokenizer .gpu/tokenizer"
fi
# shellcheck disable=SC2086  # TOKENIZER is two words or none; SKIP is phase names or none
python3 bench/gpu_probe.py --out "$OUT" --tweets "$TWEETS" $TOKENIZER \
  --large "${MODEL_LARGE:-gpt2-xl}" --small "${MODEL_SMALL:-gpt2}" --bots "${BOTS:-10}" \
  --bot-tokens "${BOT_TOKENS:-300000}" --skip ${SKIP:-} 2>&1 \
  | grep -v "Loading weights\|Writing model shards"
