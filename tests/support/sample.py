"""Sample data for the demo and benchmarks: a small shop, made server-side."""

from __future__ import annotations

from typing import Any

SAMPLE_SQL = """
CREATE DATABASE IF NOT EXISTS shop CHARACTER SET utf8mb4;
USE shop;
CREATE TABLE shop.customers (
  id INT UNSIGNED PRIMARY KEY,
  email VARCHAR(190) NOT NULL UNIQUE,
  name VARCHAR(100) NOT NULL,
  country CHAR(2) NOT NULL,
  created_at DATETIME(6) NOT NULL
);
CREATE TABLE shop.products (
  sku VARCHAR(32) PRIMARY KEY,
  title VARCHAR(200) NOT NULL,
  price DECIMAL(10,2) NOT NULL,
  weight_kg DOUBLE,
  tags SET('new','sale','eco','fragile'),
  attributes JSON
);
CREATE TABLE shop.orders (
  id BIGINT UNSIGNED PRIMARY KEY,
  customer_id INT UNSIGNED NOT NULL,
  sku VARCHAR(32) NOT NULL,
  quantity SMALLINT NOT NULL,
  status ENUM('new','paid','shipped','cancelled') NOT NULL,
  ordered_at TIMESTAMP(3) NOT NULL,
  note BLOB,
  KEY (customer_id),
  CONSTRAINT fk_customer FOREIGN KEY (customer_id) REFERENCES shop.customers (id),
  CONSTRAINT fk_product FOREIGN KEY (sku) REFERENCES shop.products (sku)
);
CREATE TABLE shop.audit_log (id SERIAL, message TEXT);
INSERT INTO shop.customers
  SELECT seq, CONCAT('customer', seq, '@example.com'), CONCAT('Customer ', seq),
         ELT(1 + seq % 4, 'FR', 'DE', 'NL', 'ÅX'), '2026-01-01' + INTERVAL seq MINUTE
  FROM seq_1_to_2000;
INSERT INTO shop.products
  SELECT CONCAT('SKU-', LPAD(seq, 5, '0')), CONCAT('Product ', seq, ' — ünïcode'), seq * 1.25,
         seq / 7, ELT(1 + seq % 4, 'new', 'sale', 'eco,fragile', ''),
         JSON_OBJECT('colour', ELT(1 + seq % 3, 'red', 'green', 'blue'), 'size', seq % 5)
  FROM seq_1_to_200;
INSERT INTO shop.orders
  SELECT seq, 1 + seq % 2000, CONCAT('SKU-', LPAD(1 + seq % 200, 5, '0')), 1 + seq % 9,
         ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'cancelled'),
         '2026-06-01' + INTERVAL seq SECOND, UNHEX(SHA2(seq, 256))
  FROM seq_1_to_20000;
INSERT INTO shop.audit_log (message) SELECT CONCAT('event ', seq) FROM seq_1_to_100;
"""


def load_sample(cursor: Any) -> dict[str, int]:
    """Create the ``shop`` database; returns rows per table."""
    for statement in SAMPLE_SQL.split(";"):
        if statement.strip():
            cursor.execute(statement)
    counts = {}
    for table in ("customers", "products", "orders", "audit_log"):
        cursor.execute(f"SELECT COUNT(*) FROM shop.{table}")
        counts[table] = int(cursor.fetchone()[0])
    return counts
