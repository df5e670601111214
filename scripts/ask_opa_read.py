"""Ask OPA the `tdg.read` decision for a party on a catalog dataset and print it (demo, debugging).

The dataset's entry is read from the catalog with a development token (var/dev/dev.env's secret);
the salts of hashed columns are not printed. Exit status 1 when the read is denied.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc
from tdg.catalog.v1 import catalog_pb2 as pb
from tdg.catalog.v1 import catalog_pb2_grpc
from tdg_core.auth import issue_token
from tdg_core.policy import DecisionPath, PolicyClient
from tdg_core.read_policy import read_input
from tdg_core.settings import TdgSettings


async def ask(args: argparse.Namespace) -> bool:
    settings = TdgSettings()
    token = issue_token(settings, args.party, args.org, [])
    async with grpc.aio.insecure_channel(args.catalog) as channel:
        got = await catalog_pb2_grpc.CatalogServiceStub(channel).GetDataset(
            pb.GetDatasetRequest(id=args.dataset),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
    subject = {"party": args.party, "org": args.org, "roles": []}
    policy = PolicyClient(settings.opa_url, timeout_s=2.0)
    try:
        decision = await policy.decide(
            DecisionPath.READ, read_input(got.dataset, subject, args.purpose, args.column)
        )
    finally:
        await policy.close()
    verdict = "ALLOW" if decision["allow"] else "DENY"
    print(f"{verdict} {args.party} reading {args.dataset} for {args.purpose}")
    for reason in decision["reasons"]:
        print(f"  reason: {reason}")
    if decision["allow"]:
        print(f"  agreement: {decision['agreement_id'] or '(none needed)'}")
        for name, treatment in sorted(decision["columns"].items()):
            detail = treatment.get("generalise") or ("salted" if "salt" in treatment else "")
            print(f"  column {name:<24} {treatment['treatment']} {detail}")
        for f in decision["row_filters"]:
            print(f"  rows where {f['column']} {f['op']} {f['values']}")
        if decision["consent"]["required"]:
            print(f"  consent required for {decision['consent']['purpose']}")
    return bool(decision["allow"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset")
    parser.add_argument("--party", required=True)
    parser.add_argument("--org", default="")
    parser.add_argument("--purpose", required=True)
    parser.add_argument("--column", action="append", default=[])
    parser.add_argument("--catalog", default="127.0.0.1:50051")
    sys.exit(0 if asyncio.run(ask(parser.parse_args())) else 1)


if __name__ == "__main__":
    main()
