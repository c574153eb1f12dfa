"""Opening the Blackbox: Dormand–Prince whose error estimates regularise (:mod:`.dopri5`)."""
