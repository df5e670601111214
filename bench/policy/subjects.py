"""The consents loaded before the run: the subjects of the exported set and those around it, as
rows of the consent service's tables (in their stored form, for the bulk insert)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.dialects import sqlite as sqlite_dialect
from tdg_consent import store

from .scenario import EXPORT_DATASET, EXPORT_PURPOSE, WARMUP_PURPOSE, WARMUP_SUBJECTS


def subject_id(rng: random.Random) -> str:
    """A pseudonymous subject id shaped like a UUID."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class SubjectSet:
    consents: list[tuple[Any, ...]]  # in the column order of store.consents
    log: list[tuple[Any, ...]]  # in the column order of store.consent_log
    expected: int  # subjects with active consent for (EXPORT_DATASET, EXPORT_PURPOSE)
    revision: int  # the last consent revision


def build_subjects(n: int, rng: random.Random) -> SubjectSet:
    """n subjects in the set: 95% by a consent for every dataset, 5% by one for this dataset.
    Besides them, as many as 5% more subjects who are not: withdrawn (2%), given for every dataset
    but withdrawn for this one (1%), given for another purpose only (2%). The first WARMUP_SUBJECTS
    of the set also consent to WARMUP_PURPOSE."""
    dialect = sqlite_dialect.dialect()
    process = store.consents.c.given_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    base = datetime.now(UTC) - timedelta(days=400)
    times = [process(base + timedelta(days=d, seconds=d * 97)) for d in range(400)]
    n_specific, n_withdrawn, n_override, n_other = n // 20, n // 50, n // 100, n // 50
    roles = (
        ["all"] * (n - n_specific)
        + ["specific"] * n_specific
        + ["withdrawn"] * n_withdrawn
        + ["override"] * n_override
        + ["other"] * n_other
    )
    rng.shuffle(roles)
    ids = sorted({subject_id(rng) for _ in range(len(roles))})
    assert len(ids) == len(roles), "subject id collision"
    consents: list[tuple[Any, ...]] = []
    log: list[tuple[Any, ...]] = []
    warm = WARMUP_SUBJECTS
    sources = ("portal", "paper-form", "app:mobiplan")

    def add(sid: str, purpose: str, dataset: str, given: bool) -> None:
        revision = len(log) + 1
        receipt = f"rcpt-{revision:012x}{rng.getrandbits(80):020x}"
        source = sources[revision % 3]
        at = times[revision % len(times)]
        state = "given" if given else "withdrawn"
        withdrawn_at = None if given else at
        consents.append((sid, purpose, dataset, state, receipt, source, at, withdrawn_at, revision))
        log.append((revision, receipt, sid, purpose, dataset, state, source, at))

    # Within a subject, rows in primary-key order (purpose, dataset): inserts append to the index.
    for sid, role in zip(ids, roles, strict=True):
        if role == "all":
            add(sid, EXPORT_PURPOSE, "", True)
            if warm:
                add(sid, WARMUP_PURPOSE, "", True)
                warm -= 1
        elif role == "specific":
            add(sid, EXPORT_PURPOSE, EXPORT_DATASET, True)
        elif role == "withdrawn":
            add(sid, EXPORT_PURPOSE, "", False)
        elif role == "override":
            add(sid, EXPORT_PURPOSE, "", True)
            add(sid, EXPORT_PURPOSE, EXPORT_DATASET, False)
        else:
            add(sid, "energy-planning", "", True)
    # Consent rows are sorted by (subject, purpose, dataset) already; the log by revision too.
    return SubjectSet(consents, log, n, len(log))
