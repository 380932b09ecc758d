#!/usr/bin/env bash
# Fetches Apache Kafka's broker jars (and their runtime dependencies) from Maven Central into a cache
# keyed by version: $NETVIZ_LAB_CACHE/lib/kafka-<version>/*.jar (default cache: /var/cache/netviz-lab).
# Idempotent: a complete cache (marked by .complete) is not fetched again. Needs Maven and Java 17
# (Debian's maven and openjdk-17-jre-headless, installed by `make debian-packages`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
. "$here/versions.env"
cache=${NETVIZ_LAB_CACHE:-/var/cache/netviz-lab}
dir=$cache/lib/kafka-$KAFKA_VERSION
[ -f "$dir/.complete" ] && exit 0
echo "fetching Kafka $KAFKA_VERSION jars from Maven Central" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.netviz</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$KAFKA_LOG4J_SLF4J_VERSION</version></dependency>
  </dependencies>
</project>
POM
rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
(cd "$work" && mvn -B -q -Dmaven.repo.local="$cache/m2" dependency:copy-dependencies \
  -DoutputDirectory="$dir.tmp" -DincludeScope=runtime)
touch "$dir.tmp/.complete"
rm -rf "$dir" && mv "$dir.tmp" "$dir"
echo "Kafka $KAFKA_VERSION: $(ls "$dir"/*.jar | wc -l) jars in $dir" >&2
