-- bench/insert.sql's lead, as the verbatim baseline trigger of
-- shared/bench/plpgsql_baseline.sql wants it: one jsonb `fields` column.
\set n random(1, 100000000)
\set pub random(11, 16)
\set income random(800, 9000)
\set loan random(100, 5200)
\set age random(17, 70)
INSERT INTO baseline.leads (fields)
VALUES (jsonb_build_object('publisher_id', :pub, 'channel_id', 1 + :n % 7, 'source_id', :pub * 100 + :n % 5,
        'firstName', 'Maria', 'lastName', 'Garcia', 'email', 'maria.garcia' || :n || '@gmail.com',
        'homePhone', (2000000000 + :n % 7999999999)::text, 'state', (ARRAY['CA', 'TX', 'FL', 'NY', 'OH'])[1 + :n % 5],
        'age', :age, 'monthlyIncome', :income, 'loanAmount', :loan, 'military', false, 'tcpaConsent', true,
        'userIp', '10.1.' || (:n % 256) || '.' || (:n % 250), 'zip', lpad((:n % 99999)::text, 5, '0'),
        'employer', 'Acme', 'userAgent', 'Mozilla/5.0'));
