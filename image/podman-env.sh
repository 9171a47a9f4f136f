# Sourced by image/build.sh and image/run-test.sh: rootful podman with the settings that work on
# the test machines (each default fails there), storage and configuration under a directory of
# our own so nothing of the host's podman setup is read or changed.
#
#   runtime runc         crun refuses the hybrid cgroup layout ("cgroups in hybrid mode not supported")
#   cgroupfs             no systemd to ask for scopes
#   default_ulimits      podman's defaults exceed the hard limits: "setrlimit RLIMIT_NOFILE:
#                        Operation not permitted"; use the machine's real hard limits
#   netns = "none"       the default bridge network rewrites the host's iptables and turns on
#                        ip_forward; every build/run here names its network explicitly
#
# TSPROXY_IMAGE_STATE (default /var/lib/tsproxy-image) holds storage and the two conf files;
# TSPROXY_IMAGE_CACHE (default /var/cache/tsproxy-image) the mmdebstrap base tarball.
TSPROXY_IMAGE_STATE=${TSPROXY_IMAGE_STATE:-/var/lib/tsproxy-image}
TSPROXY_IMAGE_CACHE=${TSPROXY_IMAGE_CACHE:-/var/cache/tsproxy-image}
mkdir -p "$TSPROXY_IMAGE_STATE/storage" "$TSPROXY_IMAGE_STATE/tmp" "$TSPROXY_IMAGE_CACHE"
_nofile=$(ulimit -Hn)
[ "$_nofile" = unlimited ] && _nofile=1048576
_nproc=$(ulimit -Hu)
{ [ "$_nproc" = unlimited ] || [ "$_nproc" -gt 32768 ]; } && _nproc=32768
# Written only when different, and by rename: a podman already running (a build's copier
# subprocess re-reads them) must never see a half-written file.
_put() { # file content
    [ -f "$1" ] && [ "$(cat "$1")" = "$2" ] && return 0
    printf '%s\n' "$2" >"$1.$$" && mv -f "$1.$$" "$1"
}
_put "$TSPROXY_IMAGE_STATE/containers.conf" "$(cat <<CONF
[containers]
default_ulimits = ["nofile=$_nofile:$_nofile", "nproc=$_nproc:$_nproc"]
netns = "none"
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
image_copy_tmp_dir = "$TSPROXY_IMAGE_STATE/tmp"
CONF
)"
_put "$TSPROXY_IMAGE_STATE/storage.conf" "$(cat <<CONF
[storage]
driver = "overlay"
graphroot = "$TSPROXY_IMAGE_STATE/storage"
runroot = "/run/tsproxy-image${TSPROXY_IMAGE_STATE//\//-}"
CONF
)"
export CONTAINERS_CONF="$TSPROXY_IMAGE_STATE/containers.conf"
export CONTAINERS_STORAGE_CONF="$TSPROXY_IMAGE_STATE/storage.conf"
export TMPDIR="$TSPROXY_IMAGE_STATE/tmp"
unset _nofile _nproc
unset -f _put
