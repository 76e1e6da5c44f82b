-- expect: drop-column
ALTER TABLE orders DROP COLUMN note;
-- expect: drop-table
DROP TABLE legacy_cart;
-- expect: rename-column
ALTER TABLE orders RENAME COLUMN qty TO quantity;
-- CHANGE restates the type, and the old one is not in the migration: it may narrow it.
-- expect: rename-column lossy-type-change
ALTER TABLE orders CHANGE COLUMN amount amount_cents INT;
-- expect: rename-table
RENAME TABLE coupons TO vouchers;
-- expect: rename-table
ALTER TABLE carts RENAME TO baskets;
-- expect: lossy-type-change
ALTER TABLE orders MODIFY COLUMN title VARCHAR(20);
-- expect: not-null-without-default
ALTER TABLE orders ADD COLUMN region CHAR(2) NOT NULL;
-- expect: blocking-index
ALTER TABLE orders ADD INDEX orders_region (region), LOCK=EXCLUSIVE;
-- expect: update-without-where
UPDATE orders SET status = 'archived';
-- expect: delete-without-where
DELETE FROM order_items;
-- expect: truncate
TRUNCATE TABLE audit_log;
