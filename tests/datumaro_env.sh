#!/usr/bin/env bash
# The virtual environment with datumaro — the dataset library CVAT imports "Segmentation mask 1.1"
# with — that tests/test_segment_at_scale.py reads itaclip's CVAT export in. Made once and reused;
# datumaro brings its own OpenCV build, so it never goes into itaclip's environment.
#
# Prints the environment's folder. Where: $ITACLIP_DATUMARO_VENV, else
# ${XDG_CACHE_HOME:-~/.cache}/itaclip-tests/datumaro-VERSION (outside the clone, shared by CI's clones).
set -euo pipefail
source "$(dirname "$0")/tool_env.sh"
VERSION=1.13.12

install_datumaro() {
  "$1/bin/pip" install --disable-pip-version-check "datumaro==$VERSION"
}

make_tool_env ITACLIP_DATUMARO_VENV "datumaro-$VERSION" "datumaro==$VERSION" install_datumaro
