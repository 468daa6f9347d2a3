"""A dataset with every column type and object kind sealdump must reproduce exactly."""

from __future__ import annotations

from typing import Any

DATABASES = ("fidelity", "odd db é")

STATEMENTS_TEMPLATE = r"""
SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION';
CREATE DATABASE fidelity CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
USE fidelity;
CREATE TABLE numbers (
  id INT AUTO_INCREMENT PRIMARY KEY,
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT UNSIGNED,
  bi BIGINT, bu BIGINT UNSIGNED,
  d DECIMAL(65,30), d2 DECIMAL(10,0),
  f FLOAT, f2 FLOAT(10,3), dbl DOUBLE,
  b64 BIT(64), b1 BIT(1), y YEAR
) ENGINE=InnoDB AUTO_INCREMENT=1000;
INSERT INTO numbers VALUES
  (0, -128, 255, -32768, 16777215, -9223372036854775808, 18446744073709551615,
   '99999999999999999999999999999999999.999999999999999999999999999999', -9999999999,
   3.40282347e38, 1234567.125, 1.7976931348623157e308, b'1111111111111111111111111111111111111111111111111111111111111111', b'1', 2155),
  (1, 127, 0, 32767, 0, 9223372036854775807, 0,
   '-0.000000000000000000000000000001', 0,
   1.17549435e-38, -0.001, 4.9406564584124654e-324, b'0', b'0', 1901),
  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, 1, 1, 1, 1, 1, 1, '0.1', 1, 0.1, 0.1, 0.1, b'101', b'1', 0),
  (4, 0, 0, 0, 0, 0, 0, '3.141592653589793238462643383279', 3, 3.14159265358979, 2.718, 2.718281828459045, 12345, 0, 2026),
  (5, 0, 0, 0, 0, 0, 0, '0', 0, 16777217, 0, 0.30000000000000004, 0, 0, 1999);

CREATE TABLE strings (
  id BIGINT UNSIGNED PRIMARY KEY,
  c CHAR(10), vc VARCHAR(255), t TEXT, lt LONGTEXT,
  bin BINARY(16), vb VARBINARY(255), blb BLOB, lb LONGBLOB,
  latin VARCHAR(50) CHARACTER SET latin1 COLLATE latin1_swedish_ci,
  cyr VARCHAR(50) CHARACTER SET cp1251,
  jp VARCHAR(50) CHARACTER SET sjis,
  u3 VARCHAR(50) CHARACTER SET utf8mb3,
  cs VARCHAR(50) COLLATE utf8mb4_bin,
  e ENUM('a', 'b', 'c d', 'é'), s SET('x', 'y', 'z''q'),
  j JSON
);
INSERT INTO strings VALUES
  (1, 'abc', 'it''s "quoted" \\ back\\slash', 'line1\nline2\r\n\ttab', REPEAT('long ', 10000),
   UNHEX('00FF00FF00FF00FF00FF00FF00FF0000'), UNHEX('000102030405'), NULL, NULL,
   CONVERT(UNHEX('E9E8E0') USING latin1), CONVERT(UNHEX('CFF0E8E2E5F2') USING cp1251),
   CONVERT(UNHEX('82A082A2') USING sjis), 'ünïcødé', 'CaseSensitive',
   'c d', 'x,y', '{"a": [1, 2.50, "x"], "b": {"c": null}}'),
  (2, '', '', '', '', UNHEX(''), UNHEX(''), UNHEX(''), UNHEX(''), '', '', '', '', '', '', '', '[]'),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (4, 'emoji', '😀🎉 {x} 中文 العربية', CHAR(0, 26, 39, 92 USING utf8mb4), 'NULL', NULL, 'NULL', NULL, NULL,
   'plain', 'plain', 'plain', 'plain', 'b', 'é', 'z''q', '"just a string"');
UPDATE strings SET blb = (SELECT CONVERT(GROUP_CONCAT(CHAR(seq) SEPARATOR '') USING binary) FROM seq_0_to_255) WHERE id = 1;
UPDATE strings SET lb = REPEAT(UNHEX('00FF27225C0A0D1A'), 20000) WHERE id = 1;

CREATE TABLE temporal (
  id INT PRIMARY KEY,
  d DATE, t TIME(6), dt DATETIME(6), dt0 DATETIME, ts TIMESTAMP(6) NULL DEFAULT NULL, ts0 TIMESTAMP NULL DEFAULT NULL
);
INSERT INTO temporal VALUES
  (1, '2026-11-28', '-838:59:59.000000', '9999-12-31 23:59:59.999999', '1000-01-01 00:00:00', '2038-01-19 03:14:07.999999', '1970-01-01 00:00:01'),
  (2, '0000-00-00', '00:00:00.000001', '0000-00-00 00:00:00.000000', '0000-00-00 00:00:00', NULL, NULL),
  (3, '2024-02-29', '12:34:56.789012', '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56', '2024-03-31 01:30:00.5', '2024-10-27 01:30:00');

CREATE TABLE geo (
  id INT PRIMARY KEY, g GEOMETRY, p POINT, poly POLYGON
);
INSERT INTO geo VALUES
  (1, ST_GeomFromText('LINESTRING(0 0, 1 1, 2.5 3.75)', 4326), ST_GeomFromText('POINT(1.000000001 -2.5)'), ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0),(2 2,3 2,3 3,2 2))')),
  (2, NULL, NULL, NULL);

CREATE TABLE gen_cols (
  id INT PRIMARY KEY,
  a INT NOT NULL,
  v INT AS (a * 2) VIRTUAL,
  s VARCHAR(20) AS (CONCAT('n', a)) STORED,
  hidden INT INVISIBLE DEFAULT 7,
  KEY (s)
);
INSERT INTO gen_cols (id, a, hidden) VALUES (1, 10, 1), (2, 20, 2), (3, -5, NULL);

CREATE TABLE keyless (k INT, v VARCHAR(20)) ENGINE=InnoDB;
INSERT INTO keyless VALUES (1, 'dup'), (1, 'dup'), (NULL, NULL), (2, 'two'), (1, 'dup');

CREATE TABLE unique_only (code CHAR(3) NOT NULL, n INT, UNIQUE KEY (code)) ENGINE=InnoDB;
INSERT INTO unique_only VALUES ('ccc', 3), ('aaa', 1), ('bbb', 2);

CREATE TABLE composite (a INT, b VARCHAR(10), c INT, PRIMARY KEY (a, b)) ENGINE=InnoDB;
INSERT INTO composite SELECT seq DIV 10, CONCAT('k', seq MOD 10), seq FROM seq_1_to_5000;

CREATE TABLE parent (id INT PRIMARY KEY, child_id INT, KEY (child_id)) ENGINE=InnoDB;
CREATE TABLE child (id INT PRIMARY KEY, parent_id INT, KEY (parent_id),
  CONSTRAINT fk_child_parent FOREIGN KEY (parent_id) REFERENCES parent (id)) ENGINE=InnoDB;
SET SESSION foreign_key_checks = 0;
ALTER TABLE parent ADD CONSTRAINT fk_parent_child FOREIGN KEY (child_id) REFERENCES child (id);
INSERT INTO parent VALUES (1, 1), (2, 2);
INSERT INTO child VALUES (1, 2), (2, 1);
SET SESSION foreign_key_checks = 1;

CREATE TABLE parted (id INT NOT NULL, at DATE NOT NULL, v VARCHAR(10), PRIMARY KEY (id, at))
  PARTITION BY RANGE (YEAR(at)) (PARTITION p2024 VALUES LESS THAN (2025), PARTITION p2025 VALUES LESS THAN (2026), PARTITION pmax VALUES LESS THAN MAXVALUE);
INSERT INTO parted VALUES (1, '2024-05-01', 'a'), (2, '2025-05-01', 'b'), (3, '2030-01-01', 'c');

CREATE TABLE legacy (id INT PRIMARY KEY, note VARCHAR(20)) ENGINE=MyISAM;
INSERT INTO legacy VALUES (1, 'myisam'), (2, 'rows');

CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(50));
CREATE TRIGGER numbers_audit AFTER INSERT ON numbers FOR EACH ROW INSERT INTO audit (what) VALUES (CONCAT('numbers ', NEW.id));
CREATE VIEW base_view AS SELECT id, a, v FROM gen_cols;
CREATE VIEW view_on_view AS SELECT id, v * 2 AS vv FROM base_view;
CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
CREATE PROCEDURE count_numbers(OUT n INT) BEGIN SELECT COUNT(*) INTO n FROM numbers; END;
CREATE EVENT nightly_cleanup ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM audit WHERE id < 0;

CREATE DATABASE `odd db é` CHARACTER SET latin1;
USE `odd db é`;
CREATE TABLE `we``ird tab le` (`spa ce` INT PRIMARY KEY, `ünï` VARCHAR(10) CHARACTER SET utf8mb4, `back``tick` TEXT) ENGINE=InnoDB;
INSERT INTO `we``ird tab le` VALUES (1, 'ünï', 'x`y'), (2, NULL, '');
CREATE TABLE `empty` (id INT PRIMARY KEY) ENGINE=InnoDB;
"""


# A mathematical double-struck X: a 4-byte UTF-8 letter outside the BMP (kept out of the
# source text, where linters flag it as confusable).
STATEMENTS = STATEMENTS_TEMPLATE.replace("{x}", "\U0001d54f")


def create_dataset(cursor: Any) -> None:
    """Create the fidelity databases (dropping earlier copies)."""
    for database in DATABASES:
        cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
    for statement in split_statements(STATEMENTS):
        cursor.execute(statement)
    cursor.execute("SET SESSION foreign_key_checks = 1")


def split_statements(script: str) -> list[str]:
    """The script's statements (none of them contains ';\\n' inside)."""
    return [s.strip() for s in script.split(";\n") if s.strip()]


def table_fingerprints(cursor: Any, database: str) -> dict[str, tuple[int, str]]:
    """CHECKSUM TABLE and SHOW CREATE TABLE of every base table of ``database``."""
    cursor.execute(
        "SELECT TABLE_NAME AS name FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        (database,),
    )
    found = {}
    for (name,) in cursor.fetchall():
        quoted = f"`{database.replace('`', '``')}`.`{name.replace('`', '``')}`"
        cursor.execute(f"CHECKSUM TABLE {quoted}")
        checksum = cursor.fetchone()[1]
        cursor.execute(f"SHOW CREATE TABLE {quoted}")
        found[name] = (checksum, cursor.fetchone()[1])
    return found


def create_slow_table(cursor: Any, database: str, rows: int) -> None:
    """``database.big``: enough rows that dumping it takes a noticeable while (a test can
    then stop a backup in the middle)."""
    cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
    cursor.execute(
        f"CREATE TABLE IF NOT EXISTS `{database}`.big (id INT PRIMARY KEY, pad VARCHAR(200))"
    )
    cursor.execute(f"SELECT COUNT(*) FROM `{database}`.big")
    if cursor.fetchone()[0] == 0:
        cursor.execute(
            f"INSERT INTO `{database}`.big SELECT seq, REPEAT(SHA2(seq, 256), 3) "
            f"FROM `{database}`.seq_1_to_{rows}"
        )
