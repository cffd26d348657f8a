"""Reports on a run's Parquet results (pandas): metrics@k, tables, plots, comparisons between runs."""
