#!/usr/bin/env bash
# Reproduce mybinder's steps for this repository in a fresh virtual environment, then run every
# notebook headless with no API key. Binder's image is Python 3.11 + pip; so is this.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build/binder-venv
rm -rf "$venv"
python3 -m venv "$venv"
# repo2docker: pip install -r binder/requirements.txt, then binder/postBuild, then binder/start.
# The same hashed requirements, installed with uv rather than pip: pip takes 30+ minutes here
# (it walks every package one by one), uv a minute, and both refuse any file whose hash differs.
"$venv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r requirements/bootstrap.txt
"$venv/bin/uv" pip install --python "$venv/bin/python" -r binder/requirements.txt
PATH="$PWD/$venv/bin:$PATH" bash binder/postBuild
unset OPENAI_API_KEY OPENAI_API_KEYS ANTHROPIC_API_KEY ANTHROPIC_API_KEYS
mkdir -p build/binder
PATH="$PWD/$venv/bin:$PATH" LLM_MAGIC_BUILD="$PWD/build/binder" \
  bash binder/start "$venv/bin/python" tools/demo.py
echo "binder-check: the notebooks ran in a Binder-like environment with no key"
