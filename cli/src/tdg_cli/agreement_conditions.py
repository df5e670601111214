"""`tdg access approve`: its options and conditions file → the proto `Conditions`, and back to text.

Mask specs (`--mask COLUMN=METHOD`), METHOD one of:
  clear, null, hash              the MaskMethod of that name
  truncate:UNIT                  generalise a date or timestamp to hour, day, week, month or year
  round:STEP                     generalise a number to a multiple of STEP (> 0), e.g. round:100
  epci                           generalise an INSEE commune code to the SIREN of its EPCI
Territory spec (`--territory COLUMN=CODE,CODE…`): serve the rows whose COLUMN is one of the codes.
Times (`--valid-from`, `--valid-until`): ISO 8601, a date or a date and time; UTC unless an offset
is given.

A conditions file is YAML with the fields of `Conditions`:

    columns: [counter_id, commune, count, ts]
    masks:
      - {column: counter_id, method: hash}
      - {column: ts, method: generalise, generalisation: {truncate_to: day}}
      - count=round:10                     # a mask may also be written as a --mask spec
    territory_filter: {column: commune, codes: ["69123", "69266"]}
    aggregate_only: false
    min_group_size: 0
    valid_from: 2026-01-01
    valid_until: 2026-12-31T23:59:59+01:00
    commitments: {max_freshness_lag_s: 300, completeness_pct: 95, validity_rate_pct: 99}

Options override the file: a mask replaces the file's mask of the same column, `--column` replaces
the file's column list, every other option replaces its field.

Only the shape is checked here (syntax, known keys and names, value types); the consent service
judges the content (the column exists, its type suits the generalisation, the dates make sense),
so each rule lives in one place. Pure: no typer, no gRPC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from tdg.consent.v1 import consent_pb2 as pb

from tdg_cli.vocabulary import MASK_METHODS, OptionError
from tdg_cli.yaml_file import YamlDoc, YamlFileError, read_yaml

TRUNCATE_UNITS = ("hour", "day", "week", "month", "year")
SIMPLE_METHODS = {
    "clear": pb.MASK_METHOD_CLEAR,
    "null": pb.MASK_METHOD_NULL,
    "hash": pb.MASK_METHOD_HASH,
}
MASK_SPEC_HELP = (
    "clear, null, hash, truncate:UNIT (UNIT hour, day, week, month or year), "
    "round:STEP (e.g. round:100), epci (commune → EPCI)"
)
CONDITIONS_KEYS = (
    "columns",
    "masks",
    "territory_filter",
    "aggregate_only",
    "min_group_size",
    "valid_from",
    "valid_until",
    "commitments",
)
MASK_KEYS = ("column", "method", "generalisation")
GENERALISATION_KEYS = ("truncate_to", "round_to", "commune_to_epci")
TERRITORY_KEYS = ("column", "codes")
COMMITMENT_KEYS = ("max_freshness_lag_s", "completeness_pct", "validity_rate_pct")


# --- masks -------------------------------------------------------------------------------------


def parse_mask(spec: str, option: str = "--mask") -> pb.ColumnMask:
    """`COLUMN=METHOD` → ColumnMask; OptionError naming `option` when malformed."""
    column, sep, method = spec.partition("=")
    column, method = column.strip(), method.strip().lower()
    if not sep or not column or not method:
        raise OptionError(option, f"{spec!r} is not COLUMN=METHOD, METHOD one of {MASK_SPEC_HELP}")
    name, colon, argument = method.partition(":")
    name, argument = name.strip(), argument.strip()
    if name in SIMPLE_METHODS or name == "epci":
        if colon:
            raise OptionError(option, f"{spec!r}: {name} takes no argument (no ':')")
        if name == "epci":
            return pb.ColumnMask(
                column=column,
                method=pb.MASK_METHOD_GENERALISE,
                generalisation=pb.Generalisation(commune_to_epci=True),
            )
        return pb.ColumnMask(column=column, method=SIMPLE_METHODS[name])
    if name == "truncate":
        if argument not in TRUNCATE_UNITS:
            raise OptionError(
                option, f"{spec!r}: truncate:UNIT, UNIT one of {', '.join(TRUNCATE_UNITS)}"
            )
        generalisation = pb.Generalisation(truncate_to=argument)
    elif name == "round":
        generalisation = pb.Generalisation(round_to=_step(argument, spec, option))
    else:
        raise OptionError(option, f"{spec!r}: unknown method {name!r}; one of {MASK_SPEC_HELP}")
    return pb.ColumnMask(
        column=column, method=pb.MASK_METHOD_GENERALISE, generalisation=generalisation
    )


def _step(text: str, spec: str, option: str) -> float:
    try:
        step = float(text)
    except ValueError:
        step = math.nan
    if not (math.isfinite(step) and step > 0):
        raise OptionError(option, f"{spec!r}: round:STEP, STEP a number greater than 0, e.g. 100")
    return step


def parse_masks(specs: list[str], option: str = "--mask") -> list[pb.ColumnMask]:
    """Several specs; a column masked twice is an error."""
    masks = [parse_mask(s, option) for s in specs]
    _no_duplicate_column(masks, option)
    return masks


def _no_duplicate_column(masks: list[pb.ColumnMask], option: str) -> None:
    seen: set[str] = set()
    for m in masks:
        if m.column in seen:
            raise OptionError(option, f"column {m.column!r} is masked twice")
        seen.add(m.column)


def mask_spec(mask: pb.ColumnMask) -> str:
    """The METHOD part of a mask spec, for display: the inverse of `parse_mask`."""
    if mask.method != pb.MASK_METHOD_GENERALISE:
        return MASK_METHODS.name(mask.method) or "unspecified"
    g = mask.generalisation
    which = g.WhichOneof("method")
    if which == "truncate_to":
        return f"truncate:{g.truncate_to}"
    if which == "round_to":
        step = g.round_to
        return f"round:{int(step)}" if step.is_integer() else f"round:{step!r}"
    if which == "commune_to_epci":
        return "epci" if g.commune_to_epci else "generalise"
    return "generalise"


# --- territory ---------------------------------------------------------------------------------


def parse_territory(spec: str, option: str = "--territory") -> pb.TerritoryFilter:
    """`COLUMN=CODE,CODE…` → TerritoryFilter (codes in the given order, repeats dropped)."""
    column, sep, codes_text = spec.partition("=")
    column = column.strip()
    codes = [c.strip() for c in codes_text.split(",")]
    if not sep or not column or not codes_text.strip():
        raise OptionError(option, f"{spec!r} is not COLUMN=CODE,CODE…, e.g. commune=69123,69266")
    if "" in codes:
        raise OptionError(option, f"{spec!r}: an empty code (two commas, or one at an end)")
    return pb.TerritoryFilter(column=column, codes=list(dict.fromkeys(codes)))


def territory_spec(territory: pb.TerritoryFilter) -> str:
    return f"{territory.column}={','.join(territory.codes)}"


# --- times -------------------------------------------------------------------------------------


def parse_time(text: str, option: str) -> Timestamp:
    """ISO 8601 date or date-time → Timestamp; UTC unless it carries an offset."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise OptionError(
            option,
            f"{text!r} is not an ISO 8601 date or time, e.g. 2026-01-01 or 2026-01-01T08:00+01:00",
        ) from None
    return _timestamp(moment)


def _timestamp(moment: datetime) -> Timestamp:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


# --- conditions file ---------------------------------------------------------------------------


def load_conditions(path: Path) -> pb.Conditions:
    """The Conditions written in a YAML file; YamlFileError naming the file and the key."""
    doc = YamlDoc(path)
    raw = read_yaml(path)
    top = {} if raw is None else doc.mapping(raw, "", CONDITIONS_KEYS)
    out = pb.Conditions()
    if "columns" in top:
        out.columns.extend(doc.texts(top["columns"], "columns"))
    if top.get("masks") is not None:
        out.masks.extend(_file_masks(doc, top["masks"]))
    if top.get("territory_filter") is not None:
        out.territory_filter.CopyFrom(_file_territory(doc, top["territory_filter"]))
    if "aggregate_only" in top:
        out.aggregate_only = doc.boolean(top["aggregate_only"], "aggregate_only")
    if "min_group_size" in top:
        out.min_group_size = doc.integer(top["min_group_size"], "min_group_size")
    for key in ("valid_from", "valid_until"):
        if top.get(key) is not None:
            getattr(out, key).CopyFrom(_file_time(doc, top[key], key))
    if top.get("commitments") is not None:
        c = doc.mapping(top["commitments"], "commitments", COMMITMENT_KEYS)
        if "max_freshness_lag_s" in c:
            out.commitments.max_freshness_lag_s = doc.integer(
                c["max_freshness_lag_s"], "commitments.max_freshness_lag_s"
            )
        for key in ("completeness_pct", "validity_rate_pct"):
            if key in c:
                setattr(out.commitments, key, doc.number(c[key], f"commitments.{key}"))
    return out


def _file_masks(doc: YamlDoc, value: object) -> list[pb.ColumnMask]:
    if not isinstance(value, list):
        raise doc.fail("masks", "must be a list of {column, method, generalisation}")
    masks = [_file_mask(doc, m, f"masks[{i}]") for i, m in enumerate(value)]
    try:
        _no_duplicate_column(masks, "masks")
    except OptionError as exc:
        raise doc.fail("masks", str(exc)) from None
    return masks


def _file_mask(doc: YamlDoc, value: object, key: str) -> pb.ColumnMask:
    if isinstance(value, str):
        try:
            return parse_mask(value, key)
        except OptionError as exc:
            raise doc.fail(key, str(exc)) from None
    m = doc.mapping(value, key, MASK_KEYS)
    for required in ("column", "method"):
        if required not in m:
            raise doc.fail(f"{key}.{required}", "is required")
    mask = pb.ColumnMask(
        column=doc.text(m["column"], f"{key}.column"),
        method=_file_method(doc, m["method"], f"{key}.method"),
    )
    generalising = mask.method == pb.MASK_METHOD_GENERALISE
    if m.get("generalisation") is None:
        if generalising:
            raise doc.fail(
                f"{key}.generalisation",
                f"is required with generalise: one of {', '.join(GENERALISATION_KEYS)}",
            )
        return mask
    if not generalising:
        raise doc.fail(f"{key}.generalisation", "only with method: generalise")
    mask.generalisation.CopyFrom(_file_generalisation(doc, m["generalisation"], key))
    return mask


def _file_method(doc: YamlDoc, value: object, key: str) -> pb.MaskMethod.ValueType:
    try:
        return MASK_METHODS.value(doc.text(value, key), key)
    except OptionError as exc:
        raise doc.fail(key, str(exc)) from None


def _file_generalisation(doc: YamlDoc, value: object, mask_key: str) -> pb.Generalisation:
    key = f"{mask_key}.generalisation"
    g = doc.mapping(value, key, GENERALISATION_KEYS)
    if len(g) != 1:
        raise doc.fail(key, f"needs exactly one of {', '.join(GENERALISATION_KEYS)}")
    ((which, arg),) = g.items()
    if which == "truncate_to":
        unit = doc.text(arg, f"{key}.truncate_to")
        if unit not in TRUNCATE_UNITS:
            raise doc.fail(f"{key}.truncate_to", f"one of {', '.join(TRUNCATE_UNITS)}")
        return pb.Generalisation(truncate_to=unit)
    if which == "round_to":
        step = doc.number(arg, f"{key}.round_to")
        if step <= 0:
            raise doc.fail(f"{key}.round_to", "a step greater than 0, e.g. 100")
        return pb.Generalisation(round_to=step)
    if not doc.boolean(arg, f"{key}.commune_to_epci"):
        raise doc.fail(f"{key}.commune_to_epci", "must be true (or leave the mask out)")
    return pb.Generalisation(commune_to_epci=True)


def _file_territory(doc: YamlDoc, value: object) -> pb.TerritoryFilter:
    t = doc.mapping(value, "territory_filter", TERRITORY_KEYS)
    return pb.TerritoryFilter(
        column=doc.text(t.get("column"), "territory_filter.column"),
        codes=doc.texts(t.get("codes"), "territory_filter.codes"),
    )


def _file_time(doc: YamlDoc, value: object, key: str) -> Timestamp:
    # YAML reads an unquoted 2026-01-01 as a date and 2026-01-01T08:00:00Z as a datetime.
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, date):
        return _timestamp(datetime.combine(value, time()))
    try:
        return parse_time(doc.text(value, key), key)
    except OptionError as exc:
        raise doc.fail(key, str(exc)) from None


# --- options over the file ---------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionOptions:
    """The raw options of `tdg access approve`; None (or empty) where not given."""

    columns: tuple[str, ...] = ()
    masks: tuple[str, ...] = ()
    territory: str | None = None
    aggregate_only: bool | None = None
    min_group_size: int | None = None
    valid_from: str | None = None
    valid_until: str | None = None
    max_freshness_lag_s: int | None = None
    completeness_pct: float | None = None
    validity_rate_pct: float | None = None


def build_conditions(options: ConditionOptions, file: Path | None = None) -> pb.Conditions:
    """The file's conditions (if any) with the options over them; OptionError naming the option
    (a malformed file is an error of `--conditions`)."""
    # Parse every option before reading the file: a typo is reported whatever the file holds.
    option_masks = parse_masks(list(options.masks))
    territory = None if options.territory is None else parse_territory(options.territory)
    valid_from = (
        None if options.valid_from is None else parse_time(options.valid_from, "--valid-from")
    )
    valid_until = (
        None if options.valid_until is None else parse_time(options.valid_until, "--valid-until")
    )
    if file is None:
        out = pb.Conditions()
    else:
        try:
            out = load_conditions(file)
        except YamlFileError as exc:
            raise OptionError("--conditions", str(exc)) from exc
    if options.columns:
        del out.columns[:]
        out.columns.extend(options.columns)
    _merge_masks(out, option_masks)
    if territory is not None:
        out.territory_filter.CopyFrom(territory)
    if options.aggregate_only is not None:
        out.aggregate_only = options.aggregate_only
    if options.min_group_size is not None:
        out.min_group_size = options.min_group_size
    if valid_from is not None:
        out.valid_from.CopyFrom(valid_from)
    if valid_until is not None:
        out.valid_until.CopyFrom(valid_until)
    if options.max_freshness_lag_s is not None:
        out.commitments.max_freshness_lag_s = options.max_freshness_lag_s
    if options.completeness_pct is not None:
        out.commitments.completeness_pct = options.completeness_pct
    if options.validity_rate_pct is not None:
        out.commitments.validity_rate_pct = options.validity_rate_pct
    return out


def _merge_masks(out: pb.Conditions, overrides: list[pb.ColumnMask]) -> None:
    """The file's masks in their order, each replaced by an option's of the same column; the
    options' other masks after them."""
    by_column = {m.column: m for m in overrides}
    merged = [_copy(by_column.pop(m.column, m)) for m in out.masks]
    merged.extend(by_column.values())
    del out.masks[:]
    out.masks.extend(merged)


def _copy(mask: pb.ColumnMask) -> pb.ColumnMask:
    copy = pb.ColumnMask()
    copy.CopyFrom(mask)
    return copy
