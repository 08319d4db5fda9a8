#!/bin/bash
# The recorded GPU benchmark (docs/benchmarks.md, "How to take them again"), sized to one
# device call under 8 minutes: gpt2 3 runs a side (~140 s), gpt2-xl 1 run a side (~130 s).
# Run on the device from the repository root with carry [".gpu", ".whl"]; results land in $OUT.
set -u
# shellcheck source=bench/device.sh
. bench/device.sh
device_start "$OUT"/log.txt
run() {  # model repeats limit
  local m=$1 r=$2 limit=$3 start=$SECONDS
  echo "== $m, repeats $r" | tee -a "$OUT"/log.txt
  timeout "$limit" python3 bench/bench.py --base-model "$m" --random-init --tokenizer .gpu/tokenizer \
    --archive .gpu/archive --handle andreruffert --out "/tmp/b-$m" --repeats "$r" --help-runs 2 --quality-epochs "" \
    2>&1 | grep -v "Warning\|warn(" | tail -25 | tee -a "$OUT"/log.txt
  echo "== $m took $((SECONDS - start)) s" | tee -a "$OUT"/log.txt
  if [ -f "/tmp/b-$m/results.json" ]; then cp "/tmp/b-$m/results.json" "$OUT/$m.json"
  else for f in "/tmp/b-$m"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; } >> "$OUT"/log.txt; done; fi
  rm -rf "/tmp/b-$m"  # gpt2-xl's runs: gigabytes a side
}
run gpt2 3 200
run gpt2-xl 1 200
