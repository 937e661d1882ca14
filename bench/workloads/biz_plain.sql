-- 3. baseline: the same business transaction without the key calls
\set amount random(1, 100000)
BEGIN;
INSERT INTO bench.payments (amount, currency) VALUES (:amount, 'EUR');
COMMIT;
