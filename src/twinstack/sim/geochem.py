"""PHREEQC runs (the `phreeqc` package: IPhreeqc and its databases) as tables.

PHREEQC does not number the lines it complains about; it echoes each input line as it reads
it and prints an error right after the line it was reading, or after the simulation's END when
the error is found later (then the name the message ends with is looked up in that
simulation's lines). `InputError.line` is the 1-based line of the input so found.

A batch of samples is one input of one SOLUTION per sample; PHREEQC stops at the first sample
it cannot solve, so the rest run again from the next one and each failure is reported with its
sample.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

DEFAULT_DATABASE = "phreeqc.dat"
DEFAULT_PHASES = ("Calcite", "Dolomite", "Gypsum", "Halite")
NOT_INPUT = ("name", "x", "y", "units")  # a sample's fields that are not SOLUTION lines
CHUNK = 200  # samples per PHREEQC input (see speciate)
NO_VALUE = -999.999  # what PHREEQC writes for an SI of a phase whose elements are absent


class InputError(ValueError):
    """PHREEQC refused the input: its message and the input line it points at (or None)."""

    def __init__(self, message: str, line: int | None, text: str | None = None) -> None:
        where = f"line {line} ({text.strip()!r}): " if line is not None and text else ""
        super().__init__(f"{where}{message}")
        self.message, self.line, self.text = message, line, text


@dataclass
class Table:
    """A SELECTED_OUTPUT block's rows (numbers, strings, or None for empty cells)."""

    number: int
    columns: list[str]
    rows: list[list[Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "columns": self.columns, "rows": self.rows}


@dataclass
class Outcome:
    tables: list[Table]
    warnings: list[str] = field(default_factory=list)


@functools.cache
def built_in_databases() -> tuple[str, ...]:
    """The package's database files (listed once: they are part of the installed package)."""
    return tuple(sorted(p.name for p in resources.files("phreeqc").joinpath("databases")
                        .iterdir() if p.name.endswith(".dat")))


def built_in_text(name: str) -> str:
    """A database bundled with the package, by file name."""
    if name not in built_in_databases():
        raise ValueError(f"no built-in database {name!r}; built in: "
                         f"{', '.join(built_in_databases())}")
    data = resources.files("phreeqc").joinpath("databases", name).read_bytes()
    return data.decode(errors="replace")  # comments in other encodings


def digest(text: str) -> str:
    """What pins a database: the SHA-256 of its text."""
    return hashlib.sha256(text.encode()).hexdigest()


def version() -> str:
    from phreeqc import Phreeqc

    return str(Phreeqc().GetVersionString())


class Engine:
    """One PHREEQC instance with a database loaded (kept across runs: loading phreeqc.dat
    takes ~40 ms)."""

    def __init__(self, database: str) -> None:
        from phreeqc import Phreeqc

        self.phreeqc = Phreeqc()
        if self.phreeqc.LoadDatabaseString(database) != 0:
            raise ValueError(f"the database does not load: {_errors(self.phreeqc)}")

    def run(self, text: str, selected_file: str | None = None, echo: bool = True) -> Outcome:
        """Run an input; its selected output as tables. `selected_file`: where SELECTED_OUTPUT
        1 is also written as it goes (a run's progress). `echo`: keep PHREEQC's printed
        output, which locates an error's line (speciating without it is ~1.5x faster)."""
        p = self.phreeqc
        p.SetOutputStringOn(echo)
        p.SetSelectedOutputFileOn(selected_file is not None)
        if selected_file is not None:
            p.SetSelectedOutputFileName(selected_file)
        if p.RunString(text) != 0:
            raise located_error(text, p.GetOutputString(), _errors(p))
        return Outcome(self.tables(), self.warnings())

    def warnings(self) -> list[str]:
        return [w for w in self.phreeqc.GetWarningString().splitlines()
                if w.startswith("WARNING")]

    def tables(self) -> list[Table]:
        p, tables = self.phreeqc, []
        for n in range(p.GetSelectedOutputCount()):
            number = p.GetNthSelectedOutputUserNumber(n)
            p.SetCurrentSelectedOutputUserNumber(number)
            width, height = p.GetSelectedOutputColumnCount(), p.GetSelectedOutputRowCount()
            cells = [[_cell(p.GetSelectedOutputValue(r, c)) for c in range(width)]
                     for r in range(height)]
            tables.append(Table(number, [str(c) for c in cells[0]] if cells else [],
                                cells[1:]))
        return tables


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _errors(p: Any) -> str:
    lines = [e.strip() for e in p.GetErrorString().splitlines() if e.strip()]
    kept = [e for e in lines if "Calculations terminating" not in e] or lines
    return " ".join(e.removeprefix("ERROR:").strip() for e in kept) or "PHREEQC failed"


def located_error(text: str, output: str, message: str) -> InputError:
    """The input line PHREEQC's first error points at (see the module's docstring)."""
    lines = text.splitlines()
    cursor, last, first_of_simulation = 0, None, 0
    for out in output.splitlines():
        if out.startswith("Reading input data for simulation"):
            first_of_simulation = cursor
        elif out.startswith("\t"):
            echoed = out[1:].strip()
            for n in range(cursor, len(lines)):
                if lines[n].strip() == echoed:
                    last, cursor = n, n + 1
                    break
        elif out.startswith("ERROR:"):
            if last is not None and lines[last].strip().upper() != "END":
                return InputError(message, last + 1, lines[last])
            break
    name = re.search(r",\s*([^,\s]+?)\.?$", message.split(". ")[0].rstrip("."))
    if name is not None:
        token = re.compile(rf"(^|\s){re.escape(name.group(1))}(\s|$)")
        for n in range(first_of_simulation, min(cursor, len(lines))):
            if token.search(lines[n]):
                return InputError(message, n + 1, lines[n])
    if last is not None:
        return InputError(message, last + 1, lines[last])
    return InputError(message, None)


# batches of samples ----------------------------------------------------------------------------

def speciation_input(samples: list[dict[str, Any]], phases: list[str], first: int = 0,
                     number_from: int = 1) -> str:
    """One input speciating `samples[first:]`: SELECTED_OUTPUT 1 with pH, ionic strength,
    charge-balance error and the phases' SIs, then a SOLUTION per sample numbered by its
    index + number_from, a line per field (temp, pH, pe, density, elements'
    concentrations)."""
    head = ("SELECTED_OUTPUT 1\n -reset false\n -solution true\n -temperature true\n"
            " -pH true\n -pe true\n -ionic_strength true\n -percent_error true\n"
            f" -saturation_indices {' '.join(phases)}\n")
    blocks = [head]
    for n in range(first, len(samples)):
        sample = samples[n]
        lines = [f"SOLUTION {n + number_from}", f" units {sample.get('units', 'mg/L')}"]
        lines += [f" {key} {value!r}" for key, value in sample.items()
                  if key not in NOT_INPUT and value is not None]
        blocks.append("\n".join(lines) + "\nEND\n")
    return "".join(blocks)


@dataclass
class Speciation:
    columns: list[str]
    rows: list[list[Any] | None]  # per sample, None where it failed
    errors: dict[int, str]  # sample index: PHREEQC's message


def speciate(engine: Engine, samples: list[dict[str, Any]], phases: list[str],
             number_from: int = 1) -> Speciation:
    """Every sample's speciation; a sample PHREEQC cannot solve gets its error, the others
    their row. Raises InputError for what is wrong with every sample (an unknown element or
    phase). In inputs of CHUNK samples: PHREEQC slows down as an input's solutions pile up
    (5,000 in one input: 8.6k samples/s; in inputs of 200: 11.9k/s). Sample n is SOLUTION
    n + number_from, the number PHREEQC's messages name (a batch's later part numbers on)."""
    found = Speciation([], [], {})
    for start in range(0, len(samples), CHUNK):
        part = _speciate(engine, samples[start:start + CHUNK], phases, number_from + start)
        found.columns = found.columns or part.columns
        found.rows += part.rows
        found.errors |= {start + n: message for n, message in part.errors.items()}
    return found


def _speciate(engine: Engine, samples: list[dict[str, Any]], phases: list[str],
              number_from: int) -> Speciation:
    rows: list[list[Any] | None] = [None] * len(samples)
    errors: dict[int, str] = {}
    columns: list[str] = []
    first = 0
    while first < len(samples):
        try:
            outcome, failed = engine.run(speciation_input(samples, phases, first,
                                                          number_from), echo=False), None
        except InputError as exc:
            outcome, failed = Outcome(engine.tables(), engine.warnings()), exc
        unknown = [w for w in outcome.warnings
                   if "Could not find element" in w or "Did not find phase" in w]
        if unknown:
            raise InputError(unknown[0].removeprefix("WARNING:").strip(), None)
        table = outcome.tables[0] if outcome.tables else Table(1, [], [])
        columns = columns or table.columns
        stop = len(samples) if failed is None else \
            _failed_sample(failed.message, table, first, number_from)
        for row in table.rows:
            if int(row[0]) - number_from < stop:
                rows[int(row[0]) - number_from] = [None if v == NO_VALUE else v
                                                   for v in row[1:]]
        if failed is None:
            break
        errors[stop] = failed.message
        first = stop + 1
    return Speciation(columns[1:], rows, errors)


def _failed_sample(message: str, table: Table, first: int, number_from: int) -> int:
    """The index of the sample a batch stopped at: the solution PHREEQC names, else the one
    after its last row."""
    named = re.search(r"solution\s+(\d+)", message)
    if named is not None:
        return int(named.group(1)) - number_from
    return max([first - 1] + [int(r[0]) - number_from for r in table.rows]) + 1
