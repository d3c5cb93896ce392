# Shared set-up for scripts/run, scripts/test and scripts/bench.
# shellcheck shell=bash
: "${GLANCEFS_CACHE:=/root/.cache/glancefs}"
VENV="${GLANCEFS_VENV:-$PWD/.venv}"
export GLANCEFS_CACHE

SYSTEM_PACKAGES=(fuse3 libfuse3-dev pkg-config attr qemu-utils genisoimage file curl rsync gcc python3-dev python3-venv man-db groff-base)

install_system_packages() {
    local missing=()
    for pkg in "${SYSTEM_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing system packages: ${missing[*]}" >&2
        if [ "$(id -u)" != 0 ]; then
            echo "glancefs: run as root to install ${missing[*]}" >&2
            return 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

python_for_venv() {
    # The interpreter on PATH (pyenv's here), else Debian's.
    command -v python3
}

ensure_project_venv() {
    local stamp="$VENV/.glancefs-installed"
    local want
    want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    echo "== installing glancefs and its Python dependencies into $VENV" >&2
    [ -x "$VENV/bin/python" ] || "$(python_for_venv)" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -c "import glancefs, pyfuse3, trio, pytest" 
    echo "$want" > "$stamp"
}

ensure_glance_venv() {
    echo "== preparing the local Glance (glance from PyPI)" >&2
    PYTHONPATH="$PWD" "$VENV/bin/python" -c "from glancefs.testing.glance_server import ensure_glance_venv; print(ensure_glance_venv())" >&2
}
