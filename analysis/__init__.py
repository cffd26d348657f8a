"""pandas analysis of a run's Parquet results. Filled in by the analysis issue."""
