"""The documentation site's code runs as printed, and the site covers what it must.

The pages under ``docs/`` are README sections (included by heading, so their code
blocks are README blocks that tests/test_readme.py runs) and code included from
``docs/snippets/*.py``, which the tests below run against a served gateway. A code
block written into a page directly must be listed in ``COVERED``.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import runpy
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import realtime_gateway
from realtime_gateway import (
    Gateway,
    Identity,
    MainNamespace,
    SignedTokenAuthenticator,
    reference_rules,
    testing,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"
INCLUDE_SNIPPET = re.compile(r'^\{%\s*include "snippets/([\w.]+)"\s*%\}$')
# README sections the site leaves out on purpose.
NOT_IN_THE_DOCS = {"Performance", "Development"}
# A code block written into a page itself: (page, language) -> what checks it.
COVERED = {("index.md", "sh"): "test_install_lines_name_real_extras"}
# Each snippet -> the test that runs it.
SNIPPET_TESTS = {
    "starlette_app.py": "test_starlette_snippet",
    "api_key_authenticator.py": "test_custom_authenticator_snippet",
    "own_ward_authorizer.py": "test_custom_authorizer_snippet",
    "tasks_namespace.py": "test_custom_namespace_snippet",
}
KEY = "a-long-random-secret-key"  # the snippets' key, as the README's


def pages() -> Iterator[Path]:
    return iter(sorted(DOCS.rglob("*.md")))


def code_blocks(page: Path) -> Iterator[tuple[str, str]]:
    """(language, code) of each fenced block of ``page``, as written in the file."""
    for match in re.finditer(r"^```(\w*)\n(.*?)^```$", page.read_text(), re.S | re.M):
        yield match.group(1), match.group(2)


def test_every_code_block_is_run() -> None:
    included = set()
    for page in pages():
        for language, code in code_blocks(page):
            snippet = INCLUDE_SNIPPET.match(" ".join(code.split()))
            if snippet is not None:
                assert language == "python", page
                included.add(snippet.group(1))
            else:
                assert (page.name, language) in COVERED, f"{page.name}: a {language} block"
    assert included == set(SNIPPET_TESTS)
    assert {path.name for path in SNIPPETS.glob("*.py")} == set(SNIPPET_TESTS)
    assert all(name in globals() for name in SNIPPET_TESTS.values())


def test_every_readme_section_is_in_the_docs() -> None:
    sections = re.findall(r"^## (.+)$", (ROOT / "README.md").read_text(), re.M)
    included = set()
    for page in pages():
        included.update(re.findall(r'start="\\n#+ (.+?)\\n"', page.read_text()))
    missing = set(sections) - included - NOT_IN_THE_DOCS
    assert not missing, f"README sections no docs page includes: {sorted(missing)}"


def test_the_reference_documents_every_public_name() -> None:
    documented = []
    for page in (DOCS / "reference").glob("*.md"):
        if page.name == "testing.md":
            continue
        documented += re.findall(r"^::: realtime_gateway\.(\w+)$", page.read_text(), re.M)
    assert sorted(documented) == sorted(realtime_gateway.__all__)
    testing_page = (DOCS / "reference" / "testing.md").read_text()
    assert "::: realtime_gateway.testing\n" in testing_page
    assert "::: realtime_gateway.pytest_plugin\n" in testing_page


def test_install_lines_name_real_extras() -> None:
    [(_, code)] = [b for b in code_blocks(DOCS / "index.md") if b[0] == "sh"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in code.splitlines():
        command = line.split("#")[0].split()
        assert command[:2] == ["pip", "install"], line
        name, _, extras = command[2].strip('"').partition("[")
        assert name == project["name"]
        for extra in filter(None, extras.rstrip("]").split(",")):
            assert extra in project["optional-dependencies"], extra


def snippet(name: str) -> dict[str, Any]:
    """The names a snippet defines, run afresh (not as ``__main__``)."""
    return runpy.run_path(str(SNIPPETS / name), run_name="docs_snippet")


async def test_starlette_snippet() -> None:
    names = snippet("starlette_app.py")
    gateway: Gateway = names["gateway"]
    async with testing.serve(gateway, names["asgi"], kind="asgi") as server:
        token = await server.token("d1", roles=["doctor"])
        async with server.http.get("/me", headers={"Authorization": f"Bearer {token}"}) as r:
            assert (r.status, await r.json()) == (200, {"userId": "d1"})
        async with server.http.get("/me") as r:
            assert r.status == 401
        async with server.http.get("/api/socket.io/health") as r:
            assert r.status == 200
        client = await server.connect("d1", roles=["doctor"])
        assert (await client.call("ping"))["status"] == "pong"


async def test_custom_authenticator_snippet() -> None:
    names = snippet("api_key_authenticator.py")
    gateway = Gateway(
        authenticator=names["authenticator"],
        authorizer=reference_rules(),
        namespaces=[MainNamespace()],
    )
    async with testing.serve(gateway) as server:
        display = await server.connect(headers={"X-Api-Key": "wall-display-key"})
        assert (await display.receive("connected"))["userId"] == "display-3"
        refusal = await server.refusal(headers={"X-Api-Key": "not-a-key"})
        assert refusal.code == "unauthenticated"
        # People still connect with signed tokens: the second authenticator of the chain.
        nurse = await server.connect("n1", roles=["nurse"])
        assert (await nurse.receive("connected"))["userId"] == "n1"


async def test_custom_authorizer_snippet() -> None:
    names = snippet("own_ward_authorizer.py")
    gateway = Gateway(
        authenticator=SignedTokenAuthenticator([KEY], salt="docs", max_age=600),
        authorizer=names["authorizer"],
        namespaces=[MainNamespace()],
    )
    async with testing.serve(gateway) as server:
        nurse = await server.connect(
            Identity(user_id="n1", roles={"nurse"}, attributes={"ward": "3"})
        )
        assert (await nurse.call("join:room", "ward:3"))["success"] is True
        assert (await nurse.call("join:room", "ward:4"))["code"] == "forbidden"
        doctor = await server.connect("d1", roles=["doctor"])
        assert (await doctor.call("join:room", "ward:3"))["code"] == "forbidden"
        # The reference rules still decide the rest.
        assert (await nurse.call("join:room", "role:nurse"))["success"] is True
        assert (await doctor.call("join:room", "role:nurse"))["code"] == "forbidden"


async def test_custom_namespace_snippet() -> None:
    names = snippet("tasks_namespace.py")
    gateway = Gateway(
        authenticator=SignedTokenAuthenticator([KEY], salt="docs", max_age=600),
        authorizer=names["authorizer"],
        namespaces=names["namespaces"],
    )
    async with testing.serve(gateway) as server:
        nurse = await server.connect("n1", roles=["nurse"], namespaces=["/tasks"])
        doctor = await server.connect("d1", roles=["doctor"], namespaces=["/tasks"])
        bad = await nurse.call(
            "task:create", {"title": "Bloods", "priority": "urgent"}, namespace="/tasks"
        )
        assert (bad["success"], bad["code"], bad["field"]) == (False, "invalid_payload", "priority")
        created = await nurse.call(
            "task:create",
            {"title": "Bloods", "priority": "high", "patientId": "p1"},
            namespace="/tasks",
        )
        assert created == {"success": True, "taskId": "1"}
        heard = await doctor.receive("task:created", namespace="/tasks")
        assert heard == {"id": "1", "title": "Bloods"}
        assert (await doctor.call("task:done", "9", namespace="/tasks"))["code"] == "not_found"
        assert await doctor.call("task:done", "1", namespace="/tasks") == {"success": True}
        # Who may send is the authorizer's: a patient may connect, not create tasks.
        patient = await server.connect("p1", roles=["patient"], namespaces=["/tasks"])
        refused = await patient.call("task:create", {"title": "Lunch"}, namespace="/tasks")
        assert (refused["success"], refused["code"]) == (False, "forbidden")
        assert patient.received("task:created", namespace="/tasks") == []


async def test_the_built_site_renders_every_public_name(tmp_path: Path) -> None:
    """What readers get: an entry for every public name, docstrings' Sphinx roles
    turned into links (docs/griffe_roles.py), the snippets in their pages."""
    build = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)),
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(build.communicate(), 60)
    assert build.returncode == 0, output.decode()
    reference = "".join(page.read_text() for page in (tmp_path / "reference").rglob("*.html"))
    for name in realtime_gateway.__all__:
        assert f'id="realtime_gateway.{name}"' in reference, name
    for name in testing.__all__:
        assert f'id="realtime_gateway.testing.{name}"' in reference, name
    assert not re.search(r":(class|meth|func|attr|mod|exc):", reference)
    # A role naming a public object is a link to its entry.
    assert 'href="../errors/#realtime_gateway.NotFound"' in reference
    # Each snippet is shown whole, on the page that includes it.
    for page in pages():
        for snippet_name in re.findall(r'include "snippets/([\w.]+)"', page.read_text()):
            built = tmp_path / page.with_suffix("").relative_to(DOCS) / "index.html"
            if page.name == "index.md":
                built = tmp_path / "index.html"
            text = html.unescape(re.sub(r"<[^>]+>", "", built.read_text()))
            for line in (SNIPPETS / snippet_name).read_text().splitlines():
                assert line in text, (snippet_name, line)
