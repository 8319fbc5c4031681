#!/usr/bin/env bash
# A one-node Slurm cluster (slurmctld + slurmd + a private munged, CPU only) living in one
# folder, for the tests that submit the project's job scripts; installs nothing (Debian's
# `slurm-wlm` and `munge` must be there) and needs root (slurmd launches the jobs).
#   tests/slurm_cluster.sh start <dir>   # prints SLURM_CONF=<dir>/slurm.conf once `sinfo` shows
#                                        # the node idle; on failure one line saying why, exit 1
#   tests/slurm_cluster.sh stop <dir>    # cancels its jobs, stops the daemons
# Clients reach it with SLURM_CONF=<dir>/slurm.conf (sbatch, squeue, scontrol, ...). Finished
# jobs stay visible to `scontrol show job` for an hour (MinJobAge); there is no accounting
# database, so no sacct.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 start|stop <dir>" >&2; exit 2; }
cmd=$1
dir=$(realpath -m "$2")
export SLURM_CONF=$dir/slurm.conf

fail() {  # one line saying why; a half-started cluster is stopped
  echo "$*"
  [ "$cmd" != start ] || stop >/dev/null 2>&1
  exit 1
}

stop() {
  if [ -f "$SLURM_CONF" ] && [ -f "$dir/slurmctld.pid" ]; then
    timeout 10 scancel --user="$(id -un)" 2>/dev/null || true
    sleep 1
  fi
  for daemon in slurmd slurmctld munged; do
    [ -f "$dir/$daemon.pid" ] || continue
    pid=$(cat "$dir/$daemon.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/$daemon.pid"
  done
}

free_port() {  # the first port from $1 up that nothing listens on, nor $2
  local port=$1
  while [ "$port" = "${2:-}" ] || (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
  done
  echo "$port"
}

start() {
  for prog in slurmctld slurmd munged sinfo; do
    command -v "$prog" >/dev/null || fail "$prog not installed (apt-get install slurm-wlm munge)"
  done
  [ "$(id -u)" = 0 ] || fail "slurmd must run as root"
  mkdir -p "$dir/state" "$dir/spool"
  chmod 700 "$dir"
  stop
  # A private munge key and socket: nothing of the machine's own munge (if any) is used.
  if [ ! -f "$dir/munge.key" ]; then
    head -c 1024 /dev/urandom >"$dir/munge.key"
    chmod 400 "$dir/munge.key"
  fi
  munged --force --socket="$dir/munge.sock" --key-file="$dir/munge.key" \
    --log-file="$dir/munged.log" --pid-file="$dir/munged.pid" --seed-file="$dir/munged.seed" \
    || fail "munged did not start: $(tail -n 1 "$dir/munged.log" 2>/dev/null)"
  local host ctld_port slurmd_port cpus mem
  host=$(hostname -s)
  ctld_port=$(free_port $((20000 + RANDOM % 20000)))
  slurmd_port=$(free_port $((ctld_port + 1)) "$ctld_port")
  cpus=$(nproc)
  mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) * 9 / 10240))  # MiB, 90% of the RAM
  cat >"$SLURM_CONF" <<EOF
ClusterName=ltcifar-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge.sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
MinJobAge=3600
SchedulerType=sched/backfill
NodeName=localnode NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localnode Default=YES MaxTime=INFINITE State=UP
EOF
  # -c: no state from an earlier run; -i: ignore state files that cannot be read.
  slurmctld -c -i >"$dir/slurmctld.out" 2>&1 \
    || fail "slurmctld did not start: $(tail -n 1 "$dir/slurmctld.log" 2>/dev/null)"
  slurmd -N localnode >"$dir/slurmd.out" 2>&1 \
    || fail "slurmd did not start: $(tail -n 1 "$dir/slurmd.log" 2>/dev/null)"
  for _ in $(seq 60); do
    if [ "$(sinfo -h -n localnode -o %t 2>/dev/null)" = idle ]; then
      echo "SLURM_CONF=$SLURM_CONF"
      return
    fi
    sleep 0.5
  done
  local state
  state=$(sinfo -h -n localnode -o '%t %E' 2>&1 | head -n 1)
  fail "the node did not become idle in 30 s: ${state:-no answer from slurmctld}"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop <dir>" >&2; exit 2 ;;
esac
