#!/usr/bin/env bash
# A local Kubernetes control plane for tests, the demo and people: etcd, kube-apiserver and
# kube-controller-manager as plain processes on free loopback ports. No kubelet runs, so pods
# stay Pending; everything else (CRDs, RBAC, Deployments -> ReplicaSets, garbage collection,
# namespace deletion) behaves as in a real cluster.
#
#   cluster.sh up     start (or reuse a healthy running) cluster, print `export KUBECONFIG=...`
#   cluster.sh down   stop every process from its pid file and remove the state dir
#   cluster.sh env    print `export KUBECONFIG=...` for a running cluster
#
# State dir: ${UC_CLUSTER_DIR:-/tmp/uc-cluster} (certificates, tokens, etcd data, logs, pids,
# kubeconfig). Binaries: $UC_CONTROL_PLANE_BIN, or whatever build-control-plane.sh prints.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${UC_CLUSTER_DIR:-/tmp/uc-cluster}"
MARKER="$DIR/.uc-cluster"
KUBECONFIG_FILE="$DIR/kubeconfig"
READY_TIMEOUT="${UC_CLUSTER_READY_TIMEOUT:-180}"
# Stop order: dependants first, etcd last.
COMPONENTS=(kube-controller-manager kube-apiserver etcd)

log() { echo "[cluster] $*" >&2; }

# free_port: ask the kernel for an unused loopback port (bind :0), with a bash fallback.
free_port() {
	if command -v python3 >/dev/null 2>&1; then
		python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' && return 0
	fi
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
	done
}

pid_alive() { [[ -f "$DIR/$1.pid" ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

# api_ready: the API server answers /readyz with the admin token over verified TLS.
api_ready() {
	[[ -f "$DIR/apiserver.port" && -f "$DIR/admin.token" ]] || return 1
	curl -fsS --max-time 5 --cacert "$DIR/ca.crt" -H "Authorization: Bearer $(cat "$DIR/admin.token")" \
		"https://127.0.0.1:$(cat "$DIR/apiserver.port")/readyz" >/dev/null 2>&1
}

print_env() {
	echo "export KUBECONFIG=$KUBECONFIG_FILE"
}

cmd_down() {
	if [[ ! -d "$DIR" ]]; then
		log "nothing to stop ($DIR does not exist)"
		return 0
	fi
	if [[ ! -f "$MARKER" ]]; then
		log "refusing to remove $DIR: it is not a cluster state dir (no .uc-cluster marker)"
		return 1
	fi
	local c pid
	for c in "${COMPONENTS[@]}"; do
		if pid_alive "$c"; then
			pid="$(cat "$DIR/$c.pid")"
			kill -TERM "$pid" 2>/dev/null || true
			for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			if kill -0 "$pid" 2>/dev/null; then
				log "$c ($pid) ignored SIGTERM for 10s; killing"
				kill -KILL "$pid" 2>/dev/null || true
			fi
			log "stopped $c ($pid)"
		fi
	done
	rm -rf "$DIR"
	log "removed $DIR"
}

# start NAME ARGS...: run a component detached (own session, survives this script), log to
# $DIR/NAME.log, remember its pid.
start() {
	local name="$1"
	shift
	# The child writes its own pid before exec, so the pid file is right whether or not
	# setsid had to fork.
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$DIR/$name.pid" "$BIN/$name" "$@" \
		>"$DIR/$name.log" 2>&1 </dev/null &
	for _ in $(seq 1 50); do [[ -s "$DIR/$name.pid" ]] && break; sleep 0.1; done
	log "started $name (pid $(cat "$DIR/$name.pid"), log $DIR/$name.log)"
}

fail_with_logs() {
	log "$1"
	local c
	for c in "${COMPONENTS[@]}"; do
		if [[ -f "$DIR/$c.log" ]]; then
			echo "----- last lines of $c.log -----" >&2
			tail -n 20 "$DIR/$c.log" >&2
		fi
	done
	cmd_down || true
	exit 1
}

gen_certs() {
	# A CA, a serving certificate for 127.0.0.1/localhost, and the service-account key pair.
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=uc-test-ca" \
		-keyout "$DIR/ca.key" -out "$DIR/ca.crt" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
		-keyout "$DIR/apiserver.key" -out "$DIR/apiserver.csr" 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >"$DIR/apiserver.ext"
	openssl x509 -req -in "$DIR/apiserver.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
		-days 30 -extfile "$DIR/apiserver.ext" -out "$DIR/apiserver.crt" 2>/dev/null
	openssl genrsa -out "$DIR/sa.key" 2048 2>/dev/null
	openssl rsa -in "$DIR/sa.key" -pubout -out "$DIR/sa.pub" 2>/dev/null
	chmod 600 "$DIR"/*.key
}

write_kubeconfig() {
	local file="$1" user="$2" token="$3" port="$4"
	cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: uc-test
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $DIR/ca.crt
users:
- name: $user
  user:
    token: $token
contexts:
- name: uc-test
  context:
    cluster: uc-test
    user: $user
    namespace: default
current-context: uc-test
EOF
	chmod 600 "$file"
}

cmd_up() {
	if [[ -f "$MARKER" ]]; then
		if pid_alive etcd && pid_alive kube-apiserver && pid_alive kube-controller-manager && api_ready; then
			log "cluster already running in $DIR"
			print_env
			return 0
		fi
		log "found a stale cluster in $DIR; cleaning it up"
		cmd_down
	elif [[ -e "$DIR" ]]; then
		log "$DIR exists and is not a cluster state dir; set UC_CLUSTER_DIR elsewhere"
		exit 1
	fi

	if [[ -n "${UC_CONTROL_PLANE_BIN:-}" ]]; then
		BIN="$UC_CONTROL_PLANE_BIN"
	else
		BIN="$("$SCRIPT_DIR/build-control-plane.sh" | tail -n1)"
	fi
	for c in "${COMPONENTS[@]}"; do
		[[ -x "$BIN/$c" ]] || { log "missing $BIN/$c: run make control-plane"; exit 1; }
	done

	mkdir -p "$DIR"
	chmod 700 "$DIR"
	touch "$MARKER"
	local start_s=$SECONDS
	trap 'fail_with_logs "interrupted"' INT TERM

	gen_certs
	local token
	token="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
	echo -n "$token" >"$DIR/admin.token"
	chmod 600 "$DIR/admin.token"
	# token,user,uid,"group1,group2": the admin is cluster-admin through system:masters.
	# A second identity, uc-operator, lets benchmarks tell the operator's requests apart
	# (kubeconfig-operator).
	local op_token
	op_token="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
	{
		echo "$token,admin,uc-admin,\"system:masters\""
		echo "$op_token,uc-operator,uc-operator,\"system:masters\""
	} >"$DIR/tokens.csv"
	chmod 600 "$DIR/tokens.csv"
	# The audit log ($DIR/audit.log, unless UC_CLUSTER_AUDIT=0) records every request of
	# uc-operator (the benchmarks count them) and every write by anyone (the leadership test
	# reads who wrote what and when; the fleet benchmark counts the collectors' writes).
	local audit_flags=()
	if [[ "${UC_CLUSTER_AUDIT:-1}" == 1 ]]; then
		cat >"$DIR/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  users: ["uc-operator"]
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
EOF
		audit_flags=(--audit-policy-file="$DIR/audit-policy.yaml" --audit-log-path="$DIR/audit.log"
			--audit-log-format=json --audit-log-maxsize=0)
	fi

	local etcd_port etcd_peer api_port kcm_port
	etcd_port="$(free_port)"
	etcd_peer="$(free_port)"
	api_port="$(free_port)"
	kcm_port="$(free_port)"
	echo "$api_port" >"$DIR/apiserver.port"
	write_kubeconfig "$KUBECONFIG_FILE" admin "$token" "$api_port"
	write_kubeconfig "$DIR/kubeconfig-operator" uc-operator "$op_token" "$api_port"

	start etcd \
		--name=uc-test \
		--data-dir="$DIR/etcd" \
		--listen-client-urls="http://127.0.0.1:$etcd_port" \
		--advertise-client-urls="http://127.0.0.1:$etcd_port" \
		--listen-peer-urls="http://127.0.0.1:$etcd_peer" \
		--initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
		--initial-cluster="uc-test=http://127.0.0.1:$etcd_peer" \
		--unsafe-no-fsync=true \
		--quota-backend-bytes=4294967296

	start kube-apiserver \
		--etcd-servers="http://127.0.0.1:$etcd_port" \
		--bind-address=127.0.0.1 \
		--advertise-address=127.0.0.1 \
		--secure-port="$api_port" \
		--cert-dir="$DIR/apiserver-certs" \
		--tls-cert-file="$DIR/apiserver.crt" \
		--tls-private-key-file="$DIR/apiserver.key" \
		--client-ca-file="$DIR/ca.crt" \
		--token-auth-file="$DIR/tokens.csv" \
		--authorization-mode=RBAC \
		--service-cluster-ip-range=10.0.0.0/24 \
		--allow-privileged=true \
		--disable-admission-plugins=ServiceAccount \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$DIR/sa.pub" \
		--service-account-signing-key-file="$DIR/sa.key" \
		--profiling=false \
		"${audit_flags[@]}"

	local deadline=$((SECONDS + READY_TIMEOUT))
	until api_ready; do
		pid_alive etcd || fail_with_logs "etcd exited"
		pid_alive kube-apiserver || fail_with_logs "kube-apiserver exited"
		((SECONDS < deadline)) || fail_with_logs "kube-apiserver not ready after ${READY_TIMEOUT}s"
		sleep 0.5
	done
	log "kube-apiserver ready on https://127.0.0.1:$api_port after $((SECONDS - start_s))s"

	start kube-controller-manager \
		--kubeconfig="$KUBECONFIG_FILE" \
		--authentication-kubeconfig="$KUBECONFIG_FILE" \
		--authorization-kubeconfig="$KUBECONFIG_FILE" \
		--leader-elect=false \
		--bind-address=127.0.0.1 \
		--secure-port="$kcm_port" \
		--cert-dir="$DIR/kcm-certs" \
		--service-account-private-key-file="$DIR/sa.key" \
		--root-ca-file="$DIR/ca.crt" \
		--cluster-signing-cert-file="$DIR/ca.crt" \
		--cluster-signing-key-file="$DIR/ca.key" \
		--profiling=false

	until curl -fsSk --max-time 5 "https://127.0.0.1:$kcm_port/healthz" >/dev/null 2>&1; do
		pid_alive kube-controller-manager || fail_with_logs "kube-controller-manager exited"
		((SECONDS < deadline)) || fail_with_logs "kube-controller-manager not healthy after ${READY_TIMEOUT}s"
		sleep 0.5
	done
	trap - INT TERM
	log "kube-controller-manager healthy on :$kcm_port; cluster up in $((SECONDS - start_s))s ($DIR)"
	print_env
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
env)
	if [[ -f "$KUBECONFIG_FILE" ]]; then print_env; else log "no cluster in $DIR"; exit 1; fi
	;;
*)
	echo "usage: $0 up|down|env   (state dir: \${UC_CLUSTER_DIR:-/tmp/uc-cluster})" >&2
	exit 2
	;;
esac
