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
source "$(dirname "$0")/tool_env.sh"
VERSION=1.23.2

install_label_studio() {
  local dir=$1 username password token
  "$dir/bin/pip" install --disable-pip-version-check "label-studio==$VERSION" || return 1
  # the test user: a loopback-only Label Studio, so a fixed password and token are fine
  printf '{"username": "itaclip@example.com", "password": "itaclip-test-1", "token": "%s"}\n' \
    "$(python3 -c 'import secrets; print(secrets.token_hex(20))')" > "$dir/itaclip-user.json" || return 1
  read -r username password token < <(python3 -c 'import json, sys; u = json.load(open(sys.argv[1]))
print(u["username"], u["password"], u["token"])' "$dir/itaclip-user.json") || return 1
  LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false "$dir/bin/label-studio" init \
    --data-dir "$dir/data-template" --username "$username" --password "$password" --user-token "$token" \
    --enable-legacy-api-token
}

make_tool_env ITACLIP_LABEL_STUDIO_VENV "label-studio-$VERSION" "label-studio==$VERSION with data-template" install_label_studio
