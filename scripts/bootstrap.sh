#!/usr/bin/env bash
# Installs what Gridline needs on a fresh Debian machine: system packages (when we are
# root and they are missing), a virtualenv in .venv and the project itself.
#   scripts/bootstrap.sh        runtime only (with what PDF reports need: Pango and a Chinese font)
#   scripts/bootstrap.sh dev    plus test tools, espeak-ng/sox for test audio, the Korean Vosk model,
#                               Chromium, a CJK font and an emoji font for the browser tests, poppler-utils
#                               to check the PDF reports page by page, HAProxy for the deployment test
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"

need_apt=()
# PDF reports (WeasyPrint) draw text with Pango and need a Chinese font (a runtime feature).
for lib in libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0; do
  dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q "ok installed" || need_apt+=("$lib")
done
fc-list 2>/dev/null | grep -qi "wenquanyi zen hei" || need_apt+=(fonts-wqy-zenhei)
if [ "$mode" = dev ]; then
  # the PDF tests rasterise every page and read its text back
  command -v pdftoppm >/dev/null || need_apt+=(poppler-utils)
  command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)
  command -v sox >/dev/null || need_apt+=(sox)
  # the console's browser tests drive Debian's Chromium (never a browser download)
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
  # the deployment test runs two instances behind Debian's HAProxy with deploy/haproxy.cfg
  [ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null || need_apt+=(haproxy)
  # Chinese glyphs in the console's test screenshots
  fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk" || need_apt+=(fonts-wqy-microhei)
  # emoji (📍 🗺️ 📷 🎤 on the web chat's buttons) in the phone screenshot, not boxes
  fc-list 2>/dev/null | grep -qi "noto color emoji" || need_apt+=(fonts-noto-color-emoji)
fi
# Another apt or dpkg (automatic updates on a fresh Debian machine) may hold the package
# locks: wait for them up to GRIDLINE_APT_LOCK_WAIT seconds rather than fail at once.
# apt-get install waits by itself (DPkg::Lock::Timeout); apt-get update (apt 2.6) ignores
# that option for the package lists' lock, so it is tried again while the lock is held.
lock_wait="${GRIDLINE_APT_LOCK_WAIT:-600}"
apt_update() {
  local deadline=$((SECONDS + lock_wait)) out told=""
  until out=$(LC_ALL=C apt-get -o DPkg::Lock::Timeout="$lock_wait" update -qq 2>&1); do
    if ! grep -q "Could not get lock" <<<"$out" || [ "$SECONDS" -ge "$deadline" ]; then
      printf '%s\n' "$out" >&2
      return 1
    fi
    [ -n "$told" ] || echo "bootstrap: another apt/dpkg process holds the package lists; waiting (up to ${lock_wait}s)"
    told=1
    sleep 2
  done
  [ -z "$out" ] || printf '%s\n' "$out"
}
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_update
    apt-get -o DPkg::Lock::Timeout="$lock_wait" install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: please install ${need_apt[*]} (needs root)" >&2
    exit 1
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.gridline-$mode-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if [ "$mode" = dev ]; then
    .venv/bin/python -m pip install -q -e '.[dev]'
  else
    .venv/bin/python -m pip install -q -e .
  fi
  touch "$stamp"
fi
