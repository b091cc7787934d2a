"""The MAPE-K loop: Monitor, Analyze, Plan and Execute over the Knowledge store."""
