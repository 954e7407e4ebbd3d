-- A small shop: enough shape (FKs, sequences, an enum, a view, a trigger) to make every command do something real.
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');
CREATE TABLE customer (
    customer_id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    full_name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE product (
    product_id serial PRIMARY KEY,
    sku text NOT NULL UNIQUE,
    title text NOT NULL,
    price numeric(10,2) NOT NULL CHECK (price >= 0)
);
CREATE TABLE orders (
    order_id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customer,
    status order_status NOT NULL DEFAULT 'new',
    placed_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE order_line (
    order_id bigint NOT NULL REFERENCES orders ON DELETE CASCADE,
    line_no int NOT NULL,
    product_id int NOT NULL REFERENCES product,
    quantity int NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, line_no)
);
CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
CREATE VIEW order_total AS
    SELECT o.order_id, sum(l.quantity * p.price) AS total
    FROM orders o JOIN order_line l USING (order_id) JOIN product p USING (product_id) GROUP BY o.order_id;

INSERT INTO customer (email, full_name)
    SELECT format('customer%s@example.com', g), format('Customer %s', g) FROM generate_series(1, 2000) g;
INSERT INTO product (sku, title, price)
    SELECT format('SKU-%s', g), format('Product %s', g), (g % 97) + 0.99 FROM generate_series(1, 300) g;
INSERT INTO orders (customer_id, status)
    SELECT 1 + (g * 7) % 2000, (ARRAY['new','paid','shipped','cancelled']::order_status[])[1 + g % 4]
    FROM generate_series(1, 10000) g;
INSERT INTO order_line (order_id, line_no, product_id, quantity)
    SELECT o, l, 1 + (o * 13 + l) % 300, 1 + (o + l) % 5 FROM generate_series(1, 10000) o, generate_series(1, 3) l;
ANALYZE;
