#!/usr/bin/env bash
# Runs every test of the project: the Rust tests (unit, fixtures, hostile input,
# daemon, subcommands), then the manifest tests (tests/k8s) with pinned tools that
# this script installs into target/pyenv. Device-node tests need root (mknod).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --all-targets

venv=target/pyenv
stamp="$venv/.requirements"
if ! cmp -s tests/k8s/requirements.txt "$stamp" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/k8s/requirements.txt
  cp tests/k8s/requirements.txt "$stamp"
fi
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/k8s
