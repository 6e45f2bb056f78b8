-- Product facts no workflow hears are recorded as already consumed by the engine
-- (src/workflows/fact-listeners.ts): engine_skipped marks them, so that publishing a version that
-- hears their name can put the ones the engine had not reached back in its queue.
ALTER TABLE "domain_events" ADD COLUMN "engine_skipped" boolean DEFAULT false NOT NULL;--> statement-breakpoint
-- Inserting a version changes which facts may be skipped: the inserting transaction takes the
-- lock the product inbox holds shared while it records facts (FACT_LISTENERS_LOCK = 0x11fe1f), so
-- no batch records facts under the set before the version while the version commits.
CREATE FUNCTION "lifeline_fact_listeners_lock"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(1179167);
  RETURN NULL;
END
$$;--> statement-breakpoint
CREATE TRIGGER "workflow_versions_fact_listeners" BEFORE INSERT ON "workflow_versions"
  FOR EACH STATEMENT EXECUTE FUNCTION "lifeline_fact_listeners_lock"();
