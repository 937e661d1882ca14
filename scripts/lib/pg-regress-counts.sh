# pg_regress_counts FILE: prints "<passed> <failed>" for the output of
# pg_regress or pg_isolation_regress in FILE, whichever major wrote it:
#   15:   "test 01_claim   ... ok   12 ms", "     name ... FAILED" (parallel groups)
#   16+:  "ok 1         - 01_claim   12 ms", "not ok 2    + name   30 ms" (TAP-like;
#         "+" marks a test of a parallel group)
# A test whose failure is ignored ("failed (ignored)", "# SKIP") counts as neither.
pg_regress_counts() {
  awk '
    /^(test| ) +[^ ]+ +\.\.\. ok( |$)/       { p++ }
    /^(test| ) +[^ ]+ +\.\.\. FAILED/        { f++ }
    /^ok [0-9]+ +[-+] /  && !/# SKIP/        { p++ }
    /^not ok [0-9]+ +[-+] / && !/# SKIP/     { f++ }
    END { print p + 0, f + 0 }' "$1"
}
