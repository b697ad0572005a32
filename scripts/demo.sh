#!/usr/bin/env bash
# The main job on the embedded default model: install into .venv (created or reused), put the
# default model (u2netp-student, packaged with cvmatte) in the cache and verify it, write the demo
# photos, cut them out into outputs/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[demo]'
.venv/bin/cvmatte models --fetch u2netp-student
.venv/bin/cvmatte samples demo
.venv/bin/cvmatte matte demo -o outputs --background white --canvas 800x800 "$@"
