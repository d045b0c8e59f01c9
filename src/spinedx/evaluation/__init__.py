"""Cross-validation, aggregation, metrics and study statistics."""
