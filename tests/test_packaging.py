"""The package metadata a PyPI visitor and pip see: project URLs, the Python
versions, a license old pip versions show, a description that starts with how to
install, and the optional extras the docs name."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def project() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        table: dict[str, Any] = tomllib.load(file)["project"]
    return table


def test_project_urls() -> None:
    urls = project()["urls"]
    assert {"Homepage", "Documentation", "Changelog", "Issues", "Security"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())


def test_python_versions() -> None:
    classifiers = project()["classifiers"]
    for minor in (11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert project()["requires-python"] == ">=3.11"


def test_license_is_a_license_field() -> None:
    # A table gives the core metadata a ``License:`` field, which pip before 25.1
    # shows; an SPDX string gives only ``License-Expression:``, which it does not.
    assert project()["license"] == {"text": "MIT"}
    assert "License :: OSI Approved :: MIT License" in project()["classifiers"]


def test_long_description_starts_with_pip_install() -> None:
    readme = project()["readme"]
    assert readme["content-type"] == "text/markdown"
    page = (ROOT / readme["file"]).read_text()
    assert page.splitlines()[1] == "pip install realtime-gateway"
    # The repository's README keeps the two make commands at its top.
    assert (ROOT / "README.md").read_text().split("```sh\n", 1)[1].startswith("make demo ")


def test_pydantic_is_an_extra_that_make_test_installs() -> None:
    assert project()["optional-dependencies"]["pydantic"] == ["pydantic>=2,<3"]
    makefile = (ROOT / "Makefile").read_text()
    install = next(line for line in makefile.splitlines() if "pip install" in line and "-e" in line)
    assert "pydantic" in install.split('"')[1]
