#!/usr/bin/env bash
# Bring up a one-node SLURM cluster on loopback for the tests marked `slurm`.
#
# Idempotent: a cluster that already answers with this configuration (or, for a user
# who is not root, with any) is only smoke-tested; one with another configuration gets
# this one and restarted daemons. As root it installs
# Debian's slurm-wlm and munge with apt-get when they are missing, writes a munge key
# and a one-node slurm.conf (no accounting database, no cgroups, no GPUs), starts
# munged, slurmctld and slurmd, then waits until the node is idle and
# `sbatch --wrap hostname` has run. Exit 0: the cluster is up. Exit 2: SLURM cannot be
# installed here (not root, no apt-get, apt-get failed). Exit 1: installed, but it did
# not come up. Either way the last line on stderr says why.
#
# Environment (all optional):
#   SLURM_UP_TIMEOUT   seconds to wait for the node and the smoke job (default 60)
#   SLURM_UP_CPUS      CPUs the node offers (default: nproc, at least 2)
#   SLURM_UP_LOG_DIR   where the daemons log (default /var/log/slurm)
set -euo pipefail

TIMEOUT=${SLURM_UP_TIMEOUT:-60}
LOG_DIR=${SLURM_UP_LOG_DIR:-/var/log/slurm}
CONF=/etc/slurm/slurm.conf
# Completed jobs are written here (jobcomp/filetxt): with no accounting database this is
# the only lasting record of which jobs ran and how they ended; the tests read it.
JOBCOMP_LOG="$LOG_DIR/jobcomp.log"
started=$(date +%s)

say() { echo "slurm-up: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }
cannot() { say "CANNOT INSTALL: $*"; exit 2; }
elapsed() { echo $(($(date +%s) - started)); }

node_state() { sinfo --noheader --Node --format=%T 2>/dev/null | head -n1 | tr -d '*~#'; }

smoke_test() {
  # --wait returns only once the job has ended, with its exit status.
  local out
  out=$(timeout "$TIMEOUT" sbatch --parsable --wait --quiet --time=1 --mem=10 \
        --output=/dev/null --job-name=slurm-up-smoke --wrap hostname 2>&1) \
    || { say "$out"; return 1; }
}

cluster_answers() {
  command -v sinfo >/dev/null 2>&1 || return 1
  scontrol ping 2>/dev/null | grep -q "is UP" || return 1
  case "$(node_state)" in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac
}

# --- slurm.conf ------------------------------------------------------------------------
host=$(hostname -s)
cpus=${SLURM_UP_CPUS:-$(nproc)}
[ "$cpus" -ge 2 ] || cpus=2
# Offer 90% of the machine's memory so that a job's --mem is checked against something real.
mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)

conf=$(cat <<EOF
# Written by .ci/slurm-up.sh: a one-node test cluster on loopback.
ClusterName=idscaling-ci
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
# No cgroups in a container: track processes by parent id, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
# CPUs and memory are consumable, so jobs run side by side up to the node's size.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
# No accounting database: sacct cannot answer, so the workflow polls squeue; finished
# jobs stay visible to squeue/scontrol for an hour, and every completion is logged.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=${JOBCOMP_LOG}
MinJobAge=3600
# Answer quickly: the tests submit many short jobs.
SchedulerParameters=sched_interval=5
MessageTimeout=30
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)

# --- already up? ------------------------------------------------------------------------
if cluster_answers && smoke_test; then
  if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$conf" ]; then
    say "cluster already up (node $(node_state)); checked in $(elapsed) s"
    exit 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    say "a cluster is up (node $(node_state)), configured by someone else; using it"
    exit 0
  fi
  say "cluster up with another configuration: rewriting it and restarting the daemons"
fi

[ "$(id -u)" -eq 0 ] || cannot "not root: cannot install or start SLURM (run this script as root)"

# --- install ---------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || cannot "slurm-wlm/munge are not installed and apt-get is not available"
  say "installing slurm-wlm and munge with apt-get"
  # Packages must not try to start their services through an init system that a
  # container lacks; this script starts the daemons itself.
  added_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    added_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  install_ok=1
  apt-get update -qq >/dev/null || install_ok=""
  if [ -n "$install_ok" ]; then
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null || install_ok=""
  fi
  [ -n "$added_policy" ] && rm -f /usr/sbin/policy-rc.d
  [ -n "$install_ok" ] || cannot "apt-get could not install slurm-wlm and munge"
  say "installed in $(elapsed) s"
fi

# --- munge -----------------------------------------------------------------------------
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
chmod 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null 2>&1 || die "munge does not answer (see /var/log/munge/munged.log)"
fi

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR"
conf_changed=""
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$conf" ]; then
  printf '%s\n' "$conf" > "$CONF"
  conf_changed=1
fi

# --- daemons ---------------------------------------------------------------------------
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ -n "$conf_changed" ]; then
  # A changed configuration needs fresh daemons; stop only the ones this file names.
  for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
    if running "$pidfile"; then
      kill "$(cat "$pidfile")"
      for _ in $(seq 100); do running "$pidfile" || break; sleep 0.1; done
    fi
  done
fi
if ! running /run/slurmctld.pid; then
  # -c: start from a clean state; a stale job list from an earlier run would block the node.
  slurmctld -c || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
fi
if ! running /run/slurmd.pid; then
  slurmd || die "slurmd did not start (see $LOG_DIR/slurmd.log)"
fi

deadline=$(($(date +%s) + TIMEOUT))
state=""
while [ "$(date +%s)" -lt "$deadline" ]; do
  state=$(node_state)
  case "$state" in
    idle|mixed|allocated) break ;;
    down|drained|draining|fail)
      scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.5
done
case "$state" in
  idle|mixed|allocated) ;;
  *) die "node $host is '${state:-not listed}' after ${TIMEOUT} s (see $LOG_DIR/slurmctld.log, slurmd.log)" ;;
esac

smoke_test || die "'sbatch --wrap hostname' did not complete within ${TIMEOUT} s (see $LOG_DIR/slurmctld.log)"
say "cluster up: node $host, $cpus CPUs, ${mem_mb} MB, idle; took $(elapsed) s"
