#!/usr/bin/env bash
# Installs what cross-building the runtime for aarch64 (Raspberry Pi 4/5) and running it under emulation needs:
# the Rust target, Debian's aarch64 cross gcc + glibc (the linker; tract's assembly kernels and onig's C are built
# with it) and qemu-user (the runner `.cargo/config.toml` names). Idempotent: every step is skipped when already
# done, so CI and developers can call it on every run. Each failure names the step and what to try.
set -euo pipefail
cd "$(dirname "$0")/.."

target="aarch64-unknown-linux-gnu"
# Debian package → the command it provides (checked instead of dpkg so a manual install elsewhere counts too).
declare -A debs=(
  [gcc-aarch64-linux-gnu]=aarch64-linux-gnu-gcc
  [libc6-dev-arm64-cross]=/usr/aarch64-linux-gnu/lib/libc.so.6
  [qemu-user]=qemu-aarch64
)

fail() {
  echo "setup-aarch64: FAILED: $*" >&2
  exit 1
}

have() {
  case "$1" in
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

# 1. The Rust standard library for the target.
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "setup-aarch64: rustup target add $target" >&2
  rustup target add "$target" >&2 ||
    fail "rustup target add $target (needs the rustup toolchain and access to its distribution server)"
fi

# 2. Debian packages.
missing=()
for pkg in "${!debs[@]}"; do
  have "${debs[$pkg]}" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || fail "missing ${missing[*]} and no apt-get: install them with your package manager"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || fail "missing ${missing[*]}: run as root or install sudo"
    sudo="sudo"
  fi
  echo "setup-aarch64: apt-get install ${missing[*]}" >&2
  $sudo apt-get update -qq >&2 || fail "apt-get update (is the Debian mirror reachable?)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    fail "apt-get install ${missing[*]}"
  for pkg in "${missing[@]}"; do
    have "${debs[$pkg]}" || fail "$pkg installed but ${debs[$pkg]} is still missing"
  done
fi

# 3. The emulator must know the Pi CPU models (QEMU >= 7.1 has cortex-a76).
cpus="$(qemu-aarch64 -cpu help 2>/dev/null || true)"
for cpu in cortex-a72 cortex-a76; do
  grep -qw "$cpu" <<<"$cpus" || fail "qemu-aarch64 does not know -cpu $cpu (needs QEMU >= 7.1)"
done
