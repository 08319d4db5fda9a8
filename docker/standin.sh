#!/usr/bin/env bash
# A stand-in for the image's bases that this machine can make: a Debian root file system
# (debootstrap, from the distribution's mirror) imported into podman. It has what the CUDA
# devel base gives the build stage (Python, a C++ compiler) and none of CUDA. Made once;
# podman keeps it. Usage: docker/standin.sh [IMAGE]
set -euo pipefail
image="${1:-localhost/huggingtweets-standin:bookworm}"
if podman image exists "$image"; then
  echo "stand-in base: $image (kept from an earlier run)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "needs debootstrap: apt-get install debootstrap" >&2; exit 2; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
# A command run in the new root sees its own /tmp: this machine's TMPDIR (a test's folder,
# a job's) is no folder there, and update-ca-certificates' mktemp failed on it.
inside() { chroot "$root" env -u TMPDIR "$@"; }
debootstrap --variant=minbase \
  --include=python3,python3-venv,python3-dev,build-essential,ninja-build,ca-certificates,passwd \
  bookworm "$root" http://deb.debian.org/debian >/dev/null
# This machine's own certificate authorities (a proxy that inspects TLS, say) and pip's use of
# the system's bundle: the build's pip must reach PyPI as this machine's does. Machine set-up,
# not part of the image's recipe.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  inside update-ca-certificates >/dev/null
fi
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$root/etc/pip.conf"
# Ubuntu 24.04's images (and NVIDIA's CUDA images on them) come with a user `ubuntu` of uid
# 1000, the uid the image's own user must have: the stand-in has one too.
inside useradd --uid 1000 --create-home --shell /bin/bash ubuntu
tar -C "$root" -c . | podman import - "$image" >/dev/null
echo "stand-in base: $image"
