#!/usr/bin/env bash
# The Debian packages (debian/) and the PGXN release, as a user gets them:
#   1. the version agrees everywhere (VERSION is the one place; the changelog,
#      the control file's default_version and META.json follow it);
#   2. dpkg-buildpackage builds postgresql-NN-idempotency (every major in
#      debian/pgversions that is installed here), libpg-idempotency-dev and
#      pg-idempotency-demo from a copy of the tree;
#   3. lintian reports no error;
#   4. every file the source says a package must hold is in it (a missing
#      file fails);
#   5. apt installs the .debs where nothing was make-installed and
#      debian/tests runs there as autopkgtest would: regress and isolation
#      against the installed files, and an outside CMake project built
#      against the installed -dev package;
#   6. `make dist` makes the PGXN archive and Debian's pgxnclient installs it
#      into a PostgreSQL copy, where the extension then works.
#
# Where step 5 installs: inside a chroot made by scripts/lib/chroot.sh
# (PGI_CHROOT=1) the chroot itself, after removing what `make install` put
# there; on the host, whose PostgreSQL may be shared, the Debian 12 chroot
# $PACKAGES_ROOT (default $CHROOT_CACHE/bookworm, made with debootstrap when
# missing) unless PACKAGES_INSTALL_ON_HOST=1 says the host is disposable.
source "$(dirname "$0")/../lib/common.sh"
set -u
work=$(mktemp -d /tmp/pgi-packages.XXXXXX)
chmod 755 "$work"
passed=0 failed=0
ok() { echo "ok   - $1"; passed=$((passed + 1)); }
not_ok() { echo "FAIL - $1" >&2; [ -n "${2:-}" ] && [ -f "$2" ] && tail -c 6000 "$2" >&2; failed=$((failed + 1)); }
finish() { echo "$passed $failed packages" >>"$SUITE_COUNTS"; rm -rf "$work"; [ "$failed" -eq 0 ]; exit; }
APT="apt-get ${APT_OPTS:-} -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends"
CHROOT_CACHE=${CHROOT_CACHE:-/var/cache/pg-idempotency/chroots}
PACKAGES_ROOT=${PACKAGES_ROOT:-$CHROOT_CACHE/bookworm}

# ---- 1. one version ------------------------------------------------------------
version=$(cat "$REPO_ROOT/VERSION")
changelog=$(cd "$REPO_ROOT" && dpkg-parsechangelog -SVersion)
control=$(sed -nE "s/^default_version = '([^']*)'/\1/p" "$REPO_ROOT/sql/pg_idempotency.control")
make -s -C "$REPO_ROOT" META.json PG_CONFIG="$PG_BIN/pg_config" >/dev/null
meta=$(/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["version"], d["provides"]["pg_idempotency"]["version"])' "$REPO_ROOT/META.json")
if [ "$changelog" = "$version" ] && [ "${version%.*}" = "$control" ] && [ "$meta" = "$version $version" ] &&
   [ -f "$REPO_ROOT/sql/pg_idempotency--$control.sql" ]; then
  ok "one version: VERSION $version = debian/changelog = META.json; the control file's default_version $control has its script"
else
  not_ok "versions disagree: VERSION $version, changelog $changelog, control $control, META.json $meta"
fi

# ---- 2. build ------------------------------------------------------------------
for p in debhelper postgresql-server-dev-all lintian pgxnclient fakeroot cmake pkg-config libpq-dev \
         libcpp-httplib-dev nlohmann-json3-dev libhiredis-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=" $p"
done
if [ -n "${missing:-}" ]; then
  DEBIAN_FRONTEND=noninteractive $APT install $missing >"$work/apt.log" 2>&1 || { not_ok "installing the build tools:$missing" "$work/apt.log"; finish; }
fi
src=$work/pg-idempotency
mkdir -p "$src"
# The tree as git sees it (committed and not yet committed files), without
# build products; a copy without .git (a chroot's) as it is, less the same.
if git -C "$REPO_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$REPO_ROOT" && git ls-files -co --exclude-standard | grep -vE '^(build|build-cmake)/|\.(o|so|d)$' |
    tar -T - -cf -) | tar -xf - -C "$src"
else
  (cd "$REPO_ROOT" && tar --exclude=./build --exclude=./build-cmake --exclude='*.o' --exclude='*.so' --exclude='*.d' \
    --exclude=./debian/tmp -cf - .) | tar -xf - -C "$src"
fi
(cd "$src" && pg_buildext updatecontrol >/dev/null 2>&1 || true)
# PACKAGES_PREBUILT=DIR: take the .debs and .changes from DIR instead (to
# re-run the later steps on packages just built by hand).
if [ -n "${PACKAGES_PREBUILT:-}" ]; then
  cp "$PACKAGES_PREBUILT"/*.deb "$PACKAGES_PREBUILT"/*.changes "$PACKAGES_PREBUILT"/*.buildinfo "$work/" 2>/dev/null
  ok "prebuilt packages from $PACKAGES_PREBUILT: $(cd "$work" && ls ./*.deb | sed 's|^\./||; s|_.*||' | sort | tr '\n' ' ')"
elif (cd "$src" && DEB_BUILD_OPTIONS="nocheck parallel=2" dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
  ok "dpkg-buildpackage builds $(cd "$work" && ls ./*.deb | sed 's|^\./||; s|_.*||' | sort | tr '\n' ' ')"
else
  not_ok "dpkg-buildpackage" "$work/build.log"; finish
fi
majors=$(cd "$work" && ls postgresql-*-idempotency_*.deb | sed -E 's/^postgresql-([0-9]+)-.*/\1/' | sort -u)

# ---- 3. lintian -----------------------------------------------------------------
lintian --tag-display-limit 0 "$work"/*.changes >"$work/lintian.log" 2>&1
summary=$(awk -F: '/^[EWIP]:/ {n[$1]++} END {printf "%d errors, %d warnings, %d info", n["E"], n["W"], n["I"]}' "$work/lintian.log")
if ! grep -q '^E:' "$work/lintian.log"; then ok "lintian: no errors ($summary)"; else not_ok "lintian: $summary" "$work/lintian.log"; fi
grep -E '^[EW]:' "$work/lintian.log" | sed 's/^/    /' | head -40

# ---- 4. nothing missing -----------------------------------------------------------
contents() { dpkg-deb -c "$1" | awk '{print $6}' | sed 's|^\./|/|; s|/$||'; }
check_files() {  # DEB FILE...: every FILE (a shell pattern) is in DEB
  local deb=$1 f miss=; shift
  contents "$deb" >"$work/contents"
  for f in "$@"; do
    grep -qx -- "$f" "$work/contents" 2>/dev/null || grep -q "^${f//\*/.*}\$" "$work/contents" || miss+=" $f"
  done
  if [ -z "$miss" ]; then ok "$(basename "$deb" | sed 's/_.*//') holds its $# files"
  else not_ok "$(basename "$deb" | sed 's/_.*//') misses:$miss"; fi
}
for v in $majors; do
  expected=(/usr/lib/postgresql/$v/lib/pg_idempotency.so /usr/share/postgresql/$v/extension/pg_idempotency.control)
  for f in "$REPO_ROOT"/sql/pg_idempotency--*.sql; do expected+=("/usr/share/postgresql/$v/extension/$(basename "$f")"); done
  check_files "$work"/postgresql-"$v"-idempotency_*.deb "${expected[@]}"
done
expected=(/usr/lib/*/libidempotency_client.a /usr/lib/*/cmake/pg_idempotency/pg_idempotencyConfig.cmake
          /usr/lib/*/cmake/pg_idempotency/pg_idempotencyConfigVersion.cmake
          /usr/lib/*/cmake/pg_idempotency/pg_idempotencyTargets.cmake)
for f in $(cd "$REPO_ROOT/cxx-client/include" && find . -type f | sed 's|^\./||'); do expected+=("/usr/include/$f"); done
check_files "$work"/libpg-idempotency-dev_*.deb "${expected[@]}"
check_files "$work"/pg-idempotency-demo_*.deb /usr/bin/idempotency-demo-server /usr/bin/idempotency-demo-load \
  /usr/bin/idempotency-demo-consumer

# ---- 5. apt install where nothing was make-installed, then debian/tests -----------
# run_in ROOT CMD...: CMD as root inside ROOT ("/" = here), in a private mount namespace.
run_in() {
  local root=$1; shift
  if [ "$root" = / ]; then "$@"; return; fi
  unshare --mount --propagation private -- /bin/bash -c '
    root=$1; shift
    m() { mountpoint -q "$root$2" || mount "${@:3}" "$1" "$root$2"; }
    m proc /proc -t proc; m /dev /dev --bind; m /dev/pts /dev/pts --bind
    m shm /dev/shm -t tmpfs -o mode=1777; m /sys /sys --rbind
    exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"' run_in "$root" "$@"
}
root=
if [ -n "${PGI_CHROOT:-}" ] || [ "${PACKAGES_INSTALL_ON_HOST:-0}" = 1 ]; then
  root=/
else
  root=$PACKAGES_ROOT
  if [ ! -x "$root/usr/bin/apt-get" ]; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    debootstrap --variant=minbase bookworm "$root" "${mirror:-}" >"$work/debootstrap.log" 2>&1 ||
      { not_ok "making the Debian 12 chroot $root" "$work/debootstrap.log"; finish; }
  fi
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"; chmod +x "$root/usr/sbin/policy-rc.d"
  # The host's Debian 12 sources (updates and security too): the packages
  # depend on the minor release they were built against (pg_buildext).
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"; : >"$root/etc/apt/sources.list"
  fi
  pgs=$(for v in $majors; do printf 'postgresql-%s ' "$v"; done)
  run_in "$root" /bin/sh -c "apt-get ${APT_OPTS:-} -q update && DEBIAN_FRONTEND=noninteractive $APT install $pgs" \
    >"$work/chroot-apt.log" 2>&1 || { not_ok "PostgreSQL $majors in $root" "$work/chroot-apt.log"; finish; }
fi
# Nothing make-installed may stand in for the package's files: remove what
# `make install` put there (files no package owns).
for v in $majors; do
  for f in "${root%/}"/usr/lib/postgresql/$v/lib/pg_idempotency.so "${root%/}"/usr/share/postgresql/$v/extension/pg_idempotency*; do
    [ -e "$f" ] || continue
    run_in "$root" dpkg -S "${f#"${root%/}"}" >/dev/null 2>&1 || rm -f "$f"
  done
done
stage=/tmp/pgi-packages
rm -rf "${root%/}$stage"; mkdir -p "${root%/}$stage"
cp "$work"/*.deb "${root%/}$stage/"
(cd "$src" && tar -cf - debian test Makefile VERSION sql extension) | tar -xf - -C "${root%/}$stage"
# The extension package for each major built, the -dev and demo packages.
pkgs=$(cd "${root%/}$stage" && ls ./*.deb | sed "s|^\./|$stage/|" | tr '\n' ' ')
if run_in "$root" /bin/sh -c "apt-get ${APT_OPTS:-} -q update >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive $APT install --reinstall $pkgs" \
     >"$work/install.log" 2>&1; then
  ok "apt install ./*.deb where nothing was make-installed ($([ "$root" = / ] && echo here || echo "$root"))"
else
  not_ok "apt install ./*.deb" "$work/install.log"; finish
fi
# The tests' own dependencies (debian/tests/control), then each test.
run_in "$root" /bin/sh -c "DEBIAN_FRONTEND=noninteractive $APT install make cmake g++ postgresql-server-dev-all" \
  >>"$work/install.log" 2>&1
chown -R postgres:postgres "${root%/}$stage" 2>/dev/null || run_in "$root" chown -R postgres:postgres "$stage"
for t in installcheck cmake-consumer; do
  if run_in "$root" /bin/sh -c "cd $stage && AUTOPKGTEST_TMP=\$(mktemp -d) debian/tests/$t" >"$work/$t.log" 2>&1; then
    case $t in
      installcheck) ok "debian/tests/$t against the installed packages ($(grep -cE '^(test| ) +[^ ]+ +\.\.\. ok|^ok [0-9]' "$work/$t.log") regress and isolation tests ok)" ;;
      *) if grep -q 'consumer ok: replay' "$work/$t.log"; then ok "debian/tests/$t: an outside CMake project builds against the installed -dev package and replays a key"
         else not_ok "debian/tests/$t: the consumer did not report its replay" "$work/$t.log"; fi ;;
    esac
  else
    not_ok "debian/tests/$t against the installed packages" "$work/$t.log"
  fi
done

# ---- 6. PGXN -----------------------------------------------------------------------
if [ -n "$(cd "$REPO_ROOT" && git status --porcelain --untracked-files=no)" ]; then
  echo "note: make dist archives HEAD; uncommitted changes are not in it"
fi
rm -f "$REPO_ROOT"/pg_idempotency-*.zip
if ! git -C "$REPO_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "note: no git work tree here (a chroot's copy): make dist and the PGXN install run on the host"
elif make -s -C "$REPO_ROOT" dist PG_CONFIG="$PG_BIN/pg_config" >"$work/dist.log" 2>&1 &&
   unzip -l "$REPO_ROOT/pg_idempotency-$version.zip" | grep -q "pg_idempotency-$version/META.json"; then
  ok "make dist: pg_idempotency-$version.zip with META.json"
  mv "$REPO_ROOT/pg_idempotency-$version.zip" "$work/"
  # Into a copy of the PostgreSQL installation PG_BIN belongs to, never the shared one.
  pgroot=$work/pgxn-pg; mkdir -p "$pgroot/usr/lib/postgresql" "$pgroot/usr/share/postgresql" "$pgroot/usr/include"
  major=$("$PG_BIN/pg_config" --version | sed -E 's/PostgreSQL ([0-9]+).*/\1/')
  base=$("$PG_BIN/pg_config" --bindir); base=${base%/usr/lib/postgresql/$major/bin}
  cp -a "$base/usr/lib/postgresql/$major" "$pgroot/usr/lib/postgresql/"
  cp -a "$base/usr/share/postgresql/$major" "$pgroot/usr/share/postgresql/"
  cp -a "$base/usr/include/postgresql" "$pgroot/usr/include/"
  rm -f "$pgroot/usr/lib/postgresql/$major/lib/pg_idempotency.so" "$pgroot/usr/share/postgresql/$major/extension/pg_idempotency"*
  pgc=$pgroot/usr/lib/postgresql/$major/bin/pg_config
  mkdir -p "$("$pgc" --libdir)"  # pgxnclient checks that it may write there
  if pgxn install --pg_config "$pgc" "$work/pg_idempotency-$version.zip" >"$work/pgxn.log" 2>&1 &&
     [ -f "$pgroot/usr/share/postgresql/$major/extension/pg_idempotency--1.2.sql" ]; then
    ok "pgxnclient installs the archive into a PostgreSQL $major copy"
    data=$work/pgxn-data; mkdir -p "$data"; chown postgres "$data" "$work"
    port=$(free_port)
    if runuser -u postgres -- "$pgroot/usr/lib/postgresql/$major/bin/initdb" -D "$data/db" -A trust -U postgres --no-sync >/dev/null &&
       runuser -u postgres -- "$pgroot/usr/lib/postgresql/$major/bin/pg_ctl" -D "$data/db" -l "$data/log" -w \
         -o "-p $port -k $data -c listen_addresses='' -c shared_preload_libraries=pg_idempotency" start >/dev/null &&
       [ "$("$PG_BIN/psql" -X -At -h "$data" -p "$port" -U postgres -d postgres \
            -c "CREATE EXTENSION pg_idempotency" \
            -c "SELECT (idempotency.claim('pgxn', 'k')).outcome || ' ' || extversion FROM pg_extension WHERE extname = 'pg_idempotency'" 2>&1 | tail -1)" = "claimed 1.2" ]; then
      ok "the PGXN-installed extension works (CREATE EXTENSION, claim)"
    else
      not_ok "the PGXN-installed extension works" "$data/log"
    fi
    runuser -u postgres -- "$pgroot/usr/lib/postgresql/$major/bin/pg_ctl" -D "$data/db" -m immediate stop >/dev/null 2>&1
  else
    not_ok "pgxnclient installs the archive" "$work/pgxn.log"
  fi
else
  not_ok "make dist" "$work/dist.log"
fi
finish
