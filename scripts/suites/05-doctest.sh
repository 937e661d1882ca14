#!/usr/bin/env bash
# Doc-tests: the documentation's examples run as printed, against the suite
# cluster, so the docs cannot drift from the code.
#  - README.md and then each docs/*.md: every ```sql block, in order, in one psql
#    session (ON_ERROR_STOP) in a fresh database `app` with the extension, as the
#    README's install steps leave it. One test per block; the first error fails
#    its block and the blocks after it.
#  - every ```cpp block of those files that is a program (has main()) is compiled against the built client
#    (warnings are errors) and run twice against that database (the second run
#    is the retry: a replay); the README's one must be cxx-client/examples/quickstart.cpp.
#  - every ```js block is compiled by `node --check` (as CommonJS, an ES module or a function body).
#  - every relative link (and its #anchor) and every cited repository path in
#    every Markdown file exists.
# A block shown but deliberately not run has `norun` after its language
# (```sql norun): Citus, pg_cron, fragments of larger programs.
# Appends "<passed> <failed> doctest" to $SUITE_COUNTS.
source "$(dirname "$0")/../lib/common.sh"
export PATH=$PG_BIN:$PATH
PY=/usr/bin/python3; [ -x $PY ] || PY=python3
DOCTEST="$PY $REPO_ROOT/scripts/lib/doctest.py"
passed=0 failed=0
pass() { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "FAILED - $*"; }

TMP=$(mktemp -d /tmp/pgi_doctest.XXXXXX)
chmod 755 "$TMP"
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
roles_before=$(q -At -d postgres -c "SELECT string_agg(quote_literal(rolname), ',') FROM pg_roles")
cleanup() {
  q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS app" >/dev/null 2>&1
  # Roles the examples created (app, tenant_a, ...): their grants went with the database.
  for r in $(q -At -d postgres -c "SELECT quote_ident(rolname) FROM pg_roles WHERE rolname NOT IN ($roles_before)"); do
    q -d postgres -c "DROP ROLE $r" >/dev/null 2>&1
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

# The README's install steps: createdb app; CREATE EXTENSION pg_idempotency.
fresh_app() {
  cleanup_db=$(q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS app" -c "CREATE DATABASE app" 2>&1) &&
    q -d app -c "CREATE EXTENSION pg_idempotency" 2>&1 || { echo "$cleanup_db"; return 1; }
}

# sql_blocks FILE: runs FILE's sql blocks in a fresh `app`, one test per block.
sql_blocks() {
  local file=$1 name script=$TMP/doc.sql out=$TMP/doc.out
  name=${file#"$REPO_ROOT"/}
  (cd "$REPO_ROOT" && $DOCTEST sql "$name") >"$script" || { fail "$name: blocks extracted"; return; }
  local n; n=$(grep -c '^\\echo doctest-block ' "$script")
  [ "$n" -gt 0 ] || return 0
  fresh_app || { fail "$name: a fresh database app with the extension"; return; }
  (cd "$TMP" && q -d app -f "$script") >"$out" 2>&1
  local rc=$?
  local reached; reached=$(grep -c '^doctest-block ' "$out")
  while read -r _ num where; do
    if [ $rc -eq 0 ] || [ "$num" -lt "$reached" ]; then
      pass "$where: the sql block runs as printed"
    elif [ "$num" -eq "$reached" ]; then
      fail "$where: the sql block runs as printed"
      echo "--- psql output from this block on:"; sed -n "/^doctest-block $num /,\$p" "$out" | tail -n 30
    else
      fail "$where: the sql block runs as printed (not run: an earlier block failed)"
    fi
  done < <(grep '^\\echo doctest-block ' "$script" | sed 's/^\\echo //')
}

# cpp_blocks FILE: compiles and runs FILE's cpp blocks against the database app.
cpp_blocks() {
  local file=$1 name dir=$TMP/cpp
  name=${file#"$REPO_ROOT"/}
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$REPO_ROOT" && $DOCTEST blocks "$name" cpp "$dir") >"$dir/list" || { fail "$name: cpp blocks extracted"; return; }
  while read -r num where; do
    local src=$dir/$num.cpp bin=$dir/$num
    # A block without main() is a fragment of a larger program: shown, not built.
    grep -q '^int main(' "$src" || continue
    if g++ -std=c++17 -Wall -Wextra -Werror -I"$REPO_ROOT/cxx-client/include" -I"$("$PG_BIN/pg_config" --includedir)" \
         "$src" "$BUILD_DIR/libidempotency_client.a" -L"$("$PG_BIN/pg_config" --libdir)" -lpq -pthread -o "$bin" >"$dir/cc.log" 2>&1; then
      pass "$where: the cpp block compiles against the built client"
    else
      fail "$where: the cpp block compiles against the built client"; cat "$dir/cc.log"; continue
    fi
    if "$bin" >"$dir/run1.log" 2>&1 && "$bin" >"$dir/run2.log" 2>&1; then
      pass "$where: the cpp block runs against the cluster, and again as the retry (exit 0 twice)"
    else
      fail "$where: the cpp block runs against the cluster, and again as the retry (exit 0 twice)"
      cat "$dir/run1.log" "$dir/run2.log" 2>/dev/null
    fi
    if [ "$name" = README.md ] && [ "$num" = 01 ]; then
      # The retry must be answered from the stored response, byte for byte.
      if grep -q '^201 {"id": [0-9]*}$' "$dir/run1.log" && grep -q '^Idempotent-Replayed: true$' "$dir/run2.log" &&
         [ "$(head -1 "$dir/run1.log")" = "$(head -1 "$dir/run2.log")" ]; then
        pass "$where: the first run answers 201, the second replays it (Idempotent-Replayed: true)"
      else
        fail "$where: the first run answers 201, the second replays it (Idempotent-Replayed: true)"
        cat "$dir/run1.log" "$dir/run2.log"
      fi
      # quickstart.cpp is the README's example with a header comment.
      if diff <(grep -v '^//' "$REPO_ROOT/cxx-client/examples/quickstart.cpp") <(grep -v '^//' "$src") >"$dir/diff"; then
        pass "$where: is cxx-client/examples/quickstart.cpp"
      else
        fail "$where: is cxx-client/examples/quickstart.cpp"; cat "$dir/diff"
      fi
    fi
  done <"$dir/list"
}

# js_blocks FILE: node --check every js block; run the ones marked `run`.
js_blocks() {
  local file=$1 name dir=$TMP/js
  name=${file#"$REPO_ROOT"/}
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$REPO_ROOT" && $DOCTEST blocks "$name" js "$dir") >"$dir/list" || { fail "$name: js blocks extracted"; return; }
  [ -s "$dir/list" ] || return 0
  if ! command -v node >/dev/null; then fail "$name: node is needed for its js blocks"; return; fi
  while read -r num where; do
    # CommonJS, or an ES module (import/export), or the body of a function (a
    # handler's fragment with a `return` or `await` at its top level).
    cp "$dir/$num.js" "$dir/$num.mjs"
    { echo 'async function fragment() {'; cat "$dir/$num.js"; echo '}'; } >"$dir/$num.fn.js"
    if node --check "$dir/$num.js" >"$dir/check.log" 2>&1 || node --check "$dir/$num.mjs" >>"$dir/check.log" 2>&1 ||
       node --check "$dir/$num.fn.js" >>"$dir/check.log" 2>&1; then
      pass "$where: the js block compiles (node --check)"
    else fail "$where: the js block compiles (node --check)"; cat "$dir/check.log"; fi
  done <"$dir/list"
}

docs=("$REPO_ROOT/README.md")
for f in "$REPO_ROOT"/docs/*.md; do [ -f "$f" ] && docs+=("$f"); done
for f in "${docs[@]}"; do
  sql_blocks "$f"
  cpp_blocks "$f"
  js_blocks "$f"
done

# Links: every Markdown file in the repository (tracked or new, not ignored).
mapfile -t md < <(cd "$REPO_ROOT" && git ls-files --cached --others --exclude-standard -- '*.md' | sort -u)
for f in "${md[@]}"; do
  [ -f "$REPO_ROOT/$f" ] || continue
  if out=$(cd "$REPO_ROOT" && $DOCTEST links . "$f"); then
    pass "$f: every relative link and cited file exists"
  else
    fail "$f: every relative link and cited file exists"; echo "$out" | sed 's/^/  /'
  fi
done

echo "$passed $failed doctest" >>"$SUITE_COUNTS"
echo "doctest: $passed passed, $failed failed"
[ $failed -eq 0 ]
