#!/usr/bin/env bash
# Type-check the package with mypy --strict, on the tree tools/stage.sh lays out as the package imports.
# Settings live in pyproject.toml ([tool.mypy]). PY picks the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
py="${PY:-python}"
case "$py" in */*) py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")" ;; esac  # a relative path, made absolute
staged="$(bash tools/stage.sh)"
cd "$staged"
exec "$py" -m mypy --config-file "$root/pyproject.toml" --strict -p maker "$@"
