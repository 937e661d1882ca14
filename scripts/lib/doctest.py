#!/usr/bin/env python3
"""The doc-tests' reader of Markdown files (scripts/suites/05-doctest.sh).

  doctest.py sql FILE.md            prints one psql script: every ```sql block of
                                    FILE.md in order, each after a line
                                    "\\echo doctest-block N FILE.md:LINE"
  doctest.py blocks FILE.md LANG DIR  writes every ```LANG block (cpp, js) to
                                    DIR/NN.LANG, and prints "NN FILE.md:LINE" lines
  doctest.py links ROOT FILE.md...  checks every relative link (and its #anchor),
                                    every *.md file named in prose and, in README.md
                                    and docs/, every repository path cited in
                                    backticks; prints one line per broken one,
                                    exits 1 if any

A fence's info string takes a second word `norun` for a block that is shown but
deliberately not run (Citus, pg_cron, fragments of a larger program). Only the
Python standard library is used.
"""
import os
import re
import subprocess
import sys

FENCE = re.compile(r'^\s*(```+|~~~+)\s*([^\s`]*)\s*(.*)$')


def blocks(path):
    """Yields (language, flags, first line number, text) for each fenced block."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, flags = m.group(1), m.group(2).lower(), m.group(3).split()
        indent = len(lines[i]) - len(lines[i].lstrip())
        start = i + 1
        i += 1
        body = []
        while i < len(lines) and not lines[i].lstrip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
            i += 1
        i += 1
        yield lang, flags, start + 1, '\n'.join(body) + '\n'


def runnable(path, lang):
    return [(line, text) for l, flags, line, text in blocks(path) if l == lang and 'norun' not in flags]


def cmd_sql(path):
    name = os.path.relpath(path)
    for n, (line, text) in enumerate(runnable(path, 'sql'), 1):
        print(f'\\echo doctest-block {n} {name}:{line}')
        sys.stdout.write(text)


def cmd_blocks(path, lang, outdir):
    name = os.path.relpath(path)
    for n, (line, text) in enumerate(runnable(path, lang), 1):
        with open(os.path.join(outdir, f'{n:02d}.{lang}'), 'w', encoding='utf-8') as f:
            f.write(text)
        print(f'{n:02d} {name}:{line}')


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r'`|\*\*|\[([^\]]*)\]\([^)]*\)', lambda m: m.group(1) or '', heading.strip()).lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def anchors(path):
    found, seen = set(), {}
    in_fence = False
    with open(path, encoding='utf-8') as f:
        for line in f:
            if FENCE.match(line):
                in_fence = not in_fence
                continue
            m = None if in_fence else re.match(r'^#{1,6}\s+(.*?)\s*#*\s*$', line)
            if m:
                s = slug(m.group(1))
                k = seen.get(s, 0)
                seen[s] = k + 1
                found.add(s if k == 0 else f'{s}-{k}')
    return found


LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
# A cited repository path: `dir/.../name` in backticks whose first part is a
# top-level entry of the repository (outputs git ignores are not checked), or a
# word of prose (outside backticks) ending in .md.
CITED = re.compile(r'`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.*-]+)+/?)`')
MD_WORD = re.compile(r'(?<![\w/.-])([A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md)\b')


def ignored(root, path):
    return subprocess.run(['git', '-C', root, 'check-ignore', '-q', path]).returncode == 0


def cmd_links(root, files):
    top = set(os.listdir(root))
    bad = []
    for path in files:
        rel = os.path.relpath(path, root)
        here = os.path.dirname(path)
        text = open(path, encoding='utf-8').read()
        prose = re.sub(r'^[ \t]*(```+|~~~+).*?^[ \t]*\1[ \t]*$', '', text, flags=re.M | re.S)
        for target in LINK.findall(prose):
            if re.match(r'^[a-z][a-z0-9+.-]*:', target):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition('#')
            dest = os.path.normpath(os.path.join(here, file_part)) if file_part else path
            if not os.path.exists(dest):
                bad.append(f'{rel}: link to {target}: {os.path.relpath(dest, root)} does not exist')
            elif anchor and dest.endswith('.md') and anchor not in anchors(dest):
                bad.append(f'{rel}: link to {target}: no heading with anchor #{anchor}')
        # Paths cited in backticks are checked in the user docs (README.md,
        # docs/); other pages (test/README.md) cite paths relative to places
        # the reader is told about in prose.
        user_doc = rel == 'README.md' or rel.startswith('docs' + os.sep)
        for cited in CITED.findall(prose) if user_doc else []:
            first = cited.split('/')[0]
            if first not in top or '*' in cited:
                continue
            if not os.path.exists(os.path.join(root, cited)) and not ignored(root, cited):
                bad.append(f'{rel}: cites `{cited}`, which does not exist')
        for word in MD_WORD.findall(re.sub(r'`[^`]*`|\]\([^)]*\)', '', prose)):
            if any(f'to {word}:' in line for line in bad):
                continue  # the text of a broken link, reported above
            if not (os.path.exists(os.path.join(here, word)) or os.path.exists(os.path.join(root, word))):
                bad.append(f'{rel}: names {word}, which does not exist')
    for line in dict.fromkeys(bad):  # each once, in order
        print(line)
    return 1 if bad else 0


def main(argv):
    if len(argv) == 2 and argv[0] == 'sql':
        cmd_sql(argv[1])
    elif len(argv) == 4 and argv[0] == 'blocks':
        cmd_blocks(argv[1], argv[2], argv[3])
    elif len(argv) >= 3 and argv[0] == 'links':
        return cmd_links(argv[1], argv[2:])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
