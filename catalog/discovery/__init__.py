"""Discovery: the cohort builder page, saved searches and the data-request board."""
