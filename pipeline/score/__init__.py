"""Scoring stage: the driver (`driver`), the actor that builds prediction rows (`predictor`), the
output layout (`predictions`), evaluation of a finished run, and incremental runs for schedules."""
