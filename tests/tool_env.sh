# Sourced by tests/label_studio_env.sh and tests/datumaro_env.sh: an annotation tool's virtual
# environment, made once outside the clone and reused while its completion mark matches.
#
#   make_tool_env VAR NAME MARK SETUP — the environment's folder DIR is $VAR, else
#   ${XDG_CACHE_HOME:-~/.cache}/itaclip-tests/NAME (outside the clone, so CI's fresh clones on one
#   machine share it; tests/helpers/tool_envs.py looks in the same place). If DIR/itaclip-complete
#   does not say MARK, DIR is remade: a fresh venv, then the function SETUP with DIR as its argument
#   (output to DIR.log; a failure prints the log's tail and exits 1). Prints DIR.

make_tool_env() {
  local dir=${!1:-${XDG_CACHE_HOME:-$HOME/.cache}/itaclip-tests/$2} mark=$3 setup=$4
  if [ "$(cat "$dir/itaclip-complete" 2>/dev/null)" != "$mark" ]; then
    rm -rf "$dir"  # a half-made one (an interrupted install) is made again
    mkdir -p "$(dirname "$dir")"
    # `&&` inside: errexit does not apply in a command list followed by `||`
    { python3 -m venv "$dir" && "$setup" "$dir"; } > "$dir.log" 2>&1 \
      || { tail -n 30 "$dir.log" >&2; echo "$(basename "$0"): failed, see $dir.log" >&2; exit 1; }
    echo "$mark" > "$dir/itaclip-complete"
  fi
  echo "$dir"
}
