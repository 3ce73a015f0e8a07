"""python_deps: every Python package a test imports is installed by the script the test calls.

A test that runs `python3` gets the system interpreter, which on a fresh machine has the standard
library only: its code may import nothing else. A test that needs PyPI packages takes its
interpreter from a venv script (`py=$("$root/tools/serve_venv.sh")`), and may import only what
that script pins. An interpreter from anywhere else (an environment variable, a path under
$HOME) works only on machines where somebody installed it by hand, and fails this check.

Checked: every tests/**/*.sh and tools/*.sh; in each, `python3 -` / `"$py" -` here-documents,
`-c "..."` one-liners and `<interpreter> path/to/script.py` runs (the script's imports, with
sibling modules of that script allowed).

Usage: check_python_deps.py REPO_ROOT [--self-test]   (exit 1 naming file, line and module)
"""
import ast
import os
import re
import sys
import tempfile

STDLIB = set(sys.stdlib_module_names)
# Import name -> PyPI distribution, where they differ.
DIST_OF = {"yaml": "pyyaml"}
SHELL_VALUE = "zs_shell_value"


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def pins_of_venv_script(path, root):
    """Distributions a venv script installs: its `want="a==1 b==2"` pins, or the requirements
    file it names."""
    text = open(path).read()
    dists = set()
    m = re.search(r'^want="([^"]*)"', text, re.M)
    if m and "==" in m.group(1):
        dists |= {norm(w.split("==")[0]) for w in m.group(1).split()}
    for req in re.findall(r"(tools/reference/[\w.-]+\.txt)", text):
        for line in open(os.path.join(root, req)):
            line = line.split("#")[0].strip()
            if line:
                dists.add(norm(re.split(r"[=<>~ ]", line)[0]))
    return dists


def imports(code, where):
    """Top-level module names `code` imports (absolute imports only)."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        raise SystemExit(f"{where}: python code does not parse: {e}")
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods.add(node.module.split(".")[0])
    return mods


def interpreter(token, assignments, root):
    """(description, allowed distributions or None for stdlib only, error or None)."""
    if token in ("python3", "python"):
        return "the system python3", set(), None
    m = re.fullmatch(r'"?\$\{?(\w+)\}?"?', token)
    if not m:
        return token, None, f"interpreter '{token}' is neither python3 nor a venv script's"
    var = m.group(1)
    value = assignments.get(var)
    if value is None:
        return token, None, f"interpreter ${var} is not assigned in this script"
    vm = re.search(r'tools/(\w+_venv\.sh)', value)
    if not vm or not value.lstrip().startswith("$("):
        return token, None, (f"interpreter ${var}={value} is not installed by a script the test "
                             "calls (take it from tools/<name>_venv.sh)")
    script = os.path.join(root, "tools", vm.group(1))
    return f"tools/{vm.group(1)}", pins_of_venv_script(script, root), None


def check_file(path, root, problems):
    lines = open(path).read().split("\n")
    rel = os.path.relpath(path, root)
    assignments = {}
    for line in lines:
        m = re.match(r"\s*(?:local\s+)?(\w+)=(.*)$", line)
        if m:
            assignments[m.group(1)] = m.group(2).strip()
    runner = r'(python3|python|"?\$\{?\w+\}?"?)'
    i = 0
    while i < len(lines):
        line = lines[i]
        no = i + 1
        i += 1
        if line.lstrip().startswith("#"):
            continue
        units = []  # (code or path, is_file, interpreter token)
        m = re.search(runner + r"\s+-\s.*<<-?\s*'?(\w+)'?", line)
        if m:
            tag = m.group(2)
            body = []
            while i < len(lines) and lines[i].strip() != tag:
                body.append(lines[i])
                i += 1
            i += 1
            units.append(("\n".join(body), False, m.group(1)))
        m = re.search(runner + r'\s+-c\s+"((?:[^"\\]|\\.)*)"', line)
        if m:
            # Shell variables expand inside the double quotes: a name stands in for each (an
            # import of a name the script chooses at run time is not checked).
            units.append((re.sub(r"\$\{?\w+\}?", SHELL_VALUE, m.group(2)), False, m.group(1)))
        for m in re.finditer(runner + r'\s+"?([^"\s]*\.py)"?', line):
            units.append((m.group(2), True, m.group(1)))
        for code, is_file, token in units:
            what, allowed, err = interpreter(token, assignments, root)
            if err:
                problems.append(f"{rel}:{no}: {err}")
                continue
            local = set()
            if is_file:
                p = re.sub(r'^\$\{?\w+\}?/', "", code.replace('"', ""))
                p = re.sub(r"^\$\(dirname \$0\)/", "", p)
                candidates = [os.path.join(root, p), os.path.join(os.path.dirname(path), p)]
                found = next((c for c in candidates if os.path.isfile(c)), None)
                if found is None:
                    problems.append(f"{rel}:{no}: python script {code} not found")
                    continue
                local = {f[:-3] for f in os.listdir(os.path.dirname(found)) if f.endswith(".py")}
                code = open(found).read()
            for mod in sorted(imports(code, f"{rel}:{no}")):
                if mod in STDLIB or mod in local or mod == SHELL_VALUE:
                    continue
                if norm(DIST_OF.get(mod, mod)) in allowed:
                    continue
                problems.append(f"{rel}:{no}: imports '{mod}', which {what} does not install")


def check_tree(root):
    problems = []
    files = []
    for d, _, names in os.walk(os.path.join(root, "tests")):
        files += [os.path.join(d, n) for n in names if n.endswith(".sh")]
    tools = os.path.join(root, "tools")
    files += [os.path.join(tools, n) for n in os.listdir(tools) if n.endswith(".sh")]
    for f in sorted(files):
        check_file(f, root, problems)
    return problems, len(files)


def self_test():
    """The check fails on the defects it exists for, and passes a correct script."""
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "tests"))
        os.makedirs(os.path.join(root, "tools"))
        with open(os.path.join(root, "tools", "x_venv.sh"), "w") as f:
            f.write('want="openai==1.0 pyyaml==6.0"\n')
        cases = {
            "stdlib_ok.sh": ("python3 - a <<'PY'\nimport json, sys\nPY\n", 0),
            "numpy_system.sh": ("python3 - <<'PY'\nimport numpy\nPY\n", 1),
            "inline.sh": ('python3 -c "import torch; print(1)"\n', 1),
            "venv_ok.sh": ('py=$("$root/tools/x_venv.sh")\n"$py" - <<PY\nimport yaml, openai\nPY\n', 0),
            "venv_missing.sh": ('py=$("$root/tools/x_venv.sh")\n"$py" - <<PY\nimport torch\nPY\n', 1),
            "by_hand.sh": ('py=${ZS_PY:-$HOME/venv/bin/python}\n"$py" - <<PY\nimport json\nPY\n', 1),
        }
        bad = 0
        for name, (text, want) in cases.items():
            path = os.path.join(root, "tests", name)
            with open(path, "w") as f:
                f.write(text)
            problems = []
            check_file(path, root, problems)
            got = len(problems)
            ok = (got > 0) == (want > 0)
            print(("ok   " if ok else "FAIL ") + f"self-test {name}: {problems or 'clean'}")
            bad += not ok
        return bad


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
    if "--self-test" in sys.argv and self_test():
        sys.exit(1)
    problems, n = check_tree(root)
    for p in problems:
        print("python deps: " + p)
    if problems:
        sys.exit(1)
    print(f"python deps: ok ({n} scripts: each Python import is the standard library's or "
          "installed by the venv script that provides the interpreter)")


if __name__ == "__main__":
    main()
