"""dvc experiments: driving dvc, listing runs, the sweep stage, heatmaps and the report."""
