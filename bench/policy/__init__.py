"""The parts of the policy benchmark (`bench/policy_bench.py` runs them in this order).

- `scenario`: what is measured (the read decision, the exported subject set) and the sizes;
- `registry`, `subjects`: the rows of the registry and of the consents, built in memory;
- `loading`: their bulk insert into the consent service's databases before it starts;
- `services`: the consent service instances, and OPA's pull of their registry bundle;
- `export`, `decisions`, `revocation`: the three measurements (`memory` samples the RSS).
"""
