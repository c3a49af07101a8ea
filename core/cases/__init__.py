"""Cases: how a resident's problem becomes a numbered case (intake, numbering, duplicates,
floods, text limits), the read-side lookups, and retention."""
