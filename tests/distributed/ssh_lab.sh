#!/usr/bin/env bash
# Two ssh "hosts" on this Linux machine, for test_real_ssh_lab.py (opt-in, root, not CI):
# sshd on 127.0.0.1:2222 (tailorlab-a) and :2223 (tailorlab-b); b runs in its own mount
# namespace where LAB/data is an empty folder, so b truly lacks the dataset at that path.
# Each host's TAILOR_HOME comes from ssh's SetEnv. Needs openssh-server and unshare.
#   tests/distributed/ssh_lab.sh up      # then: TAILOR_SSH_LAB=/tmp/tailor-sshlab pytest ...
#   tests/distributed/ssh_lab.sh down    # stops both sshd, removes the ssh config it wrote
set -euo pipefail
LAB=${TAILOR_SSH_LAB:-/tmp/tailor-sshlab}
CONFIG=~/.ssh/config
MARK="# tailor ssh lab ($LAB)"

up() {
  [ -e "$CONFIG" ] && { echo "$CONFIG exists: not touching it" >&2; exit 1; }
  mkdir -p "$LAB"/{data,empty,home-a,home-b} /run/sshd ~/.ssh
  chmod 700 ~/.ssh
  [ -e "$LAB/host_key" ] || ssh-keygen -q -t ed25519 -f "$LAB/host_key" -N ''
  [ -e "$LAB/client_key" ] || ssh-keygen -q -t ed25519 -f "$LAB/client_key" -N ''
  cp "$LAB/client_key.pub" "$LAB/authorized_keys"
  for n in a b; do
    port=$([ $n = a ] && echo 2222 || echo 2223)
    cat > "$LAB/sshd_$n.conf" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $LAB/host_key
AuthorizedKeysFile $LAB/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AcceptEnv TAILOR_HOME
PidFile $LAB/sshd_$n.pid
EOF
    cat >> "$CONFIG" <<EOF
$MARK
Host tailorlab-$n
    HostName 127.0.0.1
    Port $port
    IdentityFile $LAB/client_key
    StrictHostKeyChecking no
    UserKnownHostsFile $LAB/known_hosts
    SetEnv TAILOR_HOME=$LAB/home-$n
EOF
  done
  /usr/sbin/sshd -f "$LAB/sshd_a.conf"
  nohup unshare -m --propagation private sh -c \
    "mount --bind '$LAB/empty' '$LAB/data' && exec /usr/sbin/sshd -D -f '$LAB/sshd_b.conf'" \
    > "$LAB/sshd_b.log" 2>&1 &
  echo $! > "$LAB/sshd_b.unshare.pid"
  sleep 1
  ssh -o BatchMode=yes tailorlab-a true && ssh -o BatchMode=yes tailorlab-b true
  echo "lab up: tailorlab-a, tailorlab-b (LAB=$LAB)"
}

down() {
  [ -f "$LAB/sshd_a.pid" ] && kill "$(cat "$LAB/sshd_a.pid")" 2>/dev/null || true
  [ -f "$LAB/sshd_b.pid" ] && kill "$(cat "$LAB/sshd_b.pid")" 2>/dev/null || true
  [ -f "$LAB/sshd_b.unshare.pid" ] && kill "$(cat "$LAB/sshd_b.unshare.pid")" 2>/dev/null || true
  if [ -f "$CONFIG" ] && head -1 "$CONFIG" | grep -qF "$MARK"; then rm "$CONFIG"; fi
  echo "lab down"
}

"${1:-up}"
