"""Triage of a micro-batch: which records of a dataset topic become rows and which are rejected, and
why. The checks come in this order, the first that fails giving the reason: the dataset accepts
records (else `deprecated`), the producer named in the record's headers may write to it (OPA's
`tdg.write`, else `policy`), and the record is valid against the dataset's schema (`format`,
`schema`; see `tdg_ingest.records`).

A record with a field the schema does not know may have been written for a schema evolved a moment
ago: the catalog is read once more before it is rejected, and the batch is checked against the
newer version once its table has been evolved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from aiokafka.structs import ConsumerRecord
from tdg_core.errors import Unavailable

from tdg_ingest.contract import PRODUCER_HEADER, PRODUCER_ORG_HEADER
from tdg_ingest.datasets import DatasetDirectory, DatasetEntry
from tdg_ingest.provisioner import Provisioner
from tdg_ingest.records import RecordValidator, Reject
from tdg_ingest.writes import WriteDecision, WritePermissions


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str:
    """A header of the record as text ("" when absent)."""
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode("utf-8", errors="replace")
    return ""


@dataclass
class Triage:
    """A batch split into the rows to store and the rejects."""

    entry: DatasetEntry  # at the schema version the rows were checked against
    table: pa.Table
    positions: list[int]  # position in the batch of each row of `table`
    producers: list[str]  # the producer header of each record of the batch ("" when absent)
    rejects: list[tuple[int, Reject]]  # (position in the batch, why), in batch order
    decisions: dict[str, WriteDecision]  # the tdg.write decision of each producer of the batch


class Triager:
    def __init__(
        self,
        directory: DatasetDirectory,
        provisioner: Provisioner,
        writes: WritePermissions,
        max_record_bytes: int,
    ) -> None:
        self._directory = directory
        self._provisioner = provisioner
        self._writes = writes
        self._max_record_bytes = max_record_bytes
        self._validators: dict[tuple[str, int], RecordValidator] = {}

    async def triage(
        self, entry: DatasetEntry, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> Triage:
        """Raises Unavailable when a dependency (OPA, a table being evolved) cannot answer: the
        batch is then kept and tried again, never dead-lettered for it."""
        producers = [header(r, PRODUCER_HEADER) for r in records]
        if not entry.accepting:
            reason = Reject(
                0,
                "deprecated",
                "dataset_deprecated",
                f"dataset '{entry.id}' is deprecated and accepts no more records"
                + (f": {entry.deprecation_reason}" if entry.deprecation_reason else ""),
            )
            empty = entry.schema.arrow_schema().empty_table()
            every = [(i, reason) for i in range(len(records))]
            return Triage(entry, empty, [], producers, every, {})
        rejects: list[tuple[int, Reject]] = []
        decisions: dict[str, WriteDecision] = {}
        allowed: list[int] = []
        orgs: dict[str, str] = {}
        for producer, record in zip(producers, records, strict=True):
            if producer and producer not in orgs:
                # The registry's organisation of a registered party prevails in tdg.write; a
                # party it does not list acts as its own organisation unless the header says.
                orgs[producer] = header(record, PRODUCER_ORG_HEADER) or producer
        for producer, org in orgs.items():
            decisions[producer] = await self._writes.decide(producer, entry.policy_input(), org=org)
        for i, producer in enumerate(producers):
            if not producer:
                rejects.append(
                    (
                        i,
                        Reject(
                            i, "policy", "no_producer", f"record has no '{PRODUCER_HEADER}' header"
                        ),
                    )
                )
            elif decisions[producer].allow:
                allowed.append(i)
            else:
                message = f"producer '{producer}' may not write to '{entry.id}': " + "; ".join(
                    decisions[producer].reasons or ("denied",)
                )
                rejects.append((i, Reject(i, "policy", "write_denied", message)))
        values = [records[i].value or b"" for i in allowed]
        validated = await asyncio.to_thread(self._validator(entry).validate, values)
        if any(r.code == "unknown_field" for r in validated.rejects):
            # The catalog may have evolved the schema a moment ago: look before rejecting.
            # One catch-up, not a wait: a record with a truly unknown field costs little.
            await self._directory.catch_up()
            fresher = self._directory.get(entry.id)
            if fresher is not None and fresher.schema.version > entry.schema.version:
                if not await self._provisioner.wait_ready(fresher, 10.0):
                    raise Unavailable(f"table of {entry.id} not evolved yet")
                entry = fresher
                validated = await asyncio.to_thread(self._validator(entry).validate, values)
        for reject in validated.rejects:
            rejects.append((allowed[reject.index], reject))
        rejects.sort(key=lambda item: item[0])
        positions = pc.take(pa.array(allowed, pa.int64()), validated.indexes)
        return Triage(entry, validated.table, positions.to_pylist(), producers, rejects, decisions)

    def _validator(self, entry: DatasetEntry) -> RecordValidator:
        key = (entry.id, entry.schema.version)
        validator = self._validators.get(key)
        if validator is None:
            validator = RecordValidator(entry.schema, self._max_record_bytes)
            self._validators[key] = validator
        return validator
