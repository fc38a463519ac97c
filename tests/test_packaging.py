"""The installed package carries everything it needs (code, knowledge, schemas, fixtures)."""

from __future__ import annotations

import tomllib

from tests.conftest import REPO


def test_every_python_package_is_listed_for_installation():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts)
               for p in (REPO / "cds_service").rglob("__init__.py")}
    assert on_disk - listed == set()


def test_knowledge_and_fixtures_are_installed_as_package_data():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"cds_service.knowledge": "hooks",
                                     "cds_service.bundled_fixtures": "fixtures"}
    data = config["package-data"]
    assert {"**/*.yaml", "**/*.json", "**/*.tsv"} <= set(data["cds_service.knowledge"])
    assert "schemas/*.json" in data["cds_service.protocol"]
