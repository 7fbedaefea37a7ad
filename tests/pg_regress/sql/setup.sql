-- The shared setup of the golden tests: the extension, as the README's
-- walk-through begins.
CREATE EXTENSION iclear;
SELECT iclear.version() = extversion AS versions_agree FROM pg_extension WHERE extname = 'iclear';
