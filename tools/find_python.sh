#!/bin/sh
# Print the path of a Python >= 3.12 (what grok_flax needs: JAX >= 0.11 requires it).
# Looks at python3.13 / python3.12 / python3 on PATH (skipping pyenv shims that point at a
# version that is not active), then at pyenv-installed versions. Exits 1 with advice if none.
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
for name in python3.13 python3.12 python3; do
    path=$(command -v "$name" 2>/dev/null) || continue
    if ok "$path"; then
        "$path" -c 'import sys; print(sys.executable)'
        exit 0
    fi
done
root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
for dir in $(ls -d "$root"/versions/3.1[2-9]* 2>/dev/null | sort -t. -k2,2nr -k3,3nr); do
    for exe in "$dir"/bin/python3; do
        if [ -x "$exe" ] && ok "$exe"; then
            echo "$exe"
            exit 0
        fi
    done
done
echo "grok_flax needs Python >= 3.12 (JAX >= 0.11 requires it) and none was found." >&2
echo "Install one, e.g. 'pyenv install 3.12', 'apt-get install python3.12' or 'conda" >&2
echo "create -n grok_flax python=3.12', or run 'make PYTHON=/path/to/python3.12 ...'." >&2
exit 1
