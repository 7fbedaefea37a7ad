-- One realistic lead per transaction into :table (pgbench -D table=leads|leads_plain).
\set n random(1, 100000000)
\set pub random(11, 16)
\set income random(800, 9000)
\set loan random(100, 5200)
\set age random(17, 70)
INSERT INTO :table (publisher_id, channel_id, source_id, "firstName", "lastName", email, "homePhone",
                   state, age, "monthlyIncome", "loanAmount", military, "tcpaConsent", "userIp", extra, tpar)
VALUES (:pub, 1 + :n % 7, :pub * 100 + :n % 5, 'Maria', 'Garcia', 'maria.garcia' || :n || '@gmail.com',
        (2000000000 + :n % 7999999999)::text, (ARRAY['CA', 'TX', 'FL', 'NY', 'OH'])[1 + :n % 5], :age,
        :income, :loan, false, true, '10.1.' || (:n % 256) || '.' || (:n % 250),
        jsonb_build_object('zip', lpad((:n % 99999)::text, 5, '0'), 'employer', 'Acme'),
        '{"sub1": "cmp1"}');
