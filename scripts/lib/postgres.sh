# A PostgreSQL server of the script's own (issue 21): sourced by scripts/soak, scripts/demo,
# scripts/screenshot and scripts/statement-sample.
#
#   source scripts/lib/postgres.sh
#   pg_own_start                 # initdb in a temp directory under /tmp, pg_ctl start on a free port
#   pg_create_database NAME      # an empty database; PG_URL=postgresql://postgres@127.0.0.1:PORT/NAME
#   pg_crash                     # pg_ctl stop -m immediate (a crash as far as the data goes)
#   pg_start                     # start it again with its data (recovery replays the WAL)
#   pg_psql DB_OR_URL [psql args...]   # psql against it (or any URL), -X, stopping at the first error
#   pg_cpu_ticks                 # CPU ticks the server used so far, every process of it
#   pg_own_cleanup               # pg_ctl stop -m fast and remove the directory: call it from your EXIT trap
#
# Debian's server binaries (postgresql-15: /usr/lib/postgresql/*/bin, the newest) run as the
# invoking user, or as the `postgres` user when run as root (initdb refuses root): the directory
# is handed to that user. Trust authentication for the `postgres` role on 127.0.0.1 and a socket in
# the directory; nothing listens beyond 127.0.0.1. Set PG_KEEP=1 to leave the directory behind.
# The caller's own EXIT trap must call pg_own_cleanup (a script has one EXIT trap); if the
# caller has none when pg_own_start runs, one is set here.

PG_DIR= PG_PORT= PG_BIN= PG_URL= PG_STARTED=0

pg_bin_dir() { # the newest /usr/lib/postgresql/N/bin
  local v best=
  for v in /usr/lib/postgresql/*/bin; do
    [[ -x $v/initdb && -x $v/pg_ctl ]] || continue
    local n=${v#/usr/lib/postgresql/}; n=${n%/bin}
    [[ $n =~ ^[0-9]+$ ]] || continue
    if [[ -z $best ]] || (( n > ${best#*:} )); then best="$v:$n"; fi
  done
  [[ -n $best ]] || return 1
  echo "${best%:*}"
}

pg_as_server_user() { # runs a server binary as the user the server runs as
  if (( EUID == 0 )); then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pg_own_start() {
  PG_BIN=$(pg_bin_dir) || { echo "postgres: no PostgreSQL server under /usr/lib/postgresql (Debian's postgresql-15): run scripts/setup" >&2; return 69; }
  if (( EUID == 0 )) && ! id -u postgres >/dev/null 2>&1; then
    echo "postgres: running as root and there is no postgres user to run the server as (Debian's postgresql package makes it)" >&2; return 69
  fi
  # Under /tmp, not a per-user temporary folder: the postgres user must reach it.
  PG_DIR=$(mktemp -d /tmp/autovolt-pg-XXXXXX)
  chmod 755 "$PG_DIR"
  (( EUID == 0 )) && chown postgres: "$PG_DIR"
  if [[ -z $(trap -p EXIT) ]]; then trap pg_own_cleanup EXIT; fi
  if ! pg_as_server_user "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres --no-sync -E UTF8 --locale C \
      </dev/null >"$PG_DIR/initdb.log" 2>&1; then
    echo "postgres: initdb failed:" >&2; tail -n 20 "$PG_DIR/initdb.log" >&2; return 1
  fi
  PG_PORT=$(pg_free_port)
  pg_start
}

pg_start() { # (again) with its data; waits until it accepts connections
  local tries
  for tries in 1 2 3; do
    # Server output goes to its log; it inherits nothing else of ours (a pipe held open by the
    # server would keep a reader of our output waiting).
    if pg_as_server_user "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 120 \
        -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 ${PG_OPTIONS:-}" start </dev/null >>"$PG_DIR/pg_ctl.log" 2>&1; then
      PG_STARTED=1
      return 0
    fi
    # The port taken in between (by anything): another one, once the first start has failed.
    if grep -q 'could not bind\|Address already in use' "$PG_DIR/server.log" 2>/dev/null && (( tries < 3 )); then
      PG_PORT=$(pg_free_port); continue
    fi
    break
  done
  echo "postgres: pg_ctl start failed; the server's log:" >&2
  tail -n 20 "$PG_DIR/server.log" >&2 2>/dev/null
  return 1
}

pg_crash() { # the server killed: no checkpoint, its clients cut off
  pg_as_server_user "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop </dev/null >>"$PG_DIR/pg_ctl.log" 2>&1
  PG_STARTED=0
}

pg_stop() { # a clean shutdown
  (( PG_STARTED )) || return 0
  pg_as_server_user "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop </dev/null >>"$PG_DIR/pg_ctl.log" 2>&1 \
    || pg_crash
  PG_STARTED=0
}

pg_psql() { # pg_psql DATABASE|URL [psql arguments...]
  local db=$1; shift
  local psql=psql
  [[ -n $PG_BIN && -x $PG_BIN/psql ]] && psql=$PG_BIN/psql
  if [[ $db == postgres://* || $db == postgresql://* ]]; then
    "$psql" -X -v ON_ERROR_STOP=1 -d "$db" "$@"
  else
    "$psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" "$@"
  fi
}

pg_create_database() { # pg_create_database NAME: an empty database; sets PG_URL
  pg_psql postgres -q -c "CREATE DATABASE \"$1\"" >/dev/null || return 1
  PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/$1"
}

pg_postmaster_pid() { [[ -r $PG_DIR/data/postmaster.pid ]] && head -n 1 "$PG_DIR/data/postmaster.pid"; }

pg_cpu_ticks() { # "PID TICKS": the postmaster's own and its reaped children's ticks, plus its live children's
  local pm line rest total=0 stat
  local -a f
  pm=$(pg_postmaster_pid) || return 1
  for stat in /proc/[0-9]*/stat; do
    { read -r line <"$stat"; } 2>/dev/null || continue
    rest=${line##*) }
    read -r -a f <<<"$rest"   # f[0] is field 3 (state), f[1] the ppid; utime f[11], stime f[12], cutime f[13], cstime f[14]
    if [[ $stat == "/proc/$pm/stat" ]]; then
      total=$(( total + f[11] + f[12] + f[13] + f[14] ))
    elif [[ ${f[1]} == "$pm" ]]; then
      total=$(( total + f[11] + f[12] ))
    fi
  done
  echo "$pm $total"
}

pg_own_cleanup() {
  [[ -n $PG_DIR ]] || return 0
  pg_stop
  if [[ ${PG_KEEP:-0} == 1 ]]; then
    local as=; (( EUID == 0 )) && as="runuser -u postgres -- "
    echo "postgres: its directory is kept: $PG_DIR (start it with: $as$PG_BIN/pg_ctl -D $PG_DIR/data -l $PG_DIR/server.log -o \"-p $PG_PORT -k $PG_DIR\" start)" >&2
  else
    rm -rf "$PG_DIR"
  fi
  PG_DIR=
}
