# Chroots of other Debian suites, to build and test on other PostgreSQL
# majors than the host's (Debian 12 ships 15): 17 in Debian 13 "trixie", 18 in
# "sid". Source it after common.sh; it defines functions only.
#
# A chroot is made with `debootstrap --variant=minbase` from the machine's own
# apt source (read from /etc/apt at run time), cached in $CHROOT_CACHE/<suite>
# between runs and remade when missing or broken. Packages are installed only
# when missing. Everything runs inside it through chroot_exec: a private mount
# namespace with /proc, /dev, /dev/pts, /dev/shm and /sys, so nothing stays
# mounted on the host. The project runs on a copy of the tree (/root/src),
# so host and chroot builds never share object files.

CHROOT_CACHE=${CHROOT_CACHE:-/var/cache/pg-idempotency/chroots}
CHROOT_SRC=/root/src
# The majors tested in chroots, and the Debian suite that ships each.
declare -A CHROOT_SUITE_OF_MAJOR=([17]=trixie [18]=sid)
CHROOT_MAJORS=(17 18)

chroot_root() { echo "$CHROOT_CACHE/$(chroot_suite "$1")"; }
chroot_suite() {
  local s=${CHROOT_SUITE_OF_MAJOR[$1]:-}
  [ -n "$s" ] || { echo "PostgreSQL $1 is not tested here: no Debian suite this machine reaches ships it (the host's 15; chroots: ${CHROOT_MAJORS[*]})" >&2; return 1; }
  echo "$s"
}

# sid's Release file is not always within its Valid-Until.
chroot_apt_opts() { [ "$(chroot_suite "$1")" = sid ] && echo "-o Acquire::Check-Valid-Until=false"; }

# The Debian archive this machine's apt uses: the first "deb" URI of a stanza
# whose suites include a plain release name (not -security/-updates), from
# /etc/apt/sources.list.d/*.sources (deb822) or the one-line formats.
host_debian_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '
      function flush() { if (deb && uris != "" && plain && !done) { print uris; done = 1 } deb = 0; uris = ""; plain = 0 }
      /^[[:space:]]*$/ { flush(); next }
      /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
      /^URIs:/  { uris = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i !~ /-/) plain = 1 }
      END { flush() }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" { u = ($2 ~ /^\[/) ? $3 : $2; s = ($2 ~ /^\[/) ? $4 : $3; if (s !~ /-/) { print u; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  echo "no Debian apt source found in /etc/apt" >&2
  return 1
}

# chroot_exec ROOT CMD...: CMD inside ROOT, as root, with a clean environment
# (plus PGI_CHROOT=1 and any NAME=value given as leading arguments to env),
# in a private mount namespace: the mounts end with the last process in it.
chroot_exec() {
  local root=$1; shift
  unshare --mount --propagation private -- /bin/bash -c '
    root=$1; shift
    m() { mountpoint -q "$root$2" || mount "${@:3}" "$1" "$root$2"; }
    m proc /proc -t proc
    m /dev /dev --bind
    m /dev/pts /dev/pts --bind
    m shm /dev/shm -t tmpfs -o mode=1777
    m /sys /sys --rbind
    exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb PGI_CHROOT=1 \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"' chroot_exec "$root" "$@"
}

# A process (apt, dpkg, a build) is running with ROOT as its root directory.
chroot_busy() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$1" ] && return 0
  done
  return 1
}

# Bootstrapped and usable: debootstrap finished (it removes /debootstrap at the
# end) and apt runs.
chroot_healthy() {
  local root=$1
  [ -x "$root/usr/bin/apt-get" ] && [ -f "$root/var/lib/dpkg/status" ] && [ ! -e "$root/debootstrap" ] &&
    chroot "$root" /bin/true 2>/dev/null
}

# rm -rf of a directory, refused while anything is mounted below it (a bind
# mount of /dev would take the host's device nodes with it).
remove_tree() {
  if awk -v d="$1/" 'index($2 "/", d) == 1 {found = 1} END {exit !found}' /proc/mounts; then
    echo "$1: something is still mounted below it; not removing it" >&2
    return 1
  fi
  rm -rf --one-file-system "$1"
}

chroot_make() {
  local major=$1 suite root mirror tmp
  suite=$(chroot_suite "$major") || return 1
  root=$(chroot_root "$major")
  mirror=$(host_debian_mirror) || return 1
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  # Built next to the cache and moved in when complete: an interrupted run
  # never leaves something that looks usable.
  tmp=$root.new
  remove_tree "$tmp" || return 1
  mkdir -p "$CHROOT_CACHE"
  log "debootstrap --variant=minbase $suite (PostgreSQL $major) into $root"
  debootstrap --variant=minbase "$suite" "$tmp" "$mirror" >"$CHROOT_CACHE/$suite.debootstrap.log" 2>&1 || {
    tail -20 "$CHROOT_CACHE/$suite.debootstrap.log" >&2; return 1; }
  remove_tree "$root" || return 1
  mv "$tmp" "$root"
  touch "$root/.pgi-bootstrapped"
}

# chroot_ensure MAJOR [SUITE...]: the chroot exists, is healthy, has the
# matrix's packages and those of the suites named (names or substrings, as
# scripts/test takes them).
chroot_ensure() {
  local major=$1 root waited=0
  shift
  root=$(chroot_root "$major") || return 1
  # A chroot another process is still setting up (made here or adopted) is
  # waited for, up to 30 minutes.
  while [ -d "$root" ] && [ ! -e "$root/.pgi-bootstrapped" ] && [ ! -e "$root/.lead-ready" ] && chroot_busy "$root"; do
    [ $waited -eq 0 ] && log "waiting for the process setting up $root"
    [ $waited -ge 1800 ] && { echo "$root: still busy after 30 minutes" >&2; return 1; }
    sleep 10; waited=$((waited + 10))
  done
  if [ -d "$root" ] && chroot_healthy "$root"; then
    [ -e "$root/.pgi-bootstrapped" ] || touch "$root/.pgi-bootstrapped"   # adopted
  else
    [ -d "$root" ] && log "$root is broken: remaking it"
    chroot_make "$major" || return 1
  fi
  # PostgreSQL's packages would start a cluster on 5432: services never start here.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod +x "$root/usr/sbin/policy-rc.d"
  chroot_packages "$major" "$@"
}

# chroot_packages MAJOR [SUITE...]: the packages common.sh lists for the matrix
# and the chroots, for this major, and its SUITE_PACKAGES of the suites named;
# only the missing.
chroot_packages() {
  local major=$1 root apt missing
  shift
  root=$(chroot_root "$major")
  apt=$(chroot_apt_opts "$major")
  missing=$(PG_MAJOR=$major PG_BIN= bash -c 'source "$1"; shift
    printf "%s\n" "${MATRIX_PACKAGES[@]}" "${CHROOT_PACKAGES[@]}"
    for suite in "${!SUITE_PACKAGES[@]}"; do
      for w in "$@"; do [[ $suite == *"$w"* ]] && { printf "%s\n" ${SUITE_PACKAGES[$suite]}; break; }; done
    done' _ "$REPO_ROOT/scripts/lib/common.sh" "$@" |
    while read -r p; do
      chroot "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
    done | tr '\n' ' ')
  [ -z "${missing// /}" ] && return 0
  log "installing into $(chroot_suite "$major"): $missing"
  # Others may run apt in the same chroot: wait for its lock rather than fail.
  apt="$apt -o DPkg::Lock::Timeout=600"
  chroot_exec "$root" DEBIAN_FRONTEND=noninteractive bash -c "apt-get $apt update -qq && apt-get $apt install -y -qq --no-install-recommends $missing" \
    >"$root/var/log/pgi-apt.log" 2>&1 || { tail -30 "$root/var/log/pgi-apt.log" >&2; return 1; }
}

# The tree, without build outputs, into the chroot's $CHROOT_SRC. Outputs made
# inside the chroot are kept (excluded from --delete), so rebuilds are incremental.
#
# make and CMake rebuild what is older than its sources, so a changed file must
# arrive newer than every object made from it. Its mtime from the host's tree
# says nothing of that: the trees synced here come from different worktrees and
# branches, and a file checked out at 09:40 may replace one that objects were
# built from at 09:47. Kept, that mtime left test objects compiled against an
# older client.hpp linked with a client library compiled against the newer one
# (ClaimOptions and ClaimResult had grown): every test using a Client failed with
# std::bad_alloc. So files are compared by content (--checksum) and a changed
# one gets the time of the sync (--no-times); unchanged ones keep theirs, and
# rebuilds stay incremental.
CHROOT_SYNC_STAMP=.pgi-sync-by-content
chroot_sync() {
  local root compare=--checksum
  root=$(chroot_root "$1")
  command -v rsync >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rsync >/dev/null
  mkdir -p "$root$CHROOT_SRC"
  # Objects left by syncs that kept the host's mtimes may be stale already:
  # the first sync by content sends every file anew, so all is rebuilt once.
  [ -e "$root$CHROOT_SRC/$CHROOT_SYNC_STAMP" ] || compare=--ignore-times
  rsync -a --no-times "$compare" --delete --exclude="/$CHROOT_SYNC_STAMP" \
    --exclude=/.git --exclude=/build/ --exclude=/bench/out/ --exclude=node_modules/ \
    --exclude='*.o' --exclude='*.so' --exclude='*.bc' --exclude='*.d' \
    --exclude=/test/results/ --exclude=/test/regression.diffs --exclude=/test/regression.out \
    --exclude=/test/isolation_output/ --exclude=/test/log/ --exclude=/test/tmp_check/ \
    "$REPO_ROOT/" "$root$CHROOT_SRC/"
  touch "$root$CHROOT_SRC/$CHROOT_SYNC_STAMP"
}

# chroot_prepare MAJOR: ready to run, with the current tree's extension built
# (warnings as errors) and installed into the chroot's PostgreSQL.
chroot_prepare() {
  local major=$1 root
  root=$(chroot_root "$major") || return 1
  chroot_ensure "$major" && chroot_sync "$major" || return 1
  chroot_exec "$root" PG_MAJOR="$major" bash -c "make -C $CHROOT_SRC -s -j2 WERROR=1 PG_CONFIG=/usr/lib/postgresql/$major/bin/pg_config >/dev/null &&
    make -C $CHROOT_SRC -s install WERROR=1 PG_CONFIG=/usr/lib/postgresql/$major/bin/pg_config >/dev/null"
}
