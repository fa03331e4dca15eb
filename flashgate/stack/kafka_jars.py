"""Fetch Apache Kafka's broker classpath from Maven Central into a local cache.

The POM beside this module pins Kafka 4.3.1 and its slf4j binding. Maven's own
cache (~/.m2) makes a second fetch after `git clean` a local copy.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from flashgate.errors import StackError

KAFKA_VERSION = "4.3.1"
POM_PATH = Path(__file__).with_name("kafka-pom.xml")
_STAMP = ".complete"
MVN_TIMEOUT_S = 900


def kafka_classpath(libs_dir: Path) -> str:
    """The `-cp` value for a directory of jars fetched by `ensure_kafka_jars`."""
    return str(libs_dir / "*")


def ensure_kafka_jars(libs_dir: Path) -> Path:
    """Make sure `libs_dir` holds the broker's jars; fetch them with Maven if not."""
    stamp = libs_dir / _STAMP
    if stamp.is_file() and stamp.read_text().strip() == KAFKA_VERSION:
        return libs_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is needed to fetch Kafka's jars: apt-get install maven")
    if shutil.which("java") is None:
        raise StackError("a Java runtime is needed for Kafka: apt-get install openjdk-17-jre")
    staging = libs_dir.with_name(libs_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM_PATH),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=MVN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"Maven did not fetch Kafka's jars within {MVN_TIMEOUT_S}s") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise StackError(f"Maven could not fetch Kafka {KAFKA_VERSION}:\n{tail}")
    shutil.rmtree(libs_dir, ignore_errors=True)
    staging.rename(libs_dir)
    (libs_dir / _STAMP).write_text(KAFKA_VERSION + "\n")
    return libs_dir
