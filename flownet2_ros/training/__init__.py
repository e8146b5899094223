"""Training and evaluation following the paper: multi-scale loss, schedules, stacking, metrics."""
