-- The same leads as bench/insert.sql, :n of them in one INSERT, timed and
-- rolled back: the CPU a trigger spends per lead, without the commit and
-- the client round trip that dominate single-row runs (bench/run.sh "CPU
-- per lead"). Rolled back, so every table stays as the rounds left it.
BEGIN;
\timing on
\ir leads_many.sql
\timing off
ROLLBACK;
