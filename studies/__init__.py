"""The studies behind docs/RESULTS.md: each sub-folder holds one study's
sweep config and a README with its command."""
