"""Pin every runtime dependency to its declared lower bound, for ``make test-min``.

A lower bound in ``pyproject.toml`` is a promise ("works with pandas 2.2"); the only proof is to
install exactly that version and run the suite. This reads ``[project].dependencies`` and turns
each ``>=X`` (or ``~=X``) into ``==X``, so a dependency added later is covered without editing
the Makefile; one without a lower bound is an error, not a silent skip. ``--with hub`` pins an
optional runtime group the same way (what ``pip install coinrates-nb[hub]`` may give). Standard
library only: it runs under the bare interpreter that creates the venv.

Usage::

    python scripts/min_requirements.py --with hub      # the runtime pins, one per line
    python scripts/min_requirements.py --extra test    # an extra's lines, as declared (not pinned)
    .venv-min/bin/python scripts/min_requirements.py --with hub --check   # installed == pinned
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger("min_requirements")

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

_REQUIREMENT = re.compile(r"^\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?P<extras>\[[^\]]*\])?"
                          r"\s*(?P<spec>[^;]*?)\s*(?:;\s*(?P<marker>.+?))?\s*$")
_CLAUSE = re.compile(r"^\s*(?P<op>~=|==|!=|<=|>=|<|>|===)\s*(?P<version>[A-Za-z0-9.*+!_-]+)\s*$")


class RequirementError(ValueError):
    """Raised when a runtime dependency cannot be pinned to a lower bound (none declared, or a URL)."""


@dataclass(frozen=True)
class Pin:
    """A runtime dependency pinned to its lower bound: ``name[extras]==version ; marker``."""

    name: str
    extras: str
    version: str
    marker: str | None

    def line(self) -> str:
        """The requirement line pip reads."""
        text = f"{self.name}{self.extras}=={self.version}"
        return f"{text} ; {self.marker}" if self.marker else text


def pin(requirement: str) -> Pin:
    """The ``==`` pin of one PEP 508 requirement at its lower bound.

    Raises:
        RequirementError: no ``>=``/``~=``/``==`` bound, a URL requirement, or text that is not one.
    """
    match = _REQUIREMENT.match(requirement)
    if match is None or "@" in (match["spec"] or ""):
        raise RequirementError(f"cannot read {requirement!r} as a 'name>=X' requirement")
    spec = (match["spec"] or "").strip().removeprefix("(").removesuffix(")")
    lower: str | None = None
    for clause in filter(None, (part.strip() for part in spec.split(","))):
        parsed = _CLAUSE.match(clause)
        if parsed is None:
            raise RequirementError(f"cannot read the specifier {clause!r} of {requirement!r}")
        if parsed["op"] in (">=", "~=", "==", "==="):
            if "*" in parsed["version"]:
                raise RequirementError(f"{requirement!r}: a wildcard is no lower bound")
            lower = parsed["version"]
    if lower is None:
        raise RequirementError(f"{requirement!r} declares no lower bound: write '{match['name']}>=X' "
                               "with the oldest release it works with (make test-min proves it)")
    return Pin(match["name"], match["extras"] or "", lower, match["marker"])


def _project(pyproject: Path) -> dict[str, Any]:
    """The ``[project]`` table of ``pyproject``."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project")
    if not isinstance(project, dict):
        raise RequirementError(f"no [project] table in {pyproject}")
    return project


def runtime_pins(pyproject: Path = PYPROJECT, extras: tuple[str, ...] = ()) -> list[Pin]:
    """The lower-bound pins of every ``[project].dependencies`` entry, then of each group in ``extras``.

    An extra's reference to the project itself (``coinrates-nb[hub]``) is skipped; a package
    pinned twice keeps its first pin.
    """
    own = _normalize(str(_project(pyproject).get("name", "")))
    requirements = list(_project(pyproject).get("dependencies", []))
    for name in extras:
        requirements += extra(name, pyproject)
    pins: dict[str, Pin] = {}
    for requirement in requirements:
        p = pin(requirement)
        if _normalize(p.name) != own:
            pins.setdefault(_normalize(p.name), p)
    return list(pins.values())


def extra(name: str, pyproject: Path = PYPROJECT) -> list[str]:
    """The requirement lines of the optional-dependency group ``name``, unchanged."""
    groups = _project(pyproject).get("optional-dependencies", {})
    if name not in groups:
        raise RequirementError(f"no optional-dependencies group {name!r} in {pyproject}")
    return list(groups[name])


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check(pins: list[Pin]) -> list[str]:
    """What differs between ``pins`` and this interpreter's installed distributions (empty: all match)."""
    problems = []
    for p in pins:
        try:
            installed = metadata.version(p.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{p.name}: not installed (wanted {p.version})")
            continue
        if _release(installed) != _release(p.version):
            problems.append(f"{p.name}: {installed} installed, wanted {p.version}")
        else:
            logger.info("%s==%s", _normalize(p.name), installed)
    return problems


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of ``version`` without trailing zeros: ``"15" == "15.0" == "15.0.0"``."""
    match = re.match(r"\d+(?:\.\d+)*", version.strip())
    numbers = [int(part) for part in match[0].split(".")] if match else []
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def main(argv: list[str] | None = None) -> int:
    """Print the runtime pins (or an extra's lines), or check them against what is installed."""
    parser = argparse.ArgumentParser(description="Pin every runtime dependency to its declared lower bound.")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    parser.add_argument("--with", dest="extras", metavar="NAME", action="append", default=[],
                        help="pin this optional-dependencies group too (repeatable)")
    parser.add_argument("--extra", metavar="NAME", help="print this optional-dependencies group instead, unpinned")
    parser.add_argument("--check", action="store_true", help="check that the installed versions are the pins")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.extra:
            lines = extra(args.extra, args.pyproject)
        else:
            pins = runtime_pins(args.pyproject, tuple(args.extras))
            if args.check:
                problems = check(pins)
                for problem in problems:
                    logger.error("%s", problem)
                return 1 if problems else 0
            lines = [p.line() for p in pins]
    except (RequirementError, OSError, tomllib.TOMLDecodeError) as exc:
        logger.error("%s", exc)
        return 2
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
