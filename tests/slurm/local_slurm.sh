#!/usr/bin/env bash
# A real single-node SLURM on this machine, for the tests of profiles/slurm: Debian's slurm-wlm and munge,
# slurmctld + slurmd as root, partitions `cpu` (default) and `gpu`, two fake GPUs as `gpu` GRES (device
# files cloned from /dev/null), and a submit filter that refuses GPUs on the cpu partition.
#
#   tests/slurm/local_slurm.sh start    install what is missing, (re)start what is down or outdated, wait
#   tests/slurm/local_slurm.sh stop     stop the daemons this script started, by their PID files
#   tests/slurm/local_slurm.sh status   exit 0 when the controller answers and the node is usable
#
# Idempotent: a second `start` with the cluster up and the configuration unchanged does nothing. No
# accounting database: finished jobs stay visible to `scontrol show job` and `squeue` for an hour
# (MinJobAge), which is what the tests read SLURM's records from, and what the executor's squeue status
# mode needs. Run as root.
set -euo pipefail

CONF_DIR=/etc/slurm
STATE_DIR=/var/lib/slurm-segflow
GPU_DIR=/var/lib/slurm-fakegpu
NODE=$(hostname -s)
CPUS=$(nproc)
MEMORY_MB=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10))

slurm_conf() {
    cat <<EOF
ClusterName=segflow
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=3600
JobSubmitPlugins=lua
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
ReturnToService=2
SlurmdParameters=config_overrides
SlurmdTimeout=300
KillWait=5
OverTimeLimit=0
StateSaveLocation=${STATE_DIR}/ctld
SlurmdSpoolDir=${STATE_DIR}/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm-segflow/slurmctld.log
SlurmdLogFile=/var/log/slurm-segflow/slurmd.log
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEMORY_MB} Gres=gpu:fake:2 State=UNKNOWN
PartitionName=cpu Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=${NODE} MaxTime=INFINITE State=UP
EOF
}

gres_conf() {
    echo "NodeName=${NODE} Name=gpu Type=fake File=${GPU_DIR}/nvidia[0-1]"
}

job_submit_lua() {
    cat <<'EOF'
-- A GPU asked for on the cpu partition is an error, as on a real cluster whose cpu nodes have none.
function slurm_job_submit(job_desc, part_list, submit_uid)
    local partition = job_desc.partition or "cpu"
    if string.find(partition, "cpu") then
        for _, field in ipairs({"tres_per_job", "tres_per_node", "tres_per_socket", "tres_per_task"}) do
            local value = job_desc[field]
            if value ~= nil and string.find(value, "gpu") then
                slurm.log_user("partition cpu has no GPUs; use -p gpu")
                return slurm.ERROR
            end
        end
    end
    return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
    return slurm.SUCCESS
end
EOF
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm slurmctld slurmd slurm-client munge >/dev/null
}

# Write a file only when its content changes; print "changed" if it did.
write_if_changed() {
    local path=$1 content
    content=$(cat)
    if [[ -f $path ]] && [[ "$(cat "$path")" == "$content" ]]; then
        return
    fi
    printf '%s\n' "$content" >"$path"
    echo changed
}

running() {  # running PIDFILE: the process named in the PID file is alive
    [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

start_munge() {
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -f /etc/munge/munge.key ]]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    if ! running /run/munge/munged.pid; then
        runuser -u munge -- /usr/sbin/munged
    fi
}

node_ready() {
    local state
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1)
    [[ $state == idle* || $state == mixed* || $state == allocated* ]]
}

start() {
    install_packages
    mkdir -p "$CONF_DIR" "$STATE_DIR/ctld" "$STATE_DIR/d" "$GPU_DIR" /var/log/slurm-segflow
    for i in 0 1; do
        [[ -e $GPU_DIR/nvidia$i ]] || mknod -m 666 "$GPU_DIR/nvidia$i" c 1 3
    done
    local changed
    changed=$(
        slurm_conf | write_if_changed "$CONF_DIR/slurm.conf"
        gres_conf | write_if_changed "$CONF_DIR/gres.conf"
        job_submit_lua | write_if_changed "$CONF_DIR/job_submit.lua"
    )
    start_munge
    if [[ -n $changed ]]; then
        stop_daemons
    fi
    local slurmd_started=0
    running /run/slurmctld.pid || slurmctld -i
    if ! running /run/slurmd.pid; then
        slurmd
        slurmd_started=1
    fi
    for _ in $(seq 1 60); do
        if scontrol ping 2>/dev/null | grep -q UP && node_ready; then
            break
        fi
        # A node left DOWN or DRAINED by an earlier run comes back once slurmd has registered.
        if [[ $slurmd_started == 1 ]]; then
            scontrol update nodename="$NODE" state=resume 2>/dev/null || true
        fi
        sleep 1
    done
    node_ready || { echo "local SLURM did not come up; see /var/log/slurm-segflow" >&2; exit 1; }
}

stop_daemons() {
    local pidfile
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if running "$pidfile"; then
            kill "$(cat "$pidfile")"
            for _ in $(seq 1 50); do running "$pidfile" || break; sleep 0.2; done
        fi
    done
}

stop() {
    stop_daemons
    if running /run/munge/munged.pid; then
        kill "$(cat /run/munge/munged.pid)"
    fi
}

status() {
    scontrol ping 2>/dev/null | grep -q UP && node_ready
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
