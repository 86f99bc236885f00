"""Parses a metrics file with prometheus_client's two parsers (the Prometheus text format that
node_exporter's textfile collector reads, and the stricter OpenMetrics one) and prints its
samples as JSON: {"name{label=value,...}": value}, labels sorted, without `pipeline`."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus

text = open(sys.argv[1], encoding="utf-8").read()
samples = {}
for family in prometheus(text):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()) if k != "pipeline")
        samples[f"{s.name}{{{labels}}}"] = s.value
strict = sum(len(f.samples) for f in openmetrics(text))
assert strict == len(samples), (strict, len(samples))
print(json.dumps({"samples": samples, "pipelines": sorted({s.labels["pipeline"] for f in prometheus(text) for s in f.samples})}))
