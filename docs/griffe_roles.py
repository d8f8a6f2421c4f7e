"""A griffe extension: the library's reStructuredText-flavoured docstrings as Markdown.

The docstrings name other objects with Sphinx roles (``:class:`Gateway```,
``:meth:`attach```) and end a paragraph before a literal block with ``::``.
mkdocstrings renders Markdown, so each role becomes a link to the object's entry in
the API reference when that entry exists (a public name of ``realtime_gateway`` or
``realtime_gateway.testing``, or a documented public member of one), and inline code
otherwise; ``::`` becomes ``:``. Only the rendered text changes, never the source.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")
LITERAL_BLOCK = re.compile(r"(\S)::\n")
# The modules whose public names the API reference renders.
DOCUMENTED = ("realtime_gateway", "realtime_gateway.testing")


class SphinxRoles(griffe.Extension):
    """Rewrites roles once the package is loaded, when every name can be looked up."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path != "realtime_gateway":
            return
        public = _public(pkg)
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = _markdown(obj.docstring.value, obj, public)


def _public(pkg: griffe.Module) -> dict[str, griffe.Object]:
    """Rendered path (``realtime_gateway.Gateway``) -> the object it shows."""
    found: dict[str, griffe.Object] = {}
    for module_path in DOCUMENTED:
        module = pkg if module_path == pkg.path else pkg.get_member(module_path.split(".", 1)[1])
        for name in module.exports or ():
            if not isinstance(name, str) or name not in module.members:
                continue
            target = module.members[name]
            obj = target.final_target if isinstance(target, griffe.Alias) else target
            found[f"{module_path}.{name}"] = obj
            if isinstance(obj, griffe.Class):
                for member_name, member in obj.all_members.items():
                    member = member.final_target if isinstance(member, griffe.Alias) else member
                    if not member_name.startswith("_") and member.docstring is not None:
                        found[f"{module_path}.{name}.{member_name}"] = member
    return found


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    objects = [obj]
    for member in obj.members.values():
        if not isinstance(member, griffe.Alias):
            objects.extend(_walk(member))
    return objects


def _markdown(text: str, where: griffe.Object, public: dict[str, griffe.Object]) -> str:
    def link(match: re.Match[str]) -> str:
        short, name = match.group(1) == "~", match.group(2)
        shown = name.rsplit(".", 1)[-1] if short else name
        target = _resolve(name, where, public)
        return f"`{shown}`" if target is None else f"[`{shown}`][{target}]"

    return LITERAL_BLOCK.sub(r"\1:\n", ROLE.sub(link, text))


def _resolve(name: str, where: griffe.Object, public: dict[str, griffe.Object]) -> str | None:
    """The rendered path ``name`` refers to, seen from ``where``'s docstring."""
    candidates = [name, *(f"{module}.{name}" for module in DOCUMENTED)]
    # A bare member name (``:meth:`attach```) is one of the enclosing class's members.
    scope: griffe.Object | None = where
    while scope is not None and not isinstance(scope, griffe.Class):
        scope = scope.parent
    if scope is not None:
        for path, obj in list(public.items()):
            if obj is scope or obj.path == scope.path:
                candidates.insert(0, f"{path}.{name}")
    return next((path for path in candidates if path in public), None)
