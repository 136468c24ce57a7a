"""Key holder: one share of the federation's threshold key, given only for a checked round sum."""
