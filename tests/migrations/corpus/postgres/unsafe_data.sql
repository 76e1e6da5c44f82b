-- expect: blocking-index
CREATE INDEX orders_customer_idx ON orders (customer_id);
-- expect: blocking-index
CREATE UNIQUE INDEX ON users (lower(email));
-- expect: update-without-where
UPDATE orders SET status = 'archived';
-- expect: delete-without-where
DELETE FROM order_items;
-- expect: truncate
TRUNCATE audit_log;
-- expect: drop-schema
DROP SCHEMA reporting CASCADE;
-- Two tables in one statement are two findings.
-- expect: drop-table drop-table
DROP TABLE a, b;
