-- Online schema changes for InnoDB: each can be undone by code rollback.
ALTER TABLE orders ADD COLUMN note VARCHAR(200) NULL;
ALTER TABLE orders ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'new';
ALTER TABLE orders ADD INDEX orders_created (created_at), ALGORITHM=INPLACE, LOCK=NONE;
CREATE INDEX orders_customer ON orders (customer_id);
ALTER TABLE orders MODIFY COLUMN title TEXT;
ALTER TABLE orders MODIFY COLUMN qty BIGINT;
CREATE TABLE coupons (id BIGINT AUTO_INCREMENT PRIMARY KEY, code VARCHAR(40) NOT NULL UNIQUE);
UPDATE orders SET status = 'paid' WHERE paid_at IS NOT NULL;
DELETE FROM sessions WHERE expires_at < NOW();
ALTER TABLE orders ADD COLUMN id2 BIGINT NOT NULL AUTO_INCREMENT UNIQUE;
