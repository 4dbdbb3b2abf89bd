#!/usr/bin/env bash
# Check the import contracts of .importlinter: the layers, their independence, and private names.
# import-linter reads the tree tools/stage.sh lays out as the package imports (it puts the working directory
# first on sys.path, so it runs from there); the contract type for private names is tools/import_contracts.py.
# PY picks the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
py="${PY:-python}"
case "$py" in */*) py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")" ;; esac  # a relative path, made absolute
staged="$(bash tools/stage.sh)"
cd "$staged"
PYTHONPATH="$staged:$root${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -c \
    'import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())' \
    "$root/.importlinter" --no-cache "$@"
