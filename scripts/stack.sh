#!/usr/bin/env bash
# The private local stack: PostgreSQL 15, Redis, nginx and hypervisord under $HV_STATE_DIR.
#
#   scripts/stack.sh postgres-start | postgres-stop | postgres-url
#   scripts/stack.sh redis-start | redis-stop
#   scripts/stack.sh nginx-start | nginx-stop | nginx-reload
#   scripts/stack.sh secret | free-port | stop | run
#   scripts/stack.sh hvctl COMMAND…   (hvctl with the stack's configuration, while `run` runs)
#
# Settings come from the environment, then from ./.env, then defaults:
#   HV_STATE_DIR (./var, made absolute), HV_PORT (8000), HV_LISTEN (the FastCGI socket nginx
#   talks to), HV_PG_SHARED_BUFFERS (256MB), HV_PG_MAX_CONNECTIONS (200), HV_BIN (hypervisord).
# Layout: $HV_STATE_DIR/{postgres,redis,run,log,nginx,jwt_secret}; see docs/operations.md.
# Success is silent except for `postgres-url`, `secret`, `free-port` and `run`'s banner.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(dirname "$SCRIPT_DIR")
PG_BIN=/usr/lib/postgresql/15/bin
SOCKET_PATH_MAX=107 # sizeof(sockaddr_un.sun_path) - 1 on Linux
DB_NAME=hypervisor
DB_ROLE=hypervisor

die() {
    echo "stack.sh: $*" >&2
    exit 1
}

# Prints KEY's value from ./.env (last assignment wins; optional `export`, quotes stripped).
dotenv_get() {
    [[ -f .env ]] || return 0
    local line value=""
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line#"${line%%[![:space:]]*}"}"
        line="${line#export }"
        [[ "$line" == "$1="* ]] || continue
        value="${line#*=}"
        value="${value%"${value##*[![:space:]]}"}"
        if [[ "$value" == \"*\" || "$value" == \'*\' ]]; then
            value="${value:1:${#value}-2}"
        fi
    done <.env
    printf '%s' "$value"
}

# Prints the setting KEY: the environment wins, then ./.env, then DEFAULT. Empty means unset.
setting() {
    local value="${!1:-}"
    [[ -n "$value" ]] || value=$(dotenv_get "$1")
    [[ -n "$value" ]] || value="${2:-}"
    printf '%s' "$value"
}

STATE_DIR=$(realpath -m -- "$(setting HV_STATE_DIR ./var)")
HV_PORT=$(setting HV_PORT 8000)
[[ "$HV_PORT" =~ ^[0-9]+$ ]] && ((HV_PORT > 0 && HV_PORT < 65536)) || die "HV_PORT must be a TCP port (got \"$HV_PORT\")"
RUN_DIR=$STATE_DIR/run
LOG_DIR=$STATE_DIR/log
PG_DATA=$STATE_DIR/postgres
REDIS_DIR=$STATE_DIR/redis
NGINX_DIR=$STATE_DIR/nginx
NGINX_CONF=$NGINX_DIR/nginx.conf
NGINX_PID=$RUN_DIR/nginx.pid
REDIS_SOCK=$RUN_DIR/redis.sock
REDIS_PID=$RUN_DIR/redis.pid
HV_PID_FILE=$RUN_DIR/hypervisord.pid
SECRET_FILE=$STATE_DIR/jwt_secret

# --- helpers -------------------------------------------------------------------------------

# Fails clearly when a socket under $RUN_DIR would not fit in sockaddr_un.
check_socket_paths() {
    local longest=$RUN_DIR/hypervisor.sock # longer than .s.PGSQL.5432 and redis.sock
    if ((${#longest} > SOCKET_PATH_MAX)); then
        die "HV_STATE_DIR is too long for unix sockets: $longest is ${#longest} bytes (limit $SOCKET_PATH_MAX); use a shorter HV_STATE_DIR, e.g. /tmp/hv"
    fi
}

# The unprivileged account PostgreSQL, Redis and nginx's workers run as (PostgreSQL refuses root).
SVC_USER=""
service_user() {
    [[ -n "$SVC_USER" ]] && return
    if ((EUID != 0)); then
        SVC_USER=$(id -un)
    elif id -u postgres >/dev/null 2>&1; then
        SVC_USER=postgres
    else
        if ! id -u hypervisor >/dev/null 2>&1; then
            useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin hypervisor 2>/dev/null || id -u hypervisor >/dev/null 2>&1 ||
                die "could not create the system user hypervisor"
        fi
        SVC_USER=hypervisor
    fi
    SVC_GROUP=$(id -gn "$SVC_USER")
}

# Runs a command as the service user, from a directory it can enter.
as_service() {
    service_user
    if ((EUID == 0)); then
        (cd "$STATE_DIR" && runuser -u "$SVC_USER" -- "$@")
    else
        (cd "$STATE_DIR" && "$@")
    fi
}

# Creates the state layout; run/, log/ and redis/ belong to the service user.
prepare_dirs() {
    service_user
    mkdir -p "$STATE_DIR" "$RUN_DIR" "$LOG_DIR" "$NGINX_DIR" "$REDIS_DIR"
    chmod 755 "$STATE_DIR" "$RUN_DIR" "$LOG_DIR"
    if ((EUID == 0)); then
        chown "$SVC_USER:$SVC_GROUP" "$RUN_DIR" "$LOG_DIR" "$REDIS_DIR"
        chmod 700 "$REDIS_DIR"
        if ! runuser -u "$SVC_USER" -- test -x "$RUN_DIR" -a -w "$RUN_DIR" 2>/dev/null; then
            die "user $SVC_USER cannot reach $STATE_DIR (a parent directory is not traversable); chmod o+x the parents or use HV_STATE_DIR under /tmp"
        fi
    fi
}

# True when the pid in FILE is alive and its command name starts with NAME.
pid_alive() {
    local file=$1 name=$2 pid comm
    [[ -s "$file" ]] || return 1
    pid=$(<"$file")
    pid=${pid//[^0-9]/}
    [[ -n "$pid" ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ "$comm" == "$name"* ]]
}

# True while PID exists and is not a zombie waiting for its parent to reap it.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ "${stat:0:1}" != Z ]]
}

# Waits up to SECONDS for PID to disappear; returns 1 if it is still there.
wait_gone() {
    local pid=$1 seconds=$2 i
    for ((i = 0; i < seconds * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    ! alive "$pid"
}

show_tail() {
    [[ -s "$1" ]] || return 0
    echo "--- last lines of $1 ---" >&2
    tail -n "${2:-30}" "$1" >&2
}

urlencode() {
    local s=$1 out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case "$c" in
        [A-Za-z0-9/._~-]) out+=$c ;;
        *) out+=$(printf '%%%02X' "'$c") ;;
        esac
    done
    printf '%s' "$out"
}

# --- PostgreSQL ----------------------------------------------------------------------------

pg_ctl_() { as_service "$PG_BIN/pg_ctl" -D "$PG_DATA" "$@"; }

postgres_running() {
    [[ -s "$PG_DATA/PG_VERSION" ]] && pg_ctl_ status >/dev/null 2>&1
}

postgres_start() {
    check_socket_paths
    prepare_dirs
    [[ -x "$PG_BIN/postgres" ]] || die "PostgreSQL 15 is not installed (run scripts/deps.sh)"
    if [[ ! -s "$PG_DATA/PG_VERSION" ]]; then
        rm -rf "$PG_DATA"
        mkdir -m 700 "$PG_DATA"
        ((EUID == 0)) && chown "$SVC_USER:$SVC_GROUP" "$PG_DATA"
        if ! as_service "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth-local=trust \
            --auth-host=reject -E UTF8 --locale=C.UTF-8 >"$LOG_DIR/postgres-initdb.log" 2>&1; then
            show_tail "$LOG_DIR/postgres-initdb.log"
            rm -rf "$PG_DATA"
            die "initdb failed"
        fi
        echo "include_if_exists = 'hypervisor.conf'" >>"$PG_DATA/postgresql.conf"
    fi
    # Rewritten on every start so the settings (and the socket folder) follow this script.
    cat >"$PG_DATA/hypervisor.conf" <<EOF
# Written by scripts/stack.sh on every postgres-start; edits here are lost.
listen_addresses = ''
port = 5432
unix_socket_directories = '$RUN_DIR'
unix_socket_permissions = 0700
max_connections = $(setting HV_PG_MAX_CONNECTIONS 200)
shared_buffers = $(setting HV_PG_SHARED_BUFFERS 256MB)
effective_cache_size = 1GB
work_mem = 4MB
maintenance_work_mem = 64MB
wal_buffers = 16MB
min_wal_size = 80MB
max_wal_size = 1GB
wal_init_zero = off
checkpoint_completion_target = 0.9
random_page_cost = 1.1
effective_io_concurrency = 200
fsync = on
synchronous_commit = on
full_page_writes = on
idle_in_transaction_session_timeout = 60s
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = 1s
log_lock_waits = on
timezone = 'UTC'
EOF
    ((EUID == 0)) && chown "$SVC_USER:$SVC_GROUP" "$PG_DATA/hypervisor.conf"
    if ! postgres_running; then
        if ! pg_ctl_ -l "$LOG_DIR/postgres.log" -w -t 60 -s start >/dev/null 2>&1; then
            show_tail "$LOG_DIR/postgres.log"
            die "PostgreSQL did not start (log: $LOG_DIR/postgres.log)"
        fi
    fi
    psql -X -q -h "$RUN_DIR" -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null <<EOF ||
SELECT 'CREATE ROLE $DB_ROLE LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_ROLE')\gexec
SELECT 'CREATE DATABASE $DB_NAME OWNER $DB_ROLE' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB_NAME')\gexec
EOF
        die "could not create the role and database $DB_NAME"
}

postgres_stop() {
    postgres_running || return 0
    pg_ctl_ -w -t 60 -s stop -m fast >/dev/null || die "PostgreSQL did not stop (log: $LOG_DIR/postgres.log)"
}

postgres_url() {
    printf 'postgresql:///%s?host=%s&user=%s\n' "$DB_NAME" "$(urlencode "$RUN_DIR")" "$DB_ROLE"
}

# --- Redis ---------------------------------------------------------------------------------

redis_ping() { [[ -S "$REDIS_SOCK" ]] && [[ "$(redis-cli -s "$REDIS_SOCK" ping 2>/dev/null)" == PONG ]]; }

redis_start() {
    check_socket_paths
    prepare_dirs
    command -v redis-server >/dev/null || die "redis-server is not installed (run scripts/deps.sh)"
    redis_ping && return 0
    pid_alive "$REDIS_PID" redis-server && redis_stop
    rm -f "$REDIS_SOCK"
    # Snapshots in Redis are rebuildable from PostgreSQL: no persistence at all.
    as_service redis-server --port 0 --unixsocket "$REDIS_SOCK" --unixsocketperm 700 \
        --daemonize yes --pidfile "$REDIS_PID" --logfile "$LOG_DIR/redis.log" \
        --dir "$REDIS_DIR" --appendonly no --save '' >/dev/null ||
        die "redis-server did not start (log: $LOG_DIR/redis.log)"
    local i
    for ((i = 0; i < 100; i++)); do
        redis_ping && return 0
        sleep 0.1
    done
    show_tail "$LOG_DIR/redis.log"
    die "Redis does not answer on $REDIS_SOCK (log: $LOG_DIR/redis.log)"
}

redis_stop() {
    pid_alive "$REDIS_PID" redis-server || { rm -f "$REDIS_PID"; return 0; }
    local pid
    pid=$(<"$REDIS_PID")
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 20 || { kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || true; }
    rm -f "$REDIS_PID" "$REDIS_SOCK"
}

# --- nginx ---------------------------------------------------------------------------------

# The FastCGI address nginx passes to, from HV_LISTEN (default: the pool's socket in run/).
nginx_upstream() {
    local listen
    listen=$(setting HV_LISTEN "$RUN_DIR/hypervisor.sock")
    case "$listen" in
    unix:*) listen=${listen#unix:} ;&
    /*) printf 'unix:%s' "$(realpath -m -- "$listen")" ;;
    *:*)
        local host=${listen%:*} port=${listen##*:}
        case "$host" in "" | 0.0.0.0 | "*") host=127.0.0.1 ;; "[::]") host="[::1]" ;; esac
        printf '%s:%s' "$host" "$port"
        ;;
    *) printf 'unix:%s' "$(realpath -m -- "$listen")" ;;
    esac
}

nginx_render() {
    prepare_dirs
    local template=$REPO_ROOT/nginx/hypervisor.conf.template params=$REPO_ROOT/nginx/fastcgi_params
    local errors=$REPO_ROOT/nginx/errors.conf
    [[ -f "$template" && -f "$params" && -f "$errors" ]] || die "missing $template, $params or $errors"
    command -v envsubst >/dev/null || die "envsubst is not installed (run scripts/deps.sh)"
    local user_line="# user: nginx runs as $(id -un), who started it"
    ((EUID == 0)) && user_line="user $SVC_USER $SVC_GROUP;"
    local v6_line="# [::1] is not available on this host"
    grep -qs '^00000000000000000000000000000001 ' /proc/net/if_inet6 &&
        v6_line="listen [::1]:$HV_PORT default_server backlog=4096;"
    HV_STATE_DIR=$STATE_DIR HV_PORT=$HV_PORT HV_UPSTREAM=$(nginx_upstream) HV_FASTCGI_PARAMS=$params \
        HV_NGINX_ERRORS=$errors HV_NGINX_USER=$user_line HV_LISTEN_V6=$v6_line \
        envsubst '${HV_STATE_DIR} ${HV_PORT} ${HV_UPSTREAM} ${HV_FASTCGI_PARAMS} ${HV_NGINX_ERRORS} ${HV_NGINX_USER}
            ${HV_LISTEN_V6}' \
        <"$template" >"$NGINX_CONF.tmp"
    mv -f "$NGINX_CONF.tmp" "$NGINX_CONF"
}

nginx_() { nginx -q -p "$NGINX_DIR/" -e "$LOG_DIR/nginx-error.log" -c "$NGINX_CONF" "$@"; }

nginx_test() {
    local out
    out=$(nginx_ -t 2>&1) || { echo "$out" >&2; die "invalid nginx configuration $NGINX_CONF"; }
}

nginx_start() {
    command -v nginx >/dev/null || die "nginx is not installed (run scripts/deps.sh)"
    nginx_render
    nginx_test
    if pid_alive "$NGINX_PID" nginx; then
        kill -HUP "$(<"$NGINX_PID")"
        return 0
    fi
    local out
    out=$(nginx_ 2>&1) || { echo "$out" >&2; die "nginx did not start on 127.0.0.1:$HV_PORT (log: $LOG_DIR/nginx-error.log)"; }
}

nginx_stop() {
    pid_alive "$NGINX_PID" nginx || return 0
    local pid
    pid=$(<"$NGINX_PID")
    kill -QUIT "$pid" 2>/dev/null || true
    wait_gone "$pid" 15 || { kill -TERM "$pid" 2>/dev/null || true; wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true; }
}

nginx_reload() {
    pid_alive "$NGINX_PID" nginx || die "nginx is not running for $STATE_DIR"
    nginx_render
    nginx_test
    kill -HUP "$(<"$NGINX_PID")"
}

# --- secret, port --------------------------------------------------------------------------

secret() {
    mkdir -p "$STATE_DIR"
    if [[ ! -s "$SECRET_FILE" ]]; then
        local tmp
        tmp=$(umask 077 && mktemp "$SECRET_FILE.XXXXXX")
        head -c 64 /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$tmp"
        chmod 600 "$tmp"
        mv -n "$tmp" "$SECRET_FILE" # first writer wins when two start at once
        rm -f "$tmp"
    fi
    cat "$SECRET_FILE"
    echo
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- hypervisord ---------------------------------------------------------------------------

# Stops the master in PID (SIGTERM, then SIGKILL after HV_STOP_TIMEOUT) and any worker left.
hypervisord_stop_pid() {
    local pid=$1 workers
    alive "$pid" || return 0
    workers=$(pgrep -P "$pid" || true)
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$(setting HV_STOP_TIMEOUT 40)"; then
        echo "stack.sh: hypervisord (pid $pid) ignored SIGTERM; killing it" >&2
        workers="$workers $(pgrep -P "$pid" || true)"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || true
    fi
    local w
    for w in $workers; do
        wait_gone "$w" 5 || kill -KILL "$w" 2>/dev/null || true
    done
}

# `stop`: everything that runs from this state folder, whoever started it.
stop_all() {
    if pid_alive "$HV_PID_FILE" hypervisord; then
        hypervisord_stop_pid "$(<"$HV_PID_FILE")"
    fi
    nginx_stop
    redis_stop
    postgres_stop
}

# --- run -----------------------------------------------------------------------------------

# Exports what hypervisord and hvctl read for this stack: the private PostgreSQL and Redis unless the
# environment or .env names others, the generated JWT secret unless one is set, the socket and the log.
service_environment() {
    export HV_STATE_DIR=$STATE_DIR HV_PORT
    if [[ -z "$(setting SQL_DB_URL)" && -z "$(setting POSTGRES_USER)" ]]; then
        export SQL_DB_URL
        SQL_DB_URL=$(postgres_url)
    fi
    [[ -n "$(setting REDIS_HOST)" ]] || export REDIS_HOST=$REDIS_SOCK
    local jwt
    jwt=$(setting JWT_SECRET_KEY)
    if [[ -z "$jwt" || "$jwt" == CHANGE_ME* ]]; then # .env.example's placeholder counts as unset
        export JWT_SECRET_KEY
        JWT_SECRET_KEY=$(secret)
    fi
    export HV_LISTEN HV_LOG_FILE
    HV_LISTEN=$(setting HV_LISTEN "$RUN_DIR/hypervisor.sock")
    HV_LOG_FILE=$(setting HV_LOG_FILE "$LOG_DIR/hypervisor.log")
}

# Prints the path of the built executable NAME (release before debug); fails when neither is built.
built() {
    local bin
    for bin in "$REPO_ROOT/.build/release/$1" "$REPO_ROOT/.build/debug/$1"; do
        if [[ -x "$bin" ]]; then
            echo "$bin"
            return
        fi
    done
    die "no $1 binary in $REPO_ROOT/.build/{release,debug}; build it first (swift build -c release)"
}

# hvctl against the stack `run` started (in another terminal), with the same configuration.
hvctl_() {
    local bin
    bin=$(built hvctl)
    service_environment
    exec "$bin" "$@"
}

run() {
    check_socket_paths
    local bin
    bin=$(setting HV_BIN "")
    [[ -n "$bin" ]] || bin=$(built hypervisord)
    [[ -x "$bin" ]] || die "HV_BIN=$bin is not executable"

    local own_postgres=0 own_redis=0 hv_pid=""
    [[ -z "$(setting SQL_DB_URL)" && -z "$(setting POSTGRES_USER)" ]] && own_postgres=1
    [[ -z "$(setting REDIS_HOST)" ]] && own_redis=1

    cleanup() {
        trap - INT TERM EXIT
        set +e
        if [[ -n "$hv_pid" ]]; then
            hypervisord_stop_pid "$hv_pid"
            wait "$hv_pid" 2>/dev/null
        fi
        nginx_stop
        ((own_redis)) && redis_stop
        ((own_postgres)) && postgres_stop
        return 0
    }
    trap 'cleanup; exit 130' INT
    trap 'cleanup; exit 143' TERM
    trap cleanup EXIT

    ((own_postgres)) && postgres_start
    ((own_redis)) && redis_start
    service_environment
    nginx_start

    # A background job of a non-interactive shell starts with SIGINT and SIGQUIT ignored; undo
    # that (SIGQUIT is the graceful stop) and give the master its own session, so Ctrl-C reaches
    # only this script, which then stops everything in order.
    (
        trap - INT QUIT
        exec setsid "$bin" --pid-file "$HV_PID_FILE"
    ) &
    hv_pid=$!

    local url="http://127.0.0.1:$HV_PORT" i ready=0
    for ((i = 0; i < 600; i++)); do
        if ! alive "$hv_pid"; then
            show_tail "$HV_LOG_FILE" 40
            wait "$hv_pid" && status=0 || status=$?
            hv_pid=""
            die "hypervisord exited during startup (status $status)"
        fi
        if curl -fsS -o /dev/null --max-time 2 "$url/readyz" 2>/dev/null; then
            ready=1
            break
        fi
        sleep 0.1
    done
    if ((!ready)); then
        show_tail "$HV_LOG_FILE" 40
        die "$url/readyz did not answer 200 within 60 s"
    fi

    cat <<EOF
Hypervisor is ready on http://localhost:$HV_PORT  (Ctrl-C stops everything)
  service log:  $HV_LOG_FILE
  nginx logs:   $LOG_DIR/nginx-access.log, $LOG_DIR/nginx-error.log
EOF
    ((own_postgres)) && echo "  postgres:     $LOG_DIR/postgres.log  ($SQL_DB_URL)"
    ((own_redis)) && echo "  redis:        $LOG_DIR/redis.log  (unix socket $REDIS_SOCK)"
    echo "  state:        $STATE_DIR"

    local status=0
    wait "$hv_pid" || status=$?
    hv_pid=""
    echo "stack.sh: hypervisord exited (status $status)" >&2
    cleanup
    exit "$status"
}

usage() {
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

case "${1:-}" in
postgres-start) postgres_start ;;
postgres-stop) postgres_stop ;;
postgres-url) postgres_url ;;
redis-start) redis_start ;;
redis-stop) redis_stop ;;
nginx-start) nginx_start ;;
nginx-stop) nginx_stop ;;
nginx-reload) nginx_reload ;;
secret) secret ;;
free-port) free_port ;;
stop) stop_all ;;
run) run ;;
hvctl)
    shift
    hvctl_ "$@"
    ;;
*) usage ;;
esac
