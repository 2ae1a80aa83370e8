# Octopus's Bash script helpers, defined before a step's script runs (see variables.rs).
__cuttle_b64() { printf '%s' "$1" | base64 -w0; }
set_octopusvariable() {
  local __cuttle_sensitive=""
  if [ "${3:-}" = "-sensitive" ]; then __cuttle_sensitive=" sensitive='$(__cuttle_b64 True)'"; fi
  echo "##octopus[setVariable name='$(__cuttle_b64 "$1")' value='$(__cuttle_b64 "${2:-}")'${__cuttle_sensitive}]"
}
fail_step() {
  if [ -n "${1:-}" ]; then echo "##octopus[resultMessage message='$(__cuttle_b64 "$1")']"; fi
  exit 1
}
__cuttle_write() { echo "##octopus[stdout-$1]"; echo "$2"; echo "##octopus[stdout-default]"; }
write_verbose() { __cuttle_write verbose "$1"; }
write_highlight() { __cuttle_write highlight "$1"; }
write_wait() { __cuttle_write wait "$1"; }
write_warning() { __cuttle_write warning "$1"; }
new_octopusartifact() {
  local __cuttle_path="$1"
  case "$__cuttle_path" in /*) ;; *) __cuttle_path="$PWD/$__cuttle_path" ;; esac
  echo "##octopus[createArtifact path='$(__cuttle_b64 "$__cuttle_path")' name='$(__cuttle_b64 "${2:-$(basename "$1")}")']"
}
