-- A generated, deterministic batch of realistic payday leads (count: :n),
-- inserted into the attached table `leads` the way a lead store would.
SELECT setseed(0.42);
INSERT INTO leads (publisher_id, channel_id, source_id, "firstName", "lastName", email, "homePhone",
                   state, age, "monthlyIncome", "loanAmount", military, "tcpaConsent", "userIp", extra, tpar)
SELECT pub, ch, pub * 100 + src,
       CASE WHEN r_test < 0.01 THEN 'test' ELSE fn END,
       ln,
       CASE WHEN r_email < 0.03 THEN 'customer' || (1 + 37 * (g % 50)) || '@yahoo.com'     -- complainers
            WHEN r_email < 0.06 THEN 'repeat' || (g % 12) || '@gmail.com'                    -- duplicates
            WHEN r_email < 0.08 THEN lower(fn) || g || '@' || (ARRAY['mailinator.com', 'yopmail.com'])[1 + g % 2]
            WHEN r_email < 0.09 THEN ''
            ELSE lower(fn) || '.' || lower(ln) || g || '@' || dom END,
       CASE WHEN r_phone < 0.02 THEN area || '555' || lpad((g % 10000)::text, 4, '0')
            WHEN r_phone < 0.04 THEN (3102870000 + 53 * (g % 150))::text                   -- litigators
            WHEN r_phone < 0.10 THEN '(' || area || ') ' || p3 || '-' || p4                  -- formatted
            ELSE area || p3 || p4 END,
       st,
       CASE WHEN r_age < 0.02 THEN 16 + g % 2 ELSE 18 + (random() * 55)::int END,
       CASE WHEN r_inc < 0.05 THEN 600 + (random() * 399)::int ELSE 1000 + (random() * 8500)::int END,
       CASE WHEN r_loan < 0.03 THEN 5500 + (random() * 2000)::int ELSE 100 + (random() * 2900)::int END,
       random() < 0.03,
       random() < 0.97,
       (11 + g % 200) || '.' || (g * 7 % 256) || '.' || (g * 13 % 256) || '.' || (1 + g % 254),
       jsonb_build_object('zip', lpad((g * 7919 % 99999)::text, 5, '0'),
                          'iClaimSessionId', CASE WHEN g % 45 = 0 THEN 'fail-' ELSE 'ok-' END || g,
                          'employer', (ARRAY['Acme', 'Globex', 'Initech', 'Umbrella', 'Hooli'])[1 + g % 5]),
       jsonb_build_object('sub1', 'cmp' || (g % 9))
  FROM (SELECT g,
               (ARRAY[11, 12, 13, 14, 15, 16])[1 + (random() * 5)::int] AS pub,
               1 + (random() * 7)::int AS ch,
               (random() * 4)::int AS src,
               (ARRAY['James', 'Mary', 'Robert', 'Patricia', 'John', 'Jennifer', 'Michael', 'Linda', 'David',
                      'Elizabeth', 'William', 'Barbara', 'Carlos', 'Maria', 'Wei', 'Aisha', 'Dmitri', 'Fatima',
                      'Kevin', 'Laura'])[1 + (random() * 19)::int] AS fn,
               (ARRAY['Smith', 'Johnson', 'Williams', 'Brown', 'Jones', 'Garcia', 'Miller', 'Davis', 'Rodriguez',
                      'Martinez', 'Hernandez', 'Lopez', 'Wilson', 'Anderson', 'Thomas', 'Taylor', 'Moore',
                      'Jackson', 'Martin', 'Lee'])[1 + (random() * 19)::int] AS ln,
               (ARRAY['gmail.com', 'gmail.com', 'gmail.com', 'yahoo.com', 'yahoo.com', 'outlook.com',
                      'hotmail.com', 'aol.com', 'icloud.com', 'comcast.net'])[1 + (random() * 9)::int] AS dom,
               (ARRAY['212', '213', '305', '312', '404', '415', '469', '512', '602', '617', '702', '713',
                      '786', '818', '917'])[1 + (random() * 14)::int] AS area,
               (200 + (random() * 799)::int)::text AS p3,
               lpad(((random() * 9999)::int)::text, 4, '0') AS p4,
               (ARRAY['CA', 'TX', 'FL', 'IL', 'OH', 'GA', 'NC', 'MI', 'NJ', 'VA', 'WA', 'AZ', 'TN', 'MO',
                      'NV', 'AL', 'NY', 'PA', 'MD', 'VT'])[1 + (random() * 19)::int] AS st,
               random() AS r_test, random() AS r_email, random() AS r_phone, random() AS r_age,
               random() AS r_inc, random() AS r_loan
          FROM generate_series(1, :n) AS g) AS s;
