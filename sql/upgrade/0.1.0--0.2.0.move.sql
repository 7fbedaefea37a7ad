
-- ------------------------------------------------ move the 0.1.0 results
INSERT INTO iclear.decision (id, lead_id, product_id, stage, status, envelope, decision, created_at)
SELECT id, lead_id, product_id, stage, status, envelope, decision, created_at FROM iclear.decision_v010;
INSERT INTO iclear.filter_log (id, lead_id, product_id, at, stage, origin, kind, ref_id, name, outcome,
                               request, response, detail)
SELECT id, lead_id, product_id, at, stage, origin, kind, ref_id, name, outcome, request, response, detail
  FROM iclear.filter_log_v010;
SELECT setval('iclear.decision_id_seq', coalesce((SELECT max(id) FROM iclear.decision), 0) + 1, false);
SELECT setval('iclear.filter_log_id_seq', coalesce((SELECT max(id) FROM iclear.filter_log), 0) + 1, false);
-- un-register the old tables and their sequences first: DROP TABLE alone
-- leaves their oids in pg_extension.extconfig, which pg_dump then trips on
ALTER EXTENSION iclear DROP SEQUENCE iclear.decision_v010_id_seq;
ALTER EXTENSION iclear DROP SEQUENCE iclear.filter_log_v010_id_seq;
ALTER EXTENSION iclear DROP TABLE iclear.decision_v010;
ALTER EXTENSION iclear DROP TABLE iclear.filter_log_v010;
DROP TABLE iclear.decision_v010, iclear.filter_log_v010;

SELECT pg_catalog.pg_extension_config_dump('iclear.decision_default', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.filter_log_default', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.consent_evidence', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.decision_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.filter_log_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('iclear.consent_evidence_id_seq', '');

