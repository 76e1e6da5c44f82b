"""Unit tests of the shared database helpers: row counting in SQL dumps, restore plans,
redaction, host normalisation."""

from __future__ import annotations

import random

import pytest

from safehold.errors import UsageError
from safehold.redaction import redact_secrets, redact_url
from safehold.sources.base import RestoreReport
from safehold.sources.dbtools import (
    RestoreVerificationError,
    dump_file_name,
    normalize_host,
    pop_query_param,
    require_verified,
    restore_plan,
)
from safehold.sources.mysql import DumpRowCounter, _option_value

# MariaDB >= 10.11.8 writes one row per line; MySQL and older MariaDB one statement per line
MARIADB_DUMP = rb"""/*M!999999\- enable the sandbox mode */
-- MariaDB dump 10.19  Distrib 10.11.18-MariaDB
/*!40101 SET NAMES utf8mb4 */;
DROP TABLE IF EXISTS `t`;
CREATE TABLE `t` (
  `id` int(11) NOT NULL,
  `v` text DEFAULT NULL COMMENT 'INSERT INTO `x` VALUES (1)',
  PRIMARY KEY (`id`)
) ENGINE=InnoDB;
LOCK TABLES `t` WRITE;
INSERT INTO `t` VALUES
(1,'a),(b\'\\x',0x00FF0A),
(2,'line\nbreak (( \' ;',NULL),
(3,'ends with ;',NULL);
UNLOCK TABLES;
CREATE TABLE `we``ird (name)` (
  `v` varchar(10)
);
INSERT INTO `we``ird (name)` VALUES
('('),
(')');
CREATE TABLE `empty` (
  `id` int
);
/*!50001 CREATE VIEW `v` AS SELECT
 NULL AS `id` */;
DELIMITER ;;
CREATE DEFINER=`root`@`localhost` PROCEDURE `p`()
BEGIN
INSERT INTO `t` VALUES (3,'x',NULL),(4,'y',NULL);
CREATE TABLE `inside_routine` (id int);
END
;;
DELIMITER ;
-- Dump completed
"""

MYSQL_DUMP = rb"""-- MySQL dump 10.13  Distrib 8.0.36
CREATE TABLE `t` (
  `id` int NOT NULL
) ENGINE=InnoDB;
INSERT INTO `t` VALUES (1,'a'),(2,'),(\\'),(3,_binary 0x00),(4,'{\"k\": \"(\"}');
INSERT INTO `t` VALUES (5,'x');
CREATE TABLE `g` (
  `a` int, `b` int GENERATED ALWAYS AS (`a` + 1) VIRTUAL
);
INSERT INTO `g` (`a`, `b(`) VALUES (1,NULL),(2,NULL);
DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`%`*/ /*!50003 TRIGGER `tr` AFTER INSERT ON `t`
INSERT INTO `g` VALUES (1,NULL) */;;
DELIMITER ;
INSERT INTO `g` VALUES (3,NULL);
"""


def _count(dump: bytes, pieces: list[bytes]) -> dict[str, int]:
    counter = DumpRowCounter()
    for piece in pieces:
        counter.feed(memoryview(piece))
    return counter.finish()


@pytest.mark.parametrize(
    ("dump", "expected"),
    [
        (MARIADB_DUMP, {"t": 3, "we`ird (name)": 2, "empty": 0}),
        (MYSQL_DUMP, {"t": 5, "g": 3}),
    ],
)
def test_row_counter_counts_rows_however_the_stream_is_cut(
    dump: bytes, expected: dict[str, int]
) -> None:
    assert _count(dump, [dump]) == expected
    assert _count(dump, [dump[i : i + 1] for i in range(len(dump))]) == expected
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(dump)), 6))
        pieces = [dump[a:b] for a, b in zip([0, *cuts], [*cuts, len(dump)], strict=True)]
        assert _count(dump, pieces) == expected
    assert _count(dump.rstrip(b"\n"), [dump.rstrip(b"\n")]) == expected  # no final newline


def test_row_counter_handles_long_lines() -> None:
    rows = b",".join(b"(%d,'%s')" % (i, b"x\\'(" * 50) for i in range(20000))
    dump = b"CREATE TABLE `big` (\n  `id` int\n);\nINSERT INTO `big` VALUES " + rows + b";\n"
    pieces = [dump[i : i + 65536] for i in range(0, len(dump), 65536)]
    assert _count(dump, pieces) == {"big": 20000}


@pytest.mark.parametrize(
    ("available", "target_db", "source_db", "plan"),
    [
        (["app"], "copy", None, [("app", "copy")]),
        (["a", "b"], "copy", "b", [("b", "copy")]),
        (["a", "b"], None, None, [("a", "a"), ("b", "b")]),
        (["a", "b"], None, "a", [("a", "a")]),
        (["app"], None, None, [("app", "app")]),
    ],
)
def test_restore_plan(
    available: list[str], target_db: str | None, source_db: str | None,
    plan: list[tuple[str, str]],
) -> None:  # fmt: skip
    assert restore_plan(available, target_db, source_db) == plan


def test_restore_plan_refusals() -> None:
    with pytest.raises(UsageError, match=r"holds 2 databases \(a, b\)") as caught:
        restore_plan(["a", "b"], "copy", None)
    assert "source_db" in caught.value.hint
    with pytest.raises(UsageError, match="not in this backup"):
        restore_plan(["a"], "copy", "c")
    with pytest.raises(UsageError, match="no database"):
        restore_plan([], "copy", None)


def test_redaction() -> None:
    assert redact_url("postgresql://u:p%40ss@h:5432/db?sslmode=require") == (
        "postgresql://u:***@h:5432/db?sslmode=require"
    )
    assert redact_url("postgresql://h/db?user=u&password=s3cret") == (
        "postgresql://h/db?user=u&password=***"
    )
    assert redact_url("mysql://u@h/db") == "mysql://u@h/db"
    assert (
        redact_secrets("failed for p@ss and p%40ss", ["p@ss", None, ""]) == "failed for *** and ***"
    )
    url, value = pop_query_param("postgresql://h/db?a=1&source_db=x%2Fy&b=2", "source_db")
    assert (url, value) == ("postgresql://h/db?a=1&b=2", "x/y")


def test_normalize_host_and_names() -> None:
    for local in ("localhost", "127.0.0.1", "::1", "[::1]", "", None, "/var/run/postgresql"):
        assert normalize_host(local) == "local"
    assert normalize_host("DB.Example.com") == "db.example.com"
    assert dump_file_name("a/b%c", ".sql") == "a%2Fb%25c.sql"


def test_option_file_values_are_quoted_and_escaped() -> None:
    assert _option_value('a"b\\c\nd#e') == '"a\\"b\\\\c\\nd#e"'


def test_require_verified() -> None:
    report = RestoreReport("pg", "postgresql://h/db", details={"verified": True})
    assert require_verified(report) is report
    report.details["verified"] = False
    report.warnings.append("public.t: 1 rows (backup had 2)")
    with pytest.raises(RestoreVerificationError, match="backup had 2"):
        require_verified(report)
