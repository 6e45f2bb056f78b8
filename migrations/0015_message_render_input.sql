-- A message carries its own render input (issue 10): the engine writes the definition's options
-- next to the trigger's properties in messages.data when it queues the message, and the sender
-- renders from that alone (no workflow JSON, no run state). Messages queued before this
-- migration get their options from the version their run was on.
UPDATE "messages" m SET "data" = coalesce(m."data", '{}'::jsonb) || jsonb_build_object('options', v."definition"->'options')
FROM "workflow_runs" r JOIN "workflow_versions" v ON v."key" = r."workflow_key" AND v."version" = r."version"
WHERE r."id" = m."run_id" AND NOT (coalesce(m."data", '{}'::jsonb) ? 'options');
