-- Index the foreign keys: deleting a referenced row looks its referencing rows up by the key.
-- Without links (appointment_id) every purged appointment (ON DELETE CASCADE) scanned all links:
-- purging 100,000 appointments took over 8 minutes (quadratic). mailbox_claims is small; its
-- index keeps the rule (tests/integration/test_store_schema.py) without exceptions.
-- depends: 0002_ewssync 0005_mailbox_claims

CREATE INDEX links_appointment ON ewssync.links (appointment_id);
CREATE INDEX mailbox_claims_user ON ewssync.mailbox_claims (user_id);
