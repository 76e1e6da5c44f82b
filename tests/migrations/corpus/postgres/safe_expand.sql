-- The expand half of expand/contract: every statement here can be undone by code rollback.
CREATE INDEX CONCURRENTLY orders_created_idx ON orders (created_at);
ALTER TABLE orders ADD COLUMN total_cents bigint;
UPDATE orders SET total_cents = total * 100 WHERE total_cents IS NULL AND id < 10000;
ALTER TABLE orders ALTER COLUMN title TYPE text;
ALTER TABLE orders ALTER COLUMN qty TYPE bigint;
ALTER TABLE orders ADD CONSTRAINT qty_not_null CHECK (qty IS NOT NULL) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT qty_not_null;
ALTER TABLE orders ADD COLUMN id2 bigint GENERATED ALWAYS AS IDENTITY;
DELETE FROM sessions WHERE expires_at < now();
CREATE VIEW old_orders AS SELECT * FROM orders;
DROP INDEX CONCURRENTLY IF EXISTS orders_old_idx;
DROP VIEW IF EXISTS order_totals;
