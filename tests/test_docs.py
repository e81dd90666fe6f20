"""The architecture page's module map names every module of both packages, so a new module gets its line."""
from __future__ import annotations

from paths import REPO


def test_architecture_names_every_module():
    page = (REPO / "docs" / "architecture.md").read_text()
    for package in ("sweep", "trainer"):
        root = REPO / package
        for module in sorted(root.rglob("*.py")):
            name = module.relative_to(root).as_posix()
            if module.name != "__init__.py":
                assert f"`{name}`" in page, f"docs/architecture.md does not name {package}/{name}"
