-- :n realistic leads (those of bench/insert.sql) in one INSERT into :table;
-- included by bench/insert_many.sql and bench/per_statement.sql.
INSERT INTO :table (publisher_id, channel_id, source_id, "firstName", "lastName", email, "homePhone",
                    state, age, "monthlyIncome", "loanAmount", military, "tcpaConsent", "userIp", extra, tpar)
SELECT 11 + n % 6, 1 + n % 7, (11 + n % 6) * 100 + n % 5, 'Maria', 'Garcia', 'maria.garcia' || n || '@gmail.com',
       (2000000000 + n % 7999999999)::text, (ARRAY['CA', 'TX', 'FL', 'NY', 'OH'])[1 + n % 5], 17 + n % 53,
       800 + n % 8200, 100 + n % 5100, false, true, '10.1.' || (n % 256) || '.' || (n % 250),
       jsonb_build_object('zip', lpad((n % 99999)::text, 5, '0'), 'employer', 'Acme'),
       '{"sub1": "cmp1"}'
  FROM (SELECT (random() * 100000000)::int AS n FROM generate_series(1, :n)) s;
