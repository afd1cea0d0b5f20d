#!/usr/bin/env bash
# The virtual environment with Label Studio that tests/test_label_studio_real.py drives, made once
# and reused: Label Studio pins its own Django stack, so it never goes into itaclip's environment.
# Beside it, an initialised data folder (database migrated, one user with an API token), which a
# test copies: Label Studio then starts in seconds instead of migrating for a minute or two.
#
# Prints the environment's folder. Where: $ITACLIP_LABEL_STUDIO_VENV, else
# ${XDG_CACHE_HOME:-~/.cache}/itaclip-tests/label-studio-VERSION — outside the clone, so CI's fresh
# clones on one machine share it (pip's own cache makes a rebuild cheaper too).
set -euo pipefail
VERSION=1.23.2
DIR="${ITACLIP_LABEL_STUDIO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/itaclip-tests/label-studio-$VERSION}"
MARK="$DIR/itaclip-complete"
LOG="$DIR.log"
if [ "$(cat "$MARK" 2>/dev/null)" != "label-studio==$VERSION with data-template" ]; then
  rm -rf "$DIR"  # a half-made one (an interrupted install) is made again
  mkdir -p "$(dirname "$DIR")"
  {
    python3 -m venv "$DIR"
    "$DIR/bin/pip" install --disable-pip-version-check "label-studio==$VERSION"
    # the test user: a loopback-only Label Studio, so a fixed password and token are fine
    printf '{"username": "itaclip@example.com", "password": "itaclip-test-1", "token": "%s"}\n' \
      "$(python3 -c 'import secrets; print(secrets.token_hex(20))')" > "$DIR/itaclip-user.json"
    read -r USERNAME PASSWORD TOKEN < <(python3 -c 'import json, sys; u = json.load(open(sys.argv[1]))
print(u["username"], u["password"], u["token"])' "$DIR/itaclip-user.json")
    LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false "$DIR/bin/label-studio" init \
      --data-dir "$DIR/data-template" --username "$USERNAME" --password "$PASSWORD" --user-token "$TOKEN" \
      --enable-legacy-api-token
  } > "$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; echo "label_studio_env.sh: failed, see $LOG" >&2; exit 1; }
  echo "label-studio==$VERSION with data-template" > "$MARK"
fi
echo "$DIR"
