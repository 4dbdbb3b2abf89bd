#!/usr/bin/env bash
# Type-check the package with mypy --strict.
#
# The installed package maps maker.agents, maker.workflows and maker.cluster onto the top-level
# folders agents/, workflows/ and cluster/ (pyproject.toml, [tool.setuptools.package-dir]); mypy
# cannot follow that mapping, so it checks a staged tree of symlinks laid out as the import names
# are: .typecheck/maker/ holds a link to every file of maker/ plus the three subpackages.
# Settings live in pyproject.toml ([tool.mypy]). PY picks the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
py="${PY:-python}"
case "$py" in */*) py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")" ;; esac  # a relative path, made absolute

rm -rf .typecheck/maker
mkdir -p .typecheck/maker
for f in maker/*; do
    [ -f "$f" ] && ln -s "$root/$f" ".typecheck/maker/$(basename "$f")"
done
for sub in agents workflows cluster; do
    ln -s "$root/$sub" ".typecheck/maker/$sub"
done

cd .typecheck
exec "$py" -m mypy --config-file "$root/pyproject.toml" --strict -p maker "$@"
