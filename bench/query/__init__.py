"""The parts of the query benchmark (`bench/query_bench.py` runs them in this order).

- `scenario`: the dataset, the queries measured and the same work as bare DuckDB SQL;
- `table`: the dataset's Iceberg table, written as the ingest service makes it;
- `services`: the query service, and the catalog event that publishes the dataset;
- `agreement`: the partner application's read agreement, through the consent service and OPA;
- `clients`: the three ways to run a query (gRPC, Arrow Flight, DuckDB alone);
- `measures`: the medians of each query by each way, of the fixed cost, of the masked query;
- `steps`: the costs of the service's steps besides the statement, measured from here.
"""
