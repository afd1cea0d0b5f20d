#!/usr/bin/env bash
# The virtual environment with Label Studio that tests/test_label_studio_real.py drives, made once
# and reused (Label Studio pins its own Django stack: it never goes into itaclip's environment).
# Prints the environment's folder. Where: $ITACLIP_LABEL_STUDIO_VENV, else
# ${XDG_CACHE_HOME:-~/.cache}/itaclip-tests/label-studio-VERSION (outside the clone, so CI's fresh
# clones on one machine share it; pip's own cache makes a rebuild cheaper too).
set -euo pipefail
VERSION=1.23.2
DIR="${ITACLIP_LABEL_STUDIO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/itaclip-tests/label-studio-$VERSION}"
MARK="$DIR/itaclip-complete"
if [ "$(cat "$MARK" 2>/dev/null)" != "label-studio==$VERSION" ]; then
  rm -rf "$DIR"  # a half-made one (an interrupted install) is made again
  python3 -m venv "$DIR"
  "$DIR/bin/pip" install -q --disable-pip-version-check "label-studio==$VERSION" >&2
  echo "label-studio==$VERSION" > "$MARK"
fi
echo "$DIR"
