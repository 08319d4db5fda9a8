#!/bin/bash
# make gpu-kit: everything one device call needs, built here from this checkout, into ignored
# folders the device tool carries (docs/benchmarks.md, "The device scripts"):
#   .gpu/tokenizer  GPT-2's BPE files, for bases of GPT-2's vocabulary
#   .gpu/tweets.jsonl  andreruffert's real archive, cleaned here by the job (0.2 MB, not 3.4)
#   .whl/           the wheels the device's image lacks (peft included), at this venv's versions,
#                   for the device's Python (3.12): bench/device.sh installs them there
# Then it prints the call to make. SHARED: the folder beside the checkout (../shared).
set -euo pipefail
SHARED=${SHARED:-${HUGGINGTWEETS_SHARED:-../shared}}
PY=${PY:-.venv/bin/python}
# pure Python, or built for CPython 3.12 on manylinux: what `python -m job` imports past what
# the device's image has (torch, transformers, accelerate, typer, rich, jinja2, PyYAML, Pillow)
PACKAGES="pydantic pydantic_core annotated-types typing-inspection tenacity typing_extensions
  fonttools pytest pluggy iniconfig pygments packaging peft psutil"
# the probe's many phase as production runs (bench/gpu_probe.py): its output on S3, moto's
# server on loopback with the boto3 the job uploads with; and W&B offline, the model logged
PACKAGES="$PACKAGES moto boto3 botocore s3transfer jmespath werkzeug flask flask-cors xmltodict
  responses py-partiql-parser cryptography cffi pycparser python-dateutil six urllib3 requests
  idna charset-normalizer certifi blinker itsdangerous
  wandb protobuf platformdirs cwevals distro googleapis-common-protos httpcore httpx h11 sniffio
  xxhash opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions
  opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-common
  opentelemetry-exporter-http-transport opentelemetry-exporter-otlp-common"
rm -rf .gpu .whl
mkdir -p .gpu .whl
cp -r "$SHARED/tokenizers/gpt2" .gpu/tokenizer
"$PY" - "$SHARED/data/archives/andreruffert" <<'PY'
import shutil, sys, tempfile
from pathlib import Path
from job.config import JobConfig
from job.data.sources import ArchiveSource
from job.prepare import prepare
with tempfile.TemporaryDirectory() as tmp:
    prepare({"andreruffert": ArchiveSource(Path(sys.argv[1]))}, Path(tmp), JobConfig())
    shutil.copy(Path(tmp) / "andreruffert" / "data" / "clean.jsonl", ".gpu/tweets.jsonl")
PY
pins=()
for name in $PACKAGES; do
  pins+=("$name==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d .whl "${pins[@]}"
# botocore's wheel is 17 MB of every AWS service's API; the probe's S3 needs two (s3, and sts
# for credentials): the rest stays here, and wandb fits the carry beside it (0.9 MB, not 17)
"$PY" - .whl/botocore-*.whl <<'PY'
import sys, zipfile
from pathlib import Path
wheel = Path(sys.argv[1])
slim = wheel.with_suffix(".slim")
with zipfile.ZipFile(wheel) as whole, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as kept:
    for item in whole.infolist():
        parts = item.filename.split("/")
        if parts[:2] == ["botocore", "data"] and len(parts) > 3 and parts[2] not in ("s3", "sts"):
            continue
        kept.writestr(item, whole.read(item.filename))
slim.replace(wheel)
PY
size=$(du -sm .gpu .whl | awk '{s += $1} END {print s}')
if [ "$size" -gt 62 ]; then  # the device's carry holds 64 MiB in all
  echo "gpu-kit: .gpu and .whl are ${size} MiB: over what the carry holds" >&2
  exit 1
fi
echo "gpu-kit: .gpu and .whl, ${size} MiB of the carry's 64 ($(find .whl -name '*.whl' | wc -l) wheels)"
echo 'the call: run(command="bash bench/gpu_probe.sh", carry=[".gpu", ".whl"], timeout_s=480)'
