#!/usr/bin/env python3
"""Checks that the Terraform folders under terraform/ agree with each other.

`terraform validate` needs the providers, and these machines cannot
download them, so this reads every .tf file with python-hcl2 instead and
checks what a parser can see:

- each module call passes only variables the called module declares, and
  every variable the module declares without a default;
- every var.NAME used in a folder is declared there, and every declared
  variable is used;
- every local.NAME is defined, and every module.CALL.OUTPUT names a module
  call of the folder and an output that module declares;
- every variable has a description and a type, every output a description;
- each templatefile() call passes every name its template uses;
- each *.tfvars and *.tfvars.example file sets only declared variables;
- the hosts_file output builds JSON whose hosts carry exactly the keys
  `airlock host import` reads: name, uri, vcpus, memory, labels.

Module calls whose source is not a local folder are not followed.

    check_terraform.py [FOLDER]        (default: terraform)

Prints one line per problem and exits 1, or one summary line and exits 0.
Run it through scripts/check-terraform.sh, which installs python-hcl2.
"""

import os
import re
import sys

import hcl2

HOSTS_FILE_KEYS = ["name", "uri", "vcpus", "memory", "labels"]

# Arguments of a module block that are Terraform's, not the module's.
META_ARGUMENTS = {"source", "version", "count", "for_each", "providers", "depends_on"}

# Words a template may use that are not names passed to it.
TEMPLATE_KEYWORDS = {"for", "in", "if", "else", "endif", "endfor", "true", "false", "null"}

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
HEREDOC_START = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_]*)\r?\n")
TEMPLATE_FOR = re.compile(r"%\{~?\s*for\s+([A-Za-z_][\w-]*)(?:\s*,\s*([A-Za-z_][\w-]*))?\s+in\b")
TEMPLATEFILE_CALL = re.compile(r'templatefile\(\s*"\$\{path\.module\}/([^"]+)"\s*,\s*')


# ---------------------------------------------------------------------------
# Reading HCL expression text.
#
# python-hcl2 hands every expression back as text: "${...}" for an
# expression, the quoted source for a string or heredoc. The scanner below
# walks that text the way HCL would read it, so that a reference inside a
# string's ${...} counts and the words of a string's literal text do not.


def heredoc_end(text, match):
    """Where a heredoc that starts at `match` ends: (body end, index after the closing marker)."""
    closing = re.compile(r"^[ \t]*" + re.escape(match.group(1)) + r"[ \t]*$", re.M)
    found = closing.search(text, match.end())
    if not found:
        return len(text), len(text)
    return found.start(), found.end()


class Scanner:
    """Finds the traversals (var.x, local.y[0].z, module.m.out, f(...)) in expression text."""

    def __init__(self, text):
        self.text = text
        # (names, is_call, followed_by_assignment) for each traversal found
        self.found = []

    def code(self, i, closer=None):
        """Scans expression code from i; stops after the `closer` that ends it, or at the end."""
        text = self.text
        depth = 0
        while i < len(text):
            c = text[i]
            if c == '"':
                i = self.template(i + 1, '"')
                continue
            heredoc = HEREDOC_START.match(text, i) if c == "<" else None
            if heredoc:
                body_end, after = heredoc_end(text, heredoc)
                self.template(heredoc.end(), None, body_end)
                i = after
                continue
            if c == "#" or text.startswith("//", i):
                newline = text.find("\n", i)
                i = len(text) if newline < 0 else newline
                continue
            if text.startswith("/*", i):
                close = text.find("*/", i + 2)
                i = len(text) if close < 0 else close + 2
                continue
            if c.isdigit():
                i = NUMBER.match(text, i).end()
                continue
            if c.isalpha() or c == "_":
                if i > 0 and text[i - 1] == ".":
                    # An attribute of something that is not a plain name.
                    i = IDENT.match(text, i).end()
                else:
                    i = self.traversal(i)
                continue
            if c in "([{":
                depth += 1
            elif c in ")]}":
                if depth == 0 and c == closer:
                    return i + 1
                depth -= 1
            i += 1
        return i

    def template(self, i, end, limit=None):
        """Scans string template text from i up to `end` (a quote) or `limit`."""
        text = self.text
        limit = len(text) if limit is None else limit
        while i < limit:
            if text.startswith("$${", i) or text.startswith("%%{", i):
                i += 3
                continue
            if text.startswith("${", i) or text.startswith("%{", i):
                i = self.code(i + 2, "}")
                continue
            c = text[i]
            if end is not None and c == "\\":
                i += 2
                continue
            if end is not None and c == end:
                return i + 1
            i += 1
        return i

    def traversal(self, i):
        text = self.text
        match = IDENT.match(text, i)
        names = [match.group()]
        j = match.end()
        while j < len(text):
            if text.startswith(".*", j):
                j += 2
            elif text[j] == "." and j + 1 < len(text) and (text[j + 1].isalpha() or text[j + 1] == "_"):
                match = IDENT.match(text, j + 1)
                names.append(match.group())
                j = match.end()
            elif text[j] == "." and j + 1 < len(text) and text[j + 1].isdigit():
                j = NUMBER.match(text, j + 1).end()
            elif text[j] == "[":
                j = self.code(j + 1, "]")
            else:
                break
        rest = text[j:].lstrip(" \t")
        is_call = rest.startswith("(")
        assigned = rest.startswith("=") and not rest.startswith("==")
        self.found.append((tuple(names), is_call, assigned))
        return j


def expression_traversals(value):
    """Traversals in one value as python-hcl2 serializes it."""
    if not isinstance(value, str):
        return []
    if value.startswith("${") and value.endswith("}"):
        scanner = Scanner(value[2:-1])
    elif value.startswith('"<<') and value.endswith('"'):
        scanner = Scanner(value[1:-1])
    elif value.startswith('"'):
        scanner = Scanner(value)
    else:
        return []
    scanner.code(0)
    return scanner.found


def template_file_names(text):
    """Names a templatefile() template reads: the roots of its traversals, less loop variables."""
    scanner = Scanner(text)
    scanner.template(0, None)
    loop_names = set()
    for match in TEMPLATE_FOR.finditer(text):
        loop_names.update(name for name in match.groups() if name)
    names = []
    for found, is_call, assigned in scanner.found:
        root = found[0]
        if is_call or assigned or root in TEMPLATE_KEYWORDS or root in loop_names or root in names:
            continue
        names.append(root)
    return names


def skip_string(text, i):
    """Index after the string whose opening quote is at i."""
    i += 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if text.startswith("${", i) or text.startswith("%{", i):
            i = skip_bracketed(text, i + 1)
            continue
        if c == '"':
            return i + 1
        i += 1
    return i


def skip_bracketed(text, i):
    """Index after the bracket that closes the one at i."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = [pairs[text[i]]]
    i += 1
    while i < len(text) and stack:
        c = text[i]
        if c == '"':
            i = skip_string(text, i)
            continue
        heredoc = HEREDOC_START.match(text, i) if c == "<" else None
        if heredoc:
            i = heredoc_end(text, heredoc)[1]
            continue
        if c in pairs:
            stack.append(pairs[c])
        elif c == stack[-1]:
            stack.pop()
        i += 1
    return i


def object_entries(text, i):
    """The (key, value text) pairs of the object literal whose '{' is at i.

    None when it is not a plain object (a for expression, a computed key).
    """
    entries = []
    j = i + 1
    while True:
        while j < len(text) and text[j] in " \t\r\n,":
            j += 1
        if j >= len(text) or text[j] == "}":
            return entries
        if text[j] == '"':
            end = skip_string(text, j)
            key = text[j + 1 : end - 1]
            j = end
        else:
            match = IDENT.match(text, j)
            if not match or match.group() == "for":
                return None
            key = match.group()
            j = match.end()
        while j < len(text) and text[j] in " \t":
            j += 1
        if j >= len(text) or text[j] not in "=:" or text.startswith("==", j):
            return None
        j += 1
        start = j
        while j < len(text) and text[j] not in ",\n}":
            if text[j] in "([{":
                j = skip_bracketed(text, j)
            elif text[j] == '"':
                j = skip_string(text, j)
            else:
                j += 1
        entries.append((key, text[start:j].strip()))


def unwrap(value):
    """The expression inside python-hcl2's "${...}" wrapper."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return value[2:-1].strip()
    return value.strip() if isinstance(value, str) else value


def unquote(label):
    if len(label) >= 2 and label[0] == label[-1] == '"':
        return label[1:-1]
    return label


# ---------------------------------------------------------------------------
# Reading folders.


class Folder:
    """One folder of .tf files: a root configuration or a module."""

    def __init__(self, path):
        self.path = path
        self.files = []
        self.variables = {}  # name -> (file, body)
        self.outputs = {}  # name -> (file, body)
        self.locals = {}  # name -> (file, value)
        self.modules = {}  # call name -> (file, body)
        self.values = []  # (file, where, value) for every attribute value
        self.var_files = []  # (file, {name: value}) for *.tfvars files
        self.unreadable = False  # a file failed to parse: its checks would mislead


def walk_values(value, where, sink):
    if isinstance(value, dict):
        for key, item in value.items():
            if not key.startswith("__"):
                walk_values(item, f"{where}.{unquote(key)}", sink)
    elif isinstance(value, list):
        for item in value:
            walk_values(item, where, sink)
    else:
        sink.append((where, value))


def labelled(blocks):
    """(label, body) pairs of blocks such as variable "x" { ... }."""
    for block in blocks:
        for label, body in block.items():
            if not label.startswith("__"):
                yield unquote(label), body


def read_folder(path, names, problems):
    folder = Folder(path)
    for name in sorted(names):
        file = os.path.join(path, name)
        try:
            with open(file, encoding="utf-8") as handle:
                data = hcl2.load(handle)
        except Exception as error:  # python-hcl2 raises lark's many error types
            problems.add(file, "syntax", "cannot parse: " + str(error).strip().splitlines()[0])
            folder.unreadable = True
            continue
        if name.endswith(".tf"):
            folder.files.append(file)
            read_configuration(folder, file, data, problems)
        else:
            folder.var_files.append((file, {key: value for key, value in data.items() if not key.startswith("__")}))
    return folder


def read_configuration(folder, file, data, problems):
    kinds = {"variable": folder.variables, "output": folder.outputs, "module": folder.modules}
    for kind, table in kinds.items():
        for name, body in labelled(data.get(kind, [])):
            if name in table:
                problems.add(file, f"{kind} {name}", f"declared twice (also in {table[name][0]})")
            table[name] = (file, body)
            sink = []
            walk_values(body, f"{kind}.{name}", sink)
            folder.values.extend((file, where, value) for where, value in sink)
    for block in data.get("locals", []):
        for name, value in block.items():
            if name.startswith("__"):
                continue
            if name in folder.locals:
                problems.add(file, f"local.{name}", f"defined twice (also in {folder.locals[name][0]})")
            folder.locals[name] = (file, value)
            sink = []
            walk_values(value, f"locals.{name}", sink)
            folder.values.extend((file, where, item) for where, item in sink)
    for kind in ("resource", "data"):
        for block in data.get(kind, []):
            for type_label, named in block.items():
                for name, body in labelled([named]):
                    sink = []
                    walk_values(body, f"{unquote(type_label)}.{name}", sink)
                    folder.values.extend((file, where, value) for where, value in sink)
    for kind in ("terraform", "provider", "moved", "import", "check"):
        sink = []
        walk_values(data.get(kind, []), kind, sink)
        folder.values.extend((file, where, value) for where, value in sink)


def read_tree(root, problems):
    folders = {}
    for path, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != ".terraform")
        names = [f for f in files if f.endswith(".tf") or f.endswith(".tfvars") or f.endswith(".tfvars.example")]
        if any(f.endswith(".tf") for f in names):
            folders[os.path.normpath(path)] = read_folder(os.path.normpath(path), names, problems)
    return folders


# ---------------------------------------------------------------------------
# Checks.


class Problems:
    """Problem lines, each said once."""

    def __init__(self):
        self.lines = []
        self.seen = set()

    def add(self, file, item, message, once_per_item=False):
        """once_per_item: a name misspelled in three places is one mistake, one line."""
        key = (file, item) if once_per_item else (file, item, message)
        if key in self.seen:
            return
        self.seen.add(key)
        self.lines.append(f"{file}: {item}: {message}")


def check_declarations(folder, problems):
    for name, (file, body) in folder.variables.items():
        if not unquote(str(body.get("description", ""))).strip():
            problems.add(file, f"variable {name}", "has no description")
        if "type" not in body:
            problems.add(file, f"variable {name}", "has no type")
    for name, (file, body) in folder.outputs.items():
        if not unquote(str(body.get("description", ""))).strip():
            problems.add(file, f"output {name}", "has no description")


def called_folder(folder, folders, body):
    """The Folder a module call points at, or None when it is not a local folder."""
    source = unquote(str(body.get("source", "")))
    if not source.startswith(("./", "../")):
        return None
    return folders.get(os.path.normpath(os.path.join(folder.path, source)))


def check_module_calls(folder, folders, problems):
    for call, (file, body) in folder.modules.items():
        source = unquote(str(body.get("source", "")))
        if not source:
            problems.add(file, f"module {call}", "has no source")
            continue
        child = called_folder(folder, folders, body)
        if child is None:
            if source.startswith(("./", "../")):
                problems.add(file, f"module {call}", f"source {source} is not a folder of .tf files")
            continue
        if child.unreadable:
            continue
        given = {key for key in body if not key.startswith("__") and key not in META_ARGUMENTS}
        for argument in sorted(given - set(child.variables)):
            problems.add(file, f"module {call}", f"argument {argument} is not a variable of {child.path}")
        for name, (_, variable) in sorted(child.variables.items()):
            if "default" not in variable and name not in given:
                problems.add(file, f"module {call}", f"required variable {name} of {child.path} is not given")


def check_references(folder, folders, problems):
    used_variables = set()
    for file, where, value in folder.values:
        for names, _, _ in expression_traversals(value):
            if len(names) < 2 or names[0] not in ("var", "local", "module"):
                continue
            kind, name = names[0], names[1]
            if kind == "var":
                used_variables.add(name)
                if name not in folder.variables:
                    message = f"used in {where} but not declared in {folder.path}"
                    problems.add(file, f"var.{name}", message, once_per_item=True)
            elif kind == "local":
                if name not in folder.locals:
                    message = f"used in {where} but not defined in {folder.path}"
                    problems.add(file, f"local.{name}", message, once_per_item=True)
            elif name not in folder.modules:
                message = f'used in {where} but {folder.path} has no module "{name}"'
                problems.add(file, f"module.{name}", message, once_per_item=True)
            elif len(names) > 2:
                child = called_folder(folder, folders, folder.modules[name][1])
                if child is not None and not child.unreadable and names[2] not in child.outputs:
                    message = f'used in {where} but {child.path} has no output "{names[2]}"'
                    problems.add(file, f"module.{name}.{names[2]}", message, once_per_item=True)
    for name, (file, _) in folder.variables.items():
        if name not in used_variables:
            problems.add(file, f"variable {name}", "is declared but never used")
    for file, values in folder.var_files:
        for name in values:
            if name not in folder.variables:
                problems.add(file, name, f"is not a variable of {folder.path}")


def check_templates(folder, problems):
    for file, where, value in folder.values:
        if not isinstance(value, str):
            continue
        text = unwrap(value)
        for call in TEMPLATEFILE_CALL.finditer(text):
            template = os.path.join(folder.path, call.group(1))
            if not os.path.isfile(template):
                problems.add(file, f"templatefile {call.group(1)}", f"in {where}: no such file {template}")
                continue
            if text[call.end() : call.end() + 1] != "{":
                continue  # the variables come from elsewhere; nothing to compare
            entries = object_entries(text, call.end())
            if entries is None:
                continue
            passed = {key for key, _ in entries}
            with open(template, encoding="utf-8") as handle:
                used = template_file_names(handle.read())
            for name in used:
                if name not in passed:
                    message = f"used by the template but not passed by templatefile() in {file} ({where})"
                    problems.add(template, name, message)


def resolve_locals(folder, text, seen=()):
    """Follows an expression that is just local.NAME to that local's value."""
    match = re.fullmatch(r"local\.([A-Za-z_][\w-]*)", text.strip())
    if not match or match.group(1) not in folder.locals or match.group(1) in seen:
        return text.strip()
    value = folder.locals[match.group(1)][1]
    return resolve_locals(folder, unwrap(value), seen + (match.group(1),))


def top_level_index(text, char):
    """Index of the first `char` outside brackets and strings, or -1."""
    i = 0
    while i < len(text):
        c = text[i]
        if c == char:
            return i
        if c in "([{":
            i = skip_bracketed(text, i)
        elif c == '"':
            i = skip_string(text, i)
        else:
            i += 1
    return -1


def host_objects(folder, text):
    """The host objects of a hosts list expression, as lists of (key, value) pairs."""
    text = resolve_locals(folder, text)
    if not text.startswith("["):
        return None
    inner = text[1 : skip_bracketed(text, 0) - 1].strip()
    if re.match(r"for\b", inner):
        # [for ITEM in LIST : {...}]: the object follows the header's colon.
        colon = top_level_index(inner, ":")
        body = inner[colon + 1 :].strip() if colon >= 0 else ""
        if not body.startswith("{"):
            return None
        entries = object_entries(body, 0)
        return None if entries is None else [entries]
    objects = []
    j = 0
    while j < len(inner):
        if inner[j] == "{":
            entries = object_entries(inner, j)
            if entries is None:
                return None
            objects.append(entries)
            j = skip_bracketed(inner, j)
        elif inner[j] in " \t\r\n,":
            j += 1
        else:
            return None
    return objects


def check_hosts_file(folder, problems):
    """Checks the hosts_file output of a folder; returns how many host objects were checked."""
    if "hosts_file" not in folder.outputs:
        return 0
    file, body = folder.outputs["hosts_file"]
    text = resolve_locals(folder, unwrap(body.get("value", "")))
    if re.fullmatch(r"module\.[A-Za-z_][\w-]*\.[A-Za-z_][\w-]*", text):
        # Passed through from a module: the reference check covers the name,
        # and the module's own hosts_file is checked in its folder.
        return 0
    call = text.find("jsonencode(")
    start = call + len("jsonencode(") if call >= 0 else -1
    while 0 <= start < len(text) and text[start] in " \t\r\n":
        start += 1
    if call < 0 or not text.startswith("{", start):
        problems.add(file, "output hosts_file", "does not build its JSON with jsonencode({...})")
        return 0
    top = object_entries(text, start)
    if top is None or [key for key, _ in top] != ["hosts"]:
        found = "?" if top is None else ", ".join(key for key, _ in top)
        problems.add(file, "output hosts_file", f"top-level JSON keys must be exactly hosts (found: {found})")
        return 0
    objects = host_objects(folder, top[0][1])
    if not objects:
        problems.add(file, "output hosts_file", "hosts is not a list of objects the checker can read")
        return 0
    for entries in objects:
        keys = [key for key, _ in entries]
        if sorted(keys) != sorted(HOSTS_FILE_KEYS):
            missing = [key for key in HOSTS_FILE_KEYS if key not in keys]
            extra = [key for key in keys if key not in HOSTS_FILE_KEYS]
            problems.add(
                file,
                "output hosts_file",
                f"host keys must be exactly {', '.join(HOSTS_FILE_KEYS)}"
                f" (missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'})",
            )
    return len(objects)


def main(argv):
    root = argv[1] if len(argv) > 1 else "terraform"
    if not os.path.isdir(root):
        print(f"check_terraform: no folder {root}", file=sys.stderr)
        return 2
    problems = Problems()
    folders = read_tree(root, problems)
    if not folders:
        problems.add(root, "folders", "no .tf files found")
    checked_hosts = 0
    for folder in folders.values():
        if folder.unreadable:
            continue
        check_declarations(folder, problems)
        check_module_calls(folder, folders, problems)
        check_references(folder, folders, problems)
        check_templates(folder, problems)
        checked_hosts += check_hosts_file(folder, problems)
    if folders and checked_hosts == 0 and not problems.lines:
        problems.add(root, "output hosts_file", "no folder builds a hosts_file output")
    for line in problems.lines:
        print(line)
    if problems.lines:
        print(f"check_terraform: {len(problems.lines)} problem(s)", file=sys.stderr)
        return 1
    files = sum(len(folder.files) for folder in folders.values())
    variables = sum(len(folder.variables) for folder in folders.values())
    outputs = sum(len(folder.outputs) for folder in folders.values())
    calls = sum(len(folder.modules) for folder in folders.values())
    print(
        f"check_terraform: ok: {files} .tf files in {len(folders)} folders;"
        f" {variables} variables, {outputs} outputs and {calls} module call(s) agree; hosts_file keys match"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
