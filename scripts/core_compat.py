"""Forward compatibility: every ComfyUI name the pack touches, checked against a core's sources.

The pack talks to ComfyUI in one module (nodes/comfy_glue.py). This script reads that module's syntax tree and
lists each `comfy.*`, `folder_paths`, `server`, `latent_preview` and `comfy_api` name it uses, with how it is
called (positional count, keyword names). Each use is then checked:

  --core DIR        against a ComfyUI source tree (parsed, never imported): the name must still be defined at
                    module level (or as a class member) and each call must bind to its signature;
  --manifest FILE   against signatures recorded by hand from the newest core sources read (a JSON file of facts:
                    parameter names and defaults' presence, class members), for cores that cannot be checked out.

A name that is gone or whose call no longer binds fails the check (exit 1); a name the manifest does not record is
reported as unverified. Members used on objects core returns (ProgressBar.update_absolute, LoadedModel.model, ...)
are listed in INSTANCE_USES, since no syntax tree says what type a variable holds.

    python scripts/core_compat.py --core /tmp/comfyui
    python scripts/core_compat.py --manifest scripts/core_signatures.json
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("core_compat")

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT / "nodes" / "comfy_glue.py"
CORE_ROOTS = ("comfy", "folder_paths", "server", "latent_preview", "comfy_api")
# (qualified owner, member, positional args or None, keyword names): uses through objects core hands back.
INSTANCE_USES = (
    ("comfy.utils.ProgressBar", "update_absolute", 3, ()),
    ("comfy.model_management.LoadedModel", "model", None, ()),
    ("comfy.model_management.LoadedModel", "model_unload", 0, ()),
    ("comfy.model_management.LoadedModel", "model_loaded_memory", 0, ()),
    ("comfy.model_patcher.ModelPatcher", "detach", 0, ()),
    ("comfy.model_management.VRAMState", "HIGH_VRAM", None, ()),
    ("comfy.model_management.VRAMState", "NO_VRAM", None, ()),
    ("comfy.model_management.VRAMState", "LOW_VRAM", None, ()),
)


@dataclass(frozen=True)
class Use:
    """One use of a core name: module, name, member chain after it, and the call shape (None: not called)."""

    module: str
    name: str
    members: tuple[str, ...]
    positional: int | None
    keywords: tuple[str, ...]
    line: int
    optional: bool = False  # guarded by hasattr(): its absence is handled

    @property
    def qualified(self) -> str:
        return ".".join((self.module, self.name, *self.members))


# ------------------------------------------------------------------------------------------------ the pack's uses


def _is_core(module: str) -> bool:
    return module.split(".")[0] in CORE_ROOTS


def _chain(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


class _Collector(ast.NodeVisitor):
    def __init__(self):
        self.aliases: dict[str, str] = {}  # local name -> module, or module.name for `from x import y`
        self.modules: set[str] = set()
        self.uses: list[Use] = []
        self.imported: set[tuple[str, str]] = set()

    def visit_Import(self, node):
        for alias in node.names:
            if _is_core(alias.name):
                self.modules.add(alias.name)
                top = alias.name.split(".")[0]
                self.aliases[alias.asname or top] = alias.name if alias.asname else top

    def visit_ImportFrom(self, node):
        if node.module and node.level == 0 and _is_core(node.module):
            self.modules.add(node.module)
            for alias in node.names:
                self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                if (node.module, alias.name) not in self.imported:
                    self.imported.add((node.module, alias.name))
                    self.uses.append(Use(node.module, alias.name, (), None, (), node.lineno))

    def _resolve(self, parts: list[str]) -> tuple[str, str, tuple[str, ...]] | None:
        if parts[0] not in self.aliases:
            return None
        dotted = [*self.aliases[parts[0]].split("."), *parts[1:]]
        for cut in range(len(dotted) - 1, 0, -1):  # longest imported module prefix
            module = ".".join(dotted[:cut])
            if module in self.modules:
                return module, dotted[cut], tuple(dotted[cut + 1 :])
        return None

    def visit_Call(self, node):
        chain = _chain(node.func)
        if chain and chain[0] == "hasattr" and len(node.args) == 2:
            target = _chain(node.args[0])
            member = node.args[1]
            if target and isinstance(member, ast.Constant) and (found := self._resolve(target)):
                module, name, members = found
                self.uses.append(Use(module, name, (*members, member.value), None, (), node.lineno, True))
        elif chain and (found := self._resolve(chain)):
            module, name, members = found
            keywords = tuple(k.arg for k in node.keywords if k.arg is not None)
            self.uses.append(Use(module, name, members, len(node.args), keywords, node.lineno))
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                self.visit(arg)
            return
        self.generic_visit(node)

    def visit_Attribute(self, node):
        chain = _chain(node)
        if chain and (found := self._resolve(chain)):
            module, name, members = found
            self.uses.append(Use(module, name, members, None, (), node.lineno))
            return
        self.generic_visit(node)


def pack_uses(path: Path = GLUE) -> list[Use]:
    """Every core name used in `path`, in source order, one entry per distinct (name, call shape)."""
    collector = _Collector()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # imports first (also those inside functions), then the uses
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            collector.visit(node)
    collector.visit(tree)
    seen, out = set(), []
    for use in sorted(collector.uses, key=lambda u: u.line):
        key = (use.qualified, use.positional, use.keywords)
        if key not in seen:
            seen.add(key)
            out.append(use)
    return out


# ------------------------------------------------------------------------------------------------ signatures


def params_of(args: ast.arguments, skip_self: bool) -> list[str]:
    """Parameters as "name" (required), "name=" (has a default), "*name", "**name"; keyword-only ones as "^name"."""
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    out = [p.arg + ("=" if d is not None else "") for p, d in zip(positional, defaults, strict=True)]
    if skip_self and out:
        out = out[1:]
    if args.vararg:
        out.append("*" + args.vararg.arg)
    out += [
        "^" + k.arg + ("=" if d is not None else "")
        for k, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
    ]
    if args.kwarg:
        out.append("**" + args.kwarg.arg)
    return out


def binds(params: list[str], positional: int, keywords: tuple[str, ...]) -> str | None:
    """None when a call with `positional` arguments and these keywords binds to `params`; else why not."""
    plain = [p for p in params if not p.startswith(("*", "^"))]
    if positional > len(plain) and not any(p.startswith("*") and not p.startswith("**") for p in params):
        return f"{positional} positional arguments, the signature takes {len(plain)}"
    names = {p.lstrip("*^").rstrip("=") for p in params}
    taken = {p.rstrip("=") for p in plain[:positional]}
    for keyword in keywords:
        if keyword not in names and not any(p.startswith("**") for p in params):
            return f"no parameter {keyword!r}"
        if keyword in taken:
            return f"{keyword!r} given twice"
    required = [p for p in plain[positional:] if not p.endswith("=")] + [
        p[1:] for p in params if p.startswith("^") and not p.endswith("=")
    ]
    missing = [p for p in required if p not in keywords]
    return f"required {missing} not given" if missing else None


@dataclass(frozen=True)
class Definition:
    """What a core source defines for one name: a callable's parameters and, for classes, member names."""

    params: list[str] | None
    members: dict[str, list[str] | None]


def _class_definition(node: ast.ClassDef) -> Definition:
    members: dict[str, list[str] | None] = {}
    init = None
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            is_property = any(_chain(d) == ["property"] for d in item.decorator_list)
            members[item.name] = None if is_property else params_of(item.args, skip_self=True)
            if item.name == "__init__":
                init = members[item.name]
        elif isinstance(item, ast.Assign):
            members.update({t.id: None for t in item.targets if isinstance(t, ast.Name)})
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            members[item.target.id] = None
    return Definition(init if init is not None else [], members)


def source_definitions(path: Path) -> dict[str, Definition]:
    """Module-level names of a core source file (functions, classes, assignments)."""
    defs: dict[str, Definition] = {}
    for node in ast.parse(path.read_text(errors="replace")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defs[node.name] = Definition(params_of(node.args, skip_self=False), {})
        elif isinstance(node, ast.ClassDef):
            defs[node.name] = _class_definition(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defs.update({t.id: Definition(None, {}) for t in targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.If | ast.Try):  # names defined under a top-level if/try count too
            for child in ast.walk(node):
                if isinstance(child, ast.Assign):
                    defs.update(
                        {t.id: Definition(None, {}) for t in child.targets if isinstance(t, ast.Name)}
                    )
    return defs


def tree_definitions(core: Path, modules: set[str]) -> dict[str, dict[str, Definition]]:
    out = {}
    for module in modules:
        path = core / (module.replace(".", "/") + ".py")
        if not path.is_file():
            path = core / module.replace(".", "/") / "__init__.py"
        out[module] = source_definitions(path) if path.is_file() else {}
    return out


def manifest_definitions(manifest: dict) -> dict[str, dict[str, Definition]]:
    out: dict[str, dict[str, Definition]] = {}
    for qualified, entry in manifest["names"].items():
        module, _, name = qualified.rpartition(".")
        out.setdefault(module, {})[name] = Definition(entry.get("params"), entry.get("members", {}))
    return out


# ------------------------------------------------------------------------------------------------ the check


def check_use(defs: dict[str, dict[str, Definition]], use: Use) -> tuple[str, str]:
    """(status, detail): ok, GONE, NO-BIND, absent (an optional member), or unverified (not recorded)."""
    module_defs = defs.get(use.module)
    if module_defs is None:
        return "unverified", f"module {use.module} not recorded"
    definition = module_defs.get(use.name)
    if definition is None:
        return "GONE", f"{use.module} defines no {use.name!r}"
    params = definition.params
    for i, member in enumerate(use.members):
        if definition.members and member in definition.members:
            params = definition.members[member]
        elif definition.members or i == len(use.members) - 1 and use.optional:
            if use.optional:
                return "absent", f"{use.name} has no {member!r}; the pack checks for it with hasattr"
            return "GONE", f"{use.name} has no member {member!r}"
        else:
            return "ok", "member of a value (type not recorded)"
        definition = Definition(params, {})
    if use.positional is not None and params is not None:
        why = binds(params, use.positional, use.keywords)
        if why:
            return "NO-BIND", why
    return "ok", ""


def instance_uses() -> list[Use]:
    out = []
    for owner, member, positional, keywords in INSTANCE_USES:
        module, _, name = owner.rpartition(".")
        out.append(Use(module, name, (member,), positional, keywords, 0))
    return out


def run(defs: dict[str, dict[str, Definition]], uses: list[Use]) -> list[tuple[str, Use, str]]:
    return [(status, use, detail) for use in uses for status, detail in [check_use(defs, use)]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--core", type=Path, help="a ComfyUI source tree")
    source.add_argument("--manifest", type=Path, help="recorded signatures (JSON)")
    parser.add_argument("--pack-file", type=Path, default=GLUE, help="module whose core uses are checked")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    uses = pack_uses(options.pack_file) + instance_uses()
    if options.core:
        defs = tree_definitions(options.core, {u.module for u in uses})
        version = (options.core / "comfyui_version.py").read_text().split('"')[1]
    else:
        manifest = json.loads(options.manifest.read_text())
        defs, version = manifest_definitions(manifest), manifest["version"]
    results = run(defs, uses)
    for status, use, detail in results:
        call = (
            ""
            if use.positional is None
            else f"({use.positional} positional{''.join(', ' + k + '=' for k in use.keywords)})"
        )
        log.info("%-10s %s%s  line %d  %s", status, use.qualified, call, use.line, detail)
    counts = {s: sum(r[0] == s for r in results) for s in ("ok", "absent", "unverified", "GONE", "NO-BIND")}
    log.info("ComfyUI %s: %s", version, ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 1 if counts["GONE"] or counts["NO-BIND"] else 0


if __name__ == "__main__":
    sys.exit(main())
