#!/usr/bin/env bash
# Apache Kafka (KRaft, single node) from its Maven Central artifacts, run on the machine's JDK.
#
#   .tools/kafka-<version>/libs/       the broker's whole runtime classpath (+ log4j2 backend)
#   .tools/kafka-<version>/config/     log4j2.properties (server.properties is written per node
#                                      by tdg_core.devstack, which knows the ports and data dir)
#   .tools/kafka-<version>/.provisioned  stamp: a hash of the inputs; a rerun with the same inputs
#                                      is a no-op
#   .tools/m2/                         the Maven repository cache
#
# TDG_TOOLS_DIR overrides .tools/. Idempotent; safe to rerun.
set -euo pipefail

KAFKA_VERSION=4.1.1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/.." && pwd)
tools_dir=${TDG_TOOLS_DIR:-$repo_root/.tools}
kafka_dir=$tools_dir/kafka-$KAFKA_VERSION
stamp=$kafka_dir/.provisioned
inputs=("$here/kafka/pom.xml" "$here/kafka/log4j2.properties")

die() { echo "provision_kafka: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required ($2) but was not found on PATH"; }

# The stamp holds a hash of the inputs, so editing the pom or the log config re-resolves.
fingerprint=$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(<"$stamp") == "$fingerprint" ]]; then
  echo "Kafka $KAFKA_VERSION: already provisioned in $kafka_dir"
  exit 0
fi

need java "a JDK 17 or newer runs the broker"
need mvn "Maven resolves the broker's jars from Maven Central"
java_major=$(java -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -1)
[[ -n $java_major && $java_major -ge 17 ]] || die "Kafka $KAFKA_VERSION needs Java 17 or newer (found: ${java_major:-unknown})"

echo "Kafka $KAFKA_VERSION: resolving the runtime classpath from Maven Central into $kafka_dir ..."
mkdir -p "$tools_dir"
# Build next to the target and move it into place at the end, so an interrupted run never leaves
# a half-filled libs/ that a later run (or the devstack) would mistake for a good one.
work=$(mktemp -d "$tools_dir/.kafka-$KAFKA_VERSION.XXXXXX")
chmod 755 "$work"  # mktemp makes it 0700
trap 'rm -rf "$work"' EXIT

# Debian's Maven 3.8.7 prints ANSI resets even in batch mode: strip them (pipefail keeps mvn's
# exit status).
mvn -q -B -f "$here/kafka/pom.xml" -Dmaven.repo.local="$tools_dir/m2" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$work/libs" 2>&1 \
  | sed -e $'s/\x1b\\[[0-9;]*m//g'

# The log4j2 SLF4J binding only works with slf4j-api 2.x; a 1.x api would silence the broker.
slf4j=$(find "$work/libs" -name 'slf4j-api-*.jar' -printf '%f\n')
[[ $slf4j == slf4j-api-2.* ]] || die "expected slf4j-api 2.x on the classpath, found: ${slf4j:-none}"
[[ -n $(find "$work/libs" -name "kafka_2.13-$KAFKA_VERSION.jar") ]] || die "kafka_2.13-$KAFKA_VERSION.jar was not resolved"

mkdir -p "$work/config"
cp "$here/kafka/log4j2.properties" "$work/config/log4j2.properties"

# Smoke test: the storage tool loads from this classpath (the broker's own classes and deps).
java -cp "$work/libs/*" kafka.tools.StorageTool random-uuid >/dev/null \
  || die "the resolved classpath cannot run kafka.tools.StorageTool"

echo "$fingerprint" >"$work/.provisioned"
rm -rf "$kafka_dir"
mv "$work" "$kafka_dir"
trap - EXIT
echo "Kafka $KAFKA_VERSION: $(find "$kafka_dir/libs" -name '*.jar' | wc -l) jars in $kafka_dir/libs ($slf4j)"
