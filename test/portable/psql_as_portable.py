#!/usr/bin/env python3
"""psql for pg_regress, running the extension's tests against the portable edition.

pg_regress runs `psql -X -a -q -d DB < test.sql > test.out 2>&1`; given
`--bindir` pointing at a directory whose `psql` runs this script, every test
goes through two rewrites and nothing else (see test/portable/differences.md):

  input   `CREATE EXTENSION [IF NOT EXISTS] pg_idempotency;` is answered as the
          extension would (the portable edition is installed beforehand, by a
          non-superuser): silently on the run's first call (the extension is
          created there), with the server's NOTICE "already exists, skipping"
          afterwards. `DROP EXTENSION pg_idempotency;` drops the edition's
          schema, and a later CREATE EXTENSION runs the install script again
          as that non-superuser. Each echoes as the original line.
  output  PL/pgSQL adds the portable functions' own frames to an error's
          CONTEXT (e.g. "PL/pgSQL function idempotency.claim(...) line 30 at
          RAISE"); a C function has none. Those inner frames are removed and
          the caller's own frames (a DO block, a test's function) are kept.

Environment: PORTABLE_REAL_PSQL (the real psql), PORTABLE_STATE_DIR (where the
"created" marks are kept for the run), PORTABLE_SQL and PORTABLE_OWNER (the
install script and the role that runs it).
"""
import os
import re
import subprocess
import sys

CREATE = re.compile(r'^\s*CREATE\s+EXTENSION\s+(IF\s+NOT\s+EXISTS\s+)?"?pg_idempotency"?[^;]*;\s*$', re.I)
DROP = re.compile(r'^\s*DROP\s+EXTENSION\s+(IF\s+EXISTS\s+)?"?pg_idempotency"?\s*;\s*$', re.I)
BEGIN_MARK = "--PGI-PORTABLE-CREATE-EXTENSION "
END_MARK = "--PGI-PORTABLE-END"

# One frame of an error context, as psql prints it (one or more lines).
FRAME_START = re.compile(r'^(PL/pgSQL function |SQL function |SQL statement "|SQL expression "|PL/pgSQL assignment "|'
                         r'COPY |parallel worker|JSON data|extension script file )')
# Frames inside the portable edition's own functions.
INTERNAL_FUNCTION = re.compile(r'^(PL/pgSQL function idempotency\.\w+\(|SQL function "(fingerprint|_\w+)" )')


def rewrite_input(text, state_dir):
    out = []
    mark = os.path.join(state_dir, "created")
    for line in text.split("\n"):
        create, drop = CREATE.match(line), DROP.match(line)
        if not create and not drop:
            out.append(line)
            continue
        out.append(BEGIN_MARK + line)
        if drop:
            # The edition's DROP EXTENSION: its schema goes (quietly, as
            # DROP EXTENSION drops its members without a NOTICE).
            out.append("DO $pgi$DECLARE m text := current_setting('client_min_messages'); BEGIN "
                       "PERFORM set_config('client_min_messages', 'warning', true); "
                       "DROP SCHEMA idempotency CASCADE; PERFORM set_config('client_min_messages', m, true); END$pgi$;")
            if os.path.exists(mark):
                os.unlink(mark)
        elif os.path.exists(mark):
            # IF NOT EXISTS on an existing extension: the server's NOTICE.
            # (Without IF NOT EXISTS the extension would fail: 42710.)
            if create.group(1):
                out.append("DO $pgi$BEGIN RAISE NOTICE 'extension \"pg_idempotency\" already exists, skipping'; END$pgi$;")
            else:
                out.append("DO $pgi$BEGIN RAISE EXCEPTION 'extension \"pg_idempotency\" already exists' "
                           "USING ERRCODE = '42710'; END$pgi$;")
        elif os.environ.get("PORTABLE_SQL") and not os.path.exists(os.path.join(state_dir, "first")):
            pass  # the run's first CREATE EXTENSION: installed beforehand
        else:
            # Created again after a DROP: the owner runs the script again.
            out += ["\\set ECHO none", "DO $pgi$BEGIN END$pgi$;",
                    "SET SESSION AUTHORIZATION " + os.environ["PORTABLE_OWNER"] + ";",
                    "\\i " + os.environ["PORTABLE_SQL"], "RESET SESSION AUTHORIZATION;", "\\set ECHO all"]
        if create:
            open(mark, "a").close()
            open(os.path.join(state_dir, "first"), "a").close()
        out.append(END_MARK)
    return "\n".join(out)


def split_frames(lines, i):
    """Frames of the context block starting at lines[i] (without 'CONTEXT:  '); returns (frames, next index)."""
    frames = []
    while i < len(lines) and FRAME_START.match(lines[i]):
        frame = [lines[i]]
        quoted = re.match(r'^(SQL statement|SQL expression|PL/pgSQL assignment) "', lines[i])
        i += 1
        if quoted and not frame[0].endswith('"'):
            while i < len(lines):
                frame.append(lines[i])
                i += 1
                if frame[-1].endswith('"'):
                    break
        frames.append(frame)
    return frames, i


def rewrite_output(text):
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(BEGIN_MARK):
            out.append(line[len(BEGIN_MARK):])
            i += 1
            # drop the stand-in statement's echo, keep what the server said
            while i < len(lines) and lines[i] != END_MARK:
                if not lines[i].startswith("DO $pgi$") and not lines[i].startswith("\\set ECHO"):
                    out.append(lines[i])
                i += 1
            i += 1
            continue
        if line.startswith("CONTEXT:  "):
            lines[i] = line[len("CONTEXT:  "):]
            frames, j = split_frames(lines, i)
            if not frames:
                out.append(line)
                i += 1
                continue
            last_internal = -1
            for n, frame in enumerate(frames):
                if INTERNAL_FUNCTION.match(frame[0]):
                    last_internal = n
            kept = frames[last_internal + 1:]
            if kept:
                kept[0] = ["CONTEXT:  " + kept[0][0]] + kept[0][1:]
                for frame in kept:
                    out.extend(frame)
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def main():
    real = os.environ["PORTABLE_REAL_PSQL"]
    state_dir = os.environ["PORTABLE_STATE_DIR"]
    if sys.stdin.isatty():
        os.execv(real, [real] + sys.argv[1:])
    text = rewrite_input(sys.stdin.read(), state_dir)
    proc = subprocess.run([real] + sys.argv[1:], input=text.encode(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sys.stdout.buffer.write(rewrite_output(proc.stdout.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape"))
    sys.stdout.flush()
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
