#!/usr/bin/env bash
# Lay the package out as it is imported, for tools that read source trees rather than import hooks.
#
# The installed package maps maker.agents, maker.workflows and maker.cluster onto the top-level folders
# agents/, workflows/ and cluster/ (pyproject.toml, [tool.setuptools.package-dir]). mypy and import-linter
# walk folders and cannot follow that mapping, so they read .staged/maker/: real folders holding a link to
# every source file, with the three subpackages in place. Prints the staged folder's path.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
rm -rf .staged
mkdir -p .staged/maker
link_tree() {  # link_tree SRC DEST: DEST gets SRC's folders, and a link to each of its .py/.pyi/typed files
    local src="$1" dest="$2"
    (cd "$src" && find . -name __pycache__ -prune -o -type f \( -name '*.py' -o -name '*.pyi' -o -name py.typed \) -print) |
        while read -r f; do
            mkdir -p "$dest/$(dirname "$f")"
            ln -s "$root/$src/${f#./}" "$dest/$f"
        done
}
link_tree maker .staged/maker
for sub in agents workflows cluster; do
    link_tree "$sub" ".staged/maker/$sub"
done
echo "$root/.staged"
