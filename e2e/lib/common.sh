# shellcheck shell=bash
# Helpers the e2e scripts share. Sourced, not run (`. e2e/lib/common.sh` from the repository
# root); it leaves the shell's options (set -e...) as they are.
#
#   free_port                         prints a free TCP port on 127.0.0.1
#   wait_until SECONDS WHAT CMD...    runs CMD (output discarded) every 0.5 s until it succeeds;
#                                     after SECONDS prints "timed out waiting for WHAT" to stderr
#                                     and returns 1 (under set -e that ends the script)
# Clean-up at exit, undone in reverse order of registration (so a process started after its
# work directory was made is killed before that directory goes); each command's output is
# discarded and its failure ignored:
#   at_exit CMD...                    runs CMD at exit (a function too, e.g. for redirections)
#   track_pid PID                     kills PID and waits for it at exit
#   stop_pid PID                      kills PID and waits for it now; returns kill's status
#   stop_tracked_pids                 stop_pid for every tracked PID now, newest first, errors
#                                     ignored
#   temp_dir NAME                     sets $NAME to a new directory (mktemp -d), removed at exit
#                                     (`declare NAME` first: the linter cannot see the assignment)
# The first registration installs `trap _run_at_exit EXIT` and `trap "exit 143" TERM INT` (so
# that a kill runs the clean-up too, once the command in the foreground has returned): a script
# using these sets no EXIT trap of its own. Register from the script's own shell, not from a
# subshell such as $(...), whose registrations would be lost: at_exit refuses there.

[ -z "${_common_sh_sourced:-}" ] || return 0
_common_sh_sourced=1

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_until() { # seconds, description, command...
  local _wait_deadline=$((SECONDS + $1)) _wait_what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$_wait_deadline" ]; then
      echo "timed out waiting for $_wait_what" >&2
      return 1
    fi
    sleep 0.5
  done
}

_at_exit_commands=()   # shell-quoted command lines, oldest first
_at_exit_trapped=
_tracked_pids=()

at_exit() { # command...
  if [ "$BASHPID" != "$$" ]; then
    echo "at_exit: called in a subshell, where it would never run: $*" >&2
    return 1
  fi
  local _at_exit_line
  printf -v _at_exit_line '%q ' "$@"
  _at_exit_commands+=("$_at_exit_line")
  if [ -z "$_at_exit_trapped" ]; then
    trap _run_at_exit EXIT
    trap "exit 143" TERM INT
    _at_exit_trapped=1
  fi
}

_run_at_exit() {
  local i
  for ((i = ${#_at_exit_commands[@]} - 1; i >= 0; i--)); do
    eval "${_at_exit_commands[i]}" >/dev/null 2>&1 || true
  done
  _at_exit_commands=()
}

track_pid() { # pid
  at_exit _stop_if_tracked "$1" || return
  _tracked_pids+=("$1")
}

_untrack_pid() { # pid; fails when it was not tracked
  local i
  for i in "${!_tracked_pids[@]}"; do
    if [ "${_tracked_pids[i]}" = "$1" ]; then
      unset '_tracked_pids[i]'
      _tracked_pids=(${_tracked_pids[@]+"${_tracked_pids[@]}"})
      return 0
    fi
  done
  return 1
}

# At exit: a pid that stop_pid has already stopped is not killed again (it may be reused).
_stop_if_tracked() { # pid
  _untrack_pid "$1" || return 0
  kill "$1" && wait "$1"
}

stop_pid() { # pid
  _untrack_pid "$1" || true
  kill "$1" || return
  wait "$1" 2>/dev/null || true
}

stop_tracked_pids() {
  while [ ${#_tracked_pids[@]} -gt 0 ]; do
    stop_pid "${_tracked_pids[${#_tracked_pids[@]} - 1]}" 2>/dev/null || true
  done
}

temp_dir() { # name (no locals: any name is the caller's variable)
  set -- "$1" "$(mktemp -d)"
  [ -n "$2" ] || return 1
  at_exit rm -rf "$2" || { rmdir "$2"; return 1; }
  printf -v "$1" %s "$2"
}
