#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of the workspace,
# including the ones that load the Parquet output with Hugging Face `datasets`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh --python
export SPEECHMILL_PYTHON="$root/target/pyenv/bin/python"
# Tests that use external tools (promtool, the Python trace receiver) fail rather than skip.
export SPEECHMILL_REQUIRE_TOOLS=1
cargo test --workspace --no-fail-fast "$@"
