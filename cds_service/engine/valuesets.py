"""Value sets: code lists kept apart from logic, matched on system + code.

A code is never matched without its system. ICD-10-CM codes are compared
without their dot and in upper case, because EHRs send both ``M21.372`` and
``M21372``; every other system is compared exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"


def normalise_code(system: str, code: str) -> str:
    if system == ICD10CM:
        return code.replace(".", "").strip().upper()
    return code.strip()


@dataclass(frozen=True)
class CodeInfo:
    system: str
    code: str
    display: str
    laterality: str | None = None
    region: str | None = None
    flags: frozenset[str] = frozenset()


@dataclass
class ValueSet:
    id: str
    title: str
    description: str
    codes: dict[tuple[str, str], CodeInfo] = field(default_factory=dict)
    prefixes: tuple[tuple[str, str], ...] = ()

    def add(self, info: CodeInfo) -> None:
        self.codes[(info.system, normalise_code(info.system, info.code))] = info

    def lookup(self, system: str | None, code: str | None) -> CodeInfo | None:
        """The entry for a coding, or None. Prefix (class) members get a bare entry."""
        if not system or not code or not isinstance(code, str):
            return None
        found = self.codes.get((system, normalise_code(system, code)))
        if found is not None:
            return found
        for prefix_system, prefix in self.prefixes:
            if system == prefix_system and code.upper().startswith(prefix.upper()):
                return CodeInfo(system, code, code)
        return None

    def first_match(self, codings: list[tuple[str, str]]) -> CodeInfo | None:
        for system, code in codings:
            info = self.lookup(system, code)
            if info is not None:
                return info
        return None


def all_codes(valuesets: dict[str, ValueSet]) -> frozenset[tuple[str, str]]:
    """Every (system, normalised code) of every value set."""
    return frozenset(key for vs in valuesets.values() for key in vs.codes)
