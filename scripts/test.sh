#!/usr/bin/env bash
# Runs every test of the project. Device-node tests need root (mknod).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --all-targets
