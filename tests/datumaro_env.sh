#!/usr/bin/env bash
# The virtual environment with datumaro — the dataset library CVAT imports "Segmentation mask 1.1"
# with — that tests/test_segment_at_scale.py reads itaclip's CVAT export in. Made once and reused;
# datumaro brings its own OpenCV build, so it never goes into itaclip's environment.
#
# Prints the environment's folder. Where: $ITACLIP_DATUMARO_VENV, else
# ${XDG_CACHE_HOME:-~/.cache}/itaclip-tests/datumaro-VERSION (outside the clone, shared by CI's clones).
set -euo pipefail
VERSION=1.13.12
DIR="${ITACLIP_DATUMARO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/itaclip-tests/datumaro-$VERSION}"
MARK="$DIR/itaclip-complete"
LOG="$DIR.log"
if [ "$(cat "$MARK" 2>/dev/null)" != "datumaro==$VERSION" ]; then
  rm -rf "$DIR"  # a half-made one (an interrupted install) is made again
  mkdir -p "$(dirname "$DIR")"
  { python3 -m venv "$DIR" && "$DIR/bin/pip" install --disable-pip-version-check "datumaro==$VERSION"; } > "$LOG" 2>&1 \
    || { tail -n 30 "$LOG" >&2; echo "datumaro_env.sh: failed, see $LOG" >&2; exit 1; }
  echo "datumaro==$VERSION" > "$MARK"
fi
echo "$DIR"
