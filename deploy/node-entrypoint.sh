#!/usr/bin/env bash
# Prepares a node pod's cgroups, then runs its arguments (KubeRay's `ray start` and `hangar node`).
#
# Why: on cgroup v2 the container sees its own cgroup as the root of a cgroup namespace. Hangar puts every sandbox
# in a child cgroup with memory, pids and cpu limits, and the kernel enables those controllers for children only
# when the parent holds no processes itself ("no internal processes"). So the pod's own processes move to a leaf
# (`init`) and the controllers are enabled for the children. On cgroup v1 there is nothing to do.
set -euo pipefail
root=/sys/fs/cgroup
if [ -f "$root/cgroup.controllers" ] && [ "$(cat /proc/self/cgroup)" = "0::/" ]; then
  mkdir -p "$root/init"
  # move every process (this shell included) out of the namespace root; a process may exit while we read
  while read -r pid; do echo "$pid" > "$root/init/cgroup.procs" 2>/dev/null || true; done < "$root/cgroup.procs"
  for controller in memory pids cpu; do
    grep -qw "$controller" "$root/cgroup.controllers" || { echo "cgroup v2 lacks the $controller controller" >&2; exit 1; }
    echo "+$controller" > "$root/cgroup.subtree_control"
  done
fi
exec "$@"
