#!/usr/bin/env python3
"""Mutation testing of the evidence path: cosmic-ray, a targeted test selection per module,
results in docs/mutation.md.

    python3 tools/mutation.py                        # every module of tools/mutation.toml
    python3 tools/mutation.py protocol/cose.py ...   # only these
    python3 tools/mutation.py --report-only          # rewrite docs/mutation.md from the sessions

cosmic-ray mutates a source file in place, one mutant at a time, and runs the module's tests
against it; so the run works on a copy of the working tree (tracked and new files), under
`--workdir` (default /tmp/bodycam-mutation), never on the tree itself. Device modules are
tested inside MicroPython: the tests/mpy scripts import the mutated .py, and the simulator's
firmware build is keyed by a hash of the sources (its cache is kept under the work dir), so
each mutant runs as its own firmware. Before a module's mutants run, a canary (the module
raising on import) must make its test selection fail: a selection that does not load the
file would let every mutant survive.

Not run in CI: it takes about an hour on two cores (see docs/mutation.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "tools" / "mutation.toml"
REPORT = REPO / "docs" / "mutation.md"
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "--tb=no", "-p", "no:cacheprovider",
          "-p", "tools.mutation_pytest"]


@dataclass
class Module:
    path: str
    tests: list[str]
    functions: list[str] = field(default_factory=list)
    timeout: float = 0.0
    sample: float = 1.0  # the fraction of the module's mutants run (a seeded random sample)

    @property
    def slug(self) -> str:
        return self.path.replace("/", "_").removesuffix(".py")


def load_config(path: Path = CONFIG) -> tuple[list[Module], list[str], list[dict[str, str]]]:
    cfg = tomllib.loads(path.read_text())
    mods = [Module(m["path"], m["tests"].split(), m.get("functions", []),
                   float(m.get("timeout", 0)), float(m.get("sample", 1.0)))
            for m in cfg["module"]]
    return mods, cfg["operators"]["keep"], cfg.get("equivalent", [])


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                         f"\n{proc.stderr[-3000:]}")
    return proc


# -- the copy ------------------------------------------------------------------------------------
def copy_tree(dest: Path, head: bool, with_: list[str]) -> None:
    """The working tree as it is (tracked files and new ones, not ignored ones) into `dest`;
    with `head`, the tracked files as committed instead, except those named in `with_` (new
    files always come from the working tree)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    mode = ["--others"] if head else ["--cached", "--others"]
    names = run(["git", "ls-files", *mode, "--exclude-standard", "-z"],
                REPO).stdout.split("\0") + with_
    if head:
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for name in filter(None, names):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def test_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(workdir / "cache")  # the mutants' firmware builds
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["HYPOTHESIS_STORAGE_DIRECTORY"] = str(workdir / "hypothesis")
    return env


# -- one module ----------------------------------------------------------------------------------
def function_lines(path: Path, functions: list[str]) -> list[tuple[int, int]]:
    """Line ranges of the named functions ("Class.method" or "function")."""
    import ast

    tree = ast.parse(path.read_text())
    spans = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if prefix + child.name in functions:
                    spans.append((child.lineno, child.end_lineno or child.lineno))

    visit(tree, "")
    if len(spans) != len(functions):
        raise SystemExit(f"{path}: not all of {functions} found")
    return spans


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Where the annotations are, in a module that never evaluates them (`from __future__
    import annotations`); [] in one that does."""
    import ast

    tree = ast.parse(source)
    if not any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
               and any(a.name == "annotations" for a in n.names) for n in tree.body):
        return []
    spans = []
    for node in ast.walk(tree):
        notes: list[ast.expr | None] = []
        if isinstance(node, ast.arg):
            notes.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            notes.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            notes.append(node.annotation)
        for a in notes:
            if a is not None:
                spans.append(((a.lineno, a.col_offset),
                              (a.end_lineno or a.lineno, a.end_col_offset or 0)))
    return spans


def skip_items(session: Path, src: Path, mod: Module, keep: list[str],
               annotations_only: bool = False) -> dict[str, int]:
    """Mark as skipped what this run does not test: operators outside the selective set,
    `%` formatting of a string literal, annotations a module never evaluates, mutants outside
    `functions`, and those outside the module's sample (seeded by the module's path: the same
    sample every run)."""
    import parso
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    keep_re = re.compile(r"core/(" + "|".join(f"(?:{k})" for k in keep) + r")$")
    source = (src / mod.path).read_text()
    tree = parso.parse(source)
    spans = function_lines(src / mod.path, mod.functions) if mod.functions else None
    notes = annotation_spans(source)
    counts = {"operator": 0, "format": 0, "annotation": 0, "outside": 0, "sample": 0}
    with use_db(str(session), WorkDB.Mode.open) as db:
        items = sorted(db.pending_work_items, key=lambda i: (
            i.mutations[0].start_pos, i.mutations[0].operator_name, i.mutations[0].occurrence))
        rng = random.Random(mod.path)
        for item in items:
            m = item.mutations[0]
            line, col = m.start_pos
            why = ""
            if annotations_only:
                if any(a <= (line, col) < b for a, b in notes):
                    why = "annotation"
            elif not keep_re.match(m.operator_name):
                why = "operator"
            elif spans is not None and not any(a <= line <= b for a, b in spans):
                why = "outside"
            elif any(a <= (line, col) < b for a, b in notes):
                why = "annotation"
            elif m.operator_name.startswith("core/ReplaceBinaryOperator_Mod_"):
                leaf = tree.get_leaf_for_position((line, col))
                prev = leaf.get_previous_sibling() if leaf is not None else None
                if leaf is not None and leaf.value == "%" and prev is not None and (
                        prev.type in ("string", "strings", "fstring")):
                    why = "format"
            # The sample is drawn once, over all of a module's mutants; a re-run of the
            # survivors must not draw again from them alone (that would drop some unrun).
            if not why and not annotations_only and rng.random() >= mod.sample:
                why = "sample"
            if why:
                counts[why] += 1
                db.set_result(item.job_id, WorkResult(output="skipped: " + why,
                                                      worker_outcome=WorkerOutcome.SKIPPED))
    return counts


def canary(src: Path, mod: Module, env: dict[str, str]) -> None:
    """The module raising on import must fail each test file of its selection on its own (a
    HIL test through the simulator's firmware build, a tests/mpy script through MicroPython's
    import): a file that does not load the module would let every mutant pass it."""
    target = src / mod.path
    original = target.read_text()
    target.write_text(original + "\nraise ImportError('mutation canary')\n")
    try:
        for test in mod.tests:
            proc = run(PYTEST + [test], src, env, check=False)
            if proc.returncode == 0:
                raise SystemExit(f"{mod.path}: {test} passes with the module broken; it does "
                                 f"not load it (a mutant would never reach it):\n"
                                 f"{proc.stdout[-2000:]}")
    finally:
        target.write_text(original)


def write_cfg(workdir: Path, mod: Module, timeout: float) -> Path:
    cfg = workdir / f"{mod.slug}.toml"
    cfg.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{mod.path}"\n'
        f"timeout = {timeout:.0f}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(' '.join(PYTEST + mod.tests))}\n"
        '[cosmic-ray.distributor]\nname = "local"\n')
    return cfg


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def retest_survivors(session: Path) -> int:
    """Forget the survivors' results so that `cosmic-ray exec` runs them again (after tests
    were added: a killed mutant stays killed, the tests only grew)."""
    with sqlite3.connect(session) as db:
        n = db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'").rowcount
    return n


def run_module(mod: Module, keep: list[str], workdir: Path, src: Path,
               survivors: bool = False) -> dict[str, Any]:
    env = test_env(workdir)
    session = workdir / f"{mod.slug}.sqlite"
    meta_path = workdir / f"{mod.slug}.json"
    digest = source_hash(src / mod.path)
    old = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if survivors and old is not None and old["source"] == digest and session.exists():
        n = retest_survivors(session)
        skipped = skip_items(session, src, mod, keep, annotations_only=True)
        print(f"  {n} survivors again ({skipped['annotation']} in annotations: skipped)",
              flush=True)
        cfg = write_cfg(workdir, mod, max(20.0, 3 * old["baseline_s"]))
        canary(src, mod, env)
        t1 = time.monotonic()
        run(["cosmic-ray", "exec", str(cfg), str(session)], src, env)
        old["seconds_retest"] = round(time.monotonic() - t1)
        old["tests"] = mod.tests
        meta_path.write_text(json.dumps(old))
        if source_hash(src / mod.path) != digest:
            raise SystemExit(f"{mod.path}: the copy was left mutated")
        return old
    t0 = time.monotonic()
    baseline = run(PYTEST + mod.tests, src, env, check=False)
    base_s = time.monotonic() - t0
    if baseline.returncode != 0:
        raise SystemExit(f"{mod.path}: its tests fail without any mutant:\n"
                         f"{baseline.stdout[-3000:]}")
    canary(src, mod, env)
    cfg = write_cfg(workdir, mod, mod.timeout or max(20.0, 3 * base_s))
    if session.exists():
        session.unlink()
    run(["cosmic-ray", "init", str(cfg), str(session)], src, env)
    skipped = skip_items(session, src, mod, keep)
    t1 = time.monotonic()
    run(["cosmic-ray", "exec", str(cfg), str(session)], src, env)
    info = {"path": mod.path, "tests": mod.tests, "seconds": round(time.monotonic() - t1),
            "baseline_s": round(base_s, 1), "skipped": skipped, "functions": mod.functions,
            "source": digest}
    meta_path.write_text(json.dumps(info))
    if source_hash(src / mod.path) != digest:
        raise SystemExit(f"{mod.path}: the copy was left mutated")
    return info


# -- the report ----------------------------------------------------------------------------------
def results(workdir: Path, mod: Module, src: Path) -> list[dict[str, Any]]:
    session = workdir / f"{mod.slug}.sqlite"
    out = run(["cosmic-ray", "dump", str(session)], src).stdout
    lines = (src / mod.path).read_text().splitlines()
    items = []
    for row in filter(None, out.splitlines()):
        item, result = json.loads(row)
        if result is not None and result["worker_outcome"] == "skipped":
            continue
        m = item["mutations"][0]
        line, col = m["start_pos"]
        items.append({
            "operator": m["operator_name"].removeprefix("core/"),
            "line": line, "col": col, "text": lines[line - 1].strip(),
            "outcome": "pending" if result is None else result["test_outcome"]
            if result["worker_outcome"] == "normal" else result["worker_outcome"],
            "diff": "" if result is None else result.get("diff") or "",
        })
    return items


def _mutated_line(diff: str) -> str:
    for ln in diff.splitlines():
        if ln.startswith("+") and not ln.startswith("+++"):
            return ln[1:].strip()
    return ""


def report(mods: list[Module], workdir: Path, equivalent: list[dict[str, str]],
           total_s: float | None) -> str:
    src = workdir / "src"
    eq = {(e["path"], e["operator"], e["line"], e.get("to", ""), e.get("at", 0)): e["why"]
          for e in equivalent}
    rows, sections, all_k, all_n = [], [], 0, 0
    seconds = 0
    for mod in mods:
        meta_path = workdir / f"{mod.slug}.json"
        if not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        took = meta["seconds"] + meta.get("seconds_retest", 0)
        seconds += took
        items = results(workdir, mod, src)
        killed = [i for i in items if i["outcome"] == "killed"]
        survived = [i for i in items if i["outcome"] == "survived"]
        pending = [i for i in items if i["outcome"] == "pending"]
        incompetent = [i for i in items if i["outcome"] not in ("killed", "survived", "pending")]
        argued: list[tuple[dict[str, Any], str | None]] = []
        open_: list[tuple[dict[str, Any], str | None]] = []
        for i in survived:
            to = _mutated_line(i["diff"])
            why = next((eq[k] for k in (
                (mod.path, i["operator"], i["text"], to, i["line"]),
                (mod.path, i["operator"], i["text"], to, 0),
                (mod.path, i["operator"], i["text"], "", i["line"]),
                (mod.path, i["operator"], i["text"], "", 0)) if k in eq), None)
            (argued if why else open_).append((i, why))
        scored = len(items) - len(argued) - len(incompetent) - len(pending)
        score = 100.0 * len(killed) / scored if scored else 100.0
        all_k += len(killed)
        all_n += scored
        scope = " (" + ", ".join(f.split(".")[-1] for f in mod.functions) + ")" \
            if mod.functions else ""
        if mod.sample < 1:
            scope += f", a {mod.sample:.0%} sample"
        rows.append(f"| `{mod.path}`{scope} | {len(items)} | {len(killed)} | {len(argued)} | "
                    f"{len(open_)} | {len(incompetent)} | {len(pending)} | **{score:.1f} %** | "
                    f"{took} s |")
        if survived:
            sec = [f"### `{mod.path}`", ""]
            for i, why in argued + open_:
                sec.append(f"- line {i['line']}, `{i['operator']}`: `{i['text']}` → "
                           f"`{_mutated_line(i['diff'])}` — "
                           + (f"equivalent: {why}" if why else "**not killed**"))
            sections.append("\n".join(sec))
    total = 100.0 * all_k / all_n if all_n else 100.0
    mins = (total_s if total_s is not None else seconds) / 60
    cpu = _cpu()
    tests_lines = [f"- `{m.path}`: " + ", ".join(f"`{t}`" for t in m.tests) for m in mods]
    return "\n".join([
        "# Mutation testing",
        "",
        "What the tests guard on the modules where a bug loses or forges evidence (issue 13).",
        "Generated by `python3 tools/mutation.py` (configuration: `tools/mutation.toml`);",
        "not run in CI: too slow.",
        "",
        "## How",
        "",
        "- **Tool: cosmic-ray** (8.x). It rewrites the module's source file in place, one",
        "  mutant at a time, and runs a test command against it. That is what device code",
        "  needs: the mutated `.py` is what MicroPython imports (tests/mpy scripts) and what",
        "  the simulator's firmware is built from (the build is cached by a hash of the",
        "  sources, so each mutant is built afresh). mutmut 3 instead rewrites functions",
        "  into trampolines that call back into its own CPython runtime, which does not run",
        "  inside MicroPython.",
        "- The run works on a copy of the working tree; a **canary** (the module made to",
        "  raise on import) must fail each module's test selection first, or the run stops.",
        "- **Operators:** a selective set (Offutt et al. 1996; Kaminski et al. 2013 for",
        "  relational operators): every cosmic-ray operator, but each binary operator replaced",
        "  by one other and each comparison by its boundary and its negation; `%` formatting",
        "  a string literal (log and error text) is not mutated.",
        "- **Score** = killed / (mutants run − argued equivalent − incompetent). A mutant that",
        "  times out counts as killed (cosmic-ray's rule); an incompetent one did not run (it",
        "  does not compile, e.g. a `const()` MicroPython folds).",
        "- **Samples:** the largest modules run a seeded random sample of their mutants (the",
        "  same sample every run; `sample` in tools/mutation.toml), to fit two shared cores.",
        "- **After new tests**, `--survivors` runs only the survivors again against the tests",
        "  as they are now: tests were only added, so a killed mutant stays killed. A module",
        "  whose source changed runs in full.",
        "",
        "Test selection per module (`pytest -x`, first failure kills):",
        "",
        *tests_lines,
        "",
        "## Scores",
        "",
        "| module | mutants | killed | equivalent | survived | incompetent | not run | score |"
        " time |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        f"| **all** | | {all_k} | | | | | **{total:.1f} %** | {mins:.0f} min |",
        "",
        f"Run of {date.today().isoformat()}: {mins:.0f} min in all (the modules' runs and their",
        f"survivors' re-runs, summed) on {cpu}, Python {platform.python_version()}, under",
        "`nice -n 19` beside other work. Mutants are from the committed tree; the score counts",
        "the sampled mutants of each module.",
        "",
        "## Survivors",
        "",
        "Each either argued equivalent in one line (no input tells it from the original) or",
        "marked **not killed**.",
        "",
        *("\n\n".join(sections).splitlines() or ["None."]),
        "",
    ])


def _cpu() -> str:
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return f"{os.cpu_count()} × {ln.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({platform.machine()})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help="module paths (default: all configured)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bodycam-mutation"))
    ap.add_argument("--survivors", action="store_true",
                    help="run only the survivors of the last run again, against the tests "
                         "as they are now (a module whose source changed runs in full)")
    ap.add_argument("--report-only", action="store_true",
                    help="write docs/mutation.md from the sessions in --workdir")
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--head", action="store_true",
                    help="mutate the committed tree (plus new files), not the working tree")
    ap.add_argument("--with", dest="with_", action="append", default=[], metavar="PATH",
                    help="with --head: take this tracked file from the working tree")
    args = ap.parse_args()
    mods, keep, equivalent = load_config(args.config)
    by_path = {m.path: m for m in mods}
    chosen = [by_path[p] for p in args.modules if p in by_path] if args.modules else mods
    if args.modules and len(chosen) != len(args.modules):
        raise SystemExit(f"not configured: {set(args.modules) - {m.path for m in chosen}}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    total_s = None
    if not args.report_only:
        src = args.workdir / "src"
        copy_tree(src, args.head, args.with_)
        t0 = time.monotonic()
        for mod in chosen:
            print(f"{mod.path} ...", flush=True)
            info = run_module(mod, keep, args.workdir, src, args.survivors)
            print(f"  {info['seconds']} s", flush=True)
        total_s = time.monotonic() - t0 if not args.modules else None
    text = report(mods, args.workdir, equivalent, total_s)
    REPORT.write_text(text)
    print(text.split("## Survivors")[0])


if __name__ == "__main__":
    main()
