BEGIN;
--
-- Remove field note from order
--
-- expect: drop-column
ALTER TABLE "shop_order" DROP COLUMN "note" CASCADE;
-- expect: drop-table
DROP TABLE "shop_legacy_cart" CASCADE;
-- expect: rename-column
ALTER TABLE "shop_order" RENAME COLUMN "qty" TO "quantity";
-- expect: rename-table
ALTER TABLE shop_coupon RENAME TO shop_voucher;
-- expect: lossy-type-change
ALTER TABLE "shop_order" ALTER COLUMN "title" TYPE varchar(20);
-- expect: lossy-type-change
ALTER TABLE orders ALTER COLUMN amount TYPE integer USING amount::integer;
-- expect: not-null-without-default
ALTER TABLE "shop_order" ADD COLUMN "region" varchar(2) NOT NULL;
-- expect: set-not-null
ALTER TABLE orders ALTER COLUMN note SET NOT NULL;
COMMIT;
