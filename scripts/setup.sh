# Shared by scripts/demo and scripts/test: installs what a fresh Debian or Ubuntu
# machine lacks. Sourced, not run.

# Debian packages the VM tests and the demo need: QEMU, a kernel, busybox and
# dropbear for the tiny test guest, and qemu-img for overlays.
VM_PACKAGES=(qemu-system-x86 qemu-utils linux-image-amd64 busybox-static dropbear-bin openssh-sftp-server bash xorriso kmod cpio ca-certificates git)

log() { echo "setup: $*" >&2; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

# ensure_packages PKG... — apt-get installs the ones that are missing.
ensure_packages() {
    local missing=() pkg sudo=""
    for pkg in "$@"; do
        installed "$pkg" || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    # Another apt (for example .ci/services.sh) may hold the lock: wait for it.
    while pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null; do sleep 1; done
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# ensure_rust — cargo 1.95 or newer (the workspace's rust-version).
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        log "cargo not found: installing rustup from the distribution"
        ensure_packages rustup gcc
        rustup default stable >&2
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
}

# ensure_cargo_audit — cargo-audit, for the dependency audit (.ci/audit.sh). Built from
# crates.io with its own lock file the first time (several minutes: it compiles), then
# kept in ~/.cargo/bin. Its build goes to a temporary directory, not the workspace's.
ensure_cargo_audit() {
    cargo audit --version >/dev/null 2>&1 && return 0
    log "installing cargo-audit from crates.io (compiled once)"
    env -u CARGO_TARGET_DIR cargo install --locked cargo-audit >&2
}

# One target directory for the demo, the tests and CI, outside the checkout, so a
# second run (or a fresh clone on the same machine) does not rebuild everything.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/solstice-target}"
