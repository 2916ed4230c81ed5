# The Slurm versions the test cluster runs. Sourced (after lib.sh), not run.
#
# 22.05 is the host's own (Debian 12's slurm-wlm). The others come from a Debian release's
# packages in a chroot that `up` makes once with debootstrap and keeps under $CHROOTS: the same
# cluster (`up` runs inside it, with SP_TC_INSIDE set), on the same loopback addresses, with the
# host's /home, /tmp, /dev and /sys bound in, its daemons with the chroot as the root of a mount
# namespace of their own (in_root). Each chroot gets its own sub-directory of every cgroup v1
# controller, so its slurmd's cgroups never mix with another's.
HOST_SLURM=22.05
VERSIONS=(22.05 24.11 20.11)
CHROOTS=${SP_TC_CHROOTS:-/var/cache/slurm-proxy-testcluster}
CHROOT_BASE=/var/lib/slurm-proxy-testcluster   # $BASE inside a chroot
# What runs now: "VERSION ROOT" (ROOT is / for the host's own packages).
ACTIVE=$BASE/active
CHROOT_PKGS=(slurm-wlm slurmctld slurmd slurm-client munge openssh-server openssh-client
             libpam-slurm-adopt python3 python3-venv bubblewrap rsync procps diffutils tcsh zsh fish)

suite_of() {
    case "$1" in
        24.11) echo trixie ;;
        20.11) echo bullseye ;;
        *) return 1 ;;
    esac
}

# version_ge A B: Slurm version A is B or newer ("20.11" "21.08").
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

active_version() { [ -s "$ACTIVE" ] && cut -d' ' -f1 "$ACTIVE" || echo "$HOST_SLURM"; }
active_root() { [ -s "$ACTIVE" ] && cut -d' ' -f2 "$ACTIVE" || echo /; }

# The Debian mirror this machine already uses (deb822 sources first, then sources.list).
debian_mirror() {
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

# chroot_build SUITE: the chroot of that Debian release with the cluster's packages, made once.
# A changed package list makes it anew; it is built beside and moved into place when complete.
chroot_build() {
    local suite=$1 root="$CHROOTS/$1" stamp started
    stamp="$suite ${CHROOT_PKGS[*]}"
    [ "$(cat "$root/.sp-testcluster" 2>/dev/null)" = "$stamp" ] && return 0
    command -v debootstrap >/dev/null || {
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    }
    chroot_umount "$root"
    mounted_below "$root" && die "$root still has mounts: not rebuilding it"
    started=$(date +%s)
    mkdir -p "$CHROOTS"
    rm -rf --one-file-system "$root.new"
    log "debootstrap $suite from $(debian_mirror) into $root"
    debootstrap --variant=minbase "$suite" "$root.new" "$(debian_mirror)" >"$CHROOTS/$suite.log" 2>&1 \
        || die "debootstrap $suite failed (log: $CHROOTS/$suite.log)"
    printf '#!/bin/sh\nexit 101\n' > "$root.new/usr/sbin/policy-rc.d"   # no daemon starts at install
    chmod 755 "$root.new/usr/sbin/policy-rc.d"
    chroot "$root.new" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"' sh "${CHROOT_PKGS[@]}" >>"$CHROOTS/$suite.log" 2>&1 \
        || die "installing Slurm into the $suite chroot failed (log: $CHROOTS/$suite.log)"
    chroot "$root.new" apt-get clean
    echo "$stamp" > "$root.new/.sp-testcluster"
    rm -rf --one-file-system "$root"
    mv "$root.new" "$root"
    log "$suite chroot made in $(( $(date +%s) - started )) s"
}

# The cgroup v1 controllers mounted on the host (/sys/fs/cgroup/NAME).
cgroup_controllers() { awk '$3 == "cgroup" && $2 ~ "^/sys/fs/cgroup/" {sub("/sys/fs/cgroup/", "", $2); print $2}' /proc/mounts; }

# chroot_mount SUITE: what the cluster inside needs of the machine, bound in (idempotent).
chroot_mount() {
    local suite=$1 root="$CHROOTS/$1" d c sub
    mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
    for d in sys dev home tmp; do
        mountpoint -q "$root/$d" && continue
        mount --rbind "/$d" "$root/$d"
        mount --make-rslave "$root/$d"   # unmounting here never unmounts the host's
    done
    for c in $(cgroup_controllers); do
        sub="/sys/fs/cgroup/$c/sp-testcluster-$suite"
        mkdir -p "$sub"
        if [ -f "$sub/cpuset.cpus" ] && [ -z "$(cat "$sub/cpuset.cpus")" ]; then
            cat "/sys/fs/cgroup/$c/cpuset.cpus" > "$sub/cpuset.cpus"
            cat "/sys/fs/cgroup/$c/cpuset.mems" > "$sub/cpuset.mems"
        fi
        mountpoint -q "$root/sys/fs/cgroup/$c" && [ "$(stat -c %i "$root/sys/fs/cgroup/$c")" = "$(stat -c %i "$sub")" ] \
            || mount --bind "$sub" "$root/sys/fs/cgroup/$c"
    done
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    # The machine's own names (localhost, its hostname); `up` inside adds the nodes'.
    grep -qw localhost "$root/etc/hosts" 2>/dev/null \
        || { grep -v "$MARK" /etc/hosts; cat "$root/etc/hosts" 2>/dev/null || true; } > "$root/etc/hosts.new"
    [ ! -f "$root/etc/hosts.new" ] || mv "$root/etc/hosts.new" "$root/etc/hosts"
}

# chroot_umount ROOT: everything mounted below ROOT, innermost first.
chroot_umount() {
    local root=$1 m
    [ -d "$root" ] || return 0
    for m in $(awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
}

# mounted_below ROOT: something is mounted inside ROOT (a bound /home must never meet rm -rf).
mounted_below() { awk -v r="$1/" 'index($2, r) == 1 {found = 1} END {exit !found}' /proc/mounts; }

# chroot_users SUITE: sptest and sptest2 inside, with the host's uids (they share /home).
chroot_users() {
    local root="$CHROOTS/$1" u uid gid home
    for u in "$USER_NAME" "$OTHER_USER"; do
        IFS=: read -r _ _ uid gid _ home _ < <(getent passwd "$u")
        if ! chroot "$root" getent passwd "$u" >/dev/null; then
            chroot "$root" groupadd -g "$gid" "$u"
            chroot "$root" useradd -M -d "$home" -s /bin/bash -u "$uid" -g "$gid" "$u"
        fi
    done
}

# in_root ROOT CMD...: CMD with ROOT as the root of a mount namespace of its own (pivot_root, not
# chroot): the kernel refuses user namespaces to a chrooted process, and the sessions' containers
# (bwrap) need them. The daemons `up` starts this way keep that namespace while they run.
in_root() {
    unshare --mount --propagation private sh -c '
        root=$1; shift
        mount --rbind "$root" "$root" && cd "$root" && mkdir -p .old-root && pivot_root . .old-root \
            && cd / && umount -l /.old-root || exit 1
        exec "$@"' in_root "$@"
}

# stop_cluster VERSION ROOT: stop the cluster that runs (by its pid files) and unmount its chroot.
stop_cluster() {
    local version=$1 root=$2
    if [ "$root" = / ]; then
        SP_TC_DOWN_HOST=1 "$HERE/down"
    else
        [ -x "$root/opt/sp-testcluster/down" ] && chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            SP_TC_BASE="$CHROOT_BASE" SP_TC_INSIDE="$version" /opt/sp-testcluster/down
        chroot_umount "$root"
    fi
    rm -f "$ACTIVE"
}
